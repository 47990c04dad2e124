// `npm run bench -- uplink`: our uplink against DPDK's socket PMDs, side by side in one run over one veth
// pair (issue 12, item 6). The front end is DPDK's virtio-user in dpdk-testpmd in every case; the backend
// between it and the veth's host end is, in turn:
//   ours-kernel     vhostwire serve --vhost-user vm0 --uplink up0=HOST --wire vm0=up0 --mode kernel
//   ours-bypass     the same in bypass mode (AF_XDP)
//   dpdk-af_packet  dpdk-testpmd, io forward between net_vhost0 and net_af_packet0 (qdisc_bypass=1)
//   dpdk-af_xdp     dpdk-testpmd, io forward between net_vhost0 and net_af_xdp0 (queue 0)
// Two directions (the pair's MTU raised so that the largest --sizes frame fits):
//   out  the front end transmits (txonly) into the backend, out of HOST; the rate is what the far end
//        of the pair, in a namespace of its own, counts as received (its rx_packets)
//   in   a generator in that namespace (dpdk-testpmd txonly on net_af_packet, qdisc_bypass=1) sends into
//        the far end; the rate is what the front end receives (rxonly, testpmd's count)
// The generator alone (nothing on HOST, the rate HOST's rx_packets count) is measured in every round
// too: an "in" rate near it says the generator, not the backend, was the limit, and the table says so.
// Placement on 2 cores: the front end forwards on core 0, every backend on core 1, the generator on
// core 0 beside the front end. Each run starts its processes afresh and stops them after; the order of
// the backends rotates round by round and ratios (ours-kernel / dpdk-af_packet, ours-bypass /
// dpdk-af_xdp) are taken per round, their median quoted. Targets: >= 1.0x for each, >= 1.5x for AF_XDP out.
// "out" also runs each socket without a guest (SOCKET_ALONE: our gen port wired to the uplink, testpmd
// txonly on the socket PMD): the most each socket type carries out of HOST here, so a ratio can be read
// against what its ceiling allows. Every backend's busiest thread (our PMD, testpmd's forwarding lcore)
// has its CPU time split into user and kernel over the window: where the kernel takes most of it, the
// socket's transmit path, not the code around it, is what the rate measures.
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { benchFlags, whole } from './args';
import { ROOT, ServeProcess, serveUnavailable, sleep } from './serve';
import { formatSummary, median, ratio, summarize, type RatioSummary } from './stats';
import { barChartSvg } from './svg';
import { Testpmd, dpdkVersion, findTestpmd, freeHugepages } from './testpmd';

const IMPLS = ['ours-kernel', 'dpdk-af_packet', 'ours-bypass', 'dpdk-af_xdp'] as const;
/** "out" only: each socket type with no guest behind it. */
const SOCKET_ALONE = ['ours-kernel-gen', 'dpdk-af_packet-txonly', 'ours-bypass-gen', 'dpdk-af_xdp-txonly'] as const;
type Backend = (typeof IMPLS)[number];
type Impl = Backend | (typeof SOCKET_ALONE)[number];
const isAlone = (i: Impl): boolean => (SOCKET_ALONE as readonly string[]).includes(i);
const ALONE_OF: Record<Backend, Impl> = {
  'ours-kernel': 'ours-kernel-gen',
  'dpdk-af_packet': 'dpdk-af_packet-txonly',
  'ours-bypass': 'ours-bypass-gen',
  'dpdk-af_xdp': 'dpdk-af_xdp-txonly',
};
type Dir = 'out' | 'in';
const PAIRS: Array<{ ours: Backend; dpdk: Backend; target: Record<Dir, number> }> = [
  { ours: 'ours-kernel', dpdk: 'dpdk-af_packet', target: { out: 1.0, in: 1.0 } },
  { ours: 'ours-bypass', dpdk: 'dpdk-af_xdp', target: { out: 1.5, in: 1.0 } },
];
/** An "in" rate at this share of the generator's own rate or more: the generator was the limit. */
const GENERATOR_BOUND = 0.9;

export interface UplinkBenchOptions {
  rounds: number;
  seconds: number;
  warmupSeconds: number;
  sizes: number[];
  directions: Dir[];
  resultsDir: string | null;
  verbose: boolean;
}

export const UPLINK_DEFAULTS: UplinkBenchOptions = {
  rounds: 3,
  seconds: 2,
  warmupSeconds: 1,
  sizes: [64],
  directions: ['out', 'in'],
  resultsDir: path.join(ROOT, 'bench', 'results'),
  verbose: false,
};

interface Round {
  /** Mpps per backend; null where the run failed (the reason in errors) */
  mpps: Partial<Record<Impl, number | null>>;
  /** "in" only: the generator alone */
  generatorMpps?: number;
  /** "in", ours only: the share of vm0's frames the front end took (Bench.run) */
  frontEndShare: Partial<Record<Impl, number>>;
  /** the share of its busiest thread's CPU time the backend spent in the kernel over the window */
  kernelShare: Partial<Record<Impl, number>>;
  errors: string[];
}

interface Case {
  dir: Dir;
  size: number;
  rounds: Round[];
  ratios: Array<{ ours: Backend; dpdk: Backend; target: number; summary: RatioSummary; perRound: Array<number | null> }>;
  medianMpps: Partial<Record<Impl | 'generator', number | null>>;
  medianKernelShare: Partial<Record<Impl, number | null>>;
}

/** utime and stime of each thread of a process, in clock ticks. */
function threadTimes(pid: number): Map<string, { user: number; sys: number }> {
  const out = new Map<string, { user: number; sys: number }>();
  let tids: string[] = [];
  try {
    tids = fs.readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tids) {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      // Fields after the command name, which is in parentheses and may hold spaces: utime is the 14th
      // field of the line, stime the 15th.
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      out.set(tid, { user: Number(f[11]), sys: Number(f[12]) });
    } catch {
      // The thread ended between the listing and the read.
    }
  }
  return out;
}

/** Of the thread that used the most CPU between two threadTimes() samples: the share in the kernel. */
function busiestKernelShare(before: ReturnType<typeof threadTimes>, after: ReturnType<typeof threadTimes>): number | undefined {
  let best: { user: number; sys: number } | undefined;
  for (const [tid, a] of after) {
    const b = before.get(tid) ?? { user: 0, sys: 0 };
    const d = { user: a.user - b.user, sys: a.sys - b.sys };
    if (!best || d.user + d.sys > best.user + best.sys) best = d;
  }
  return best && best.user + best.sys > 0 ? best.sys / (best.user + best.sys) : undefined;
}

const ip = (...args: string[]): string => execFileSync('ip', args, { encoding: 'utf8' });

/** The veth pair: HOST here for the backends, FAR in a namespace of its own. No addresses, no IPv6. */
class Veth {
  readonly ns = `vwbu${process.pid}`;
  readonly host = `vwbh${process.pid}`;
  readonly far = `vwbf${process.pid}`;
  readonly dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostwire-bench-uplink-'));
  /** runs dpdk-testpmd inside the namespace, as the same process (ip netns exec execs it) */
  readonly inNamespace = path.join(this.dir, 'testpmd-in-namespace');

  /** `largest`: the largest frame the run sends, Ethernet header included; the MTU is raised to carry it. */
  constructor(largest: number) {
    ip('netns', 'add', this.ns);
    try {
      ip('link', 'add', this.host, 'type', 'veth', 'peer', 'name', this.far, 'netns', this.ns);
      const mtu = String(Math.max(1500, largest - 14));
      ip('link', 'set', this.host, 'mtu', mtu);
      ip('-n', this.ns, 'link', 'set', this.far, 'mtu', mtu);
      execFileSync('sysctl', ['-qw', `net.ipv6.conf.${this.host}.disable_ipv6=1`]);
      ip('netns', 'exec', this.ns, 'sysctl', '-qw', `net.ipv6.conf.${this.far}.disable_ipv6=1`);
      ip('-n', this.ns, 'link', 'set', this.far, 'up');
      ip('link', 'set', this.host, 'up');
      fs.writeFileSync(this.inNamespace, `#!/bin/sh\nexec ip netns exec ${this.ns} ${findTestpmd()} "$@"\n`, { mode: 0o755 });
    } catch (e) {
      this.close();
      throw e;
    }
  }

  /** rx_packets of FAR (in its namespace) or of HOST */
  rxPackets(end: 'far' | 'host'): number {
    const args =
      end === 'far' ? ['-n', this.ns, '-s', '-j', 'link', 'show', 'dev', this.far] : ['-s', '-j', 'link', 'show', 'dev', this.host];
    return (JSON.parse(ip(...args)) as Array<{ stats64: { rx: { packets: number } } }>)[0].stats64.rx.packets;
  }

  sock(name: string): string {
    return path.join(this.dir, `${name}.sock`);
  }

  close(): void {
    spawnSync('ip', ['link', 'del', this.host], { stdio: 'ignore' });
    spawnSync('ip', ['netns', 'del', this.ns], { stdio: 'ignore' });
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

class Bench {
  constructor(
    private readonly o: UplinkBenchOptions,
    private readonly net: Veth,
    private readonly log: (line: string) => void,
  ) {}

  private verbose = (who: string) => (this.o.verbose ? (l: string) => this.log(`  [${who}] ${l}`) : undefined);

  /**
   * Starts the backend between the virtio-user socket and HOST, or (SOCKET_ALONE) a socket sending out
   * of HOST by itself, frames of `size` bytes; resolves with how to stop it and its pid.
   */
  private async backend(
    impl: Impl,
    sock: string,
    size: number,
  ): Promise<{ stop: () => Promise<unknown>; pid: number; serve?: ServeProcess }> {
    const alone = isAlone(impl);
    if (impl.startsWith('ours')) {
      const source = alone ? ['--gen', `vm0,size=${size}`] : ['--vhost-user', `vm0=${sock}`];
      const serve = await ServeProcess.start({
        args: [
          ...source,
          ...['--uplink', `up0=${this.net.host}`, '--wire', 'vm0=up0'],
          ...['--mode', impl.startsWith('ours-kernel') ? 'kernel' : 'bypass', '--pmd-cores', '1'],
        ],
        log: this.verbose(impl),
      });
      return { stop: () => serve.stop(), pid: serve.pid, serve };
    }
    const socket = impl.startsWith('dpdk-af_packet')
      ? `net_af_packet0,iface=${this.net.host},qdisc_bypass=1`
      : `net_af_xdp0,iface=${this.net.host},start_queue=0,queue_count=1`;
    const tp = await Testpmd.start({
      name: impl,
      lcores: '0,1',
      mainLcore: 0,
      ...(alone
        ? { vdev: socket, forwardMode: 'txonly' as const, txpkts: size }
        : { vdev: `net_vhost0,iface=${sock},queues=1`, extraEal: ['--vdev', socket], forwardMode: 'io' as const }),
      log: this.verbose(impl),
    });
    try {
      await tp.startForwarding();
    } catch (e) {
      await tp.close();
      throw e;
    }
    return { stop: () => tp.close(), pid: tp.pid };
  }

  private frontEnd(sock: string, dir: Dir, size: number): Promise<Testpmd> {
    return Testpmd.start({
      name: 'virtio-user',
      lcores: '0,1',
      mainLcore: 1,
      // A receiving front end descheduled for a moment must not drop for want of buffers: a long ring.
      vdev: `net_virtio_user0,path=${sock},queues=1,queue_size=4096`,
      singleFileSegments: true,
      forwardMode: dir === 'out' ? 'txonly' : 'rxonly',
      txpkts: dir === 'out' ? size : undefined,
      log: this.verbose('virtio-user'),
    });
  }

  private generator(size: number): Promise<Testpmd> {
    return Testpmd.start({
      name: 'generator',
      binary: this.net.inNamespace,
      lcores: '0,1',
      mainLcore: 1,
      vdev: `net_af_packet0,iface=${this.net.far},qdisc_bypass=1`,
      forwardMode: 'txonly',
      txpkts: size,
      log: this.verbose('generator'),
    });
  }

  /**
   * Mpps of a counter over the window, after the warm-up; with a pid, also the kernel's share of the CPU
   * time of that process's busiest thread over the same window.
   */
  private async rate(count: () => number | Promise<number>, pid?: number): Promise<{ mpps: number; kernelShare?: number }> {
    await sleep(this.o.warmupSeconds * 1000);
    const cpu0 = pid ? threadTimes(pid) : undefined;
    const [n0, t0] = [await count(), process.hrtime.bigint()];
    await sleep(this.o.seconds * 1000);
    const [n1, t1] = [await count(), process.hrtime.bigint()];
    const mpps = (n1 - n0) / (Number(t1 - t0) / 1e9) / 1e6;
    return cpu0 ? { mpps, kernelShare: busiestKernelShare(cpu0, threadTimes(pid!)) } : { mpps };
  }

  /**
   * One run of one backend in one direction: Mpps, and for ours receiving, the share of the frames vm0
   * had to give the front end that it took (the rest dropped for want of a receive buffer): under 1, the
   * front end, not the backend, set the rate.
   */
  async run(impl: Impl, dir: Dir, size: number): Promise<{ mpps: number; frontEndShare?: number; kernelShare?: number }> {
    const sock = this.net.sock(`vm-${impl}`);
    const stops: Array<() => Promise<unknown>> = [];
    try {
      const back = await this.backend(impl, sock, size);
      stops.push(back.stop);
      if (isAlone(impl)) return await this.rate(() => this.net.rxPackets('far'), back.pid);
      const front = await this.frontEnd(sock, dir, size);
      stops.push(() => front.close());
      await front.startForwarding();
      if (dir === 'out') return await this.rate(() => this.net.rxPackets('far'), back.pid);
      const gen = await this.generator(size);
      stops.push(() => gen.close());
      await gen.startForwarding();
      const res = await this.rate(async () => (await front.portStats()).rxPackets, back.pid);
      if (!back.serve) return res;
      const vm0 = (await back.serve.ports()).find((p) => p.name === 'vm0')?.counters[0] ?? {};
      const taken = vm0.TX_PACKETS ?? 0;
      const offered = taken + (vm0.DROP_TX_NO_BUFFER ?? 0);
      return offered ? { ...res, frontEndShare: taken / offered } : res;
    } finally {
      for (const stop of stops.reverse()) await stop();
      fs.rmSync(sock, { force: true });
    }
  }

  /** The generator with nothing on HOST: what HOST receives, Mpps. */
  async generatorAlone(size: number): Promise<number> {
    const gen = await this.generator(size);
    try {
      await gen.startForwarding();
      return (await this.rate(() => this.net.rxPackets('host'))).mpps;
    } finally {
      await gen.close();
    }
  }
}

export async function runUplinkBench(o: UplinkBenchOptions, log: (line: string) => void, interrupted: () => boolean): Promise<Case[]> {
  const missing = serveUnavailable() ?? (findTestpmd() ? null : 'dpdk-testpmd is not installed (Debian 12: apt-get install dpdk-dev)');
  if (missing) throw new Error(missing);
  if (freeHugepages() < 512) throw new Error(`needs 512 free 2 MiB hugepages for three testpmd processes, ${freeHugepages()} free`);
  const net = new Veth(Math.max(...o.sizes));
  const bench = new Bench(o, net, log);
  const cases: Case[] = [];
  try {
    for (const dir of o.directions)
      for (const size of o.sizes) {
        const rounds: Round[] = [];
        for (let r = 0; r < o.rounds && !interrupted(); r++) {
          const round: Round = { mpps: {}, frontEndShare: {}, kernelShare: {}, errors: [] };
          if (dir === 'in') round.generatorMpps = await bench.generatorAlone(size);
          // Rotate the order so that no backend always runs first (or last) in a round; each socket
          // alone runs next to the same socket behind a guest.
          const order = IMPLS.map((_, i) => IMPLS[(i + r) % IMPLS.length]).flatMap((i): Impl[] => (dir === 'out' ? [i, ALONE_OF[i]] : [i]));
          for (const impl of order) {
            try {
              const res = await bench.run(impl, dir, size);
              round.mpps[impl] = res.mpps;
              if (res.frontEndShare !== undefined) round.frontEndShare[impl] = res.frontEndShare;
              if (res.kernelShare !== undefined) round.kernelShare[impl] = res.kernelShare;
            } catch (e) {
              round.mpps[impl] = null;
              round.errors.push(`${impl}: ${(e as Error).message.split('\n')[0]}`);
            }
          }
          rounds.push(round);
          log(
            `${dir} ${size} B, round ${r + 1}: ` +
              order
                .map(
                  (i) =>
                    `${i} ${round.mpps[i]?.toFixed(3) ?? 'failed'}${i in round.kernelShare ? ` (${pct(round.kernelShare[i]!)} kernel)` : ''}`,
                )
                .join(', ') +
              (round.generatorMpps !== undefined ? `, generator alone ${round.generatorMpps.toFixed(3)}` : '') +
              ' Mpps' +
              Object.entries(round.frontEndShare)
                .map(([i, x]) => `; the front end took ${(x * 100).toFixed(0)}% of what ${i} offered it`)
                .join('') +
              (round.errors.length ? ` (${round.errors.join('; ')})` : ''),
          );
        }
        const medianMpps: Case['medianMpps'] = {};
        const medianKernelShare: Case['medianKernelShare'] = {};
        for (const i of dir === 'out' ? [...IMPLS, ...SOCKET_ALONE] : IMPLS) {
          medianMpps[i] = median(rounds.flatMap((x) => (typeof x.mpps[i] === 'number' ? [x.mpps[i]] : [])));
          medianKernelShare[i] = median(rounds.flatMap((x) => (typeof x.kernelShare[i] === 'number' ? [x.kernelShare[i]] : [])));
        }
        if (dir === 'in') medianMpps.generator = median(rounds.map((x) => x.generatorMpps!));
        cases.push({
          dir,
          size,
          rounds,
          medianMpps,
          medianKernelShare,
          ratios: PAIRS.map(({ ours, dpdk, target }) => {
            const perRound = rounds.map((x) => ratio(x.mpps[ours], x.mpps[dpdk]));
            return { ours, dpdk, target: target[dir], summary: summarize(perRound), perRound };
          }),
        });
      }
  } finally {
    net.close();
  }
  return cases;
}

const pct = (x: number): string => `${(x * 100).toFixed(0)}%`;

/** The table and one verdict line per ratio. */
export function report(cases: Case[]): string[] {
  const f = (v: number | null | undefined): string => (typeof v === 'number' ? v.toFixed(3) : '-');
  const lines = [
    ['direction', 'size', ...IMPLS, 'generator', 'ours-kernel/af_packet', 'ours-bypass/af_xdp'].join('\t'),
    ...cases.map((c) =>
      [
        c.dir,
        c.size,
        ...IMPLS.map((i) => f(c.medianMpps[i])),
        f(c.medianMpps.generator),
        ...c.ratios.map((r) => formatSummary(r.summary)),
      ].join('\t'),
    ),
    '',
  ];
  for (const c of cases) {
    for (const r of c.ratios) {
      const m = r.summary.median;
      const what = `${c.dir} ${c.size} B: ${r.ours}/${r.dpdk} ${m === null ? 'n/a' : m.toFixed(3)} (target >= ${r.target})`;
      lines.push(m !== null && m >= r.target ? `within target: ${what}` : `BELOW TARGET: ${what}`);
      const [oursAlone, dpdkAlone] = [c.medianMpps[ALONE_OF[r.ours]], c.medianMpps[ALONE_OF[r.dpdk]]];
      const [withGuest, dpdkWithGuest] = [c.medianMpps[r.ours], c.medianMpps[r.dpdk]];
      if (c.dir === 'out' && typeof oursAlone === 'number' && typeof dpdkAlone === 'number' && oursAlone > 0 && dpdkWithGuest) {
        const share = (i: Impl): string =>
          typeof c.medianKernelShare[i] === 'number' ? `, ${pct(c.medianKernelShare[i]!)} of its CPU in the kernel` : '';
        lines.push(
          `  ${c.dir} ${c.size} B, the socket with no guest: ${ALONE_OF[r.ours]} ${oursAlone.toFixed(3)} Mpps${share(ALONE_OF[r.ours])}, ` +
            `${ALONE_OF[r.dpdk]} ${dpdkAlone.toFixed(3)}${share(ALONE_OF[r.dpdk])}; behind the guest ${r.ours} reached ` +
            `${pct((withGuest ?? 0) / oursAlone)} of its socket alone${share(r.ours)}, so ${r.ours}/${r.dpdk} could reach ` +
            `${(oursAlone / dpdkWithGuest).toFixed(3)} if the guest cost nothing`,
        );
      }
    }
    const gen = c.medianMpps.generator;
    if (c.dir === 'in' && typeof gen === 'number' && gen > 0) {
      const bound = IMPLS.filter((i) => (c.medianMpps[i] ?? 0) >= GENERATOR_BOUND * gen);
      if (bound.length)
        lines.push(
          `in ${c.size} B: the generator (${gen.toFixed(3)} Mpps alone) was the limit for ${bound.join(', ')}: ratios there say only that both keep up with it`,
        );
      const shares = c.rounds.flatMap((x) => Object.values(x.frontEndShare));
      const share = median(shares);
      if (share !== null && share < GENERATOR_BOUND)
        lines.push(
          `in ${c.size} B: the front end took a median ${(share * 100).toFixed(0)}% of the frames ours offered it (the rest: no_buffer drops at vm0): the front end set the "in" rates, not the backends`,
        );
    }
  }
  return lines;
}

export function writeResults(cases: Case[], o: UplinkBenchOptions, command: string): string[] {
  const dir = o.resultsDir!;
  fs.mkdirSync(dir, { recursive: true });
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const gitCommit = spawnSync('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).stdout.trim();
  const json = path.join(dir, `uplink-${stamp}.json`);
  const { resultsDir, ...options } = o;
  void resultsDir;
  fs.writeFileSync(
    json,
    `${JSON.stringify({ command, options, cases, host: { cpus: os.cpus().length, loadavg: os.loadavg(), dpdk: dpdkVersion(), gitCommit } }, null, 2)}\n`,
  );
  const svg = path.join(dir, `uplink-${stamp}.svg`);
  fs.writeFileSync(
    svg,
    barChartSvg({
      title: 'Uplink over a veth pair: vhostwire vs DPDK af_packet / af_xdp (front end: DPDK virtio-user)',
      subtitle: `${stamp.slice(0, 16)} UTC, ${command}, median of ${o.rounds} rounds, ${gitCommit}`,
      categories: cases.map((c) => `${c.dir} ${c.size} B`),
      categoryLabel: 'direction, frame size',
      valueLabel: 'Mpps',
      series: [
        ...[...IMPLS, ...SOCKET_ALONE].map((i) => ({ name: i, values: cases.map((c) => c.medianMpps[i] ?? null) })),
        { name: 'generator alone', values: cases.map((c) => c.medianMpps.generator ?? null) },
      ],
    }),
  );
  return [json, svg];
}

const USAGE = `usage: npm run bench -- uplink [--rounds N] [--seconds S] [--warmup S] [--sizes 64,1518] [--directions out,in] [--no-json] [--verbose]
  (defaults: ${UPLINK_DEFAULTS.rounds} rounds, ${UPLINK_DEFAULTS.seconds} s windows after ${UPLINK_DEFAULTS.warmupSeconds} s, ${UPLINK_DEFAULTS.sizes.join(',')} bytes, both directions; root, dpdk-testpmd, 512 free hugepages)
`;

export async function uplinkBenchMain(argv: string[], interrupted: () => boolean): Promise<number> {
  const o: UplinkBenchOptions = { ...UPLINK_DEFAULTS };
  try {
    const flags = benchFlags(argv, ['rounds', 'seconds', 'warmup', 'sizes', 'directions'] as const, USAGE);
    if (!flags) return 0;
    const { values } = flags;
    if (values.rounds !== undefined) o.rounds = whole('--rounds', values.rounds, 1, 100);
    if (values.seconds !== undefined) o.seconds = whole('--seconds', values.seconds, 1, 600);
    if (values.warmup !== undefined) o.warmupSeconds = whole('--warmup', values.warmup, 0, 600);
    // One segment within testpmd's default 2048-byte mbuf.
    if (values.sizes !== undefined) o.sizes = values.sizes.split(',').map((s) => whole('--sizes', s, 60, 1518));
    if (values.directions !== undefined)
      o.directions = values.directions.split(',').map((d) => {
        if (d !== 'out' && d !== 'in') throw new Error(`--directions: expected out and/or in, got "${d}"`);
        return d;
      });
    if (flags.noJson) o.resultsDir = null;
    if (flags.verbose) o.verbose = true;
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  const cases = await runUplinkBench(o, console.log, interrupted);
  console.log('');
  for (const l of report(cases)) console.log(l);
  if (o.resultsDir) console.log(`\nresults: ${writeResults(cases, o, ['npm run bench --', 'uplink', ...argv].join(' ')).join(', ')}`);
  return interrupted() ? 130 : 0;
}
