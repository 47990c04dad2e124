// `npm run bench -- g2g`: guest to guest, the one-copy path against the two-copy switches, side by side.
// One DPDK testpmd holds two virtio-user ports (vm0, vm1) in mac-forward mode and starts with tx_first,
// so frames circulate vm0 -> switch -> vm1 -> testpmd -> vm0 (and the other way) and only the switch and
// the front end limit the rate. The switches:
//   ours    vhostwire serve --wire vm0=vm1 (bypass mode, one PMD core): one copy, guest memory to guest memory
//   bridge  vhostwire serve --bridge br0=vm0,vm1: the same copy behind a MAC learning and lookup per frame
//   dpdk  dpdk-testpmd io forward between two net_vhost ports: two copies, through an mbuf
//   ovs   Open vSwitch with DPDK (netdev datapath, NORMAL action, two dpdkvhostuser ports): two copies and
//         a MAC lookup
// Each round starts every switch afresh, in a rotating order, and the ratios ours/dpdk and ours/ovs are
// taken per round (bench/stats.ts). The rate is what the front end receives on both ports together.
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Testpmd, dpdkVersion, findTestpmd, freeHugepages, type PortStats } from './testpmd';
import { ServeProcess, serveUnavailable, sleep } from './serve';
import { median, summarize, formatSummary, type RatioSummary } from './stats';

export type Switch = 'ours' | 'bridge' | 'dpdk' | 'ovs';
const SWITCHES: Switch[] = ['ours', 'bridge', 'dpdk', 'ovs'];

export interface G2gOptions {
  rounds: number;
  seconds: number;
  warmupSeconds: number;
  sizes: number[];
  switches: Switch[];
  resultsDir: string | null;
  verbose: boolean;
}

export const G2G_DEFAULTS: G2gOptions = {
  rounds: 5,
  seconds: 3,
  warmupSeconds: 1,
  sizes: [64, 1518],
  switches: SWITCHES,
  resultsDir: path.join(__dirname, '..', '..', 'bench', 'results'),
  verbose: false,
};

// Front end on core 0 (main lcore 1 sleeps in its prompt); every switch forwards on core 1.
const FRONT = { lcores: '0,1', main: 1 };
const MAC = ['02:00:00:00:00:10', '02:00:00:00:00:11'];
const OVS_VSWITCHD = '/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk';

interface SwitchRig {
  /** Where the front end's port i connects, and whether the switch is the vhost-user server there. */
  sockets: [string, string];
  close(): Promise<void>;
}

interface Sample {
  switch: Switch;
  size: number;
  round: number;
  mpps: number | null;
  /** per front-end port, Mpps received: a circulation that died at start shows as one port near 0 */
  perPort?: [number, number];
  error?: string;
}

function tmp(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

function which(bin: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${bin}`]).status === 0;
}

export function unavailable(s: Switch): string | null {
  if (s === 'ours' || s === 'bridge') return serveUnavailable();
  if (!findTestpmd()) return 'dpdk-testpmd is not installed (Debian 12: dpdk-dev)';
  if (s === 'ovs' && !(fs.existsSync(OVS_VSWITCHD) && which('ovsdb-server') && which('ovs-vsctl')))
    return 'Open vSwitch with DPDK is not installed (Debian 12: openvswitch-switch-dpdk)';
  return null;
}

class G2g {
  constructor(
    private readonly o: G2gOptions,
    private readonly log: (line: string) => void,
  ) {}

  private verbose = (who: string) => (this.o.verbose ? (l: string) => this.log(`  [${who}] ${l}`) : undefined);

  ours(): Promise<SwitchRig> {
    return this.vhostwire(['--wire', 'vm0=vm1']);
  }

  bridge(): Promise<SwitchRig> {
    return this.vhostwire(['--bridge', 'br0=vm0,vm1']);
  }

  private async vhostwire(join: string[]): Promise<SwitchRig> {
    const dir = tmp('vhostwire-g2g-');
    const s: [string, string] = [path.join(dir, 'vm0.sock'), path.join(dir, 'vm1.sock')];
    const serve = await ServeProcess.start({
      args: ['--vhost-user', `vm0=${s[0]}`, '--vhost-user', `vm1=${s[1]}`, ...join, '--mode', 'bypass', '--pmd-cores', '1'],
      log: this.verbose('vhostwire'),
    });
    return {
      sockets: s,
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
      vdev: `net_vhost0,iface=${s[0]},queues=1`,
      extraEal: ['--vdev', `net_vhost1,iface=${s[1]},queues=1`],
      forwardMode: 'io',
      log: this.verbose('dpdk-vhost'),
    });
    await back.startForwarding();
    return {
      sockets: s,
      close: async () => {
        await back.close();
        fs.rmSync(dir, { recursive: true, force: true });
      },
    };
  }

  /** A private ovsdb-server and ovs-vswitchd (DPDK) in a directory of their own, stopped by their pids. */
  async ovs(): Promise<SwitchRig> {
    const dir = tmp('vhostwire-g2g-ovs-');
    const env = { ...process.env, OVS_RUNDIR: dir, OVS_LOGDIR: dir, OVS_DBDIR: dir };
    const db = `unix:${dir}/db.sock`;
    const run = (cmd: string, args: string[]): string =>
      execFileSync(cmd, args, { env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    const vsctl = (...args: string[]): string => run('ovs-vsctl', [`--db=${db}`, '--timeout=30', ...args]);
    const pids: string[] = [];
    const close = async (): Promise<void> => {
      for (const f of pids.reverse()) {
        const pid = Number(fs.existsSync(f) ? fs.readFileSync(f, 'utf8').trim() : NaN);
        if (!Number.isInteger(pid) || pid <= 0) continue;
        try {
          process.kill(pid, 'SIGTERM');
        } catch {
          continue;
        }
        for (let i = 0; i < 100; i++) {
          try {
            process.kill(pid, 0);
          } catch {
            break;
          }
          await sleep(50);
        }
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone
        }
      }
      fs.rmSync(dir, { recursive: true, force: true });
    };
    try {
      run('ovsdb-tool', ['create', `${dir}/conf.db`, '/usr/share/openvswitch/vswitch.ovsschema']);
      run('ovsdb-server', [
        `--remote=punix:${dir}/db.sock`,
        `--pidfile=${dir}/ovsdb-server.pid`,
        '--detach',
        `--log-file=${dir}/ovsdb-server.log`,
        `${dir}/conf.db`,
      ]);
      pids.push(`${dir}/ovsdb-server.pid`);
      vsctl('--no-wait', 'init');
      vsctl(
        '--no-wait',
        'set',
        'Open_vSwitch',
        '.',
        'other_config:dpdk-init=true',
        'other_config:dpdk-lcore-mask=0x1',
        'other_config:pmd-cpu-mask=0x2',
        'other_config:dpdk-socket-mem=512',
        `other_config:dpdk-extra=--no-pci --file-prefix=ovs${process.pid}`,
      );
      run(OVS_VSWITCHD, [db, `--pidfile=${dir}/ovs-vswitchd.pid`, '--detach', `--log-file=${dir}/vswitchd.log`]);
      pids.push(`${dir}/ovs-vswitchd.pid`);
      vsctl('add-br', 'br0', '--', 'set', 'bridge', 'br0', 'datapath_type=netdev');
      for (const p of ['vm0', 'vm1']) vsctl('add-port', 'br0', p, '--', 'set', 'Interface', p, 'type=dpdkvhostuser');
    } catch (e) {
      const logTail = fs.existsSync(`${dir}/vswitchd.log`)
        ? fs.readFileSync(`${dir}/vswitchd.log`, 'utf8').split('\n').slice(-10).join('\n')
        : '';
      await close();
      throw new Error(`Open vSwitch did not start: ${e instanceof Error ? e.message : String(e)}\n${logTail}`);
    }
    return { sockets: [`${dir}/vm0`, `${dir}/vm1`], close };
  }

  private frontEnd(s: [string, string], size: number): Promise<Testpmd> {
    return Testpmd.start({
      name: 'virtio-user',
      lcores: FRONT.lcores,
      mainLcore: FRONT.main,
      vdev: `net_virtio_user0,path=${s[0]},queues=1,mac=${MAC[0]}`,
      extraEal: ['--vdev', `net_virtio_user1,path=${s[1]},queues=1,mac=${MAC[1]}`],
      singleFileSegments: true,
      forwardMode: 'mac',
      txpkts: size,
      extraApp: [`--eth-peer=0,${MAC[1]}`, `--eth-peer=1,${MAC[0]}`],
      log: this.verbose('virtio-user'),
    });
  }

  async sample(sw: Switch, size: number, round: number): Promise<Sample> {
    let rig: SwitchRig | undefined;
    let front: Testpmd | undefined;
    try {
      rig = await this[sw]();
      front = await this.frontEnd(rig.sockets, size);
      // Both ports must be up before the first frames go, or a circulation dies at start.
      await sleep(1000);
      await front.command('start tx_first');
      await sleep(this.o.warmupSeconds * 1000);
      const a: PortStats[] = [await front.portStats(0), await front.portStats(1)];
      await sleep(this.o.seconds * 1000);
      const b: PortStats[] = [await front.portStats(0), await front.portStats(1)];
      const per = [0, 1].map((i) => (b[i].rxPackets - a[i].rxPackets) / (Number(b[i].at - a[i].at) / 1e9) / 1e6) as [number, number];
      return { switch: sw, size, round, mpps: per[0] + per[1], perPort: per };
    } catch (e) {
      return { switch: sw, size, round, mpps: null, error: e instanceof Error ? e.message.split('\n')[0] : String(e) };
    } finally {
      if (front) await front.close();
      if (rig) await rig.close();
    }
  }
}

export interface G2gCase {
  size: number;
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
  // The front end's 256 MiB and, at most, OVS's 512 MiB: one switch runs at a time.
  if (freeHugepages() * 2 < 768)
    log(`warning: ${freeHugepages()} free 2 MiB hugepages; the front end and a DPDK switch need about 768 MiB`);
  const g = new G2g(o, log);
  const samples: Sample[] = [];
  const cases: G2gCase[] = [];
  for (const size of o.sizes) {
    for (let round = 0; round < o.rounds; round++) {
      const order = switches.map((_, i) => switches[(i + round) % switches.length]);
      for (const sw of order) {
        const s = await g.sample(sw, size, round);
        samples.push(s);
        log(
          `${size} B round ${round + 1} ${sw}: ${s.mpps === null ? `failed: ${s.error}` : `${s.mpps.toFixed(2)} Mpps (ports ${s.perPort!.map((x) => x.toFixed(2)).join(' + ')})`}`,
        );
      }
    }
    const of = (sw: Switch, round: number): number | null =>
      samples.find((s) => s.size === size && s.round === round && s.switch === sw)?.mpps ?? null;
    const rounds = [...Array(o.rounds).keys()];
    const ratio = (other: Switch, ours: Switch = 'ours'): RatioSummary =>
      summarize(
        rounds.map((r) => {
          const a = of(ours, r),
            b = of(other, r);
          return a !== null && b !== null && b > 0 ? a / b : null;
        }),
      );
    const med = (sw: Switch): number | null => median(rounds.map((r) => of(sw, r)).filter((x): x is number => x !== null));
    cases.push({
      size,
      mpps: { ours: med('ours'), bridge: med('bridge'), dpdk: med('dpdk'), ovs: med('ovs') },
      vsDpdk: ratio('dpdk'),
      vsOvs: ratio('ovs'),
      bridgeVsWire: ratio('ours', 'bridge'),
      bridgeVsOvs: ratio('ovs', 'bridge'),
    });
  }
  let dpdk = '';
  try {
    dpdk = dpdkVersion();
  } catch {
    dpdk = 'unknown';
  }
  return { startedAt, host: os.hostname(), dpdk, load: os.loadavg(), skipped, samples, cases };
}

export function formatG2g(r: G2gResult): string {
  const rows = [
    ['size', 'wire Mpps', 'bridge Mpps', 'dpdk io Mpps', 'ovs NORMAL Mpps', 'wire/dpdk', 'wire/ovs', 'bridge/wire', 'bridge/ovs'],
  ];
  const f = (x: number | null): string => (x === null ? '-' : x.toFixed(2));
  for (const c of r.cases)
    rows.push([
      String(c.size),
      f(c.mpps.ours),
      f(c.mpps.bridge),
      f(c.mpps.dpdk),
      f(c.mpps.ovs),
      formatSummary(c.vsDpdk),
      formatSummary(c.vsOvs),
      formatSummary(c.bridgeVsWire),
      formatSummary(c.bridgeVsOvs),
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
        lines.push(`BELOW TARGET (${target}x): ${c.size} B guest to guest: ${ours} is ${s.median.toFixed(2)}x ${other}`);
  return lines.join('\n');
}

export async function g2gBenchMain(argv: string[]): Promise<number> {
  const { parseArgs } = await import('node:util');
  const usage =
    'usage: npm run bench -- g2g [--rounds N] [--seconds S] [--warmup S] [--sizes 64,1518] [--switches ours,bridge,dpdk,ovs] [--no-json] [--verbose]\n';
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
    o = { ...G2G_DEFAULTS };
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
    const file = path.join(o.resultsDir, `g2g-${r.startedAt.replace(/[:.]/g, '-')}.json`);
    fs.writeFileSync(file, `${JSON.stringify({ options: o, ...r }, null, 2)}\n`);
    console.log(`\nresults: ${file}`);
  }
  return 0;
}
