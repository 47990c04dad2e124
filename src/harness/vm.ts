// Real QEMU guests whose virtio-net NIC is served by vhostwire over vhost-user.
//
// - The guest is a Debian kernel plus a busybox initramfs built by qemu/build-guest.sh into a cache
//   directory; its /init (qemu/guest-init.sh) configures the NIC from the kernel command line, runs the
//   requested tests and prints "VW-..." result lines on the serial console.
// - qemuArgs() builds the whole QEMU command line (documented in qemu/README.md); Vm spawns QEMU itself
//   (never through a shell, so the pid we hold and kill is QEMU's), reads the console and can send
//   commands to a guest that stays up (`@ID CMD ARGS`, answered by `VW-RESULT id=ID ...`).
// - Socket roles: by default QEMU is the vhost-user client of a socket vhostwire listens on
//   (`--vhost-user vm0=PATH`), and reconnects every second when vhostwire restarts. With `server: true`
//   QEMU listens (`server=on,wait=off`) and vhostwire connects (`--vhost-user vm0=PATH,client`). Either
//   way QEMU does not start the guest until the backend has connected and negotiated.
// - Acceleration: KVM when /dev/kvm is usable and a probe boot under KVM reaches the guest's init;
//   otherwise TCG, where QEMU 7.2 crashes in MSI-X setup with vhost-user unless the device has
//   vectors=0 (legacy INTx). The probe's verdict is cached next to the guest image.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

/** The package root (this file runs as dist/src/harness/vm.js). */
export const ROOT = path.resolve(__dirname, '..', '..', '..');
export const BUILD_GUEST = path.join(ROOT, 'qemu', 'build-guest.sh');

export type Accel = 'kvm' | 'tcg';

export interface Guest {
  kernel: string;
  initrd: string;
}

export interface VmOptions {
  /** Shown in QEMU's -name, the guest's result lines and errors. */
  name: string;
  /** The vhost-user socket path. */
  socket: string;
  /** true: QEMU listens on the socket (vhostwire connects as client); false (default): QEMU connects. */
  server?: boolean;
  /** Queue pairs (1..8); more than one adds mq=on and enables them all in the guest. */
  queues?: number;
  /** ADDR/PREFIX of the guest's NIC, e.g. 10.0.0.1/24 */
  ip?: string;
  /** Default: 52:54:00 followed by three bytes derived from the name. */
  mac?: string;
  /** Guest RAM in MiB (default 256), shared with the backend. */
  memoryMb?: number;
  /** memfd (default) or hugepages (memory-backend-file on /dev/hugepages). */
  memoryBackend?: 'memfd' | 'hugepages';
  cpus?: number;
  mtu?: number;
  /** Commands run once the network is up, e.g. ['ping 10.0.0.2 5', 'stats'] (see qemu/guest-init.sh). */
  test?: string[];
  /** After the tests: power off (default when tests are given) or stay up and take console commands. */
  end?: 'poweroff' | 'stay';
  /** Default: detectAccel(). */
  accel?: Accel;
  /**
   * Where the serial console goes: 'pipe' (default: parsed, commands can be sent, console() has the
   * text), 'inherit' (the terminal; Ctrl-A x quits; nothing parsed) or { file } (QEMU writes it there;
   * nothing parsed, no commands).
   */
  console?: 'pipe' | 'inherit' | { file: string };
  /** Default: ensureGuest(). */
  guest?: Guest;
  /** Extra kernel command line words (e.g. 'loglevel=7' to see the kernel's messages). */
  append?: string[];
  qemu?: string;
  /** Called with every console line (pipe mode). */
  log?: (line: string) => void;
}

/** A parsed "VW-KIND k=v k=v ..." console line. */
export interface VwLine {
  kind: string;
  fields: Record<string, string>;
  raw: string;
}

export function parseLine(line: string): VwLine | null {
  const at = line.indexOf('VW-');
  if (at < 0) return null;
  const raw = line.slice(at).replace(/\r$/, '');
  const m = /^VW-([A-Z]+)\s*(.*)$/.exec(raw);
  if (!m) return null;
  const fields: Record<string, string> = {};
  // The first word of a VW-RAW line is its id; the rest is free text.
  if (m[1] === 'RAW') {
    const sp = m[2].indexOf(' ');
    const id = sp < 0 ? m[2] : m[2].slice(0, sp);
    fields.id = id.replace(/^id=/, '');
    fields.text = sp < 0 ? '' : m[2].slice(sp + 1);
  } else {
    for (const w of m[2].split(/\s+/)) {
      const eq = w.indexOf('=');
      if (eq > 0) fields[w.slice(0, eq)] = w.slice(eq + 1);
    }
  }
  return { kind: m[1], fields, raw };
}

export function which(cmd: string): string | null {
  for (const dir of (process.env.PATH ?? '/usr/bin:/bin').split(':')) {
    const p = path.join(dir, cmd);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      // not here
    }
  }
  return null;
}

export function findQemu(): string | null {
  return which('qemu-system-x86_64');
}

export function guestCacheDir(): string {
  return process.env.VHOSTWIRE_GUEST_CACHE ?? path.join(os.homedir(), '.cache', 'vhostwire', 'guest');
}

/** Builds (or finds up to date) the guest kernel and initramfs; throws with the script's message. */
export function ensureGuest(opts: { force?: boolean } = {}): Guest {
  const r = spawnSync('sh', [BUILD_GUEST, '--quiet', ...(opts.force ? ['--force'] : [])], {
    encoding: 'utf8',
    env: { ...process.env, VHOSTWIRE_GUEST_CACHE: guestCacheDir() },
  });
  if (r.status !== 0) throw new Error(`qemu/build-guest.sh failed: ${(r.stderr || r.stdout || String(r.error)).trim()}`);
  const [kernel, initrd] = r.stdout.trim().split('\n');
  return { kernel, initrd };
}

/** A locally administered MAC (52:54:00 is QEMU's prefix) derived from the name. */
export function macFor(name: string): string {
  const h = crypto.createHash('sha256').update(name).digest();
  return ['52', '54', '00', ...[h[0], h[1], h[2]].map((b) => b.toString(16).padStart(2, '0'))].join(':');
}

/** MSI-X vectors for a virtio-net-pci device: one per virtqueue plus config and control queue. */
export function vectorsFor(queues: number, accel: Accel): number {
  return accel === 'tcg' ? 0 : 2 * queues + 2;
}

/** The QEMU command line (without the binary) for a VM. */
export function qemuArgs(o: VmOptions, guest: Guest, accel: Accel): string[] {
  const queues = o.queues ?? 1;
  const mem = o.memoryMb ?? 256;
  const tests = o.test ?? [];
  const end = o.end ?? (tests.length ? 'poweroff' : 'stay');
  const append = [
    'console=ttyS0',
    'quiet',
    'loglevel=3',
    'panic=-1',
    `vw.name=${o.name}`,
    ...(o.ip ? [`vw.ip=${o.ip}`] : []),
    ...(queues > 1 ? [`vw.queues=${queues}`] : []),
    ...(o.mtu ? [`vw.mtu=${o.mtu}`] : []),
    // Commands are comma-separated, their words ':'-separated (the kernel command line splits on spaces).
    ...(tests.length ? [`vw.test=${tests.map((t) => t.trim().split(/\s+/).join(':')).join(',')}`] : []),
    `vw.end=${end}`,
    ...(o.append ?? []),
  ];
  const memObj =
    (o.memoryBackend ?? 'memfd') === 'hugepages'
      ? `memory-backend-file,id=mem,size=${mem}M,mem-path=/dev/hugepages,share=on`
      : `memory-backend-memfd,id=mem,size=${mem}M,share=on`;
  const chardev = o.server ? `socket,id=vhu0,path=${o.socket},server=on,wait=off` : `socket,id=vhu0,path=${o.socket},reconnect=1`;
  const device = [
    'virtio-net-pci',
    'netdev=net0',
    `mac=${o.mac ?? macFor(o.name)}`,
    ...(queues > 1 ? ['mq=on'] : []),
    `vectors=${vectorsFor(queues, accel)}`,
    // No iPXE option ROM: the guest boots from -kernel, and loading the ROM costs seconds under TCG.
    'romfile=',
  ].join(',');
  const serial = o.console === 'inherit' ? 'mon:stdio' : typeof o.console === 'object' ? `file:${o.console.file}` : 'stdio';
  return [
    '-name',
    o.name,
    '-machine',
    'pc',
    '-accel',
    accel,
    ...(accel === 'kvm' ? ['-cpu', 'host'] : []),
    '-m',
    String(mem),
    '-smp',
    String(o.cpus ?? 1),
    '-object',
    memObj,
    '-numa',
    'node,memdev=mem',
    '-nodefaults',
    '-nographic',
    '-no-reboot',
    '-kernel',
    guest.kernel,
    '-initrd',
    guest.initrd,
    '-append',
    append.join(' '),
    '-chardev',
    chardev,
    '-netdev',
    `vhost-user,id=net0,chardev=vhu0,queues=${queues}`,
    '-device',
    device,
    '-serial',
    serial,
  ];
}

/** Shell-quoted, for printing a command line someone can paste. */
export function shellQuote(args: string[]): string {
  return args.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
}

/**
 * KVM or TCG. VHOSTWIRE_ACCEL=kvm|tcg decides outright. Otherwise TCG when /dev/kvm is not read-write;
 * else one probe boot under KVM must reach the guest's init within 20 s (on some nested hosts KVM opens
 * but guests hang or QEMU refuses to start): its verdict is cached in the guest cache directory.
 */
export async function detectAccel(guest?: Guest, qemu = findQemu() ?? 'qemu-system-x86_64'): Promise<Accel> {
  const env = process.env.VHOSTWIRE_ACCEL;
  if (env === 'kvm' || env === 'tcg') return env;
  try {
    fs.accessSync('/dev/kvm', fs.constants.R_OK | fs.constants.W_OK);
  } catch {
    return 'tcg';
  }
  const g = guest ?? ensureGuest();
  const st = fs.statSync(g.kernel);
  const key = `${os.release()} ${qemu} ${g.kernel} ${st.size}`;
  const cacheFile = path.join(guestCacheDir(), 'accel-probe.json');
  try {
    const c = JSON.parse(fs.readFileSync(cacheFile, 'utf8')) as { key: string; accel: Accel };
    if (c.key === key && (c.accel === 'kvm' || c.accel === 'tcg')) return c.accel;
  } catch {
    // no verdict yet
  }
  const ok = await new Promise<boolean>((resolve) => {
    const child = spawn(
      qemu,
      [
        '-machine',
        'pc',
        '-accel',
        'kvm',
        '-cpu',
        'host',
        '-m',
        '128',
        '-nodefaults',
        '-nographic',
        '-no-reboot',
        '-kernel',
        g.kernel,
        '-initrd',
        g.initrd,
        '-append',
        'console=ttyS0 quiet panic=-1 vw.name=probe vw.test=mark:probe',
        '-serial',
        'stdio',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    const timer = setTimeout(() => finish(false), 20000);
    function finish(v: boolean): void {
      clearTimeout(timer);
      try {
        if (child.exitCode === null && child.signalCode === null && child.pid) process.kill(child.pid, 'SIGKILL');
      } catch {
        // gone
      }
      resolve(v);
    }
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      if (out.includes('VW-READY')) finish(true);
    });
    child.on('exit', () => finish(out.includes('VW-READY')));
    child.on('error', () => finish(false));
  });
  const accel: Accel = ok ? 'kvm' : 'tcg';
  try {
    fs.writeFileSync(cacheFile, JSON.stringify({ key, accel }) + '\n');
  } catch {
    // a read-only cache only costs another probe next time
  }
  return accel;
}

// Every QEMU we started and that still runs; killed by pid when this process exits.
const live = new Set<Vm>();
process.once('exit', () => {
  for (const vm of live) {
    try {
      process.kill(vm.pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
});

export interface ReadyInfo {
  name: string;
  if: string;
  ip: string;
  mac: string;
  queues: number;
  /** guest uptime when its network was up */
  bootSeconds: number;
  /** host milliseconds from spawning QEMU to VW-READY */
  wallMs: number;
}

export interface VmExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/**
 * A running QEMU guest. Events (pipe console): 'line' (every console line), 'vw' (VwLine), 'exit'.
 */
export class Vm extends EventEmitter {
  readonly name: string;
  readonly options: VmOptions;
  readonly accel: Accel;
  readonly argv: string[];
  readonly child: ChildProcess;
  readonly pid: number;
  readonly exited: Promise<VmExit>;
  /** Every parsed VW- line so far. */
  readonly lines: VwLine[] = [];
  #console = '';
  #partial = '';
  #exit: VmExit | null = null;
  #nextId = 1;
  readonly #startedAt = Date.now();

  private constructor(o: VmOptions, guest: Guest, accel: Accel, qemu: string) {
    super();
    this.name = o.name;
    this.options = o;
    this.accel = accel;
    this.argv = [qemu, ...qemuArgs(o, guest, accel)];
    const inherit = o.console === 'inherit';
    // setpriv (util-linux) sets a parent-death signal and execs QEMU, so the pid stays QEMU's and a QEMU
    // never outlives us, even when we are SIGKILLed (a test runner's timeout).
    const setpriv = which('setpriv');
    const [cmd, args] = setpriv ? [setpriv, ['--pdeathsig', 'SIGKILL', '--', ...this.argv]] : [qemu, this.argv.slice(1)];
    this.child = spawn(cmd, args, { stdio: inherit ? 'inherit' : ['pipe', 'pipe', 'pipe'] });
    if (this.child.pid === undefined) throw new Error(`${o.name}: could not spawn ${qemu}`);
    this.pid = this.child.pid;
    live.add(this);
    if (!inherit) {
      this.child.stdout!.setEncoding('utf8').on('data', (d: string) => this.#data(d));
      this.child.stderr!.setEncoding('utf8').on('data', (d: string) => this.#data(d));
      // A guest that is gone must not take us down with EPIPE.
      this.child.stdin!.on('error', () => undefined);
    }
    this.exited = new Promise((resolve) => {
      this.child.once('exit', (code, signal) => {
        live.delete(this);
        if (this.#partial) this.#line(this.#partial);
        this.#partial = '';
        this.#exit = { code, signal };
        this.emit('exit', this.#exit);
        resolve(this.#exit);
      });
      this.child.once('error', (e) => {
        this.#console += `\nspawn error: ${e.message}\n`;
        this.#exit = { code: null, signal: null };
        this.emit('exit', this.#exit);
        resolve(this.#exit);
      });
    });
  }

  /** Spawns QEMU (building the guest and detecting the accelerator first when not given). */
  static async start(o: VmOptions): Promise<Vm> {
    const qemu = o.qemu ?? findQemu();
    if (!qemu) throw new Error('qemu-system-x86_64 is not installed (Debian: apt-get install qemu-system-x86)');
    const guest = o.guest ?? ensureGuest();
    const accel = o.accel ?? (await detectAccel(guest, qemu));
    return new Vm(o, guest, accel, qemu);
  }

  get running(): boolean {
    return this.#exit === null;
  }

  /** The console text so far (last 1 MiB). */
  console(): string {
    return this.#console;
  }

  #data(d: string): void {
    this.#console += d;
    if (this.#console.length > 1 << 20) this.#console = this.#console.slice(-(1 << 19));
    const parts = (this.#partial + d).split('\n');
    this.#partial = parts.pop() ?? '';
    for (const l of parts) this.#line(l);
  }

  #line(l: string): void {
    this.options.log?.(l);
    this.emit('line', l);
    const v = parseLine(l);
    if (v) {
      this.lines.push(v);
      this.emit('vw', v);
    }
  }

  #error(what: string): Error {
    const tail = this.#console.split('\n').slice(-25).join('\n');
    return new Error(`${this.name} (qemu pid ${this.pid}) ${what}\n--- console ---\n${tail}`);
  }

  /** Resolves with the first VW line (already seen from index `from`, or to come) that matches. */
  waitFor(pred: (v: VwLine) => boolean, timeoutMs: number, what = 'a console line', from = 0): Promise<VwLine> {
    for (let i = from; i < this.lines.length; i++) if (pred(this.lines[i])) return Promise.resolve(this.lines[i]);
    return new Promise((resolve, reject) => {
      const cleanup = (): void => {
        clearTimeout(timer);
        this.off('vw', onLine);
        this.off('exit', onExit);
      };
      const onLine = (v: VwLine): void => {
        if (pred(v)) {
          cleanup();
          resolve(v);
        }
      };
      const onExit = (e: VmExit): void => {
        cleanup();
        reject(this.#error(`exited (${e.signal ?? `code ${e.code}`}) while waiting for ${what}`));
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(this.#error(`timed out after ${timeoutMs} ms waiting for ${what}`));
      }, timeoutMs);
      if (!this.running) return onExit(this.#exit!);
      this.on('vw', onLine);
      this.on('exit', onExit);
    });
  }

  /** Waits for the guest's network to be up (VW-READY). */
  async ready(timeoutMs = 120000): Promise<ReadyInfo> {
    const v = await this.waitFor((x) => x.kind === 'READY', timeoutMs, 'VW-READY (guest network up)');
    const f = v.fields;
    return {
      name: f.name,
      if: f.if,
      ip: f.ip,
      mac: f.mac,
      queues: Number(f.queues),
      bootSeconds: Number(f.boot_s),
      wallMs: Date.now() - this.#startedAt,
    };
  }

  /** Sends one command line to a guest that stays up; resolves with its VW-RESULT fields. */
  async command(cmd: string, timeoutMs = 60000): Promise<Record<string, string>> {
    const v = await this.commandLine(cmd, timeoutMs);
    return v.fields;
  }

  /** Like command(), but also returns the id, for matching VW-PING/VW-LISTEN lines of a background command. */
  async commandLine(cmd: string, timeoutMs = 60000, onStart?: (id: string) => void): Promise<VwLine> {
    if (this.options.console === 'inherit' || typeof this.options.console === 'object')
      throw new Error(`${this.name}: commands need console 'pipe'`);
    await this.waitFor((x) => x.kind === 'STAY', timeoutMs, 'VW-STAY (the guest taking commands)');
    const id = `c${this.#nextId++}`;
    const from = this.lines.length;
    const p = this.waitFor((x) => x.kind === 'RESULT' && x.fields.id === id, timeoutMs, `the result of "${cmd}"`, from);
    this.child.stdin!.write(`@${id} ${cmd}\n`);
    onStart?.(id);
    return p;
  }

  /** Writes a raw line to the console (no id, no waiting). */
  write(line: string): void {
    this.child.stdin?.write(`${line}\n`);
  }

  /** Sends a signal to QEMU by pid (SIGKILL by default) and waits until it is gone. */
  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<VmExit> {
    if (this.running) {
      try {
        process.kill(this.pid, signal);
      } catch {
        // already gone
      }
    }
    return this.exited;
  }

  /** Asks the guest to power off, then SIGTERM, then SIGKILL by pid. */
  async stop(graceMs = 5000): Promise<VmExit> {
    if (!this.running) return this.exited;
    const gone = (ms: number): Promise<boolean> =>
      Promise.race([this.exited.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), ms).unref())]);
    if (this.options.console !== 'inherit' && this.lines.some((x) => x.kind === 'STAY')) {
      this.write('poweroff');
      if (await gone(graceMs)) return this.exited;
    }
    try {
      process.kill(this.pid, 'SIGTERM');
    } catch {
      // gone
    }
    if (await gone(graceMs)) return this.exited;
    return this.kill('SIGKILL');
  }
}
