// End to end with real QEMU guests (qemu/build-guest.sh builds them from the Debian kernel and busybox):
// two VMs wired through `vhostwire serve` ping each other and move a checked bulk TCP stream; the
// backend is SIGKILLed and restarted under running VMs in both socket roles (the guests reconnect and
// ping again without rebooting; we report how long traffic stopped); a VM killed mid-transfer leaves the
// backend and the other VM working; a VM with 2 queue pairs carries traffic on both.
//
// Under TCG a guest boots in 5-10 s on an idle machine, several times that on a busy one: the timeouts
// are generous, every QEMU is killed by pid in teardown (and by a parent-death signal if we die).
import t, { type Test } from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ensureGuest, findQemu, macFor, Vm, type Guest, type VmOptions } from '../../src/harness/vm';
import { freePort } from '../support/helpers';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const BIN = path.join(ROOT, 'bin', 'vhostwire.js');
const BOOT_MS = 240_000;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// The whole file, VM boots included (tap's default per-file timeout is shorter).
t.setTimeout(600_000);

interface ApiPort {
  name: string;
  state: string;
  queuePairs: number;
  counters: Array<Record<string, number>>;
}

/** `node bin/vhostwire.js serve ...` (never through npx: the pid we SIGKILL is the backend's own). */
class Backend {
  readonly child: ChildProcess;
  readonly pid: number;
  out = '';
  readonly exited: Promise<void>;
  #running = true;

  private constructor(
    readonly args: string[],
    readonly url: string,
  ) {
    this.child = spawn(process.execPath, [BIN, 'serve', ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    this.pid = this.child.pid!;
    this.child.stdout!.setEncoding('utf8').on('data', (d: string) => (this.out += d));
    this.child.stderr!.setEncoding('utf8').on('data', (d: string) => (this.out += d));
    this.exited = new Promise((r) => this.child.once('exit', () => r()));
    void this.exited.then(() => (this.#running = false));
  }

  static async start(args: string[]): Promise<Backend> {
    const port = await freePort();
    const b = new Backend([...args, '--mode', 'kernel', '--metrics', `127.0.0.1:${port}`], `http://127.0.0.1:${port}`);
    await b.waitOutput(/^ready$/m, 30_000);
    return b;
  }

  get running(): boolean {
    return this.#running;
  }

  async waitOutput(re: RegExp, timeoutMs: number, from = 0): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!re.test(this.out.slice(from))) {
      if (!this.#running) throw new Error(`vhostwire serve exited while waiting for ${re}\n${this.out}`);
      if (Date.now() > deadline) throw new Error(`vhostwire serve: no ${re} within ${timeoutMs} ms\n${this.out}`);
      await sleep(50);
    }
  }

  async ports(): Promise<ApiPort[]> {
    const r = await fetch(`${this.url}/api/ports`);
    return (await r.json()) as ApiPort[];
  }

  async port(name: string): Promise<ApiPort> {
    const p = (await this.ports()).find((x) => x.name === name);
    if (!p) throw new Error(`no port ${name}`);
    return p;
  }

  async kill(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    if (this.#running) {
      try {
        process.kill(this.pid, signal);
      } catch {
        // gone
      }
      const timer = setTimeout(() => this.#running && process.kill(this.pid, 'SIGKILL'), 10_000);
      await this.exited;
      clearTimeout(timer);
    }
  }
}

/** A pair of VMs on one backend, torn down (VMs killed by pid, backend stopped) whatever happens. */
class Rig {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostwire-vm-'));
  vms: Vm[] = [];
  backends: Backend[] = [];

  sock(name: string): string {
    return path.join(this.dir, `${name}.sock`);
  }

  async vm(o: Omit<VmOptions, 'guest' | 'end'>, guest: Guest): Promise<Vm> {
    const vm = await Vm.start({ guest, end: 'stay', ...o });
    this.vms.push(vm);
    return vm;
  }

  async backend(args: string[]): Promise<Backend> {
    const b = await Backend.start(args);
    this.backends.push(b);
    return b;
  }

  async close(): Promise<void> {
    await Promise.all(this.vms.map((v) => v.kill('SIGKILL')));
    await Promise.all(this.backends.map((b) => b.kill('SIGTERM')));
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

function num(f: Record<string, string>, k: string): number {
  return Number(f[k]);
}

async function pingOk(t: Test, from: Vm, to: string, count = 10): Promise<void> {
  const r = await from.command(`ping ${to} ${count} 0.1`, 90_000);
  t.equal(r.loss, '0', `${from.name} -> ${to}: ${r.received}/${r.sent} replies, rtt avg ${r.rtt_avg} ms`);
}

/**
 * Pings b from a every 100 ms while the backend is SIGKILLed and started again; returns the new
 * backend. The guests must keep running (no second VW-READY) and answer again.
 */
async function restartUnderTraffic(t: Test, rig: Rig, be: Backend, a: Vm, b: Vm, bIp: string, aIp: string): Promise<Backend> {
  const readyBefore = [a, b].map((v) => v.lines.filter((x) => x.kind === 'READY').length);
  const watch = a.command(`watch ${bIp} 15 0.1`, 120_000);
  await sleep(3000);
  const t0 = Date.now();
  await be.kill('SIGKILL');
  const be2 = await rig.backend(be.args.slice(0, be.args.indexOf('--mode')));
  await be2.waitOutput(/^vm0: connected$/m, 30_000);
  await be2.waitOutput(/^vm1: connected$/m, 30_000);
  const reconnectMs = Date.now() - t0;
  const w = await watch;
  t.ok(num(w, 'received') > 0, `watch got ${w.received}/${w.sent} replies`);
  t.comment(
    `backend SIGKILLed and restarted: both VMs reconnected ${(reconnectMs / 1000).toFixed(1)} s after the kill; ` +
      `traffic stopped for ${w.max_silence_s} s (longest time between two echo replies), ` +
      `${w.max_gap_s} s worth of replies lost`,
  );
  await pingOk(t, a, bIp);
  await pingOk(t, b, aIp);
  t.ok(a.running && b.running, 'both QEMUs still run');
  t.same(
    [a, b].map((v) => v.lines.filter((x) => x.kind === 'READY').length),
    readyBefore,
    'neither guest rebooted',
  );
  return be2;
}

const qemu = findQemu();
if (!qemu) {
  t.plan(0, 'qemu-system-x86_64 is not installed (Debian: apt-get install qemu-system-x86 linux-image-amd64 busybox-static)');
} else {
  const guest = ensureGuest();

  t.test('QEMU connects to our socket (vhostwire listens)', async (t) => {
    const started = Date.now();
    const rig = new Rig();
    t.teardown(() => rig.close());
    const s0 = rig.sock('vm0');
    const s1 = rig.sock('vm1');
    const serveArgs = ['--vhost-user', `vm0=${s0}`, '--vhost-user', `vm1=${s1}`, '--wire', 'vm0=vm1'];
    let be = await rig.backend(serveArgs);
    const vm0 = await rig.vm({ name: 'vm0', socket: s0, ip: '10.0.0.1/24' }, guest);
    const vm1 = await rig.vm({ name: 'vm1', socket: s1, ip: '10.0.0.2/24' }, guest);
    const [r0, r1] = await Promise.all([vm0.ready(BOOT_MS), vm1.ready(BOOT_MS)]);
    t.comment(`booted (${vm0.accel}): vm0 in ${(r0.wallMs / 1000).toFixed(1)} s, vm1 in ${(r1.wallMs / 1000).toFixed(1)} s`);

    await t.test('two VMs ping each other with 0% loss', async (t) => {
      await pingOk(t, vm0, '10.0.0.2', 20);
      await pingOk(t, vm1, '10.0.0.1', 20);
    });

    await t.test('a bulk TCP transfer arrives complete and intact', async (t) => {
      const recv = vm1.command('tcp-recv 5001 150 check', 180_000);
      await vm1.waitFor((x) => x.kind === 'LISTEN' && x.fields.port === '5001', 30_000, 'tcp-recv listening');
      const s = await vm0.command('tcp-send 10.0.0.2 5001 8 check', 180_000);
      const r = await recv;
      t.equal(s.ok, '1', 'sender finished');
      t.equal(r.bytes, String(8 << 20), 'all 8 MiB arrived');
      t.equal(r.md5, s.md5, 'byte for byte what was sent');
      t.comment(`8 MiB vm0 -> vm1 in ${s.seconds} s: ${s.mbit_s} Mbit/s (guest-bound under ${vm0.accel})`);
    });

    await t.test('backend restart (SIGKILL) under running VMs: they reconnect and ping again', async (t) => {
      be = await restartUnderTraffic(t, rig, be, vm0, vm1, '10.0.0.2', '10.0.0.1');
    });

    await t.test('a VM killed mid-transfer leaves the backend and the other VM working', async (t) => {
      // vm0 receives in the background (its console stays free), vm1 sends far more than it can in time.
      const from = vm0.lines.length;
      const recv = vm0.command('tcp-recv 5002 40 &', 120_000);
      await vm0.waitFor((x) => x.kind === 'LISTEN' && x.fields.port === '5002', 30_000, 'tcp-recv listening', from);
      const send = vm1.command('tcp-send 10.0.0.1 5002 512', 120_000).catch(() => undefined);
      const before = (await be.port('vm1')).counters[0].RX_PACKETS ?? 0;
      const deadline = Date.now() + 30_000;
      while (((await be.port('vm1')).counters[0].RX_PACKETS ?? 0) < before + 200 && Date.now() < deadline) await sleep(200);
      const outFrom = be.out.length;
      await vm1.kill('SIGKILL');
      await send;
      await be.waitOutput(/^vm1: disconnected$/m, 15_000, outFrom);
      t.ok(be.running, 'the backend still runs');
      t.equal((await be.port('vm0')).state, 'connected', 'vm0 is still connected');
      const alone = await vm0.command('ping 10.0.0.2 3 0.2', 60_000);
      t.equal(alone.received, '0', 'vm0 answers commands; nobody answers for vm1');

      // A new VM on the dead one's socket gets the port back.
      // The same MAC, as a restarted VM would have: vm0's ARP entry stays right.
      const vm1b = await rig.vm({ name: 'vm1b', socket: s1, ip: '10.0.0.2/24', mac: vm1.options.mac ?? macFor('vm1') }, guest);
      const rb = await vm1b.ready(BOOT_MS);
      t.comment(`replacement vm1 booted in ${(rb.wallMs / 1000).toFixed(1)} s`);
      await pingOk(t, vm0, '10.0.0.2');
      await pingOk(t, vm1b, '10.0.0.1');
      const r = await recv;
      t.ok(num(r, 'bytes') > 0, `vm0 had received ${r.bytes} bytes of the interrupted stream`);
      t.ok(be.running, 'the backend still runs');
    });
    t.comment(`server-role tests took ${((Date.now() - started) / 1000).toFixed(0)} s`);
  });

  t.test('QEMU listens, vhostwire connects (client mode)', async (t) => {
    const started = Date.now();
    const rig = new Rig();
    t.teardown(() => rig.close());
    const s0 = rig.sock('vm0');
    const s1 = rig.sock('vm1');
    // QEMU creates the sockets; vhost-user setup still waits for the backend before the guest runs
    // (wait=off only spares the chardev). We connect, and retry every second.
    const vm0 = await rig.vm({ name: 'vm0', socket: s0, server: true, ip: '10.0.0.1/24' }, guest);
    const vm1 = await rig.vm({ name: 'vm1', socket: s1, server: true, ip: '10.0.0.2/24' }, guest);
    let be = await rig.backend(['--vhost-user', `vm0=${s0},client`, '--vhost-user', `vm1=${s1},client`, '--wire', 'vm0=vm1']);
    const [r0, r1] = await Promise.all([vm0.ready(BOOT_MS), vm1.ready(BOOT_MS)]);
    t.comment(`booted (${vm0.accel}): vm0 in ${(r0.wallMs / 1000).toFixed(1)} s, vm1 in ${(r1.wallMs / 1000).toFixed(1)} s`);
    await pingOk(t, vm0, '10.0.0.2');

    await t.test('backend restart (SIGKILL) in client mode: it reconnects, the VMs ping again', async (t) => {
      be = await restartUnderTraffic(t, rig, be, vm0, vm1, '10.0.0.2', '10.0.0.1');
    });
    t.comment(`client-role tests took ${((Date.now() - started) / 1000).toFixed(0)} s`);
  });

  t.test('offloads: TCP super-frames cross guest to guest, and are segmented for a guest with offloads=off', async (t) => {
    for (const off of [false, true]) {
      const started = Date.now();
      const rig = new Rig();
      t.teardown(() => rig.close());
      const s0 = rig.sock('vm0');
      const s1 = rig.sock('vm1');
      const be = await rig.backend([
        '--vhost-user',
        `vm0=${s0}`,
        '--vhost-user',
        `vm1=${s1}${off ? ',offloads=off' : ''}`,
        '--wire',
        'vm0=vm1',
      ]);
      const vm0 = await rig.vm({ name: 'vm0', socket: s0, ip: '10.0.0.1/24' }, guest);
      const vm1 = await rig.vm({ name: 'vm1', socket: s1, ip: '10.0.0.2/24' }, guest);
      await Promise.all([vm0.ready(BOOT_MS), vm1.ready(BOOT_MS)]);
      const what = off ? 'vm1 with offloads=off' : 'both with offloads';
      await t.test(`${what}: 8 MiB each way arrive intact`, async (t) => {
        for (const [from, to, ip, port] of [
          [vm0, vm1, '10.0.0.2', 5001],
          [vm1, vm0, '10.0.0.1', 5002],
        ] as const) {
          const recv = to.command(`tcp-recv ${port} 150 check`, 180_000);
          await to.waitFor((x) => x.kind === 'LISTEN' && x.fields.port === String(port), 30_000, 'tcp-recv listening');
          const sent = await from.command(`tcp-send ${ip} ${port} 8 check`, 180_000);
          const r = await recv;
          t.equal(r.bytes, String(8 << 20), `${from.name} -> ${to.name}: all 8 MiB arrived`);
          t.equal(r.md5, sent.md5, `${from.name} -> ${to.name}: byte for byte what was sent (${sent.mbit_s} Mbit/s)`);
        }
        const c0 = (await be.port('vm0')).counters[0];
        const c1 = (await be.port('vm1')).counters[0];
        t.ok((c0.RX_SUPER_FRAMES ?? 0) > 0, `vm0 sent super-frames (${c0.RX_SUPER_FRAMES})`);
        if (!off) {
          t.ok((c1.TX_SUPER_FRAMES ?? 0) > 0, `vm1 got them as super-frames (${c1.TX_SUPER_FRAMES})`);
          t.equal(c1.TX_SEGMENTED ?? 0, 0, 'nothing segmented');
          t.ok((c1.RX_SUPER_FRAMES ?? 0) > 0 && (c0.TX_SUPER_FRAMES ?? 0) > 0, 'and the other way too');
        } else {
          t.equal(c1.TX_SUPER_FRAMES ?? 0, 0, 'vm1 got no super-frame');
          t.ok((c1.TX_SEGMENTED ?? 0) > 0, `they were segmented for vm1 (${c1.TX_SEGMENTED} super-frames)`);
          t.ok((c1.TX_SEGMENTS ?? 0) > (c1.TX_SEGMENTED ?? 0), `into ${c1.TX_SEGMENTS} segments`);
          t.equal(c1.RX_SUPER_FRAMES ?? 0, 0, 'vm1, offered no TSO, sent none');
        }
        t.comment(
          `${what}: vm0 sent ${c0.RX_PACKETS} frames (${c0.RX_SUPER_FRAMES} super-frames), vm1 got ${c1.TX_PACKETS} ` +
            `(${c1.TX_SUPER_FRAMES ?? 0} super-frames, ${c1.TX_SEGMENTS ?? 0} segments made), partial checksums completed: ${c1.TX_CSUM_COMPLETED ?? 0}`,
        );
      });
      await rig.close();
      t.comment(`${what}: ${((Date.now() - started) / 1000).toFixed(0)} s`);
    }
  });

  t.test('two VMs with 2 queue pairs each', async (t) => {
    const started = Date.now();
    const rig = new Rig();
    t.teardown(() => rig.close());
    const s0 = rig.sock('vm0');
    const s1 = rig.sock('vm1');
    const be = await rig.backend(['--vhost-user', `vm0=${s0},queues=2`, '--vhost-user', `vm1=${s1},queues=2`, '--wire', 'vm0=vm1']);
    const vm0 = await rig.vm({ name: 'vm0', socket: s0, queues: 2, ip: '10.0.0.1/24' }, guest);
    const vm1 = await rig.vm({ name: 'vm1', socket: s1, queues: 2, ip: '10.0.0.2/24' }, guest);
    const [r0, r1] = await Promise.all([vm0.ready(BOOT_MS), vm1.ready(BOOT_MS)]);
    t.comment(`booted (${vm0.accel}): vm0 in ${(r0.wallMs / 1000).toFixed(1)} s, vm1 in ${(r1.wallMs / 1000).toFixed(1)} s`);

    await t.test('both queue pairs carry traffic', async (t) => {
      t.equal(r0.queues, 2, 'vm0 runs 2 queue pairs');
      t.equal(r1.queues, 2, 'vm1 runs 2 queue pairs');
      // QEMU < 8.2 sends ADD_MEM_REG once per queue pair: a backend that refuses the repeat leaves the
      // second pair (and, with REPLY_ACK, the whole NIC) without vhost.
      t.notMatch(be.out, /error/, 'the backend reported no error');
      for (const q of [0, 1]) {
        await vm0.command(`txq ${q}`);
        await vm1.command(`txq ${q}`);
        const before = (await be.port('vm0')).counters.map((c) => c.RX_PACKETS ?? 0);
        await pingOk(t, vm0, '10.0.0.2');
        await pingOk(t, vm1, '10.0.0.1');
        const after = (await be.port('vm0')).counters.map((c) => c.RX_PACKETS ?? 0);
        t.ok(after[q] - before[q] >= 20, `vm0 transmitted ${after[q] - before[q]} packets on queue pair ${q}`);
      }
      const st = await vm0.command('stats');
      t.comment(
        `vm0 guest counters: rx q0 ${st['ethtool.rx_queue_0_packets']} q1 ${st['ethtool.rx_queue_1_packets']}, ` +
          `tx q0 ${st['ethtool.tx_queue_0_packets']} q1 ${st['ethtool.tx_queue_1_packets']}`,
      );
    });
    t.comment(`multiqueue tests took ${((Date.now() - started) / 1000).toFixed(0)} s`);
  });
}
