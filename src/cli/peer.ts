// `vhostwire peer`: our own front end against any vhost-user backend (ours, DPDK's, OVS's). It
// transmits and/or receives on a native thread and prints packets per second once a second.
import type { Argv, CommandModule, InferredOptionTypes } from 'yargs';
import { setTimeout as sleep } from 'node:timers/promises';
import { buildPeerConfig, DEFAULT_PEER_SECONDS } from '../config/options';
import type { PeerConfig } from '../config/options';
import { limits } from '../config/parse';
import type { Peer } from '../harness/peer';
import { mpps } from './format';

const options = {
  connect: { type: 'string', requiresArg: true, demandOption: true, describe: 'the vhost-user socket path' },
  server: { type: 'boolean', describe: 'listen on the path and wait for a backend in client mode' },
  tx: { type: 'string', requiresArg: true, describe: `transmit frames of SIZE bytes (${limits.minFrame}..${limits.maxFrame})` },
  rx: { type: 'boolean', describe: 'receive and count (the default when --tx is not given)' },
  duration: { type: 'string', requiresArg: true, describe: `seconds to run, 0 = until interrupted [default: ${DEFAULT_PEER_SECONDS}]` },
  queues: { type: 'string', requiresArg: true, describe: `queue pairs to ask for (1..${limits.maxQueuePairs}) [default: 1]` },
  rate: { type: 'string', requiresArg: true, describe: 'transmit at most PPS packets per second [default: unlimited]' },
  count: { type: 'string', requiresArg: true, describe: 'transmit N packets in total [default: unlimited]' },
} as const;

type PeerArgs = InferredOptionTypes<typeof options>;

export const peerCommand: CommandModule<object, PeerArgs> = {
  command: 'peer',
  describe: 'our own vhost-user front end: send and/or receive frames, print packets per second',
  builder: (y: Argv) =>
    y
      .options(options)
      .example('$0 peer --connect /tmp/vm0.sock --tx 64 --duration 5', 'transmit 64-byte frames for 5 s')
      .example('$0 peer --connect /tmp/vm1.sock --rx', 'count what arrives'),
  handler: async (argv) => {
    process.exitCode = await runPeer(buildPeerConfig(argv));
  },
};

async function runPeer(config: PeerConfig): Promise<number> {
  // Loaded here, not at the top: --help and flag errors must work without the native addon.
  const { Peer: PeerClass } = await import('../harness/peer');
  const peer = new PeerClass({ path: config.path, server: config.server, queuePairs: config.queues });
  let stop = false;
  const onSignal = (): void => {
    stop = true;
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    // Sampled before the traffic thread starts, so the summary counts every packet it moved.
    const first = peer.stats();
    const start = process.hrtime.bigint();
    peer.startTraffic({ txSize: config.txSize, txRate: config.txRate, txCount: config.txCount, rx: config.rx });
    let hungUp = false;
    for (let second = 1; !stop && (config.duration === 0 || second <= Math.ceil(config.duration)); second++) {
      const ms = config.duration === 0 ? 1000 : Math.min(1000, (config.duration - (second - 1)) * 1000);
      const r = await rateWhileRunning(peer, ms, () => stop);
      console.log(`${String(second).padStart(4)}s  tx ${mpps(r.txPps)}  rx ${mpps(r.rxPps)}`);
      if (!peer.connected()) {
        hungUp = true;
        break;
      }
    }
    peer.stopTraffic();
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    const last = peer.stats();
    const tx = last.txPackets - first.txPackets;
    const rx = last.rxPackets - first.rxPackets;
    console.log(`tx ${tx} packets (${mpps(tx / seconds)}), rx ${rx} packets (${mpps(rx / seconds)})`);
    if (hungUp) {
      console.error(`vhostwire peer: the backend on ${config.path} hung up`);
      return 1;
    }
    return 0;
  } finally {
    peer.close();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

// Like Peer.rate(), but a signal cuts the interval short so Ctrl-C answers at once.
async function rateWhileRunning(peer: Peer, ms: number, stopped: () => boolean): Promise<{ txPps: number; rxPps: number }> {
  const s0 = peer.stats();
  const t0 = process.hrtime.bigint();
  for (let left = ms; left > 0 && !stopped(); left -= 50) await sleep(Math.min(50, left));
  const s1 = peer.stats();
  const seconds = Math.max(Number(process.hrtime.bigint() - t0) / 1e9, 1e-9);
  return { txPps: (s1.txPackets - s0.txPackets) / seconds, rxPps: (s1.rxPackets - s0.rxPackets) / seconds };
}
