// `vhostwire vm`: boots the small test guest (qemu/build-guest.sh) in QEMU with its virtio-net NIC on a
// vhost-user socket served by `vhostwire serve`. Without --test the serial console is this terminal
// (Ctrl-A x quits QEMU; the guest takes the commands listed in qemu/guest-init.sh, or any shell
// command). With --test it runs the tests, prints the console, powers off and exits 0 when every test
// passed, 1 otherwise. --print shows the QEMU command line instead of running it.
import type { Argv, CommandModule, InferredOptionTypes } from 'yargs';
import { limits, UsageError } from '../config/parse';

const options = {
  name: { type: 'string', requiresArg: true, demandOption: true, describe: 'VM name (letters, digits, - and _)' },
  socket: { type: 'string', requiresArg: true, demandOption: true, describe: 'the vhost-user socket path' },
  ip: { type: 'string', requiresArg: true, describe: "the guest NIC's ADDR/PREFIX, e.g. 10.0.0.1/24" },
  server: {
    type: 'boolean',
    describe:
      'QEMU listens on the socket (server=on,wait=off); serve it with --vhost-user NAME=PATH,client. Default: QEMU connects (reconnect=1)',
  },
  queues: { type: 'string', requiresArg: true, describe: `queue pairs (1..${limits.maxQueuePairs}); more than 1 adds mq=on [default: 1]` },
  memory: { type: 'string', requiresArg: true, describe: 'guest RAM in MiB, shared with the backend [default: 256]' },
  hugepages: { type: 'boolean', describe: 'back guest RAM with /dev/hugepages instead of a memfd' },
  mac: { type: 'string', requiresArg: true, describe: 'the NIC MAC [default: 52:54:00 + 3 bytes derived from the name]' },
  mtu: { type: 'string', requiresArg: true, describe: 'the guest NIC MTU' },
  test: {
    type: 'string',
    array: true,
    requiresArg: true,
    describe: 'a guest command to run once the network is up, e.g. "ping 10.0.0.2 10" (repeatable); then power off',
  },
  stay: { type: 'boolean', describe: 'with --test: stay up afterwards instead of powering off' },
  accel: {
    type: 'string',
    requiresArg: true,
    choices: ['auto', 'kvm', 'tcg'],
    describe: 'auto: KVM when it boots a guest here, else TCG [default: auto]',
  },
  console: { type: 'string', requiresArg: true, describe: 'write the serial console to FILE instead of this terminal' },
  print: { type: 'boolean', describe: 'print the QEMU command line and exit' },
} as const;

type VmArgs = InferredOptionTypes<typeof options>;

export interface VmCliConfig {
  name: string;
  socket: string;
  ip?: string;
  server: boolean;
  queues: number;
  memoryMb: number;
  hugepages: boolean;
  mac?: string;
  mtu?: number;
  test: string[];
  stay: boolean;
  accel: 'auto' | 'kvm' | 'tcg';
  consoleFile?: string;
  print: boolean;
}

function int(flag: string, v: string | undefined, min: number, max: number, dflt: number): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!/^\d+$/.test(v) || n < min || n > max) throw new UsageError(`--${flag}: expected an integer ${min}..${max}, got "${v}"`);
  return n;
}

/** Checks the flags; bad input throws UsageError naming the flag. */
export function buildVmConfig(a: VmArgs): VmCliConfig {
  if (!/^[A-Za-z0-9_-]{1,32}$/.test(a.name)) throw new UsageError(`--name: expected 1..32 letters, digits, - or _, got "${a.name}"`);
  if (a.socket === '') throw new UsageError('--socket: expected a path');
  if (a.ip !== undefined) {
    const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(a.ip);
    if (!m || m.slice(1, 5).some((o) => Number(o) > 255) || Number(m[5]) > 32)
      throw new UsageError(`--ip: expected an IPv4 ADDR/PREFIX such as 10.0.0.1/24, got "${a.ip}"`);
  }
  if (a.mac !== undefined && !/^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/.test(a.mac))
    throw new UsageError(`--mac: expected xx:xx:xx:xx:xx:xx, got "${a.mac}"`);
  const test = a.test ?? [];
  for (const c of test) {
    // Commands travel on the kernel command line: words separated by ':' and commands by ','.
    if (!/^[A-Za-z0-9_. /=-]+$/.test(c) || c.trim() === '')
      throw new UsageError(`--test: "${c}" may only contain letters, digits, spaces and . / = - _`);
  }
  if (a.stay && test.length === 0) throw new UsageError('--stay: only with --test (without tests the VM stays up anyway)');
  return {
    name: a.name,
    socket: a.socket,
    ip: a.ip,
    server: !!a.server,
    queues: int('queues', a.queues, 1, limits.maxQueuePairs, 1),
    memoryMb: int('memory', a.memory, 64, 65536, 256),
    hugepages: !!a.hugepages,
    mac: a.mac?.toLowerCase(),
    mtu: a.mtu === undefined ? undefined : int('mtu', a.mtu, 68, 65535, 1500),
    test,
    stay: !!a.stay,
    accel: (a.accel ?? 'auto') as VmCliConfig['accel'],
    consoleFile: a.console,
    print: !!a.print,
  };
}

export const vmCommand: CommandModule<object, VmArgs> = {
  command: 'vm',
  describe: 'boot a small QEMU guest whose NIC is a vhost-user port of `vhostwire serve`',
  builder: (y: Argv) =>
    y
      .options(options)
      .example(
        '$0 vm --name vm0 --socket /tmp/vm0.sock --ip 10.0.0.1/24',
        'a VM on a socket `serve --vhost-user vm0=/tmp/vm0.sock` listens on',
      )
      .example('$0 vm --name vm1 --socket /tmp/vm1.sock --ip 10.0.0.2/24 --test "ping 10.0.0.1 10"', 'ping vm0, report, power off')
      .example(
        '$0 vm --name vm0 --socket /tmp/vm0.sock --server --queues 2 --print',
        'the QEMU command line for a listening QEMU with 2 queue pairs',
      ),
  handler: async (argv) => {
    process.exitCode = await runVm(buildVmConfig(argv));
  },
};

async function runVm(c: VmCliConfig): Promise<number> {
  const vmMod = await import('../harness/vm');
  const qemu = vmMod.findQemu();
  if (!qemu && !c.print) throw new Error('qemu-system-x86_64 is not installed (Debian: apt-get install qemu-system-x86)');
  const guest = vmMod.ensureGuest();
  const accel = c.accel === 'auto' ? await vmMod.detectAccel(guest, qemu ?? undefined) : c.accel;
  const tested = c.test.length > 0;
  const opts: import('../harness/vm').VmOptions = {
    name: c.name,
    socket: c.socket,
    server: c.server,
    queues: c.queues,
    ip: c.ip,
    mac: c.mac,
    mtu: c.mtu,
    memoryMb: c.memoryMb,
    memoryBackend: c.hugepages ? 'hugepages' : 'memfd',
    test: c.test,
    end: tested && !c.stay ? 'poweroff' : 'stay',
    accel,
    guest,
    // Tests are parsed from the console, so it is piped (and echoed) then; otherwise it is the terminal.
    console: c.consoleFile ? { file: c.consoleFile } : tested ? 'pipe' : 'inherit',
    log: (line) => process.stdout.write(`${line}\n`),
  };
  if (c.print) {
    console.log(vmMod.shellQuote([qemu ?? 'qemu-system-x86_64', ...vmMod.qemuArgs(opts, guest, accel)]));
    return 0;
  }
  if (opts.console === 'inherit' || typeof opts.console === 'object') {
    console.error(
      `vhostwire vm: booting ${c.name} (${accel}) on ${c.socket} as vhost-user ${c.server ? 'server' : 'client'}` +
        (opts.console === 'inherit' ? '; Ctrl-A x quits' : `; console in ${c.consoleFile}`),
    );
  }
  const vm = await vmMod.Vm.start(opts);
  const onSignal = (): void => void vm.stop();
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    if (!tested || opts.console !== 'pipe') {
      const e = await vm.exited;
      return e.code ?? 1;
    }
    // Each test answers with one VW-RESULT id=bootN line; all of them must say ok=1.
    let failed = 0;
    for (let i = 1; i <= c.test.length; i++) {
      const r = await vm.waitFor((x) => x.kind === 'RESULT' && x.fields.id === `boot${i}`, 600_000, `the result of "${c.test[i - 1]}"`);
      if (r.fields.ok !== '1') failed++;
    }
    if (c.stay) {
      // The console is a pipe now: pass our stdin on, so the guest still takes commands.
      process.stdin.pipe(vm.child.stdin!);
      await vm.exited;
      process.stdin.unpipe();
      process.stdin.pause();
    } else {
      await Promise.race([vm.exited, new Promise((r) => setTimeout(r, 10_000).unref())]);
      await vm.stop();
    }
    if (failed) console.error(`vhostwire vm: ${failed} of ${c.test.length} tests failed`);
    return failed ? 1 : 0;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    if (vm.running) await vm.stop();
  }
}
