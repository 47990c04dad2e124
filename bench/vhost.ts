// `npm run bench -- vhost`: vhostwire's vhost-user data path against DPDK's vhost PMD, side by side in
// one run, with DPDK's virtio-user (dpdk-testpmd) as the front end in every case:
//
//   guest-tx (dequeue):  virtio-user txonly -> (a) vhostwire serve: vhost-user port wired to a sink
//                                              (b) DPDK vhost PMD, rxonly
//   guest-rx (enqueue):  virtio-user rxonly <- (c) vhostwire serve: a gen wired to a vhost-user port
//                                              (d) DPDK vhost PMD, txonly
//
// The rate is always the front end's, as testpmd reports it (Tx-pps for guest-tx, Rx-pps for guest-rx),
// so both implementations are measured the same way; the backend's own counters (our /metrics, the DPDK
// backend's port stats) are a cross-check. The machines are noisy, so implementations alternate round
// by round (ours first on even rounds, DPDK first on odd ones), the ratio is taken per round and the
// median ratio is what we quote.
//
// CPU placement on 2 cores: front end -l 0,1 --main-lcore 1 (forwards on core 0); DPDK backend -l 0,1
// --main-lcore 0 (forwards on core 1); our PMD --pmd-cores 1.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { Testpmd, dpdkVersion, findTestpmd, freeHugepages, type PortStats } from './testpmd';
import { ROOT, ServeProcess, metric, serveUnavailable, sleep } from './serve';
import { median, summarize } from './stats';
import { barChartSvg } from './svg';

export type Direction = 'guest-tx' | 'guest-rx';
export type Impl = 'ours' | 'dpdk';

export interface VhostBenchOptions {
  rounds: number;
  /** measurement window per run */
  seconds: number;
  /** settling time after forwarding starts, before the window */
  warmupSeconds: number;
  sizes: number[];
  directions: Direction[];
  /** skip our implementation even when it is built (DPDK vs nothing) */
  dpdkOnly: boolean;
  /** where the JSON goes; null: do not write */
  resultsDir: string | null;
  verbose: boolean;
  frontLcores: string;
  frontMainLcore: number;
  backLcores: string;
  backMainLcore: number;
  pmdCores: string;
}

export const DEFAULTS: VhostBenchOptions = {
  rounds: 5,
  seconds: 3,
  warmupSeconds: 1,
  sizes: [64, 256, 512, 1518],
  directions: ['guest-tx', 'guest-rx'],
  dpdkOnly: false,
  resultsDir: path.join(ROOT, 'bench', 'results'),
  verbose: false,
  frontLcores: '0,1',
  frontMainLcore: 1,
  backLcores: '0,1',
  backMainLcore: 0,
  pmdCores: '1',
};

export interface RunResult {
  /** packets/s the front end reported (testpmd's Tx-pps or Rx-pps over the window) */
  pps: number;
  /** the same from the front end's packet counter over the window, by our clock */
  frontCounterPps: number;
  /** packets/s the backend counted (our /metrics, or the DPDK backend's port stats) */
  backendPps: number;
  /** packets the front end moved in the window */
  packets: number;
  windowSeconds: number;
  /**
   * Backend drops in the window (ours: /metrics drops on the vhost-user port; DPDK: not counted). For
   * guest-rx these are the unlimited gen's packets the guest had no room for (no_buffer).
   */
  backendDrops?: number;
}

export interface RoundResult {
  round: number;
  order: Impl[];
  ours: RunResult | null;
  dpdk: RunResult | null;
  oursError?: string;
  dpdkError?: string;
  /** ours.pps / dpdk.pps */
  ratio: number | null;
}

export interface CaseSummary {
  oursMpps: number | null;
  dpdkMpps: number | null;
  /** median of the per-round ratios */
  ratio: number | null;
  ratioMin: number | null;
  ratioMax: number | null;
  rounds: number;
}

export interface CaseResult {
  direction: Direction;
  size: number;
  rounds: RoundResult[];
  summary: CaseSummary;
}

export interface VhostBenchResult {
  benchmark: 'vhost';
  startedAt: string;
  finishedAt: string;
  options: Omit<VhostBenchOptions, 'resultsDir' | 'verbose'>;
  host: {
    hostname: string;
    cpus: number;
    cpuModel: string;
    kernel: string;
    node: string;
    dpdk: string;
    gitCommit: string;
    loadavgStart: number[];
    loadavgEnd: number[];
  };
  ours: { ran: boolean; reason?: string };
  cases: CaseResult[];
}

const DIRECTION_LABEL: Record<Direction, string> = {
  'guest-tx': 'guest TX -> backend (dequeue)',
  'guest-rx': 'backend -> guest RX (enqueue)',
};

let socketCounter = 0;
function socketPath(): string {
  return path.join(os.tmpdir(), `vhostwire-bench-${process.pid}-${++socketCounter}.sock`);
}

function rmSocket(p: string): void {
  fs.rmSync(p, { force: true });
}

/**
 * One implementation set up for one case, kept alive for all of the case's rounds and switched on only
 * for its own windows, so that the two sides of a round are measured seconds apart rather than minutes.
 * While a rig is paused it uses no CPU: testpmd's forwarding lcores block when forwarding is stopped, and
 * our serve (whose bypass PMD would otherwise spin on core 1) is stopped with SIGSTOP.
 */
interface Rig {
  readonly impl: Impl;
  /** starts forwarding */
  resume(): Promise<void>;
  /** stops forwarding; nothing of the rig runs afterwards */
  pause(): Promise<void>;
  /** the front end's packet rate over one window (forwarding must be on) */
  window(): Promise<RunResult>;
  close(): Promise<void>;
}

class Bench {
  constructor(
    private readonly o: VhostBenchOptions,
    private readonly log: (line: string) => void,
  ) {}

  private verbose = (who: string) => (this.o.verbose ? (l: string) => this.log(`  [${who}] ${l}`) : undefined);

  private frontEnd(sock: string, dir: Direction, size: number): Promise<Testpmd> {
    return Testpmd.start({
      name: 'virtio-user',
      lcores: this.o.frontLcores,
      mainLcore: this.o.frontMainLcore,
      vdev: `net_virtio_user0,path=${sock},queues=1`,
      singleFileSegments: true,
      forwardMode: dir === 'guest-tx' ? 'txonly' : 'rxonly',
      txpkts: dir === 'guest-tx' ? size : undefined,
      log: this.verbose('virtio-user'),
    });
  }

  /**
   * The common measurement: after warm-up, `show port stats` on the front end twice, `seconds` apart
   * (testpmd's pps figures cover the time between the two), with the backend's counter read just
   * outside the window on both ends.
   */
  private async window(front: Testpmd, dir: Direction, backendCount: () => Promise<number>): Promise<RunResult> {
    await sleep(this.o.warmupSeconds * 1000);
    const tb0 = process.hrtime.bigint();
    const b0 = await backendCount();
    const f0 = await front.portStats();
    await sleep(this.o.seconds * 1000);
    const f1 = await front.portStats();
    const b1 = await backendCount();
    const tb1 = process.hrtime.bigint();
    const count = (s: PortStats): number => (dir === 'guest-tx' ? s.txPackets : s.rxPackets);
    const fSeconds = Number(f1.at - f0.at) / 1e9;
    return {
      pps: dir === 'guest-tx' ? f1.txPps : f1.rxPps,
      frontCounterPps: (count(f1) - count(f0)) / fSeconds,
      backendPps: (b1 - b0) / (Number(tb1 - tb0) / 1e9),
      packets: count(f1) - count(f0),
      windowSeconds: fSeconds,
    };
  }

  /** (b)/(d): DPDK's vhost PMD (rxonly for guest-tx, txonly for guest-rx) and a virtio-user front end. */
  async dpdk(dir: Direction, size: number): Promise<Rig> {
    const sock = socketPath();
    let back: Testpmd | undefined;
    let front: Testpmd | undefined;
    const close = async (): Promise<void> => {
      if (front) await front.close();
      if (back) await back.close();
      rmSocket(sock);
    };
    try {
      back = await Testpmd.start({
        name: 'dpdk-vhost',
        lcores: this.o.backLcores,
        mainLcore: this.o.backMainLcore,
        vdev: `net_vhost0,iface=${sock},queues=1`,
        forwardMode: dir === 'guest-tx' ? 'rxonly' : 'txonly',
        txpkts: dir === 'guest-rx' ? size : undefined,
        log: this.verbose('dpdk-vhost'),
      });
      front = await this.frontEnd(sock, dir, size);
    } catch (e) {
      await close();
      throw e;
    }
    const b = back;
    const f = front;
    return {
      impl: 'dpdk',
      resume: async () => {
        await b.startForwarding();
        await f.startForwarding();
      },
      pause: async () => {
        await f.stopForwarding();
        await b.stopForwarding();
      },
      window: () =>
        this.window(f, dir, async () => {
          const s = await b.portStats();
          return dir === 'guest-tx' ? s.rxPackets : s.txPackets;
        }),
      close,
    };
  }

  /** (a)/(c): vhostwire serve (vm0 wired to a sink, or a gen wired to vm0) and a virtio-user front end. */
  async ours(dir: Direction, size: number): Promise<Rig> {
    const sock = socketPath();
    const ports =
      dir === 'guest-tx'
        ? ['--vhost-user', `vm0=${sock}`, '--sink', 'sink0', '--wire', 'vm0=sink0']
        : ['--vhost-user', `vm0=${sock}`, '--gen', `gen0,size=${size}`, '--wire', 'gen0=vm0'];
    let serve: ServeProcess | undefined;
    let front: Testpmd | undefined;
    const close = async (): Promise<void> => {
      if (front) await front.close();
      if (serve) {
        const e = await serve.stop();
        if ((e.code !== 0 || e.killed) && this.o.verbose)
          this.log(`  [vhostwire] exited ${e.signal ?? `code ${e.code}`}${e.killed ? ' (SIGKILL after SIGTERM)' : ''}`);
      }
      rmSocket(sock);
    };
    try {
      serve = await ServeProcess.start({
        args: [...ports, '--mode', 'bypass', '--pmd-cores', this.o.pmdCores],
        log: this.verbose('vhostwire'),
      });
      front = await this.frontEnd(sock, dir, size);
      await serve.waitConnected('vm0');
      serve.suspend();
    } catch (e) {
      await close();
      throw e;
    }
    const s = serve;
    const f = front;
    const family = dir === 'guest-tx' ? 'vhostwire_port_receive_packets_total' : 'vhostwire_port_transmit_packets_total';
    return {
      impl: 'ours',
      resume: async () => {
        s.continue();
        await f.startForwarding();
      },
      pause: async () => {
        await f.stopForwarding();
        // Let the PMD drain what the front end left in its ring before freezing it.
        await sleep(50);
        s.suspend();
      },
      window: async () => {
        let drops0 = 0;
        let drops = 0;
        let first = true;
        const r = await this.window(f, dir, async () => {
          const m = await s.metrics();
          const d = metric(m, 'vhostwire_port_drops_total', { port: 'vm0' });
          if (first) drops0 = d;
          else drops = d - drops0;
          first = false;
          return metric(m, family, { port: 'vm0' });
        });
        r.backendDrops = drops;
        return r;
      },
      close,
    };
  }
}

function firstLines(e: unknown, n: number): string {
  return (e instanceof Error ? e.message : String(e)).split('\n').slice(0, n).join('\n      ');
}

function fmtMpps(pps: number | null | undefined): string {
  return pps === null || pps === undefined ? '-' : (pps / 1e6).toFixed(2);
}

function fmtRatio(r: number | null): string {
  return r === null ? '-' : r.toFixed(2);
}

function gitCommit(): string {
  const r = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' });
  if (r.status !== 0) return '';
  const dirty = spawnSync('git', ['status', '--porcelain'], { cwd: ROOT, encoding: 'utf8' }).stdout.trim() !== '';
  return r.stdout.trim() + (dirty ? '+dirty' : '');
}

function crossCheck(impl: Impl, r: RunResult, log: (l: string) => void): void {
  const off = Math.abs(r.backendPps - r.pps) / Math.max(r.pps, 1);
  if (off > 0.1)
    log(
      `    note: ${impl} backend counted ${fmtMpps(r.backendPps)} Mpps vs the front end's ${fmtMpps(r.pps)} Mpps (${(off * 100).toFixed(0)}% apart)`,
    );
}

export function formatTable(res: VhostBenchResult): string {
  const rows: string[][] = [['direction', 'size', 'ours Mpps', 'DPDK Mpps', 'ours/DPDK', 'min..max', 'rounds']];
  for (const c of res.cases) {
    const s = c.summary;
    rows.push([
      DIRECTION_LABEL[c.direction],
      String(c.size),
      fmtMpps(s.oursMpps),
      fmtMpps(s.dpdkMpps),
      fmtRatio(s.ratio),
      s.ratioMin === null ? '-' : `${fmtRatio(s.ratioMin)}..${fmtRatio(s.ratioMax)}`,
      String(s.rounds),
    ]);
  }
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  const line = (r: string[]): string => r.map((x, i) => (i <= 0 ? x.padEnd(widths[i]) : x.padStart(widths[i]))).join('  ');
  const out = [line(rows[0]), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.slice(1).map(line)];
  return out.join('\n');
}

export function verdicts(res: VhostBenchResult): string[] {
  const out: string[] = [];
  for (const c of res.cases) {
    const r = c.summary.ratio;
    const what = `${DIRECTION_LABEL[c.direction]}, ${c.size} bytes`;
    if (r === null) out.push(`${what}: no ratio (${res.ours.ran ? 'no round produced both figures' : 'ours did not run'})`);
    else if (r < 1)
      out.push(`BELOW TARGET: ${what}: ours is slower than DPDK, ratio ${r.toFixed(2)} < 1.0 (median of ${c.summary.rounds} rounds)`);
    else out.push(`ok: ${what}: ratio ${r.toFixed(2)} >= 1.0`);
  }
  return out;
}

export async function runVhostBench(
  o: VhostBenchOptions,
  log: (line: string) => void = console.log,
  stopRequested: () => boolean = () => false,
): Promise<VhostBenchResult> {
  if (!findTestpmd())
    throw new Error(
      'dpdk-testpmd is not installed (Debian 12: apt-get install dpdk-dev); the benchmark needs it for the front end and the reference backend',
    );
  const pages = freeHugepages();
  if (pages < 256)
    throw new Error(
      `only ${pages} free 2 MiB hugepages; two testpmd processes need 256 (-m 256 each). Set up: echo 1024 > /proc/sys/vm/nr_hugepages; mkdir -p /dev/hugepages; mount -t hugetlbfs none /dev/hugepages`,
    );
  const unavailable = o.dpdkOnly ? 'skipped (--dpdk-only)' : serveUnavailable();
  const res: VhostBenchResult = {
    benchmark: 'vhost',
    startedAt: new Date().toISOString(),
    finishedAt: '',
    options: {
      rounds: o.rounds,
      seconds: o.seconds,
      warmupSeconds: o.warmupSeconds,
      sizes: o.sizes,
      directions: o.directions,
      dpdkOnly: o.dpdkOnly,
      frontLcores: o.frontLcores,
      frontMainLcore: o.frontMainLcore,
      backLcores: o.backLcores,
      backMainLcore: o.backMainLcore,
      pmdCores: o.pmdCores,
    },
    host: {
      hostname: os.hostname(),
      cpus: os.cpus().length,
      cpuModel: os.cpus()[0]?.model ?? '',
      kernel: os.release(),
      node: process.version,
      dpdk: dpdkVersion(),
      gitCommit: gitCommit(),
      loadavgStart: os.loadavg(),
      loadavgEnd: [],
    },
    ours: unavailable ? { ran: false, reason: unavailable } : { ran: true },
    cases: [],
  };
  if (unavailable) log(`vhostwire: ${unavailable}; measuring DPDK only`);
  log(
    `vhost benchmark: ${o.rounds} rounds x ${o.seconds} s (+${o.warmupSeconds} s warm-up), sizes ${o.sizes.join(',')}; front end -l ${o.frontLcores} --main-lcore ${o.frontMainLcore}, DPDK backend -l ${o.backLcores} --main-lcore ${o.backMainLcore}, our PMD --pmd-cores ${o.pmdCores}`,
  );
  const bench = new Bench(o, log);
  const impls: Impl[] = unavailable ? ['dpdk'] : ['ours', 'dpdk'];
  let oursRan = false;
  for (const direction of o.directions) {
    for (const size of o.sizes) {
      if (stopRequested()) break;
      log(`${DIRECTION_LABEL[direction]}, ${size} bytes`);
      const setupErrors = new Map<Impl, string>();
      const c: CaseResult = {
        direction,
        size,
        rounds: [],
        summary: { oursMpps: null, dpdkMpps: null, ratio: null, ratioMin: null, ratioMax: null, rounds: 0 },
      };
      const rigs = new Map<Impl, Rig>();
      try {
        for (const impl of impls) {
          try {
            rigs.set(impl, impl === 'ours' ? await bench.ours(direction, size) : await bench.dpdk(direction, size));
          } catch (e) {
            log(`    ${impl}: could not set up: ${firstLines(e, o.verbose ? 40 : 3)}`);
            setupErrors.set(impl, e instanceof Error ? e.message : String(e));
          }
        }
        for (let round = 0; round < o.rounds && !stopRequested(); round++) {
          const order: Impl[] = impls.length === 1 ? impls : round % 2 === 0 ? ['ours', 'dpdk'] : ['dpdk', 'ours'];
          const rr: RoundResult = { round, order, ours: null, dpdk: null, ratio: null };
          for (const impl of order) {
            const rig = rigs.get(impl);
            const fail = (msg: string): void => {
              if (impl === 'ours') rr.oursError = msg;
              else rr.dpdkError = msg;
            };
            if (!rig) {
              fail(`not set up: ${setupErrors.get(impl) ?? 'unknown'}`);
              continue;
            }
            try {
              await rig.resume();
              const r = await rig.window();
              await rig.pause();
              rr[impl] = r;
              if (impl === 'ours') oursRan = true;
              crossCheck(impl, r, log);
              if (o.verbose)
                log(
                  `    ${impl}: front end ${fmtMpps(r.pps)} Mpps (testpmd), ${fmtMpps(r.frontCounterPps)} Mpps (its counter), backend ${fmtMpps(r.backendPps)} Mpps, ${r.packets} packets in ${r.windowSeconds.toFixed(2)} s`,
                );
            } catch (e) {
              fail(e instanceof Error ? e.message : String(e));
              log(`    ${impl} failed: ${firstLines(e, o.verbose ? 40 : 3)}`);
              // A rig that failed mid-window is not trusted again in this case.
              rigs.delete(impl);
              setupErrors.set(impl, 'failed in an earlier round');
              await rig.close().catch(() => undefined);
            }
          }
          if (rr.ours && rr.dpdk && rr.dpdk.pps > 0) rr.ratio = rr.ours.pps / rr.dpdk.pps;
          // Guest TX: anything we drop is a loss the front end does not see. (Guest RX: an unlimited gen
          // overdrives the guest on purpose; those no_buffer drops are in the JSON.)
          const drops = direction === 'guest-tx' && rr.ours?.backendDrops ? ` (ours dropped ${rr.ours.backendDrops} in the window)` : '';
          log(
            `  round ${round + 1}/${o.rounds}: ours ${fmtMpps(rr.ours?.pps)} Mpps, DPDK ${fmtMpps(rr.dpdk?.pps)} Mpps, ratio ${fmtRatio(rr.ratio)}${drops}`,
          );
          c.rounds.push(rr);
        }
      } finally {
        for (const rig of rigs.values()) await rig.close().catch(() => undefined);
      }
      const ratios = summarize(c.rounds.map((r) => r.ratio));
      c.summary = {
        oursMpps: median(c.rounds.flatMap((r) => (r.ours ? [r.ours.pps] : []))),
        dpdkMpps: median(c.rounds.flatMap((r) => (r.dpdk ? [r.dpdk.pps] : []))),
        ratio: ratios.median,
        ratioMin: ratios.min,
        ratioMax: ratios.max,
        rounds: ratios.n,
      };
      res.cases.push(c);
    }
  }
  if (!unavailable && !oursRan) res.ours = { ran: false, reason: 'every run of ours failed (see oursError in the rounds)' };
  res.finishedAt = new Date().toISOString();
  res.host.loadavgEnd = os.loadavg();
  return res;
}

/** Median Mpps by frame size, ours and DPDK side by side, one pair of series per direction. */
export function chartSvg(res: VhostBenchResult, command: string): string {
  const sizes = [...new Set(res.cases.map((c) => c.size))].sort((a, b) => a - b);
  const directions = [...new Set(res.cases.map((c) => c.direction))];
  const short: Record<Direction, string> = { 'guest-tx': 'guest TX (dequeue)', 'guest-rx': 'guest RX (enqueue)' };
  const series = directions.flatMap((d) =>
    (['ours', 'dpdk'] as const).map((impl) => ({
      name: `${impl === 'ours' ? 'vhostwire' : 'DPDK vhost PMD'}, ${short[d]}`,
      values: sizes.map((size) => {
        const s = res.cases.find((c) => c.direction === d && c.size === size)?.summary;
        const pps = impl === 'ours' ? s?.oursMpps : s?.dpdkMpps;
        return pps === null || pps === undefined ? null : pps / 1e6;
      }),
    })),
  );
  return barChartSvg({
    title: 'vhost-user data path: vhostwire vs DPDK vhost PMD (front end: DPDK virtio-user)',
    subtitle: `${res.startedAt.slice(0, 16).replace('T', ' ')} UTC, ${command}, median of ${res.options.rounds} rounds, ${res.host.gitCommit}`,
    categories: sizes.map(String),
    categoryLabel: 'frame size (bytes)',
    valueLabel: 'Mpps',
    series,
  });
}

/** Writes vhost-<timestamp>.json and .svg; returns both paths. */
export function writeResult(res: VhostBenchResult, dir: string, command: string): string[] {
  fs.mkdirSync(dir, { recursive: true });
  const stamp = res.startedAt.replace(/[:.]/g, '-');
  const json = path.join(dir, `vhost-${stamp}.json`);
  fs.writeFileSync(json, `${JSON.stringify(res, null, 2)}\n`);
  const svg = path.join(dir, `vhost-${stamp}.svg`);
  fs.writeFileSync(svg, chartSvg(res, command));
  return [json, svg];
}
