// A small driver for dpdk-testpmd processes (DPDK 22.11), used by the benchmark and the interop tests.
//
// - Every process gets its own --file-prefix, so several can run side by side; its runtime directory
//   (/var/run/dpdk/<prefix>) and any hugepage files named after the prefix are removed once it is gone.
// - Interactive mode (-i, the default): stdin is a pipe we write commands to. Each command's output ends
//   at the next "testpmd> " prompt, which is how command() knows it is complete. Closing stdin makes
//   testpmd quit too, so a crashed parent does not leave a spinning testpmd behind.
// - --stats-period mode: testpmd forwards on its own and prints port statistics every N seconds;
//   lastPortStats() parses the newest block.
// - testpmd's stdout is block-buffered when it is a pipe, so it runs under `stdbuf -oL` (line-buffered);
//   stdbuf execs testpmd, so the pid we hold is testpmd's own.
// - close(): 'stop' and 'quit' on stdin, then SIGTERM by pid, then SIGKILL by pid.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

export type ForwardMode = 'io' | 'mac' | 'macswap' | 'rxonly' | 'txonly' | 'csum' | 'icmpecho' | '5tswap';

export interface TestpmdOptions {
  /** Shown in errors and log lines, e.g. "frontend". */
  name?: string;
  /** EAL -l, e.g. "0,1" */
  lcores: string;
  /** EAL --main-lcore; testpmd forwards on the other lcores of the list. */
  mainLcore: number;
  /** EAL --vdev, e.g. "net_virtio_user0,path=/tmp/vm0.sock,queues=1" */
  vdev: string;
  forwardMode: ForwardMode;
  /** txonly frame length in bytes (Ethernet header included, CRC not): --txpkts=N. Default 64. */
  txpkts?: number;
  /** EAL -m (MiB of hugepage memory reserved up front). Default 256. */
  memMb?: number;
  /** --total-num-mbufs. Default 16384 (about 35 MiB), so that -m 256 is plenty. */
  mbufs?: number;
  /**
   * EAL --huge-unlink: hugepage files are unlinked once mapped, so even a SIGKILLed testpmd leaves none
   * behind. Default: on, except for net_virtio_user, whose memory must stay shareable (it fails then).
   */
  hugeUnlink?: boolean;
  /** EAL --single-file-segments (one hugepage file per memseg list; what virtio-user wants). */
  singleFileSegments?: boolean;
  /** undefined (default): interactive (-i). A number: non-interactive with --stats-period N. */
  statsPeriod?: number;
  extraEal?: string[];
  extraApp?: string[];
  /** Unique per process; generated when absent. */
  filePrefix?: string;
  /** Called with each line testpmd prints (stdout and stderr), e.g. for VERBOSE logs. */
  log?: (line: string) => void;
  /** How long to wait for the first prompt (interactive) or for forwarding to start. Default 30 s. */
  startTimeoutMs?: number;
  binary?: string;
}

/** `show port stats N` (or a --stats-period block). pps/bps are "since last show": 0 the first time. */
export interface PortStats {
  port: number;
  rxPackets: number;
  rxMissed: number;
  rxBytes: number;
  rxErrors: number;
  rxNombuf: number;
  txPackets: number;
  txErrors: number;
  txBytes: number;
  rxPps: number;
  rxBps: number;
  txPps: number;
  txBps: number;
  /** process.hrtime.bigint() when the block was complete in our hands */
  at: bigint;
}

/** The "Forward statistics" testpmd prints on `stop`: packets the forwarding engine moved. */
export interface ForwardStats {
  rxPackets: number;
  rxDropped: number;
  rxTotal: number;
  txPackets: number;
  txDropped: number;
  txTotal: number;
}

export interface StopResult {
  /** Per port, from the "Forward statistics for port N" blocks. */
  ports: Map<number, ForwardStats>;
  /** The "Accumulated forward statistics for all ports" block (equal to port 0's with one port). */
  total: ForwardStats;
}

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** How close() ended it: 'quit' on stdin, SIGTERM, SIGKILL, or it had already exited. */
  how: 'quit' | 'SIGTERM' | 'SIGKILL' | 'exited';
}

export class TestpmdError extends Error {
  override name = 'TestpmdError';
}

const PROMPT = 'testpmd> ';
const KEEP_OUTPUT = 1 << 20;

/** The dpdk-testpmd binary on PATH, or null when DPDK's testpmd is not installed. */
export function findTestpmd(): string | null {
  const dirs = (process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin').split(':');
  for (const dir of [...dirs, '/usr/bin', '/usr/local/bin']) {
    if (!dir) continue;
    const p = path.join(dir, 'dpdk-testpmd');
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      // not here
    }
  }
  return null;
}

function findStdbuf(): string | null {
  for (const p of ['/usr/bin/stdbuf', '/bin/stdbuf', '/usr/local/bin/stdbuf']) {
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      // not here
    }
  }
  return null;
}

/** e.g. "22.11.11" from the Debian package, or "" when unknown. */
export function dpdkVersion(): string {
  const r = spawnSync('dpkg-query', ['-W', '-f=${Version}', 'dpdk'], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : '';
}

/** Free 2 MiB (default size) hugepages, from /proc/meminfo. */
export function freeHugepages(): number {
  try {
    const m = /HugePages_Free:\s+(\d+)/.exec(fs.readFileSync('/proc/meminfo', 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

/** EAL's runtime directory for a file prefix: /var/run/dpdk/<prefix> for root. */
export function runtimeDir(prefix: string): string {
  const base = process.getuid && process.getuid() === 0 ? '/var/run' : (process.env.XDG_RUNTIME_DIR ?? '/tmp');
  return path.join(base, 'dpdk', prefix);
}

function hugetlbfsMounts(): string[] {
  try {
    return fs
      .readFileSync('/proc/mounts', 'utf8')
      .split('\n')
      .map((l) => l.split(' '))
      .filter((f) => f[2] === 'hugetlbfs')
      .map((f) => f[1]);
  } catch {
    return [];
  }
}

/** Removes what an EAL process with this (unique) prefix leaves behind: runtime dir, hugepage files. */
export function removeEalLeftovers(prefix: string): void {
  fs.rmSync(runtimeDir(prefix), { recursive: true, force: true });
  for (const mount of hugetlbfsMounts()) {
    let names: string[];
    try {
      names = fs.readdirSync(mount);
    } catch {
      continue;
    }
    // EAL names them <prefix>map_<n> (and <prefix>map_<list>_<n> without --single-file-segments).
    for (const n of names) if (n.startsWith(`${prefix}map_`)) fs.rmSync(path.join(mount, n), { force: true });
  }
}

let prefixCounter = 0;
/** A file prefix no other process of ours uses: vw<pid>_<n>_<role>. */
export function uniquePrefix(role = 'tp'): string {
  return `vw${process.pid}_${++prefixCounter}_${role.replace(/[^A-Za-z0-9]/g, '')}`;
}

function num(block: string, key: string): number {
  const m = new RegExp(`${key}:\\s*(\\d+)`).exec(block);
  return m ? Number(m[1]) : 0;
}

/** Parses the first "NIC statistics for port N" block in text (the last one with last = true). */
export function parsePortStats(text: string, last = false): PortStats | null {
  const re = /NIC statistics for port (\d+)\s*#+\s*\n([\s\S]*?)\n\s*#{20,}/g;
  let m: RegExpExecArray | null;
  let found: RegExpExecArray | null = null;
  while ((m = re.exec(text)) !== null) {
    found = m;
    if (!last) break;
  }
  if (!found) return null;
  const b = found[2];
  return {
    port: Number(found[1]),
    rxPackets: num(b, 'RX-packets'),
    rxMissed: num(b, 'RX-missed'),
    rxBytes: num(b, 'RX-bytes'),
    rxErrors: num(b, 'RX-errors'),
    rxNombuf: num(b, 'RX-nombuf'),
    txPackets: num(b, 'TX-packets'),
    txErrors: num(b, 'TX-errors'),
    txBytes: num(b, 'TX-bytes'),
    rxPps: num(b, 'Rx-pps'),
    rxBps: num(b, 'Rx-bps'),
    txPps: num(b, 'Tx-pps'),
    txBps: num(b, 'Tx-bps'),
    at: process.hrtime.bigint(),
  };
}

function forwardBlock(b: string): ForwardStats {
  return {
    rxPackets: num(b, 'RX-packets'),
    rxDropped: num(b, 'RX-dropped'),
    rxTotal: num(b, 'RX-total'),
    txPackets: num(b, 'TX-packets'),
    txDropped: num(b, 'TX-dropped'),
    txTotal: num(b, 'TX-total'),
  };
}

/** Parses the output of `stop`. null when it holds no forward statistics. */
export function parseForwardStats(text: string): StopResult | null {
  const ports = new Map<number, ForwardStats>();
  const re = /Forward statistics for port (\d+)\s*-+\s*\n([\s\S]*?)\n\s*-{20,}/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(text)) !== null) ports.set(Number(m[1]), forwardBlock(m[2]));
  const acc = /Accumulated forward statistics for all ports\s*\++\s*\n([\s\S]*?)\n\s*\+{20,}/.exec(text);
  if (!acc && ports.size === 0) return null;
  let total: ForwardStats;
  if (acc) total = forwardBlock(acc[1]);
  else {
    total = { rxPackets: 0, rxDropped: 0, rxTotal: 0, txPackets: 0, txDropped: 0, txTotal: 0 };
    for (const s of ports.values()) for (const k of Object.keys(total) as Array<keyof ForwardStats>) total[k] += s[k];
  }
  return { ports, total };
}

interface Waiter {
  from: number;
  re: RegExp;
  resolve: (m: { match: RegExpExecArray; end: number }) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

export class Testpmd {
  readonly name: string;
  readonly prefix: string;
  readonly args: string[];
  readonly interactive: boolean;
  #child: ChildProcess;
  /** stdout: prompts, command output and statistics */
  #out = '';
  /** stderr (the last KEEP_OUTPUT of it): warnings and errors, shown in errors */
  #stderr = '';
  /** absolute offset of #out[0] (old output is dropped past KEEP_OUTPUT) */
  #base = 0;
  #partial = '';
  #waiters = new Set<Waiter>();
  #exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  #exited: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  #log?: (line: string) => void;
  #queue: Promise<unknown> = Promise.resolve();
  #forwarding = false;
  #closing: Promise<ExitInfo> | undefined;

  private constructor(opts: TestpmdOptions) {
    const binary = opts.binary ?? findTestpmd();
    if (!binary) throw new TestpmdError('dpdk-testpmd is not installed (Debian 12: apt-get install dpdk-dev)');
    this.name = opts.name ?? 'testpmd';
    this.prefix = opts.filePrefix ?? uniquePrefix(this.name);
    this.interactive = opts.statsPeriod === undefined;
    this.#log = opts.log;
    const eal = [
      '-l',
      opts.lcores,
      '--main-lcore',
      String(opts.mainLcore),
      '--no-pci',
      '--no-telemetry',
      `--file-prefix=${this.prefix}`,
      '-m',
      String(opts.memMb ?? 256),
      ...((opts.hugeUnlink ?? !opts.vdev.startsWith('net_virtio_user')) ? ['--huge-unlink'] : []),
      ...(opts.singleFileSegments ? ['--single-file-segments'] : []),
      '--vdev',
      opts.vdev,
      ...(opts.extraEal ?? []),
    ];
    const app = [
      this.interactive ? '-i' : `--stats-period=${opts.statsPeriod}`,
      `--forward-mode=${opts.forwardMode}`,
      '--nb-cores=1',
      '--no-mlockall',
      `--total-num-mbufs=${opts.mbufs ?? 16384}`,
      ...(opts.txpkts !== undefined ? [`--txpkts=${opts.txpkts}`] : []),
      ...(opts.extraApp ?? []),
    ];
    this.args = [...eal, '--', ...app];
    const stdbuf = findStdbuf();
    const [cmd, argv] = stdbuf ? [stdbuf, ['-oL', '-eL', binary, ...this.args]] : [binary, this.args];
    // Leftovers of an earlier process that had this prefix would make EAL attach to stale state.
    removeEalLeftovers(this.prefix);
    this.#child = spawn(cmd, argv, { stdio: ['pipe', 'pipe', 'pipe'] });
    this.#exit = new Promise((resolve) => {
      this.#child.once('exit', (code, signal) => {
        this.#exited = { code, signal };
        this.#flushPartial();
        for (const w of this.#waiters) {
          clearTimeout(w.timer);
          w.reject(this.#error(`exited (${signal ?? `code ${code}`}) while waiting for ${w.re}`));
        }
        this.#waiters.clear();
        resolve({ code, signal });
      });
      this.#child.once('error', (e) => {
        this.#exited = { code: null, signal: null };
        for (const w of this.#waiters) {
          clearTimeout(w.timer);
          w.reject(this.#error(`could not run: ${e.message}`));
        }
        this.#waiters.clear();
        resolve({ code: null, signal: null });
      });
    });
    this.#child.stdout!.setEncoding('utf8').on('data', (s: string) => this.#onData(s));
    // stderr apart: testpmd writes warnings there while it prints its prompt on stdout, and one landing
    // in the middle of "testpmd> " hid the prompt from waitFor (a start that never finished, in CI).
    this.#child.stderr!.setEncoding('utf8').on('data', (s: string) => this.#onStderr(s));
    // A quit testpmd closes its end; writes after that must not crash the parent.
    this.#child.stdin!.on('error', () => {});
  }

  /**
   * Starts testpmd and waits until it is usable: the first prompt (interactive) or the first
   * statistics block (--stats-period). Rejects with the output's tail when it exits first.
   */
  static async start(opts: TestpmdOptions): Promise<Testpmd> {
    const tp = new Testpmd(opts);
    const timeout = opts.startTimeoutMs ?? 30000;
    try {
      if (tp.interactive) await tp.waitFor(/testpmd> /, 0, timeout);
      else await tp.waitFor(/NIC statistics for port/, 0, timeout);
    } catch (e) {
      await tp.close();
      throw e;
    }
    if (!tp.interactive) tp.#forwarding = true;
    return tp;
  }

  get pid(): number {
    return this.#child.pid ?? -1;
  }

  get exited(): boolean {
    return this.#exited !== null;
  }

  /** Everything printed on stdout so far (the last MiB of it). */
  output(): string {
    return this.#out;
  }

  /** Absolute offset of the end of the output so far; pass it to waitFor to look only at what follows. */
  get offset(): number {
    return this.#base + this.#out.length;
  }

  #error(what: string): TestpmdError {
    const tail = this.#out.split('\n').slice(-25).join('\n');
    const errTail = this.#stderr.split('\n').slice(-10).join('\n');
    return new TestpmdError(
      `${this.name} (dpdk-testpmd pid ${this.pid}, prefix ${this.prefix}) ${what}\n--- last output ---\n${tail}` +
        (errTail.trim() ? `\n--- stderr ---\n${errTail}` : ''),
    );
  }

  #onStderr(s: string): void {
    this.#stderr = (this.#stderr + s).slice(-KEEP_OUTPUT);
    if (this.#log) for (const l of s.split('\n')) if (l) this.#log(l);
  }

  #flushPartial(): void {
    if (this.#partial && this.#log) this.#log(this.#partial);
    this.#partial = '';
  }

  #onData(s: string): void {
    this.#out += s;
    if (this.#out.length > 2 * KEEP_OUTPUT) {
      const drop = this.#out.length - KEEP_OUTPUT;
      this.#out = this.#out.slice(drop);
      this.#base += drop;
    }
    if (this.#log) {
      const lines = (this.#partial + s).split('\n');
      this.#partial = lines.pop() ?? '';
      for (const l of lines) this.#log(l);
    }
    for (const w of this.#waiters) this.#check(w);
  }

  #check(w: Waiter): void {
    const start = Math.max(0, w.from - this.#base);
    w.re.lastIndex = 0;
    const m = w.re.exec(this.#out.slice(start));
    if (!m) return;
    clearTimeout(w.timer);
    this.#waiters.delete(w);
    w.resolve({ match: m, end: this.#base + start + m.index + m[0].length });
  }

  /** Waits until the output from absolute offset `from` on matches re. */
  waitFor(re: RegExp, from = 0, timeoutMs = 10000): Promise<{ match: RegExpExecArray; end: number }> {
    return new Promise((resolve, reject) => {
      if (this.#exited) {
        const start = Math.max(0, from - this.#base);
        const m = re.exec(this.#out.slice(start));
        if (m) resolve({ match: m, end: this.#base + start + m.index + m[0].length });
        else reject(this.#error(`has exited; ${re} never appeared`));
        return;
      }
      const w: Waiter = {
        from,
        re,
        resolve,
        reject,
        timer: setTimeout(() => {
          this.#waiters.delete(w);
          reject(this.#error(`timed out after ${timeoutMs} ms waiting for ${re}`));
        }, timeoutMs),
      };
      this.#waiters.add(w);
      this.#check(w);
    });
  }

  /**
   * Runs one interactive command and resolves with its output (up to the next prompt). Commands are
   * queued: one at a time, in order.
   */
  command(cmd: string, timeoutMs = 15000): Promise<string> {
    if (!this.interactive) return Promise.reject(this.#error(`is not interactive; cannot run "${cmd}"`));
    const run = async (): Promise<string> => {
      if (this.#exited) throw this.#error(`has exited; cannot run "${cmd}"`);
      const from = this.offset;
      this.#child.stdin!.write(`${cmd}\n`);
      const { end } = await this.waitFor(/testpmd> /, from, timeoutMs);
      return this.#out.slice(Math.max(0, from - this.#base), end - this.#base - PROMPT.length);
    };
    const p = this.#queue.then(run, run);
    this.#queue = p.catch(() => undefined);
    return p;
  }

  /** `start`: starts forwarding (interactive mode). */
  async startForwarding(): Promise<void> {
    const out = await this.command('start');
    if (!/packet forwarding|already started/i.test(out)) throw this.#error(`did not start forwarding:\n${out}`);
    this.#forwarding = true;
  }

  /** `stop`: stops forwarding and returns the forward statistics it prints. */
  async stopForwarding(): Promise<StopResult> {
    const out = await this.command('stop', 30000);
    this.#forwarding = false;
    const r = parseForwardStats(out);
    if (!r) throw this.#error(`printed no forward statistics on stop:\n${out}`);
    return r;
  }

  /** `show port stats N`. Its pps figures cover the time since the previous `show port stats`. */
  async portStats(port = 0): Promise<PortStats> {
    const out = await this.command(`show port stats ${port}`);
    const s = parsePortStats(out);
    if (!s) throw this.#error(`printed no port statistics:\n${out}`);
    return s;
  }

  /** --stats-period mode: the newest statistics block printed so far. */
  lastPortStats(): PortStats | null {
    return parsePortStats(this.#out, true);
  }

  /**
   * Ends the process and removes its runtime directory and hugepage files. Interactive: 'stop' (if
   * forwarding) and 'quit'; then SIGTERM by pid; then SIGKILL by pid. Idempotent.
   */
  close(graceMs = 8000): Promise<ExitInfo> {
    this.#closing ??= this.#close(graceMs);
    return this.#closing;
  }

  async #close(graceMs: number): Promise<ExitInfo> {
    const waitExit = (ms: number): Promise<boolean> =>
      new Promise((resolve) => {
        if (this.#exited) return resolve(true);
        const timer = setTimeout(() => resolve(false), ms);
        void this.#exit.then(() => {
          clearTimeout(timer);
          resolve(true);
        });
      });
    let how: ExitInfo['how'] = 'exited';
    try {
      if (!this.#exited && this.interactive && this.pid > 0) {
        how = 'quit';
        const stdin = this.#child.stdin!;
        if (this.#forwarding) await this.command('stop', graceMs).catch(() => undefined);
        if (!stdin.destroyed) stdin.end('quit\n');
        if (!(await waitExit(graceMs))) how = 'SIGTERM';
      } else if (!this.#exited) how = 'SIGTERM';
      if (how === 'SIGTERM' && !this.#exited && this.pid > 0) {
        try {
          process.kill(this.pid, 'SIGTERM');
        } catch {
          // already gone
        }
        if (!(await waitExit(graceMs))) {
          how = 'SIGKILL';
          try {
            process.kill(this.pid, 'SIGKILL');
          } catch {
            // already gone
          }
          await waitExit(graceMs);
        }
      }
    } finally {
      this.#child.stdin?.destroy();
      removeEalLeftovers(this.prefix);
    }
    const e = this.#exited ?? { code: null, signal: null };
    return { code: e.code, signal: e.signal, how };
  }
}
