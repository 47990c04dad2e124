// `npm run bench -- tcp`: one iperf3 TCP stream between two network namespaces that reach each other only
// through the switch under test (issue 11, item 7): ns A -veth- hostA ... hostB -veth- ns B, every veth
// with TSO, GSO, GRO and checksum offload on (test/support/tcp-pair.ts, the topology the TCP test uses).
// The switches, in turn, each started afresh for its run:
//   ours-wire         vhostwire serve --uplink a=hostA --uplink b=hostB --wire a=b --mode kernel
//   ours-wire-off     the same with offloads=off on both uplinks: the kernel is handed plain frames
//                     (super-frames from it segmented, checksums completed, in software)
//   ours-bridge       --bridge br0=a,b instead of the wire
//   ours-bridge-off   the bridge with offloads=off
//   ours-wire-v2      the wire with tpacket=v2 on both uplinks: each frame handed over as it is written,
//   ours-bridge-v2    where a TPACKET_V3 block holds a lone frame (an ACK) until its 1 ms retire timer
//   linux-bridge      the kernel's bridge with both host ends as its ports
//   ovs-dpdk          OVS-DPDK (bench/ovs.ts), a netdev bridge with both host ends as plain (AF_PACKET)
//                     ports, NORMAL forwarding, with userspace TSO (other_config:userspace-tso-enable)
// Measured: iperf3's received rate (Gbit/s) and the frames B's interface received per second (its
// rx_packets: a super-frame counts once), and where each core's time went over the stream (/proc/stat:
// user, kernel, softirq, idle), which says which side of the machine a rate is bounded by. Placement on 2 cores: both iperf3 ends on core 0, the switch's
// data path (our PMD, OVS's PMD) on core 1; the Linux bridge runs in the sender's softirq. The order of
// the switches rotates round by round; ratios are taken per round and their median quoted. Targets:
// ours with offloads at least 5x ours without, and at least OVS-DPDK.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { TcpPair, type End } from '../test/support/tcp-pair';
import { benchFlags, whole } from './args';
import { Ovs, ovsUnavailable } from './ovs';
import { ROOT, ServeProcess, serveUnavailable, sleep } from './serve';
import { formatSummary, median, ratio, summarize, type RatioSummary } from './stats';
import { barChartSvg } from './svg';

const IMPLS = [
  'ours-wire',
  'ours-wire-off',
  'ours-bridge',
  'ours-bridge-off',
  'ours-wire-v2',
  'ours-bridge-v2',
  'linux-bridge',
  'ovs-dpdk',
] as const;
type Impl = (typeof IMPLS)[number];
const RATIOS: Array<{ a: Impl; b: Impl; target: number | null }> = [
  { a: 'ours-wire', b: 'ours-wire-off', target: 5 },
  { a: 'ours-bridge', b: 'ours-bridge-off', target: 5 },
  { a: 'ours-wire', b: 'ovs-dpdk', target: 1 },
  { a: 'ours-bridge', b: 'ovs-dpdk', target: 1 },
  { a: 'ours-wire', b: 'linux-bridge', target: null },
  { a: 'ours-wire-v2', b: 'ours-wire', target: null },
  { a: 'ours-wire-v2', b: 'ovs-dpdk', target: null },
  { a: 'ours-bridge-v2', b: 'ovs-dpdk', target: null },
];

export interface TcpBenchOptions {
  rounds: number;
  seconds: number;
  impls: Impl[];
  resultsDir: string | null;
  verbose: boolean;
}

export const TCP_DEFAULTS: TcpBenchOptions = {
  rounds: 3,
  seconds: 5,
  impls: [...IMPLS],
  resultsDir: path.join(ROOT, 'bench', 'results'),
  verbose: false,
};

interface Run {
  gbps: number;
  /** frames B's interface received per second, millions */
  mfps: number;
  /** per core over the stream: shares of its time in user space, the kernel (system), softirq and idle */
  cpu: CoreTime[];
}

interface CoreTime {
  user: number;
  system: number;
  softirq: number;
  idle: number;
}

/** Jiffies per core from /proc/stat: user (with nice), system, softirq, idle (with iowait), and the rest. */
function coreJiffies(): number[][] {
  return fs
    .readFileSync('/proc/stat', 'utf8')
    .split('\n')
    .filter((l) => /^cpu\d+ /.test(l))
    .map((l) => {
      const [user, nice, system, idle, iowait, irq, softirq, steal] = l.split(/\s+/).slice(1).map(Number);
      return [user + nice, system, softirq, idle + iowait, irq + steal];
    });
}

function coreTimes(before: number[][], after: number[][]): CoreTime[] {
  return after.map((a, c) => {
    const d = a.map((x, k) => x - before[c][k]);
    const all = d.reduce((x, y) => x + y, 0) || 1;
    return { user: d[0] / all, system: d[1] / all, softirq: d[2] / all, idle: d[3] / all };
  });
}

const pct = (x: number): string => `${(x * 100).toFixed(0)}`;
/** "core0 u45/s30/si20/i5": user, system, softirq and idle percentages. */
const formatCpu = (cpu: CoreTime[]): string =>
  cpu.map((t, c) => `core${c} u${pct(t.user)}/s${pct(t.system)}/si${pct(t.softirq)}/i${pct(t.idle)}`).join(' ');

interface Round {
  runs: Partial<Record<Impl, Run | null>>;
  errors: string[];
}

export interface TcpResult {
  rounds: Round[];
  median: Partial<Record<Impl, { gbps: number | null; mfps: number | null; cpu: CoreTime[] | null }>>;
  ratios: Array<{ a: Impl; b: Impl; target: number | null; summary: RatioSummary; perRound: Array<number | null> }>;
}

function rxPackets(e: End): number {
  const [l] = JSON.parse(execFileSync('ip', ['-n', e.ns, '-s', '-j', 'link', 'show', e.peer], { encoding: 'utf8' })) as Array<{
    stats64: { rx: { packets: number } };
  }>;
  return l.stats64.rx.packets;
}

class Bench {
  constructor(
    private readonly o: TcpBenchOptions,
    private readonly pair: TcpPair,
    private readonly log: (line: string) => void,
  ) {}

  private verbose = (who: string) => (this.o.verbose ? (l: string) => this.log(`  [${who}] ${l}`) : undefined);

  /** Starts the switch between hostA and hostB; resolves with how to stop it. */
  private async start(impl: Impl): Promise<() => Promise<void>> {
    const { a, b } = this.pair;
    if (impl.startsWith('ours')) {
      const off = (impl.endsWith('-off') ? ',offloads=off' : '') + (impl.endsWith('-v2') ? ',tpacket=v2' : '');
      const join = impl.startsWith('ours-wire') ? ['--wire', 'a=b'] : ['--bridge', 'br0=a,b'];
      const serve = await ServeProcess.start({
        args: ['--uplink', `a=${a.host}${off}`, '--uplink', `b=${b.host}${off}`, ...join, '--mode', 'kernel', '--pmd-cores', '1'],
        log: this.verbose(impl),
      });
      return async () => void (await serve.stop());
    }
    if (impl === 'linux-bridge') {
      const br = `vwtbr${process.pid}`.slice(0, 15);
      execFileSync('ip', ['link', 'add', br, 'type', 'bridge']);
      for (const h of [a.host, b.host]) execFileSync('ip', ['link', 'set', h, 'master', br]);
      execFileSync('ip', ['link', 'set', br, 'up']);
      return async () => void spawnSync('ip', ['link', 'del', br], { stdio: 'ignore' });
    }
    const ovs = await Ovs.start((x) => {
      // Without it OVS reads the host ends' frames with no virtio-net header: partial checksums from the
      // namespaces' stacks would go on unfinished (and the connection never opens).
      x.vsctl('--no-wait', 'set', 'Open_vSwitch', '.', 'other_config:userspace-tso-enable=true');
      x.vsctl('add-br', 'br0', '--', 'set', 'bridge', 'br0', 'datapath_type=netdev');
      for (const h of [a.host, b.host]) x.vsctl('add-port', 'br0', h);
    });
    return () => ovs.close();
  }

  /** One iperf3 stream A to B over the window; the rate B received and the frames its interface took. */
  async run(impl: Impl): Promise<Run> {
    const { a, b } = this.pair;
    const stop = await this.start(impl);
    const port = 5201 + (process.pid % 1000);
    const server = spawn('ip', ['netns', 'exec', b.ns, 'iperf3', '-s', '-1', '-A', '0', '-B', b.addr, '-p', String(port)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const serverExit = new Promise<void>((r) => server.once('exit', () => r()));
    try {
      // Until the server listens (iperf3 -s says nothing useful on stdout before a client comes).
      await sleep(500);
      const rx0 = rxPackets(b);
      const cpu0 = coreJiffies();
      const t0 = process.hrtime.bigint();
      const r = spawnSync(
        'ip',
        ['netns', 'exec', a.ns, 'iperf3', '-c', b.addr, '-p', String(port), '-A', '0', '-t', String(this.o.seconds), '-J'],
        { encoding: 'utf8', timeout: (this.o.seconds + 30) * 1000 },
      );
      const secs = Number(process.hrtime.bigint() - t0) / 1e9;
      const cpu = coreTimes(cpu0, coreJiffies());
      const frames = rxPackets(b) - rx0;
      if (r.status !== 0) throw new Error(`iperf3 -c failed (${r.status ?? r.signal}): ${(r.stdout || r.stderr).slice(0, 300)}`);
      const j = JSON.parse(r.stdout) as { end: { sum_received: { bits_per_second: number; seconds: number } } };
      return { gbps: j.end.sum_received.bits_per_second / 1e9, mfps: frames / secs / 1e6, cpu };
    } finally {
      if (server.exitCode === null) server.kill();
      await serverExit;
      await stop();
    }
  }
}

export async function runTcpBench(o: TcpBenchOptions, log: (line: string) => void, interrupted: () => boolean): Promise<TcpResult> {
  const iperf =
    spawnSync('sh', ['-c', 'command -v iperf3']).status === 0 ? null : 'iperf3 is not installed (Debian 12: apt-get install iperf3)';
  const missing = serveUnavailable() ?? iperf ?? (o.impls.includes('ovs-dpdk') ? ovsUnavailable() : null);
  if (missing) throw new Error(missing);
  const pair = new TcpPair('b');
  const bench = new Bench(o, pair, log);
  const rounds: Round[] = [];
  try {
    for (let r = 0; r < o.rounds && !interrupted(); r++) {
      const round: Round = { runs: {}, errors: [] };
      // Rotate the order so that no switch always runs first (or last) in a round.
      const order = o.impls.map((_, i) => o.impls[(i + r) % o.impls.length]);
      for (const impl of order) {
        if (interrupted()) break;
        try {
          round.runs[impl] = await bench.run(impl);
        } catch (e) {
          round.runs[impl] = null;
          round.errors.push(`${impl}: ${(e as Error).message.split('\n')[0]}`);
        }
      }
      rounds.push(round);
      const f = (x: Run | null | undefined): string =>
        x ? `${x.gbps.toFixed(2)} Gbit/s ${x.mfps.toFixed(3)} Mfps (${formatCpu(x.cpu)})` : 'failed';
      log(
        `round ${r + 1}: ${o.impls.map((i) => `${i} ${f(round.runs[i])}`).join(', ')}${round.errors.length ? ` (${round.errors.join('; ')})` : ''}`,
      );
    }
  } finally {
    pair.close();
  }
  const pick = (i: Impl, k: 'gbps' | 'mfps'): number[] => rounds.flatMap((x) => (x.runs[i] ? [x.runs[i]![k]] : []));
  const med: TcpResult['median'] = {};
  for (const i of o.impls) {
    const runs = rounds.flatMap((x) => (x.runs[i] ? [x.runs[i]!] : []));
    // Each share's median over the rounds, core by core.
    const cpu = runs.length
      ? runs[0].cpu.map((_, c) => {
          const m = (k: keyof CoreTime): number => median(runs.map((x) => x.cpu[c][k])) ?? 0;
          return { user: m('user'), system: m('system'), softirq: m('softirq'), idle: m('idle') };
        })
      : null;
    med[i] = { gbps: median(pick(i, 'gbps')), mfps: median(pick(i, 'mfps')), cpu };
  }
  return {
    rounds,
    median: med,
    ratios: RATIOS.filter((q) => o.impls.includes(q.a) && o.impls.includes(q.b)).map(({ a, b, target }) => {
      const perRound = rounds.map((x) => ratio(x.runs[a]?.gbps, x.runs[b]?.gbps));
      return { a, b, target, summary: summarize(perRound), perRound };
    }),
  };
}

export function report(res: TcpResult): string[] {
  const f = (v: number | null | undefined, d: number): string => (typeof v === 'number' ? v.toFixed(d) : '-');
  const impls = Object.keys(res.median) as Impl[];
  const lines = [
    ['switch', 'Gbit/s', 'Mframes/s at B', 'bytes/frame', 'CPU % per core: user/system/softirq/idle'].join('\t'),
    ...impls.map((i) => {
      const m = res.median[i]!;
      const per = m.gbps && m.mfps ? (m.gbps * 1e9) / 8 / (m.mfps * 1e6) : null;
      return [i, f(m.gbps, 2), f(m.mfps, 3), f(per, 0), m.cpu ? formatCpu(m.cpu) : '-'].join('\t');
    }),
    '',
  ];
  for (const r of res.ratios) {
    const m = r.summary.median;
    const what = `${r.a}/${r.b} Gbit/s ${formatSummary(r.summary)}${r.target === null ? '' : ` (target >= ${r.target})`}`;
    lines.push(
      r.target === null ? `for reference: ${what}` : m !== null && m >= r.target ? `within target: ${what}` : `BELOW TARGET: ${what}`,
    );
  }
  return lines;
}

export function writeResults(res: TcpResult, o: TcpBenchOptions, command: string): string[] {
  const dir = o.resultsDir!;
  fs.mkdirSync(dir, { recursive: true });
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const gitCommit = spawnSync('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).stdout.trim();
  const json = path.join(dir, `tcp-${stamp}.json`);
  const { resultsDir, ...options } = o;
  void resultsDir;
  fs.writeFileSync(
    json,
    `${JSON.stringify({ command, options, ...res, host: { cpus: os.cpus().length, loadavg: os.loadavg(), gitCommit } }, null, 2)}\n`,
  );
  const impls = Object.keys(res.median) as Impl[];
  const svg = path.join(dir, `tcp-${stamp}.svg`);
  const svgFrames = path.join(dir, `tcp-${stamp}-frames.svg`);
  const chart = (valueLabel: string, key: 'gbps' | 'mfps', what: string): string =>
    barChartSvg({
      title: `One TCP stream (iperf3) between two namespaces through each switch, veth offloads on: ${what}`,
      subtitle: `${stamp.slice(0, 16)} UTC, ${command}, median of ${o.rounds} rounds, ${gitCommit}`,
      categories: [valueLabel],
      categoryLabel: 'measure',
      valueLabel,
      series: impls.map((i) => ({ name: i, values: [res.median[i]![key]] })),
    });
  fs.writeFileSync(svg, chart('Gbit/s', 'gbps', 'throughput'));
  fs.writeFileSync(svgFrames, chart('Mframes/s', 'mfps', "frames B's interface received"));
  return [json, svg, svgFrames];
}

const USAGE = `usage: npm run bench -- tcp [--rounds N] [--seconds S] [--switches ${IMPLS.join(',')}] [--no-json] [--verbose]
  (defaults: ${TCP_DEFAULTS.rounds} rounds of ${TCP_DEFAULTS.seconds} s streams, every switch; root, iperf3, Open vSwitch with DPDK and 512 free hugepages for ovs-dpdk)
`;

export async function tcpBenchMain(argv: string[], interrupted: () => boolean): Promise<number> {
  const o: TcpBenchOptions = { ...TCP_DEFAULTS };
  try {
    const flags = benchFlags(argv, ['rounds', 'seconds', 'switches'] as const, USAGE);
    if (!flags) return 0;
    const { values } = flags;
    if (values.rounds !== undefined) o.rounds = whole('--rounds', values.rounds, 1, 100);
    if (values.seconds !== undefined) o.seconds = whole('--seconds', values.seconds, 1, 600);
    if (values.switches !== undefined)
      o.impls = values.switches.split(',').map((s) => {
        if (!(IMPLS as readonly string[]).includes(s)) throw new Error(`--switches: expected some of ${IMPLS.join(', ')}, got "${s}"`);
        return s as Impl;
      });
    if (flags.noJson) o.resultsDir = null;
    if (flags.verbose) o.verbose = true;
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  const res = await runTcpBench(o, console.log, interrupted);
  console.log('');
  for (const l of report(res)) console.log(l);
  if (o.resultsDir) console.log(`\nresults: ${writeResults(res, o, ['npm run bench --', 'tcp', ...argv].join(' ')).join(', ')}`);
  return interrupted() ? 130 : 0;
}
