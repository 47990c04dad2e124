// `npm run bench -- g2g`: guest to guest, the one-copy path against the two-copy switches, side by side.
// One DPDK testpmd holds two virtio-user ports (vm0, vm1) in mac-forward mode and starts with tx_first,
// so frames circulate vm0 -> switch -> vm1 -> testpmd -> vm0 (and the other way) and only the switch and
// the front end limit the rate. The switches:
//   ours    vhostwire serve --wire vm0=vm1 (bypass mode, one PMD core): one copy, guest memory to guest memory
//   bridge  vhostwire serve --bridge br0=vm0,vm1: the same copy behind a MAC learning and lookup per frame
//   dpdk  dpdk-testpmd io forward between two net_vhost ports: two copies, through an mbuf
//   ovs   Open vSwitch with DPDK (netdev datapath, NORMAL action, two dpdkvhostuser ports): two copies and
//         a MAC lookup
// Every switch of a case is set up once, each with its own front end, and switched on only for its own
// windows: a round gives each switch one window, in an order that rotates from round to round, and the
// ratios ours/dpdk, ours/ovs, bridge/wire and bridge/ovs are taken per round (bench/stats.ts). The rate is
// what the front end receives on both ports together.
//
// Why windows rather than a fresh start per sample: on these machines the same switch moves between about
// 8 and 16 Mpps within one run, in spells of a few seconds, as the host moves the two vCPUs (a cache line's
// round trip between cores 0 and 1 measured about 80, 120 or 430 ns, changing every few seconds). Samples
// taken a fresh start apart (tens of seconds) fall in different spells, and a ratio of two of them
// measures the spells; windows a second apart mostly share one. A switch off its windows takes no CPU:
// its front end's forwarding lcore blocks when forwarding stops (testpmd), our serve and OVS's vswitchd
// are stopped with SIGSTOP, the DPDK switch stops forwarding. The front ends keep their frames across a
// pause (--no-flush-rx), so each circulation picks up where it stopped.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Testpmd, dpdkVersion, findTestpmd, freeHugepages, type PortStats } from './testpmd';
import { Ovs, ovsUnavailable } from './ovs';
import { ServeProcess, serveUnavailable, sleep } from './serve';
import { median, ratio, summarize, formatSummary, type RatioSummary } from './stats';
import { native } from '../src/native';

export type Switch = 'ours' | 'bridge' | 'dpdk' | 'ovs';
const SWITCHES: Switch[] = ['ours', 'bridge', 'dpdk', 'ovs'];

/** How the switch is loaded besides the two ports that carry the traffic (the bridge and OVS only). */
export interface G2gCell {
  /** Ports on the bridge: vm0 and vm1 carry the traffic, the rest are vhost-user ports nobody connects to. */
  ports: number;
  /** Source MACs the switch has learned on vm0 before the traffic starts (1: only the front end's own). */
  macs: number;
}

export interface G2gOptions {
  rounds: number;
  cells: G2gCell[];
  seconds: number;
  warmupSeconds: number;
  sizes: number[];
  switches: Switch[];
  resultsDir: string | null;
  verbose: boolean;
  /** Queue pairs of each of the front end's two ports (and of the switch's), testpmd --rxq/--txq */
  queues: number;
  /** Our PMD threads' CPUs (serve --pmd-cores) */
  pmdCores: string;
}

export const G2G_DEFAULTS: G2gOptions = {
  rounds: 10,
  cells: [{ ports: 2, macs: 1 }],
  // Windows short enough that a round's fall mostly in one spell of the host's vCPU placement.
  seconds: 1,
  warmupSeconds: 0.5,
  sizes: [64, 1518],
  switches: SWITCHES,
  resultsDir: path.join(__dirname, '..', '..', 'bench', 'results'),
  verbose: false,
  queues: 1,
  pmdCores: '1',
};

// Front end on core 0 (main lcore 1 sleeps in its prompt); every switch forwards on core 1.
const FRONT = { lcores: '0,1', main: 1 };
const MAC = ['02:00:00:00:00:10', '02:00:00:00:00:11'];

interface SwitchRig {
  /** Where the front end's port i connects, and whether the switch is the vhost-user server there. */
  sockets: [string, string];
  /** MAC table entries the switch holds now (the switches that learn). */
  learned?(): Promise<number>;
  /** Leaves the CPU to the other rigs until resume(). */
  pause(): Promise<void>;
  resume(): Promise<void>;
  close(): Promise<void>;
}

/** A switch with its own front end, set up once per case and run only in its windows. */
interface Rig {
  switch: Switch;
  /** MAC table entries when the traffic started (bridge, ovs) */
  learned?: number;
  /** Mpps the front end received on each port over one window, the rig running only for it. */
  window(): Promise<[number, number]>;
  close(): Promise<void>;
}

interface Sample {
  switch: Switch;
  size: number;
  ports: number;
  macs: number;
  /** MAC table entries when the traffic started (bridge, ovs) */
  learned?: number;
  round: number;
  mpps: number | null;
  /** per front-end port, Mpps received: a circulation that died at start shows as one port near 0 */
  perPort?: [number, number];
  error?: string;
}

/** Room for the MACs a cell teaches, the front end's two and a margin: the table never refuses one. */
function tableRoom(macs: number): number {
  return Math.max(8192, 2 * macs);
}

/** 02:01:00:00:00:00 and up, as `--gen ...,macs=N` counts (never the front end's 02:00:00:00:00:1x). */
function taughtMac(i: number): Buffer {
  return Buffer.from([0x02, 0x01, (i >>> 24) & 0xff, (i >>> 16) & 0xff, (i >>> 8) & 0xff, i & 0xff]);
}

/**
 * Connects our own front end to the switch's vm0 socket and sends one broadcast from each of `macs`
 * source addresses, so the switch learns them all on vm0; then leaves, and the DPDK front end takes vm0.
 */
async function teach(socket: string, macs: number): Promise<void> {
  const { frontend } = await import('../src/harness/frontend-native');
  const vu = new (frontend().VirtioUser)({ path: socket, timeoutMs: 10000 });
  try {
    // The switch starts its queues a moment after the handshake; a frame sent before is not lost (it
    // waits in the ring) but the first ones could meet a switch still setting up.
    await sleep(500);
    const frame = Buffer.alloc(64);
    frame.fill(0xff, 0, 6);
    frame.writeUInt16BE(0x88b5, 12); // IEEE local experimental: nobody answers it
    for (let i = 0; i < macs; i++) {
      taughtMac(i).copy(frame, 6);
      for (let tries = 0; !vu.send(0, frame); tries++) {
        if (tries > 5000) throw new Error(`teaching MACs: the switch stopped taking frames after ${i} of ${macs}`);
        await sleep(1);
      }
    }
    // Until the switch has taken the last of them out of the ring.
    await sleep(1000);
  } finally {
    vu.close();
  }
}

/**
 * Until both circulations are running: frames arriving on both ports in two readings in a row. A switch
 * that drops the first frames of a direction (a port still being set up when they came) leaves that
 * direction with none, and every window of the rig would measure half a circulation.
 */
class OneWay extends Error {}

async function circulating(front: Testpmd, sw: Switch): Promise<void> {
  const deadline = Date.now() + 10000;
  let prev = [await front.portStats(0), await front.portStats(1)];
  let good = 0;
  while (good < 2) {
    if (Date.now() > deadline)
      throw new OneWay(
        `${sw}: frames still go round only one way 10 s after the front end started sending (port ${prev[0].rxPackets} / ${prev[1].rxPackets} frames)`,
      );
    await sleep(200);
    const now = [await front.portStats(0), await front.portStats(1)];
    good = now[0].rxPackets > prev[0].rxPackets && now[1].rxPackets > prev[1].rxPackets ? good + 1 : 0;
    prev = now;
  }
}

function tmp(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export function unavailable(s: Switch): string | null {
  if (s === 'ours' || s === 'bridge') return serveUnavailable();
  if (!findTestpmd()) return 'dpdk-testpmd is not installed (Debian 12: dpdk-dev)';
  return s === 'ovs' ? ovsUnavailable() : null;
}

class G2g {
  constructor(
    private readonly o: G2gOptions,
    private readonly log: (line: string) => void,
  ) {}

  private verbose = (who: string) => (this.o.verbose ? (l: string) => this.log(`  [${who}] ${l}`) : undefined);

  ours(): Promise<SwitchRig> {
    return this.vhostwire(2, () => ['--wire', 'vm0=vm1']);
  }

  bridge(cell: G2gCell): Promise<SwitchRig> {
    const room = tableRoom(cell.macs);
    return this.vhostwire(cell.ports, (names) => ['--bridge', `br0=${names.join(',')},max-macs=${room},max-macs-per-port=${room}`]);
  }

  private async vhostwire(ports: number, join: (names: string[]) => string[]): Promise<SwitchRig> {
    const dir = tmp('vhostwire-g2g-');
    const names = Array.from({ length: ports }, (_, i) => `vm${i}`);
    const socks = names.map((n) => path.join(dir, `${n}.sock`));
    const serve = await ServeProcess.start({
      args: [
        ...names.flatMap((n, i) => ['--vhost-user', `${n}=${socks[i]}${this.o.queues > 1 ? `,queues=${this.o.queues}` : ''}`]),
        ...join(names),
        ...['--mode', 'bypass', '--pmd-cores', this.o.pmdCores],
      ],
      log: this.verbose('vhostwire'),
    });
    return {
      sockets: [socks[0], socks[1]],
      learned: async () => {
        const r = await fetch(`${serve.url}/api/bridges`);
        const b = ((await r.json()) as Array<{ name: string; macs: number }>).find((x) => x.name === 'br0');
        return b ? b.macs : 0;
      },
      pause: async () => {
        // What the front end sent last is forwarded before serve freezes.
        await sleep(50);
        serve.suspend();
      },
      resume: async () => serve.continue(),
      close: async () => {
        await serve.stop();
        fs.rmSync(dir, { recursive: true, force: true });
      },
    };
  }

  async dpdk(): Promise<SwitchRig> {
    const dir = tmp('vhostwire-g2g-dpdk-');
    const s: [string, string] = [path.join(dir, 'vm0.sock'), path.join(dir, 'vm1.sock')];
    const back = await Testpmd.start({
      name: 'dpdk-vhost',
      lcores: '0,1',
      mainLcore: 0,
      vdev: `net_vhost0,iface=${s[0]},queues=${this.o.queues}`,
      extraEal: ['--vdev', `net_vhost1,iface=${s[1]},queues=${this.o.queues}`],
      extraApp: [`--rxq=${this.o.queues}`, `--txq=${this.o.queues}`],
      forwardMode: 'io',
      log: this.verbose('dpdk-vhost'),
    });
    await back.startForwarding();
    return {
      sockets: s,
      pause: async () => {
        await sleep(50);
        await back.stopForwarding();
      },
      resume: () => back.startForwarding(),
      close: async () => {
        await back.close();
        fs.rmSync(dir, { recursive: true, force: true });
      },
    };
  }

  /** A private OVS-DPDK (bench/ovs.ts) with a NORMAL bridge of the cell's vhost-user ports. */
  async ovs(cell: G2gCell): Promise<SwitchRig> {
    const ovs = await Ovs.start((o) => {
      o.vsctl('add-br', 'br0', '--', 'set', 'bridge', 'br0', 'datapath_type=netdev', `other_config:mac-table-size=${tableRoom(cell.macs)}`);
      for (let i = 0; i < cell.ports; i++) o.vsctl('add-port', 'br0', `vm${i}`, '--', 'set', 'Interface', `vm${i}`, 'type=dpdkvhostuser');
    });
    const learned = async (): Promise<number> => {
      const out = ovs.appctl('fdb/stats-show', 'br0');
      const m = /Current\/maximum MAC entries in the table: (\d+)/.exec(out);
      if (!m) throw new Error(`ovs-appctl fdb/stats-show printed no table size:\n${out}`);
      return Number(m[1]);
    };
    return {
      sockets: [`${ovs.dir}/vm0`, `${ovs.dir}/vm1`],
      learned,
      pause: async () => {
        await sleep(50);
        ovs.suspend();
      },
      resume: async () => ovs.continue(),
      close: () => ovs.close(),
    };
  }

  private frontEnd(s: [string, string], size: number): Promise<Testpmd> {
    return Testpmd.start({
      name: 'virtio-user',
      lcores: FRONT.lcores,
      mainLcore: FRONT.main,
      vdev: `net_virtio_user0,path=${s[0]},queues=${this.o.queues},mac=${MAC[0]}`,
      extraEal: ['--vdev', `net_virtio_user1,path=${s[1]},queues=${this.o.queues},mac=${MAC[1]}`],
      singleFileSegments: true,
      forwardMode: 'mac',
      txpkts: size,
      // Every rig's front end is up at once: half testpmd's default memory each leaves room for OVS's.
      memMb: 128,
      extraApp: [
        `--eth-peer=0,${MAC[1]}`,
        `--eth-peer=1,${MAC[0]}`,
        `--rxq=${this.o.queues}`,
        `--txq=${this.o.queues}`,
        // A start after a pause must not drop the circulating frames waiting in the receive rings.
        '--no-flush-rx',
      ],
      log: this.verbose('virtio-user'),
    });
  }

  /** Sets up switch sw for one case with its front end, starts the circulation and pauses it. */
  async rig(sw: Switch, size: number, cell: G2gCell): Promise<Rig> {
    let sr: SwitchRig | undefined;
    let front: Testpmd | undefined;
    try {
      sr = await (sw === 'bridge' ? this.bridge(cell) : sw === 'ovs' ? this.ovs(cell) : this[sw]());
      let learned: number | undefined;
      if (sr.learned && sw !== 'ours') {
        if (cell.macs > 1) await teach(sr.sockets[0], cell.macs);
        learned = await sr.learned();
      }
      front = await this.frontEnd(sr.sockets, size);
      // Both ports must be up before the first frames go, or a circulation dies at start.
      await sleep(1000);
      await front.command('start tx_first');
      await circulating(front, sw);
      await front.stopForwarding();
      await sr.pause();
      const [r, f] = [sr, front];
      return {
        switch: sw,
        learned,
        window: async () => {
          await r.resume();
          await f.startForwarding();
          try {
            await sleep(this.o.warmupSeconds * 1000);
            const a: PortStats[] = [await f.portStats(0), await f.portStats(1)];
            await sleep(this.o.seconds * 1000);
            const b: PortStats[] = [await f.portStats(0), await f.portStats(1)];
            return [0, 1].map((i) => (b[i].rxPackets - a[i].rxPackets) / (Number(b[i].at - a[i].at) / 1e9) / 1e6) as [number, number];
          } finally {
            await f.stopForwarding();
            await r.pause();
          }
        },
        close: async () => {
          await f.close();
          await r.close();
        },
      };
    } catch (e) {
      if (front) await front.close();
      if (sr) await sr.close();
      throw e;
    }
  }
}

export interface G2gCase {
  size: number;
  ports: number;
  macs: number;
  /** median MAC table entries when the traffic started */
  learned: Partial<Record<Switch, number>>;
  mpps: Record<Switch, number | null>;
  vsDpdk: RatioSummary;
  vsOvs: RatioSummary;
  /** the bridge against the wire (target >= 0.9) and against OVS-DPDK NORMAL (target >= 1.2) */
  bridgeVsWire: RatioSummary;
  bridgeVsOvs: RatioSummary;
}

export interface G2gResult {
  startedAt: string;
  host: string;
  dpdk: string;
  load: number[];
  skipped: Partial<Record<Switch, string>>;
  samples: Sample[];
  cases: G2gCase[];
}

export async function runG2g(o: G2gOptions, log: (s: string) => void): Promise<G2gResult> {
  const startedAt = new Date().toISOString();
  const skipped: Partial<Record<Switch, string>> = {};
  const switches = o.switches.filter((s) => {
    const why = unavailable(s);
    if (why) skipped[s] = why;
    return !why;
  });
  // All of a case's rigs are up at once: a front end's 128 MiB each, OVS's 512 and the DPDK switch's 256.
  const needMb = 128 * switches.length + (switches.includes('ovs') ? 512 : 0) + (switches.includes('dpdk') ? 256 : 0);
  if (freeHugepages() * 2 < needMb)
    log(`warning: ${freeHugepages()} free 2 MiB hugepages; these switches and their front ends need about ${needMb} MiB`);
  const g = new G2g(o, log);
  const samples: Sample[] = [];
  const cases: G2gCase[] = [];
  for (const size of o.sizes)
    for (const cell of o.cells) {
      const where = o.cells.length > 1 ? ` ${cell.ports} ports ${cell.macs} MACs` : '';
      const at = (sw: Switch, round: number) => ({ switch: sw, size, ports: cell.ports, macs: cell.macs, round });
      const rigs = new Map<Switch, Rig>();
      const failed = new Map<Switch, string>();
      const fail = (sw: Switch, e: unknown): void => {
        failed.set(sw, e instanceof Error ? e.message.split('\n')[0] : String(e));
        log(`${size} B${where} ${sw}: failed: ${failed.get(sw)}`);
      };
      try {
        for (const sw of switches) {
          // A circulation that lost a direction at start is set up again from nothing, so that every rig
          // starts with the same frames in flight.
          for (let attempt = 1; !rigs.has(sw) && !failed.has(sw); attempt++) {
            try {
              rigs.set(sw, await g.rig(sw, size, cell));
            } catch (e) {
              if (e instanceof OneWay && attempt < 3) log(`${size} B${where} ${sw}: ${e.message}; setting it up again`);
              else fail(sw, e);
            }
          }
        }
        for (let round = 0; round < o.rounds; round++) {
          const order = switches.map((_, i) => switches[(i + round) % switches.length]);
          for (const sw of order) {
            const rig = rigs.get(sw);
            if (!rig) {
              samples.push({ ...at(sw, round), mpps: null, error: failed.get(sw) });
              continue;
            }
            try {
              const per = await rig.window();
              const s: Sample = { ...at(sw, round), learned: rig.learned, mpps: per[0] + per[1], perPort: per };
              samples.push(s);
              const table = s.learned === undefined ? '' : `, ${s.learned} MACs in its table`;
              log(
                `${size} B${where} round ${round + 1} ${sw}: ${s.mpps!.toFixed(2)} Mpps (ports ${per.map((x) => x.toFixed(2)).join(' + ')}${table})`,
              );
            } catch (e) {
              // A rig that failed mid-window is not trusted again in this case.
              fail(sw, e);
              samples.push({ ...at(sw, round), mpps: null, error: failed.get(sw) });
              rigs.delete(sw);
              await rig.close().catch(() => undefined);
            }
          }
        }
      } finally {
        for (const rig of rigs.values()) await rig.close().catch(() => undefined);
      }
      cases.push(summarizeCase(samples, size, cell, o.rounds));
    }
  let dpdk = '';
  try {
    dpdk = dpdkVersion();
  } catch {
    dpdk = 'unknown';
  }
  return { startedAt, host: os.hostname(), dpdk, load: os.loadavg(), skipped, samples, cases };
}

function summarizeCase(samples: Sample[], size: number, cell: G2gCell, nRounds: number): G2gCase {
  const mine = samples.filter((s) => s.size === size && s.ports === cell.ports && s.macs === cell.macs);
  const of = (sw: Switch, round: number): number | null => mine.find((s) => s.round === round && s.switch === sw)?.mpps ?? null;
  const rounds = [...Array(nRounds).keys()];
  const per = (other: Switch, ours: Switch = 'ours'): RatioSummary =>
    summarize(
      rounds.map((r) => {
        const a = of(ours, r),
          b = of(other, r);
        return a !== null && b !== null && b > 0 ? a / b : null;
      }),
    );
  const med = (sw: Switch): number | null => median(rounds.map((r) => of(sw, r)).filter((x): x is number => x !== null));
  const learned: Partial<Record<Switch, number>> = {};
  for (const sw of ['bridge', 'ovs'] as const) {
    const m = median(mine.filter((s) => s.switch === sw && s.learned !== undefined).map((s) => s.learned!));
    if (m !== null) learned[sw] = m;
  }
  return {
    size,
    ports: cell.ports,
    macs: cell.macs,
    learned,
    mpps: { ours: med('ours'), bridge: med('bridge'), dpdk: med('dpdk'), ovs: med('ovs') },
    vsDpdk: per('dpdk'),
    vsOvs: per('ovs'),
    bridgeVsWire: per('ours', 'bridge'),
    bridgeVsOvs: per('ovs', 'bridge'),
  };
}

export function formatG2g(r: G2gResult): string {
  const rows = [
    [
      'size',
      'ports',
      'MACs',
      'wire Mpps',
      'bridge Mpps',
      'dpdk io Mpps',
      'ovs NORMAL Mpps',
      'wire/dpdk',
      'wire/ovs',
      'bridge/wire',
      'bridge/ovs',
      'MACs in table bridge/ovs',
    ],
  ];
  const f = (x: number | null): string => (x === null ? '-' : x.toFixed(2));
  for (const c of r.cases)
    rows.push([
      String(c.size),
      String(c.ports),
      String(c.macs),
      f(c.mpps.ours),
      f(c.mpps.bridge),
      f(c.mpps.dpdk),
      f(c.mpps.ovs),
      formatSummary(c.vsDpdk),
      formatSummary(c.vsOvs),
      formatSummary(c.bridgeVsWire),
      formatSummary(c.bridgeVsOvs),
      `${c.learned.bridge ?? '-'}/${c.learned.ovs ?? '-'}`,
    ]);
  const w = rows[0].map((_, i) => Math.max(...rows.map((x) => x[i].length)));
  const lines = rows.map((x) => x.map((v, i) => v.padEnd(w[i])).join('  '));
  for (const [s, why] of Object.entries(r.skipped)) lines.push(`${s} skipped: ${why}`);
  for (const c of r.cases)
    for (const [ours, other, s, target] of [
      ['the wire', 'DPDK testpmd io', c.vsDpdk, 1],
      ['the wire', 'OVS-DPDK NORMAL', c.vsOvs, 1],
      ['the bridge', 'the wire', c.bridgeVsWire, 0.9],
      ['the bridge', 'OVS-DPDK NORMAL', c.bridgeVsOvs, 1.2],
    ] as const)
      if (s.median !== null && s.median < target)
        lines.push(
          `BELOW TARGET (${target}x): ${c.size} B guest to guest, ${c.ports} ports, ${c.macs} MACs: ${ours} is ${s.median.toFixed(2)}x ${other}`,
        );
  // Flat: the bridge in every cell against itself with two ports and one MAC (same size), as a rate and
  // as bridge/wire. The rates of cells minutes apart carry the machine's drift (the wire's own median moves
  // as much between cells); bridge/wire is the bridge's cost against the wire of the same rounds.
  for (const c of r.cases) {
    const base = r.cases.find((b) => b.size === c.size && b.ports === 2 && b.macs === 1);
    if (!base || base === c || !base.mpps.bridge || c.mpps.bridge === null) continue;
    const rel = ratio(c.bridgeVsWire.median, base.bridgeVsWire.median);
    lines.push(
      `flat: ${c.size} B bridge at ${c.ports} ports, ${c.macs} MACs: rate ${(c.mpps.bridge / base.mpps.bridge).toFixed(2)}x its rate at 2 ports, 1 MAC; bridge/wire ${rel === null ? '-' : rel.toFixed(2)}x`,
    );
  }
  return lines.join('\n');
}

export async function g2gBenchMain(argv: string[]): Promise<number> {
  const usage =
    'usage: npm run bench -- g2g [--rounds N] [--seconds S] [--warmup S] [--sizes 64,1518] [--switches ours,bridge,dpdk,ovs]\n' +
    '                            [--ports 2,16,64] [--macs 1,1000,100000] [--no-json] [--verbose]\n' +
    '  --ports, --macs: ports on the bridge (and on OVS), MACs each has learned before the traffic; every pair is a case\n';
  return g2gMain(argv, usage, G2G_DEFAULTS, 'g2g');
}

/**
 * `npm run bench -- bridge`: the g2g setup with the bridge, the wire and OVS-DPDK's NORMAL bridge side by
 * side, as the bridge's ports and learned MACs grow (`--engine` for the in-process cost benchmark).
 */
export async function bridgeG2gMain(argv: string[]): Promise<number> {
  const usage =
    'usage: npm run bench -- bridge [--ports 2,16,64] [--macs 1,1000,100000] [--rounds N] [--seconds S] [--warmup S] [--sizes 64]\n' +
    '                               [--switches ours,bridge,ovs] [--no-json] [--verbose]\n' +
    '       npm run bench -- bridge --engine [--help]   (gen -> sink in one process: what the bridge costs over the wire)\n';
  const cells: G2gCell[] = [];
  for (const ports of [2, 16, 64]) for (const macs of [1, 1000, 100_000]) cells.push({ ports, macs });
  return g2gMain(argv, usage, { ...G2G_DEFAULTS, sizes: [64], switches: ['ours', 'bridge', 'ovs'], cells }, 'bridge');
}

async function g2gMain(argv: string[], usage: string, defaults: G2gOptions, name: string): Promise<number> {
  const { parseArgs } = await import('node:util');
  let o: G2gOptions;
  try {
    const { values } = parseArgs({
      args: argv,
      options: {
        rounds: { type: 'string' },
        seconds: { type: 'string' },
        warmup: { type: 'string' },
        sizes: { type: 'string' },
        switches: { type: 'string' },
        ports: { type: 'string' },
        macs: { type: 'string' },
        'no-json': { type: 'boolean' },
        verbose: { type: 'boolean' },
        help: { type: 'boolean' },
      },
      strict: true,
    });
    if (values.help) {
      process.stdout.write(usage);
      return 0;
    }
    o = { ...defaults };
    const num = (flag: string, v: string, lo: number, hi: number, integer: boolean): number => {
      const n = Number(v);
      if (!Number.isFinite(n) || n < lo || n > hi || (integer && !Number.isInteger(n)))
        throw new Error(`${flag}: expected ${integer ? 'a whole number' : 'a number'} ${lo}..${hi}, got "${v}"`);
      return n;
    };
    if (values.rounds !== undefined) o.rounds = num('--rounds', values.rounds, 1, 100, true);
    if (values.seconds !== undefined) o.seconds = num('--seconds', values.seconds, 0.5, 600, false);
    if (values.warmup !== undefined) o.warmupSeconds = num('--warmup', values.warmup, 0, 600, false);
    // One segment in testpmd's default 2048-byte mbuf.
    if (values.sizes !== undefined) o.sizes = values.sizes.split(',').map((s) => num('--sizes', s, 60, 1518, true));
    if (values.switches !== undefined)
      o.switches = values.switches.split(',').map((s) => {
        if (!SWITCHES.includes(s as Switch)) throw new Error(`--switches: expected some of ${SWITCHES.join(', ')}, got "${s}"`);
        return s as Switch;
      });
    if (values.ports !== undefined || values.macs !== undefined) {
      const ports = values.ports?.split(',').map((s) => num('--ports', s, 2, 256, true)) ?? [...new Set(o.cells.map((c) => c.ports))];
      const macs = values.macs?.split(',').map((s) => num('--macs', s, 1, native.limits.maxBridgeMacs / 2, true)) ?? [
        ...new Set(o.cells.map((c) => c.macs)),
      ];
      o.cells = ports.flatMap((p) => macs.map((m) => ({ ports: p, macs: m })));
    }
    if (values['no-json']) o.resultsDir = null;
    if (values.verbose) o.verbose = true;
  } catch (e) {
    process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n${usage}`);
    return 2;
  }
  const r = await runG2g(o, console.log);
  console.log('');
  console.log(formatG2g(r));
  if (o.resultsDir) {
    fs.mkdirSync(o.resultsDir, { recursive: true });
    const file = path.join(o.resultsDir, `${name}-${r.startedAt.replace(/[:.]/g, '-')}.json`);
    fs.writeFileSync(file, `${JSON.stringify({ options: o, ...r }, null, 2)}\n`);
    console.log(`\nresults: ${file}`);
  }
  return 0;
}
