// Ports that come and go while the switch runs, over real vhost-user sockets with our own front ends: a
// guest that leaves keeps its port; a port removed under a connected guest closes that guest's socket;
// and two wired pairs on one PMD thread, pair A carrying a counted stream while pair B is removed and
// added again and again, lose not one of A's frames.
import t, { type Test } from 'tap';
import { Fixture, frame, receiveN, waitFor } from '../support/fixture';
import type { NativeVirtioUser } from '../../src/harness/frontend-native';
import { native } from '../../src/native';

/** Ports a0=a1 and b0=b1, wired, each with a front end connected. */
async function twoPairs(f: Fixture): Promise<Record<'a0' | 'a1' | 'b0' | 'b1', NativeVirtioUser>> {
  for (const n of ['a0', 'a1', 'b0', 'b1']) f.vhost(n);
  f.engine.wire('a0', 'a1');
  f.engine.wire('b0', 'b1');
  const peers = {
    a0: f.peer({ path: f.sock('a0') }),
    a1: f.peer({ path: f.sock('a1') }),
    b0: f.peer({ path: f.sock('b0') }),
    b1: f.peer({ path: f.sock('b1') }),
  };
  for (const n of ['a0', 'a1', 'b0', 'b1']) await f.waitConnected(n);
  return peers;
}

/** One frame each way through a wired pair, received intact. */
async function roundTrip(t: Test, x: NativeVirtioUser, y: NativeVirtioUser, seq: number, what: string): Promise<void> {
  t.ok(x.send(0, frame(128, seq)), `${what}: sent`);
  const got = await receiveN(y, 1);
  t.same(got, [frame(128, seq)], `${what}: received`);
}

t.test('a guest that leaves keeps its port; removing a port with a guest on it closes that guest cleanly', async (t) => {
  const f = new Fixture('kernel');
  t.teardown(() => f.close());
  const p = await twoPairs(f);

  p.b0.close();
  await waitFor('b0 to see its guest gone', () => !f.port('b0').connected);
  t.ok(
    f.engine.ports().some((x) => x.name === 'b0'),
    'b0 is still a port',
  );
  t.same(
    f.engine.forwarders().map((w) => w.members),
    [
      ['a0', 'a1'],
      ['b0', 'b1'],
    ],
    'and still in its wire',
  );
  const again = f.peer({ path: f.sock('b0') });
  await f.waitConnected('b0');
  await roundTrip(t, again, p.b1, 1, 'b0 to b1 after the guest came back');

  f.engine.removePort('b1');
  await waitFor('the front end of b1 to see its socket closed', () => !p.b1.connected());
  t.notOk(
    f.engine.ports().some((x) => x.name === 'b1'),
    'b1 is gone',
  );
  t.same(
    f.engine.forwarders().map((w) => w.members),
    [['a0', 'a1']],
    'and so is its wire; b0 stays, in none',
  );
  t.ok(f.port('b0').connected, "b0's guest is still connected");
  await roundTrip(t, p.a0, p.a1, 2, 'a0 to a1 after b1 went');
  await roundTrip(t, p.a1, p.a0, 3, 'a1 to a0 after b1 went');
});

t.test("pair B removed and added again 20 times while pair A carries a stream: every one of A's frames arrives", async (t) => {
  const f = new Fixture('kernel');
  t.teardown(() => f.close());
  const p = await twoPairs(f);
  // A rate our receiving front end keeps up with on a shared 2-core machine (at 20,000/s it runs out of
  // receive buffers now and then even with no port changing), sent until the rounds are over.
  p.a1.startTraffic({ rx: true });
  p.a0.startTraffic({ txSize: 64, txCount: 0, txRate: 5_000 });
  await waitFor('a1 to receive the first frames', () => p.a1.stats().rxPackets > 0);
  const before = p.a0.stats().txPackets;

  let b0 = p.b0;
  let b1 = p.b1;
  let rounds = 0;
  for (; rounds < 20; rounds++) {
    b0.close();
    b1.close();
    f.engine.removePort('b0');
    f.engine.removePort('b1');
    f.vhost('b0');
    f.vhost('b1');
    f.engine.wire('b0', 'b1');
    b0 = f.peer({ path: f.sock('b0') });
    b1 = f.peer({ path: f.sock('b1') });
    await f.waitConnected('b0');
    await f.waitConnected('b1');
    await roundTrip(t, b0, b1, rounds, `round ${rounds}: the new pair B carries a frame`);
  }
  p.a0.stopTraffic();
  const count = p.a0.stats().txPackets;
  t.ok(count > before, `a0 sent while the rounds ran (${count - before} frames)`);
  await waitFor(`a1 to receive all ${count} frames`, () => p.a1.stats().rxPackets >= count, 20_000);
  p.a1.stopTraffic();
  t.equal(p.a1.stats().rxPackets, count, 'a1 received exactly what a0 sent');
  // The PMD publishes its counters now and then, not per frame.
  await waitFor('the counters to be published', () => f.counter('a1', 'TX_PACKETS') >= BigInt(count));
  t.equal(f.counter('a0', 'RX_PACKETS'), BigInt(count), 'the switch took every frame from a0');
  t.equal(f.counter('a1', 'TX_PACKETS'), BigInt(count), 'and put every one into a1');
  const drops = (port: string): Record<string, bigint> => {
    const ids = native.queueCounters.map((c) => c.id).filter((id) => id.startsWith('DROP_'));
    return Object.fromEntries(ids.map((id) => [id, f.counter(port, id)]).filter(([, v]) => v !== 0n));
  };
  t.same([drops('a0'), drops('a1')], [{}, {}], 'no drop on either port of A');
});
