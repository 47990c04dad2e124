// `npm run bench -- bridge --engine`: what the learning bridge costs over the wire, as its ports and its MAC table
// grow. One engine in this process, one PMD thread (pinned with --pmd-core), bypass mode:
//   - the wire: gen g0 (64-byte frames, as fast as it can) wired to sink s0; the forwarder's floor;
//   - the bridge: the same g0 and s0 on a bridge with PORTS members in all (the others sinks that see
//     nothing: a frame to a known MAC goes to one port), g0 sending from MACS source addresses in turn,
//     so every frame is learned or refreshed in a table of MACS entries, to the destination s0 holds as
//     a static entry (sinks never send, so nothing else could teach the bridge where it is).
// The rate is s0's transmit count over --seconds. Each round measures the wire and the bridge back to back
// (order alternating) and the bridge/wire ratio is taken per round; medians and ranges are printed. Flat
// across MACS says the lookup costs the same at 1 and at 100,000 entries; flat across PORTS says members
// that take no part in a frame cost it nothing. OVS-DPDK's NORMAL bridge is compared with ours, guest to
// guest, by `npm run bench -- bridge` (bench/g2g.ts).
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { native, queueCounter, type NativeEngine } from '../src/native';
import { formatSummary, ratio, summarize } from './stats';
import { ROOT } from './serve';
import { whole } from './args';

const DEST = 0x020000000002; // build_udp_frame's destination (addon/core/udp_frame.cc)

interface Cell {
  ports: number;
  macs: number;
  wireMpps: number[];
  bridgeMpps: number[];
  ratios: Array<number | null>;
}

function txPackets(engine: NativeEngine, port: string): number {
  return Number(queueCounter(engine, port, 'TX_PACKETS'));
}

async function rate(engine: NativeEngine, warmupMs: number, seconds: number): Promise<number> {
  await new Promise((r) => setTimeout(r, warmupMs));
  const n0 = txPackets(engine, 's0');
  const t0 = process.hrtime.bigint();
  await new Promise((r) => setTimeout(r, seconds * 1000));
  const n1 = txPackets(engine, 's0');
  const ns = Number(process.hrtime.bigint() - t0);
  return ((n1 - n0) / ns) * 1e3; // Mpps
}

type Idle = 'sink' | 'vhost-user';

async function measure(pmdCore: number, ports: number, macs: number, bridged: boolean, seconds: number, idle: Idle): Promise<number> {
  const engine = new native.Engine({ pmdCores: [pmdCore], mode: 'bypass', onEvent: () => undefined });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostwire-bench-bridge-'));
  try {
    engine.addPort('gen', 'g0', { size: 64, rate: 0, count: 0, macs: bridged ? macs : 1 });
    const sinks = bridged ? ports - 1 : 1;
    // s0 receives every frame; the other members only sit on the bridge: sinks, or vhost-user ports
    // nobody connects to, as on a switch whose VMs are not all running.
    engine.addPort('sink', 's0', {});
    for (let i = 1; i < sinks; i++)
      if (idle === 'sink') engine.addPort('sink', `s${i}`, {});
      else engine.addPort('vhost-user', `s${i}`, { path: path.join(dir, `s${i}.sock`), client: false, queues: 1 });
    if (!bridged) engine.wire('g0', 's0');
    else
      engine.addBridge(
        'br0',
        { maxMacs: Math.max(8192, 2 * macs), static: [{ mac: DEST, port: 's0' }] },
        ['g0', ...Array.from({ length: sinks }, (_, i) => `s${i}`)].map((port) => ({ port })),
      );
    // A table of MACS entries is filled in the first pass over the addresses; the warm-up covers it.
    return await rate(engine, 500, seconds);
  } finally {
    engine.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

export async function bridgeBenchMain(argv: string[]): Promise<number> {
  const { parseArgs } = await import('node:util');
  const usage =
    'usage: npm run bench -- bridge --engine [--ports 2,16,64] [--macs 1,1000,100000] [--rounds N] [--seconds S] [--pmd-core N] [--idle sink|vhost-user] [--no-json]\n';
  let portsList = [2, 16, 64];
  let macsList = [1, 1000, 100_000];
  let rounds = 3;
  let seconds = 2;
  let pmdCore = 1;
  let idle: Idle = 'sink';
  let json = true;
  try {
    const { values } = parseArgs({
      args: argv,
      options: {
        ports: { type: 'string' },
        macs: { type: 'string' },
        rounds: { type: 'string' },
        seconds: { type: 'string' },
        'pmd-core': { type: 'string' },
        idle: { type: 'string' },
        'no-json': { type: 'boolean' },
        help: { type: 'boolean' },
      },
      strict: true,
    });
    if (values.help) {
      process.stdout.write(usage);
      return 0;
    }
    if (values.ports !== undefined) portsList = values.ports.split(',').map((c) => whole('--ports', c, 2, 256));
    if (values.macs !== undefined) macsList = values.macs.split(',').map((c) => whole('--macs', c, 1, native.limits.maxBridgeMacs / 2));
    if (values.rounds !== undefined) rounds = whole('--rounds', values.rounds, 1, 100);
    if (values.seconds !== undefined) seconds = whole('--seconds', values.seconds, 1, 600);
    if (values['pmd-core'] !== undefined) pmdCore = whole('--pmd-core', values['pmd-core'], -1, 1023);
    if (values.idle !== undefined) {
      if (values.idle !== 'sink' && values.idle !== 'vhost-user')
        throw new Error(`--idle: expected sink or vhost-user, got "${values.idle}"`);
      idle = values.idle;
    }
    json = !values['no-json'];
  } catch (e) {
    process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n${usage}`);
    return 2;
  }

  const cells: Cell[] = [];
  for (const ports of portsList)
    for (const macs of macsList) {
      const cell: Cell = { ports, macs, wireMpps: [], bridgeMpps: [], ratios: [] };
      for (let r = 0; r < rounds; r++) {
        // Alternate which goes first, so a drift in the machine's load falls on both.
        const first = await measure(pmdCore, ports, macs, r % 2 === 1, seconds, idle);
        const second = await measure(pmdCore, ports, macs, r % 2 === 0, seconds, idle);
        const [wire, bridge] = r % 2 === 0 ? [first, second] : [second, first];
        cell.wireMpps.push(wire);
        cell.bridgeMpps.push(bridge);
        cell.ratios.push(ratio(bridge, wire));
      }
      cells.push(cell);
      const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1].toFixed(2);
      console.log(
        `${String(ports).padStart(3)} ports ${String(macs).padStart(6)} MACs: wire ${med(cell.wireMpps)} Mpps, bridge ${med(cell.bridgeMpps)} Mpps, bridge/wire ${formatSummary(summarize(cell.ratios))}`,
      );
    }
  const base = cells[0];
  const flat = summarize(cells.map((c) => ratio(summarize(c.ratios).median, summarize(base.ratios).median)));
  console.log(
    `bridge/wire of every case against ${base.ports} ports, ${base.macs} MAC: ${formatSummary(flat)} (1.00 everywhere: flat in ports and MACs)`,
  );
  if (json) {
    const dir = path.join(ROOT, 'bench', 'results');
    fs.mkdirSync(dir, { recursive: true });
    const file = path.join(dir, `bridge-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
    fs.writeFileSync(file, `${JSON.stringify({ rounds, seconds, pmdCore, idle, cells }, null, 2)}\n`);
    console.log(`wrote ${path.relative(ROOT, file)}`);
  }
  return 0;
}
