// `npm run bench -- ports`: what a port costs as their number grows, and what a front end connecting or
// leaving costs the traffic of the others. For 16, 64 and 256 vhost-user ports in one engine (kernel mode,
// our own front ends, all in this process):
//   - memory per port: the process's RSS growth per port added (listening, no front end), then per port
//     connected (both sides are in this process, so this includes the front end's rings and buffers);
//   - control-thread time per connect: the vw-control thread's CPU time (/proc/self/task/TID/schedstat) spent
//     while every port's front end connects, divided by the ports.
// Flat means the per-port figures at 256 ports are close to those at 16: the ratios are printed.
// Then the gap: a wired pair g0=g1 measures its round trip (send on g0, poll g1) while a child process
// connects and closes a front end on a third port every 10 ms, against the same pair with the child idle;
// rounds alternate and the ratio churn/idle of p99 and max is taken per round (medians printed).
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { native, type NativeEngine } from '../src/native';
import { frontend, type NativeVirtioUser } from '../src/harness/frontend-native';
import { formatSummary, ratio, summarize } from './stats';
import { whole } from './args';

function rssBytes(): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(fs.readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
}

/** CPU time (ns) of this process's thread named `name`. */
function threadCpuNs(name: string): number {
  for (const tid of fs.readdirSync('/proc/self/task')) {
    let comm: string;
    try {
      comm = fs.readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').trim();
    } catch {
      continue;
    }
    if (comm !== name) continue;
    // schedstat's first field: ns on a CPU (stat's utime and stime are in 10 ms ticks, too coarse here).
    return Number(fs.readFileSync(`/proc/self/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
  }
  throw new Error(`no thread named ${name}`);
}

interface ScalePoint {
  ports: number;
  rssPerPortListening: number;
  rssPerPortConnected: number;
  controlNsPerConnect: number;
}

async function waitConnected(engine: NativeEngine, count: number): Promise<void> {
  const deadline = Date.now() + 60_000;
  while (engine.ports().filter((p) => p.connected).length < count) {
    if (Date.now() > deadline) throw new Error(`not all ${count} ports connected within 60 s`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function scalePoint(n: number, dir: string): Promise<ScalePoint> {
  const engine = new native.Engine({ pmdCores: [-1], mode: 'kernel', onEvent: () => undefined });
  const peers: NativeVirtioUser[] = [];
  try {
    const rss0 = rssBytes();
    for (let i = 0; i < n; i++) engine.addPort('vhost-user', `p${i}`, { path: path.join(dir, `p${i}.sock`), client: false, queues: 1 });
    const rss1 = rssBytes();
    const cpu0 = threadCpuNs('vw-control');
    for (let i = 0; i < n; i++)
      peers.push(new (frontend().VirtioUser)({ path: path.join(dir, `p${i}.sock`), memSize: 2 << 20, timeoutMs: 5000 }));
    await waitConnected(engine, n);
    const cpu1 = threadCpuNs('vw-control');
    const rss2 = rssBytes();
    return {
      ports: n,
      rssPerPortListening: (rss1 - rss0) / n,
      rssPerPortConnected: (rss2 - rss1) / n,
      controlNsPerConnect: (cpu1 - cpu0) / n,
    };
  } finally {
    for (const p of peers) p.close();
    engine.close();
  }
}

interface Trips {
  p50: number;
  p99: number;
  max: number;
}

function roundTrips(a: NativeVirtioUser, b: NativeVirtioUser, n: number): Trips {
  const f = Buffer.alloc(64, 0);
  Buffer.from([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00]).copy(f);
  const us: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint();
    if (!a.send(0, f)) continue;
    const deadline = t0 + 1_000_000_000n;
    while (b.receive(0, 1).length === 0 && process.hrtime.bigint() < deadline);
    us.push(Number(process.hrtime.bigint() - t0) / 1000);
  }
  us.sort((x, y) => x - y);
  return { p50: us[Math.floor(us.length / 2)], p99: us[Math.floor(us.length * 0.99)], max: us[us.length - 1] };
}

// The child: connects a front end to the socket and closes it every 10 ms, until killed. Paced, so that
// the gap measured is the switch's and not two cores fought over by a spinning child.
const CHURN = `
const { frontend } = require(${JSON.stringify(path.join(__dirname, '..', 'src', 'harness', 'frontend-native'))});
const sock = process.argv[1];
setInterval(() => { try { new (frontend().VirtioUser)({ path: sock, memSize: 2 << 20, timeoutMs: 5000 }).close(); } catch {} }, 10);
`;

async function gapRounds(
  dir: string,
  rounds: number,
  trips: number,
  log: (s: string) => void,
): Promise<{ p99: number[]; max: number[]; churn: Trips[]; idle: Trips[] }> {
  const engine = new native.Engine({ pmdCores: [-1], mode: 'kernel', onEvent: () => undefined });
  const peers: NativeVirtioUser[] = [];
  try {
    for (const n of ['g0', 'g1', 'c']) engine.addPort('vhost-user', n, { path: path.join(dir, `${n}.sock`), client: false, queues: 1 });
    engine.wire('g0', 'g1');
    const g0 = new (frontend().VirtioUser)({ path: path.join(dir, 'g0.sock'), timeoutMs: 5000 });
    const g1 = new (frontend().VirtioUser)({ path: path.join(dir, 'g1.sock'), timeoutMs: 5000 });
    peers.push(g0, g1);
    await waitConnected(engine, 2);
    roundTrips(g0, g1, trips); // warm up
    const out = { p99: [] as number[], max: [] as number[], churn: [] as Trips[], idle: [] as Trips[] };
    for (let r = 0; r < rounds; r++) {
      const measure = async (withChurn: boolean): Promise<Trips> => {
        if (!withChurn) return roundTrips(g0, g1, trips);
        const child = spawn(process.execPath, ['-e', CHURN, path.join(dir, 'c.sock')], { stdio: 'ignore' });
        try {
          await new Promise((res) => setTimeout(res, 200));
          return roundTrips(g0, g1, trips);
        } finally {
          if (child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
          await new Promise((res) => child.once('exit', res));
        }
      };
      // Alternate which goes first, so a drift in the machine's load falls on both.
      const first = await measure(r % 2 === 1);
      const second = await measure(r % 2 === 0);
      const [idle, churn] = r % 2 === 0 ? [first, second] : [second, first];
      out.idle.push(idle);
      out.churn.push(churn);
      out.p99.push(ratio(churn.p99, idle.p99) ?? NaN);
      out.max.push(ratio(churn.max, idle.max) ?? NaN);
      log(
        `round ${r + 1}: idle p99 ${idle.p99.toFixed(1)} us max ${idle.max.toFixed(1)} us; churn p99 ${churn.p99.toFixed(1)} us max ${churn.max.toFixed(1)} us`,
      );
    }
    return out;
  } finally {
    for (const p of peers) p.close();
    engine.close();
  }
}

export async function portsBenchMain(argv: string[]): Promise<number> {
  const { parseArgs } = await import('node:util');
  const usage = 'usage: npm run bench -- ports [--counts 16,64,256] [--rounds N] [--trips N]\n';
  let counts = [16, 64, 256];
  let rounds = 5;
  let trips = 2000;
  try {
    const { values } = parseArgs({
      args: argv,
      options: { counts: { type: 'string' }, rounds: { type: 'string' }, trips: { type: 'string' }, help: { type: 'boolean' } },
      strict: true,
    });
    if (values.help) {
      process.stdout.write(usage);
      return 0;
    }
    if (values.counts !== undefined) counts = values.counts.split(',').map((c) => whole('--counts', c, 1, 1024));
    if (values.rounds !== undefined) rounds = whole('--rounds', values.rounds, 1, 1000);
    if (values.trips !== undefined) trips = whole('--trips', values.trips, 10, 1_000_000);
  } catch (e) {
    process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n${usage}`);
    return 2;
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostwire-bench-ports-'));
  try {
    const points: ScalePoint[] = [];
    for (const n of counts) {
      const p = await scalePoint(n, dir);
      points.push(p);
      console.log(
        `${n} ports: RSS ${(p.rssPerPortListening / 1024).toFixed(1)} KiB/port listening, ${(p.rssPerPortConnected / 1024).toFixed(1)} KiB/port connected (front end included); control thread ${(p.controlNsPerConnect / 1000).toFixed(0)} us/connect`,
      );
    }
    const base = points[0];
    for (const p of points.slice(1))
      console.log(
        `${p.ports} vs ${base.ports} ports, per port: RSS listening x${(ratio(p.rssPerPortListening, base.rssPerPortListening) ?? NaN).toFixed(2)}, connected x${(ratio(p.rssPerPortConnected, base.rssPerPortConnected) ?? NaN).toFixed(2)}, control time x${(ratio(p.controlNsPerConnect, base.controlNsPerConnect) ?? NaN).toFixed(2)}`,
      );
    console.log('');
    const gap = await gapRounds(dir, rounds, trips, console.log);
    console.log(
      `round trip of g0=g1 while a front end connects and leaves another port, churn/idle: p99 ${formatSummary(summarize(gap.p99))}; max ${formatSummary(summarize(gap.max))}`,
    );
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return 0;
}
