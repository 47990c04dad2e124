// `npm run bench -- vm`: guest-to-guest TCP throughput between two QEMU guests, switched (a) by
// vhostwire (`serve --wire vm0=vm1`) and (b) by dpdk-testpmd's vhost PMD in io-forward mode with two
// vhost ports, side by side in one run, as a ratio.
//
// The two guests boot once and stay up; the switch under them is swapped between rounds. Both switches
// listen on the same two sockets and QEMU (the vhost-user client, reconnect=1) reconnects to whichever
// runs, so both are measured with the same guests, the same guest kernel state and the same negotiated
// virtio features. The guests boot against vhostwire first: the features they negotiate then are a
// subset of what DPDK's vhost offers, so the swap never asks a backend for a feature it lacks.
//
// Rounds alternate the order (ours first, then DPDK first, ...); the ratio is taken round by round and
// its median quoted (these machines are noisy: see ../shared/notes/environment.md).
//
// Under TCG (no usable KVM) each guest is an emulated CPU and is the bottleneck: both switches then
// measure about the same and the ratio says little about them. With KVM the guests are fast enough for
// the switch to matter.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { spawn, type ChildProcess } from 'node:child_process';
import { detectAccel, ensureGuest, findQemu, Vm, type Accel } from '../src/harness/vm';
import { findTestpmd, freeHugepages, Testpmd } from './testpmd';

const ROOT = path.resolve(__dirname, '..', '..');
const BIN = path.join(ROOT, 'bin', 'vhostwire.js');
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export type VmImpl = 'ours' | 'dpdk';

export interface VmBenchOptions {
  rounds: number;
  /** target length of one transfer */
  seconds: number;
  /** our PMD mode; DPDK always busy-polls */
  mode: 'bypass' | 'kernel';
  /** CPU for our PMD thread and testpmd's forwarding lcore */
  fwdCore: number;
  resultsDir: string | null;
  verbose: boolean;
}

export const VM_DEFAULTS: VmBenchOptions = {
  rounds: 3,
  seconds: 5,
  mode: 'bypass',
  fwdCore: 1,
  resultsDir: path.join(ROOT, 'bench', 'results'),
  verbose: false,
};

export interface VmRun {
  impl: VmImpl;
  round: number;
  bytes: number;
  seconds: number;
  mbitPerS: number;
}

export interface VmBenchResult {
  date: string;
  host: string;
  cpus: number;
  accel: Accel;
  guestBottleneck: boolean;
  mib: number;
  runs: VmRun[];
  medianMbit: Record<VmImpl, number | null>;
  ratios: number[];
  medianRatio: number | null;
  skipped?: string;
}

function median(xs: number[]): number | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Why the benchmark cannot run here, or null. */
export function vmBenchUnavailable(): string | null {
  if (!findQemu()) return 'qemu-system-x86_64 is not installed (apt-get install qemu-system-x86 linux-image-amd64 busybox-static)';
  if (!findTestpmd()) return 'dpdk-testpmd is not installed (apt-get install dpdk-dev)';
  if (!fs.existsSync(path.join(ROOT, 'build', 'Release', 'vhostwire.node'))) return 'the native addon is not built';
  if (freeHugepages() < 128) return 'fewer than 128 free hugepages for testpmd (echo 1024 > /proc/sys/vm/nr_hugepages)';
  return null;
}

/** One switch between the two sockets. */
interface Switcher {
  impl: VmImpl;
  stop(): Promise<void>;
}

async function startOurs(socks: string[], o: VmBenchOptions, log: (s: string) => void): Promise<Switcher> {
  const args = [
    'serve',
    '--vhost-user',
    `vm0=${socks[0]}`,
    '--vhost-user',
    `vm1=${socks[1]}`,
    '--wire',
    'vm0=vm1',
    '--mode',
    o.mode,
    '--pmd-cores',
    String(o.fwdCore),
  ];
  const child: ChildProcess = spawn(process.execPath, [BIN, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const onData = (d: string): void => {
    out += d;
    if (o.verbose) for (const l of d.split('\n')) if (l) log(`  [vhostwire] ${l}`);
  };
  child.stdout!.setEncoding('utf8').on('data', onData);
  child.stderr!.setEncoding('utf8').on('data', onData);
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const deadline = Date.now() + 30_000;
  while (!/^ready$/m.test(out)) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`vhostwire serve exited at start:\n${out}`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`vhostwire serve did not get ready:\n${out}`);
    }
    await sleep(50);
  }
  return {
    impl: 'ours',
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) process.kill(child.pid!, 'SIGTERM');
      const t = setTimeout(() => child.exitCode === null && process.kill(child.pid!, 'SIGKILL'), 10_000);
      await exited;
      clearTimeout(t);
    },
  };
}

async function startDpdk(socks: string[], o: VmBenchOptions, log: (s: string) => void): Promise<Switcher> {
  const main = o.fwdCore === 0 ? 1 : 0;
  const tp = await Testpmd.start({
    name: 'vhost-io',
    lcores: [main, o.fwdCore].sort().join(','),
    mainLcore: main,
    // client=0: testpmd listens, as vhostwire does; QEMU reconnects to it.
    vdev: `net_vhost0,iface=${socks[0]},client=0,queues=1`,
    extraEal: ['--vdev', `net_vhost1,iface=${socks[1]},client=0,queues=1`],
    forwardMode: 'io',
    memMb: 256,
    log: o.verbose ? (l) => log(`  [testpmd] ${l}`) : undefined,
  });
  await tp.startForwarding();
  return { impl: 'dpdk', stop: async () => void (await tp.close()) };
}

/** Waits until a can ping b again (after a switch swap, QEMU reconnects within about a second). */
async function waitTraffic(a: Vm, bIp: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await a.command(`ping ${bIp} 3 0.2`, 60_000);
    if (r.loss === '0') return;
    if (Date.now() > deadline) throw new Error(`${a.name} cannot reach ${bIp} through the switch (${r.received}/${r.sent} replies)`);
  }
}

async function transfer(a: Vm, b: Vm, bIp: string, mib: number, port: number): Promise<{ bytes: number; seconds: number; mbit: number }> {
  const from = b.lines.length;
  const recv = b.command(`tcp-recv ${port} 600`, 900_000);
  await b.waitFor((x) => x.kind === 'LISTEN' && x.fields.port === String(port), 30_000, 'tcp-recv listening', from);
  const s = await a.command(`tcp-send ${bIp} ${port} ${mib}`, 900_000);
  const r = await recv;
  const bytes = Number(r.bytes);
  if (s.ok !== '1' || bytes !== mib << 20)
    throw new Error(`transfer of ${mib} MiB failed: sender ${JSON.stringify(s)}, receiver ${JSON.stringify(r)}`);
  const seconds = Number(s.seconds);
  return { bytes, seconds, mbit: (bytes * 8) / seconds / 1e6 };
}

export async function runVmBench(o: VmBenchOptions, log: (s: string) => void = console.log): Promise<VmBenchResult> {
  const res: VmBenchResult = {
    date: new Date().toISOString(),
    host: os.hostname(),
    cpus: os.cpus().length,
    accel: 'tcg',
    guestBottleneck: true,
    mib: 0,
    runs: [],
    medianMbit: { ours: null, dpdk: null },
    ratios: [],
    medianRatio: null,
  };
  const why = vmBenchUnavailable();
  if (why) {
    res.skipped = why;
    return res;
  }
  const guest = ensureGuest();
  res.accel = await detectAccel(guest);
  res.guestBottleneck = res.accel === 'tcg';
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostwire-benchvm-'));
  const socks = [path.join(dir, 'vm0.sock'), path.join(dir, 'vm1.sock')];
  const vms: Vm[] = [];
  let sw: Switcher | undefined;
  const swap = async (impl: VmImpl): Promise<void> => {
    if (sw?.impl === impl) return;
    await sw?.stop();
    sw = undefined;
    for (const s of socks) fs.rmSync(s, { force: true });
    sw = impl === 'ours' ? await startOurs(socks, o, log) : await startDpdk(socks, o, log);
    if (vms.length) await Promise.all([waitTraffic(vms[0], '10.0.0.2'), waitTraffic(vms[1], '10.0.0.1')]);
  };
  try {
    log(
      `guests: ${res.accel.toUpperCase()}${res.guestBottleneck ? ' (no usable KVM): the emulated guests are the bottleneck, not the switch' : ''}`,
    );
    // Boot against ours: see the header on negotiated features.
    await swap('ours');
    for (const [i, ip] of ['10.0.0.1/24', '10.0.0.2/24'].entries()) {
      vms.push(await Vm.start({ name: `bench${i}`, socket: socks[i], ip, end: 'stay', guest, accel: res.accel }));
    }
    const ready = await Promise.all(vms.map((v) => v.ready(300_000)));
    log(`booted two guests in ${(Math.max(...ready.map((r) => r.wallMs)) / 1000).toFixed(1)} s`);
    await waitTraffic(vms[0], '10.0.0.2');
    // Size the transfer so one lasts about o.seconds.
    const cal = await transfer(vms[0], vms[1], '10.0.0.2', 4, 5000);
    res.mib = Math.max(4, Math.min(4096, Math.round((cal.mbit * 1e6 * o.seconds) / 8 / (1 << 20))));
    log(`calibration: ${cal.mbit.toFixed(1)} Mbit/s; ${res.mib} MiB per run`);
    let port = 5001;
    for (let round = 1; round <= o.rounds; round++) {
      const order: VmImpl[] = round % 2 ? ['ours', 'dpdk'] : ['dpdk', 'ours'];
      const got: Partial<Record<VmImpl, number>> = {};
      for (const impl of order) {
        await swap(impl);
        const r = await transfer(vms[0], vms[1], '10.0.0.2', res.mib, port++);
        res.runs.push({ impl, round, bytes: r.bytes, seconds: r.seconds, mbitPerS: r.mbit });
        got[impl] = r.mbit;
        log(
          `round ${round}: ${impl === 'ours' ? 'vhostwire ' : 'dpdk vhost'} ${r.mbit.toFixed(1).padStart(8)} Mbit/s (${res.mib} MiB in ${r.seconds.toFixed(2)} s)`,
        );
      }
      if (got.ours && got.dpdk) res.ratios.push(got.ours / got.dpdk);
    }
  } finally {
    await Promise.all(vms.map((v) => v.kill('SIGKILL')));
    await sw?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  for (const impl of ['ours', 'dpdk'] as const)
    res.medianMbit[impl] = median(res.runs.filter((r) => r.impl === impl).map((r) => r.mbitPerS));
  res.medianRatio = median(res.ratios);
  return res;
}

export function formatVmResult(r: VmBenchResult): string {
  if (r.skipped) return `vm benchmark skipped: ${r.skipped}`;
  const f = (x: number | null): string => (x === null ? '-' : x.toFixed(1));
  const lines = [
    'guest-to-guest TCP (busybox nc, one stream), Mbit/s, median of rounds',
    `  vhostwire            ${f(r.medianMbit.ours).padStart(8)}`,
    `  dpdk-testpmd vhost   ${f(r.medianMbit.dpdk).padStart(8)}   (io forward, two vhost ports)`,
    `  ratio ours/dpdk      ${r.medianRatio === null ? '-' : r.medianRatio.toFixed(2).padStart(8)}   (median of per-round ratios: ${r.ratios.map((x) => x.toFixed(2)).join(', ')})`,
    '',
    r.guestBottleneck
      ? 'Guests ran under TCG (no usable KVM): each guest is an emulated CPU and is the bottleneck, so both ' +
        'switches idle most of the time and the ratio says little about them. Run where KVM works for a ' +
        'meaningful comparison (npm run bench -- vhost measures the switches without guests).'
      : 'Guests ran under KVM: the switch is on the data path at guest speed; the ratio compares the switches.',
    'Both switches served the same two guests with the same negotiated virtio features (no offloads: MTU-sized TCP segments).',
  ];
  return lines.join('\n');
}

export function writeVmResult(r: VmBenchResult, dir: string): string {
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `vm-${r.date.replace(/[:.]/g, '-')}.json`);
  fs.writeFileSync(file, JSON.stringify(r, null, 2) + '\n');
  return file;
}

export const VM_USAGE = `usage: npm run bench -- vm [options]

  --rounds N        rounds; the order of the two switches alternates (default ${VM_DEFAULTS.rounds})
  --seconds S       target length of one transfer (default ${VM_DEFAULTS.seconds})
  --mode M          our PMD mode, bypass or kernel (default ${VM_DEFAULTS.mode}; testpmd always polls)
  --fwd-core N      CPU for our PMD thread and testpmd's forwarding lcore (default ${VM_DEFAULTS.fwdCore})
  --no-json         do not write bench/results/vm-<timestamp>.json
  --verbose         show the switches' output
`;

export function parseVmArgs(argv: string[]): VmBenchOptions {
  const { values } = parseArgs({
    args: argv,
    options: {
      rounds: { type: 'string' },
      seconds: { type: 'string' },
      mode: { type: 'string' },
      'fwd-core': { type: 'string' },
      'no-json': { type: 'boolean' },
      verbose: { type: 'boolean' },
    },
    strict: true,
  });
  const o = { ...VM_DEFAULTS };
  const pos = (flag: string, v: string, integer: boolean, min = 1): number => {
    const n = Number(v);
    if (!Number.isFinite(n) || n < min || (integer && !Number.isInteger(n)))
      throw new Error(`${flag}: expected a number >= ${min}, got "${v}"`);
    return n;
  };
  if (values.rounds !== undefined) o.rounds = pos('--rounds', values.rounds, true);
  if (values.seconds !== undefined) o.seconds = pos('--seconds', values.seconds, false);
  if (values.mode !== undefined) {
    if (values.mode !== 'bypass' && values.mode !== 'kernel') throw new Error(`--mode: expected bypass or kernel, got "${values.mode}"`);
    o.mode = values.mode;
  }
  if (values['fwd-core'] !== undefined) o.fwdCore = pos('--fwd-core', values['fwd-core'], true, 0);
  if (values['no-json']) o.resultsDir = null;
  if (values.verbose) o.verbose = true;
  return o;
}

/** `npm run bench -- vm ...`: the exit code. Bad flags: usage and 2. */
export async function vmBenchMain(argv: string[], log: (s: string) => void = console.log): Promise<number> {
  if (argv.includes('-h') || argv.includes('--help')) {
    process.stdout.write(VM_USAGE);
    return 0;
  }
  let o: VmBenchOptions;
  try {
    o = parseVmArgs(argv);
  } catch (e) {
    process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n${VM_USAGE}`);
    return 2;
  }
  const r = await runVmBench(o, log);
  log('');
  log(formatVmResult(r));
  if (!r.skipped && o.resultsDir) log(`\nresults: ${writeVmResult(r, o.resultsDir)}`);
  return 0;
}
