// `vhostwire demo`: the README's first command. Everything in one process: a switch with two
// vhost-user ports wired together and two of our front ends, one transmitting 64-byte frames, one
// receiving, with live rates. Kernel mode and one PMD thread, so it behaves on a 2-core machine.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Argv, CommandModule, InferredOptionTypes } from 'yargs';
import { UsageError } from '../options';
import type { Peer } from '../peer';
import type { Switch, SwitchPortInfo } from '../switch';
import { mpps } from './format';

const FRAME = 64;

const options = {
  seconds: { type: 'string', default: '5', requiresArg: true, describe: 'how long to run (1..3600)' },
} as const;

type DemoArgs = InferredOptionTypes<typeof options>;

export const demoCommand: CommandModule<object, DemoArgs> = {
  command: 'demo',
  describe: 'two front ends exchanging 64-byte frames through a switch, with live rates',
  builder: (y: Argv) => y.options(options),
  handler: async (argv) => {
    const seconds = Number(argv.seconds);
    if (!/^[1-9][0-9]*$/.test(argv.seconds) || seconds > 3600)
      throw new UsageError(`--seconds ${JSON.stringify(argv.seconds)}: expected whole seconds, 1..3600`);
    process.exitCode = await runDemo(seconds);
  },
};

function sum(p: SwitchPortInfo | undefined, id: string): bigint {
  return (p?.counters ?? []).reduce((acc, set) => acc + (set[id] ?? 0n), 0n);
}

async function runDemo(seconds: number): Promise<number> {
  // Loaded here, not at the top: --help must work without the native addon.
  const { Switch } = await import('../switch');
  const { Peer } = await import('../peer');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostwire-demo-'));
  let sw: Switch | undefined;
  const peers: Peer[] = [];
  let interrupted = false;
  const onSignal = (): void => {
    interrupted = true;
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    sw = new Switch({ mode: 'kernel', pmdCores: [] });
    sw.on('error', (e) => console.log(`${e.port}: error: ${e.reason}`));
    sw.on('ring-broken', (e) => console.log(`${e.port}: ring broken on vring ${e.queue} (${e.reason})`));
    const vm0 = path.join(dir, 'vm0.sock');
    const vm1 = path.join(dir, 'vm1.sock');
    sw.addVhostUser({ name: 'vm0', path: vm0 });
    sw.addVhostUser({ name: 'vm1', path: vm1 });
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

    for (let s = 1; s <= seconds && !interrupted; s++) {
      const r0 = await Promise.all([tx.rate(1000), rx.rate(1000)]);
      const vm1Port = sw.ports().find((p) => p.name === 'vm1');
      console.log(
        `${String(s).padStart(3)}s  vm0 sent ${mpps(r0[0].txPps)}  vm1 received ${mpps(r0[1].rxPps)}  ` +
          `dropped for lack of vm1 buffers: ${sum(vm1Port, 'DROP_TX_NO_BUFFER')}`,
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
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    console.log('closed');
  }
}
