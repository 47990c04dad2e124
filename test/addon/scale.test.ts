// 256 vhost-user ports in one switch, 32 of them with 8 queue pairs, every one with a front end of ours
// connected at once, wired in pairs: each of the 128 wires carries a frame both ways, and every port has
// its own counters. No timing is asserted here; bench/ports.ts measures the cost per port.
import t from 'tap';
import { Fixture, frame, receiveN, waitFor } from '../support/fixture';
import type { NativeVirtioUser } from '../../src/harness/frontend-native';

const PORTS = 256;
const WIDE = 32; // ports with 8 queue pairs: the first 16 wires

t.test(`${PORTS} vhost-user ports, ${WIDE} with 8 queue pairs, all connected and forwarding`, async (t) => {
  const f = new Fixture('kernel');
  t.teardown(() => f.close());
  const name = (i: number): string => `p${i}`;
  const qps = (i: number): number => (i < WIDE ? 8 : 1);
  for (let i = 0; i < PORTS; i++) f.vhost(name(i), qps(i));
  for (let i = 0; i < PORTS; i += 2) f.engine.wire(name(i), name(i + 1));

  const peers: NativeVirtioUser[] = [];
  // Guest memory is touched only where the rings and buffers are: a few MiB each is plenty.
  for (let i = 0; i < PORTS; i++) peers.push(f.peer({ path: f.sock(name(i)), queuePairs: qps(i), memSize: qps(i) * (2 << 20) }));
  for (let i = 0; i < PORTS; i++) await f.waitConnected(name(i));
  const ports = f.engine.ports();
  t.equal(ports.length, PORTS);
  t.equal(ports.filter((p) => p.connected).length, PORTS, 'every port is connected');
  t.equal(new Set(ports.map((p) => p.counterSet)).size, PORTS, 'each with counter sets of its own');
  t.same(ports.filter((p) => p.queuePairs === 8).length, WIDE, `${WIDE} ports have 8 queue pairs`);

  let delivered = 0;
  for (let i = 0; i < PORTS; i += 2) {
    const qp = qps(i) - 1; // the last queue pair of the wide ones
    for (const [from, to] of [
      [i, i + 1],
      [i + 1, i],
    ]) {
      const sent = frame(96, from);
      if (!peers[from].send(qp, sent)) continue;
      const got = await receiveN(peers[to], 1, qp);
      if (got.length === 1 && got[0].equals(sent)) delivered++;
    }
  }
  t.equal(delivered, PORTS, 'every wire carried one frame each way, on the last queue pair of each port');
  // The PMD publishes its counters now and then, not per frame.
  await waitFor('the last counters to be published', () => f.counter(name(PORTS - 1), 'TX_PACKETS', 0) > 0n);
  t.equal(f.counter(name(0), 'RX_PACKETS', 7), 1n, 'counted on the queue pair it used');
  t.equal(f.counter(name(PORTS - 1), 'TX_PACKETS', 0), 1n);

  // Ports with 8 queue pairs fit until 256 x 8 queue counter sets are taken; the next is refused, saying why.
  let sets = ports.reduce((n, p) => n + p.queuePairs, 0);
  let extra = 0;
  for (; sets + 8 <= 256 * 8; sets += 8, extra++) f.vhost(`x${extra}`, 8);
  t.throws(() => f.vhost('full', 8), {
    message: 'port "full": no room left for its counters (the switch has 2048 queue counter sets)',
  });
  t.equal(f.engine.ports().length, PORTS + extra, `${extra} more ports with 8 queue pairs fitted before that`);
});
