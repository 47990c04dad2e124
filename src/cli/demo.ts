// `vhostwire demo`: the README's first command. Everything in one process, kernel mode and one PMD
// thread, so it behaves on a 2-core machine.
//
// 1. When QEMU and the guest ingredients are there (findQemu, ensureGuest: qemu/build-guest.sh), two
//    real VMs whose NICs are the switch's vhost-user ports vm0 and vm1, wired together: vm0
//    (10.0.0.1/24) pings vm1 (10.0.0.2/24), we print the guest's ping lines and the backend's port
//    counters, then power both VMs off (killed by pid when they do not go, on every error and on
//    Ctrl-C) and close the switch. Bounded: generous timeouts for TCG on a loaded machine.
// 2. Then (or straight away with --no-vm, or when QEMU or the guest is missing, said in one line) two
//    of our own front ends on a fresh switch, one transmitting 64-byte frames, one receiving, with live
//    rates for --seconds.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Argv, CommandModule, InferredOptionTypes } from 'yargs';
import { UsageError } from '../config/options';
import type { Peer } from '../harness/peer';
import type { CounterValues, Switch, SwitchPortInfo } from '../switch';
import type { Guest, Vm } from '../harness/vm';
import { EventLog } from './event-log';
import { mpps, table } from './format';

const FRAME = 64;
const VM0_IP = '10.0.0.1';
const VM1_IP = '10.0.0.2';
const PINGS = 5;
// Under TCG on a busy 2-core machine a guest boot can take a minute; both boot side by side.
const BOOT_MS = 180_000;
// The ping itself ends by its own -w deadline well before this.
const PING_MS = 90_000;

const options = {
  seconds: { type: 'string', default: '5', requiresArg: true, describe: 'how long the front-end traffic runs (1..3600)' },
  vm: {
    type: 'boolean',
    default: true,
    describe: 'boot two QEMU VMs that ping each other first, when QEMU is installed (--no-vm: front ends only)',
  },
} as const;

type DemoArgs = InferredOptionTypes<typeof options>;

export const demoCommand: CommandModule<object, DemoArgs> = {
  command: 'demo',
  describe:
    'two QEMU VMs pinging each other through a switch (when QEMU is installed), then two front ends exchanging 64-byte frames, with live rates',
  builder: (y: Argv) => y.options(options),
  handler: async (argv) => {
    const seconds = Number(argv.seconds);
    if (!/^[1-9][0-9]*$/.test(argv.seconds) || seconds > 3600)
      throw new UsageError(`--seconds ${JSON.stringify(argv.seconds)}: expected whole seconds, 1..3600`);
    process.exitCode = await runDemo(seconds, argv.vm);
  },
};

/** Raised (through `Interrupt.signal`) when SIGINT or SIGTERM arrives. */
class Interrupted extends Error {}

/**
 * SIGINT/SIGTERM for the whole demo: the first one sets `fired`, runs the registered hooks (killing
 * QEMUs by pid) and rejects `signal`, which every long wait races against; a second one exits at once
 * (vm.ts kills any QEMU left on exit, and QEMU has a parent-death signal anyway).
 */
class Interrupt {
  fired = false;
  readonly signal: Promise<never>;
  readonly #hooks = new Set<() => void>();
  #reject!: (e: Error) => void;
  readonly #handler = (): void => {
    if (this.fired) process.exit(130);
    this.fired = true;
    for (const h of this.#hooks) h();
    this.#reject(new Interrupted('interrupted'));
  };

  constructor() {
    this.signal = new Promise<never>((_, reject) => (this.#reject = reject));
    this.signal.catch(() => undefined);
    process.on('SIGINT', this.#handler);
    process.on('SIGTERM', this.#handler);
  }

  onFire(h: () => void): () => void {
    this.#hooks.add(h);
    return () => this.#hooks.delete(h);
  }

  /** p, unless a signal comes first. */
  race<T>(p: Promise<T>): Promise<T> {
    return Promise.race([p, this.signal]);
  }

  dispose(): void {
    process.off('SIGINT', this.#handler);
    process.off('SIGTERM', this.#handler);
  }
}

function sum(p: SwitchPortInfo | undefined, pick: (id: string) => boolean): bigint {
  let n = 0n;
  for (const set of p?.counters ?? ([] as CounterValues[])) for (const [id, v] of Object.entries(set)) if (pick(id)) n += v;
  return n;
}

async function runDemo(seconds: number, withVms: boolean): Promise<number> {
  const interrupt = new Interrupt();
  try {
    if (withVms) {
      const vmMod = await import('../harness/vm');
      let guest: Guest | undefined;
      const qemu = vmMod.findQemu();
      if (!qemu) {
        console.log(
          'no VMs: qemu-system-x86_64 is not installed (Debian: apt-get install qemu-system-x86 linux-image-amd64 busybox-static); our own front ends instead',
        );
      } else {
        try {
          guest = vmMod.ensureGuest();
        } catch (e) {
          console.log(`no VMs: the guest could not be built (${(e as Error).message.split('\n')[0]}); our own front ends instead`);
        }
      }
      if (qemu && guest) {
        const code = await vmDemo(qemu, guest, interrupt);
        if (code !== 0 || interrupt.fired) return code;
        console.log(`\nnext, without QEMU: our own front ends on a fresh switch for ${seconds} s (--no-vm runs only this part)`);
      }
    }
    return await frontEndDemo(seconds, interrupt);
  } finally {
    interrupt.dispose();
  }
}

/** Two QEMU VMs on vm0/vm1, vm0 pings vm1. 0, 130 when interrupted; throws (one line) when they fail. */
async function vmDemo(qemu: string, guest: Guest, interrupt: Interrupt): Promise<number> {
  const { Switch } = await import('../switch');
  const { Vm, detectAccel } = await import('../harness/vm');
  const started = Date.now();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostwire-demo-'));
  let sw: Switch | undefined;
  const vms: Vm[] = [];
  // Killed by pid the moment a signal arrives, not only in `finally`.
  const killAll = (): void => {
    for (const vm of vms) {
      try {
        process.kill(vm.pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
  };
  const unhook = interrupt.onFire(killAll);
  let failure: string | undefined;
  let ok = false;
  try {
    sw = new Switch({ mode: 'kernel', pmdCores: [] });
    const events = new EventLog();
    sw.on('refused', (e) => events.log(e.port, 'refused', `refused: ${e.reason}`));
    sw.on('ring-broken', (e) => events.log(e.port, 'ring-broken', `ring broken on vring ${e.queue} (${e.reason})`));
    sw.on('connected', (e) => console.log(`${e.port}: QEMU connected and negotiated`));
    const sock0 = path.join(dir, 'vm0.sock');
    const sock1 = path.join(dir, 'vm1.sock');
    sw.addPort({ kind: 'vhost-user', name: 'vm0', path: sock0, client: false, queues: 1 });
    sw.addPort({ kind: 'vhost-user', name: 'vm1', path: sock1, client: false, queues: 1 });
    sw.wire('vm0', 'vm1');
    console.log(`switch: vm0 (${sock0}) <-> vm1 (${sock1}), kernel mode, 1 PMD thread`);

    const accel = await interrupt.race(detectAccel(guest, qemu));
    console.log(
      `booting two QEMU guests (${accel === 'kvm' ? 'KVM' : 'TCG, no KVM here: up to a minute or more on a busy machine'}), ` +
        `their only NIC a vhost-user port of the switch: vm0 ${VM0_IP}/24, vm1 ${VM1_IP}/24`,
    );
    for (const [name, socket, ip] of [
      ['vm0', sock0, VM0_IP],
      ['vm1', sock1, VM1_IP],
    ] as const) {
      vms.push(await Vm.start({ name, socket, ip: `${ip}/24`, end: 'stay', guest, accel, qemu }));
      if (interrupt.fired) killAll();
    }
    const [vm0, vm1] = vms;
    const ready = await interrupt.race(Promise.all(vms.map((vm) => vm.ready(BOOT_MS))));
    for (const [i, r] of ready.entries())
      console.log(`${r.name}: up in ${(r.wallMs / 1000).toFixed(1)} s (qemu pid ${vms[i].pid}), ${r.if} ${r.ip} ${r.mac}`);

    // Busybox ping through the guest's shell ("ping" alone is the guest's summarising command): its
    // lines show up on the console as they come.
    console.log(`vm0$ ping -c ${PINGS} ${VM1_IP}`);
    let sent = 0;
    let received = 0;
    const onLine = (raw: string): void => {
      const l = raw.replace(/\r$/, '').trim();
      if (!/^(PING |\d+ bytes from |--- |\d+ packets transmitted|round-trip)/.test(l)) return;
      console.log(`  ${l}`);
      const m = /^(\d+) packets transmitted, (\d+) packets received/.exec(l);
      if (m) [sent, received] = [Number(m[1]), Number(m[2])];
    };
    vm0.on('line', onLine);
    try {
      await interrupt.race(vm0.command(`busybox ping -c ${PINGS} -w ${PINGS + 20} ${VM1_IP}`, PING_MS));
    } finally {
      vm0.off('line', onLine);
    }
    if (received === 0) throw new Error(sent ? `no reply to any of ${sent} pings` : 'ping printed no summary');

    const ports = sw.ports();
    const rows = [['port', 'RX packets', 'RX bytes', 'TX packets', 'TX bytes', 'drops']];
    for (const name of ['vm0', 'vm1']) {
      const p = ports.find((x) => x.name === name);
      rows.push([
        name,
        ...['RX_PACKETS', 'RX_BYTES', 'TX_PACKETS', 'TX_BYTES'].map((id) => String(sum(p, (x) => x === id))),
        String(sum(p, (x) => x.startsWith('DROP_'))),
      ]);
    }
    console.log('backend port counters (RX: what vhostwire took from the guest, TX: what it put into it):');
    console.log(table(rows).replace(/^/gm, '  '));
    if (received < sent) console.log(`note: ${sent - received} of ${sent} pings went unanswered`);

    // Power off politely; SIGTERM, then SIGKILL by pid, when a guest does not go.
    console.log('powering both VMs off');
    await interrupt.race(Promise.all([vm0.stop(5000), vm1.stop(5000)]));
    ok = true;
  } catch (e) {
    if (!(e instanceof Interrupted)) failure = (e as Error).message.split('\n')[0];
  } finally {
    killAll();
    await Promise.all(vms.map((vm) => vm.exited));
    unhook();
    await sw?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  const took = `${((Date.now() - started) / 1000).toFixed(0)} s`;
  if (interrupt.fired) {
    console.log(`interrupted: VMs killed, switch closed (${took})`);
    return 130;
  }
  if (!ok) {
    // Keep the consoles where one can read them; the error itself is one line (main.ts prints it). In a
    // directory of our own: under a fixed name in /tmp another user could plant a symlink for root to
    // write through, or read what the guests printed.
    const logDir = vms.length ? fs.mkdtempSync(path.join(os.tmpdir(), 'vhostwire-demo-logs-')) : '';
    const logs = vms.map((vm) => {
      const f = path.join(logDir, `${vm.name}.log`);
      fs.writeFileSync(f, vm.console(), { flag: 'wx', mode: 0o600 });
      return f;
    });
    throw new Error(
      `the VMs did not ping each other: ${failure ?? 'unknown error'}${logs.length ? ` (guest consoles: ${logs.join(', ')})` : ''}`,
    );
  }
  console.log(`VMs gone, switch closed: the VM part took ${took}`);
  return 0;
}

async function frontEndDemo(seconds: number, interrupt: Interrupt): Promise<number> {
  // Loaded here, not at the top: --help must work without the native addon.
  const { Switch } = await import('../switch');
  const { Peer } = await import('../harness/peer');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostwire-demo-'));
  let sw: Switch | undefined;
  const peers: Peer[] = [];
  try {
    sw = new Switch({ mode: 'kernel', pmdCores: [] });
    const events = new EventLog();
    sw.on('refused', (e) => events.log(e.port, 'refused', `refused: ${e.reason}`));
    sw.on('ring-broken', (e) => events.log(e.port, 'ring-broken', `ring broken on vring ${e.queue} (${e.reason})`));
    const vm0 = path.join(dir, 'vm0.sock');
    const vm1 = path.join(dir, 'vm1.sock');
    sw.addPort({ kind: 'vhost-user', name: 'vm0', path: vm0, client: false, queues: 1 });
    sw.addPort({ kind: 'vhost-user', name: 'vm1', path: vm1, client: false, queues: 1 });
    sw.wire('vm0', 'vm1');
    console.log(`switch: vm0 (${vm0}) <-> vm1 (${vm1}), kernel mode, 1 PMD thread`);

    // Interrupt-driven front ends sleep when idle, as guest drivers do, so three threads share two cores.
    const tx = new Peer({ path: vm0, interrupts: true });
    peers.push(tx);
    const rx = new Peer({ path: vm1, interrupts: true });
    peers.push(rx);
    console.log(`front ends connected: vm0 transmits ${FRAME}-byte frames, vm1 receives`);
    rx.startTraffic({ rx: true });
    tx.startTraffic({ txSize: FRAME });

    for (let s = 1; s <= seconds && !interrupt.fired; s++) {
      const r0 = await Promise.all([tx.rate(1000), rx.rate(1000)]);
      const vm1Port = sw.ports().find((p) => p.name === 'vm1');
      console.log(
        `${String(s).padStart(3)}s  vm0 sent ${mpps(r0[0].txPps)}  vm1 received ${mpps(r0[1].rxPps)}  ` +
          `dropped for lack of vm1 buffers: ${sum(vm1Port, (id) => id === 'DROP_TX_NO_BUFFER')}`,
      );
    }
    tx.stopTraffic();
    // Let the last frames in flight land before counting.
    await sleep(100);
    rx.stopTraffic();
    const sent = tx.stats().txPackets;
    const received = rx.stats().rxPackets;
    console.log(`total: vm0 sent ${sent} frames, vm1 received ${received}`);
    if (received === 0) {
      console.error('vhostwire demo: no frame arrived at vm1');
      return 1;
    }
    return 0;
  } finally {
    for (const p of peers) p.close();
    await sw?.close();
    fs.rmSync(dir, { recursive: true, force: true });
    console.log('closed');
  }
}
