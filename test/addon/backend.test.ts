// Our front end against our backend over real vhost-user sockets: negotiation, frames both ways,
// MRG_RXBUF on and off, indirect descriptors, notifications with and without EVENT_IDX, multi-queue,
// reconnects in both socket roles, memory regions added and removed.
import t, { type Test } from 'tap';
import { native } from '../../src/native';
import { frontend } from '../../src/harness/frontend-native';
import { Fixture, frame, receiveN, waitFor } from '../support/fixture';

const bit = (n: number) => 1n << BigInt(n);
const VERSION_1 = 32,
  MRG_RXBUF = 15,
  INDIRECT = 28,
  EVENT_IDX = 29,
  MQ = 22,
  MTU = 3,
  IN_ORDER = 35;
const PF_MQ = 0,
  PF_LOG_SHMFD = 1,
  PF_REPLY_ACK = 3,
  PF_MTU = 4,
  PF_MEM_SLOTS = 15;

/** Two vhost-user ports wired together, each with a front end. */
function pair(t: Test, opts: { queues?: number; a?: object; b?: object } = {}) {
  const f = new Fixture();
  t.teardown(() => f.close());
  const q = opts.queues ?? 1;
  const pa = f.vhost('a', q);
  const pb = f.vhost('b', q);
  f.engine.wire('a', 'b');
  const a = f.peer({ path: pa, queuePairs: q, ...opts.a });
  const b = f.peer({ path: pb, queuePairs: q, ...opts.b });
  return { f, a, b };
}

async function exchange(t: Test, from: ReturnType<typeof pair>['a'], to: typeof from, sizes: number[], qp = 0) {
  const sent = sizes.map((s, i) => frame(s, i));
  for (const s of sent) t.ok(from.send(qp, s), `send ${s.length}-byte frame`);
  const got = await receiveN(to, sent.length, qp);
  t.equal(got.length, sent.length, `all ${sent.length} frames arrive`);
  for (let i = 0; i < Math.min(got.length, sent.length); i++) {
    if (!got[i].equals(sent[i])) {
      t.fail(`frame ${i} (${sent[i].length} bytes) arrives unchanged and in order`);
      return;
    }
  }
  t.pass('every frame arrives unchanged and in order');
}

t.test('negotiation offers what we implement and nothing more', async (t) => {
  const { f, a } = pair(t);
  const feat = a.features();
  for (const b of [VERSION_1, MRG_RXBUF, INDIRECT, EVENT_IDX]) t.ok(feat & bit(b), `feature bit ${b} negotiated`);
  const pf = a.protocolFeatures();
  for (const b of [PF_MQ, PF_REPLY_ACK, PF_MTU, PF_MEM_SLOTS]) t.ok(pf & bit(b), `protocol feature ${b} negotiated`);
  t.notOk(pf & bit(PF_LOG_SHMFD), 'LOG_SHMFD is not offered');
  await f.waitConnected('a');
  const info = f.port('a');
  t.equal(info.features, feat, 'backend reports the same features');
  t.equal(info.vrings?.length, 2, 'one queue pair: two vrings');
  await waitFor('connected event', () => f.events.some((e) => e.kind === 'connected' && e.port === 'a'));
  t.pass('connected event delivered to JavaScript');
});

t.test('IN_ORDER: offered, and chains come back in the order they were made available', async (t) => {
  const { f, a, b } = pair(t);
  await f.waitConnected('a');
  await f.waitConnected('b');
  const offered = a.rawMessage(1 /* GET_FEATURES */, 1, Buffer.alloc(0), [], true)!.readBigUInt64LE(0);
  t.ok(offered & bit(IN_ORDER), 'VIRTIO_F_IN_ORDER is offered');
  // Three chains in one go on a's transmit vring: good, a header too short to forward (dropped), good.
  // The dropped one sits between two lent ones; it must not overtake the first.
  const TX = 1;
  const chains = [Buffer.concat([Buffer.alloc(12), frame(64, 1)]), Buffer.alloc(8), Buffer.concat([Buffer.alloc(12), frame(64, 2)])];
  chains.forEach((data, i) => {
    const addr = a.alloc(data.length);
    a.memWrite(addr, data);
    a.rawDesc(TX, i, { addr, len: data.length, flags: 0, next: 0 });
  });
  for (let i = 0; i < chains.length; i++) a.rawAvailPush(TX, i);
  a.kick(TX);
  const got = await receiveN(b, 2);
  t.same(
    got.map((g) => g.length),
    [64, 64],
    'both good frames arrive',
  );
  await waitFor('3 used entries', () => a.rawUsedIdx(TX) === 3);
  t.same(
    [0, 1, 2].map((i) => a.rawUsedElem(TX, i).id),
    [0, 1, 2],
    'used entries are heads 0, 1, 2 in that order',
  );
  // Counters are published every so many PMD iterations, not with the used entries.
  await waitFor('the drop published', () => f.counter('a', 'DROP_RX_BAD_HEADER') > 0n);
  t.equal(f.counter('a', 'DROP_RX_BAD_HEADER'), 1n, 'the short one was dropped and counted');
});

t.test('frames of every size cross guest to guest in both directions', async (t) => {
  const { f, a, b } = pair(t);
  await f.waitConnected('a');
  await f.waitConnected('b');
  const sizes = [60, 64, 128, 511, 512, 513, 1000, 1514];
  await exchange(t, a, b, sizes);
  await exchange(t, b, a, sizes);
  await waitFor('counters published', () => f.counter('a', 'RX_PACKETS') === BigInt(sizes.length));
  t.equal(f.counter('b', 'TX_PACKETS'), BigInt(sizes.length), 'b transmitted what a received');
  t.equal(f.counter('a', 'RX_BYTES'), BigInt(sizes.reduce((x, y) => x + y, 0)), 'bytes counted without headers');
});

t.test('MRG_RXBUF joins small receive buffers into one frame', async (t) => {
  const { f, a, b } = pair(t, { b: { rxBufSize: 256 } });
  t.ok(b.features() & bit(MRG_RXBUF), 'receiver negotiated MRG_RXBUF');
  await f.waitConnected('b');
  await exchange(t, a, b, [1514, 300, 60]);
});

t.test('without MRG_RXBUF a frame must fit one buffer, else it is dropped and counted', async (t) => {
  const { f, a, b } = pair(t, { b: { mrgRxbuf: false, rxBufSize: 1024 } });
  t.notOk(b.features() & bit(MRG_RXBUF), 'MRG_RXBUF not negotiated');
  await f.waitConnected('b');
  await exchange(t, a, b, [60, 1000]);
  t.ok(a.send(0, frame(1514, 99)), 'send a frame larger than the receive buffers');
  await waitFor('too_big drop counted', () => f.counter('b', 'DROP_TX_TOO_BIG') === 1n);
  await exchange(t, a, b, [1012]);
});

t.test('indirect descriptors on transmit', async (t) => {
  const { f, a, b } = pair(t, { a: { txIndirect: true } });
  t.ok(a.features() & bit(INDIRECT), 'INDIRECT_DESC negotiated');
  await f.waitConnected('b');
  await exchange(t, a, b, [60, 1514, 700]);
});

t.test('notifications: sent when the guest asks, suppressed when it does not', async (t) => {
  const { f, a, b } = pair(t, { b: { interrupts: true }, a: { interrupts: false, eventIdx: false } });
  t.ok(b.features() & bit(EVENT_IDX), 'receiver uses EVENT_IDX');
  t.notOk(a.features() & bit(EVENT_IDX), 'sender does not');
  await f.waitConnected('a');
  await f.waitConnected('b');
  t.ok(a.send(0, frame(100, 1)));
  t.ok(b.waitCall(0, 3000), 'the receiver that asked for interrupts gets a call');
  t.equal((await receiveN(b, 1)).length, 1);
  for (let i = 0; i < 20; i++) a.send(0, frame(100, i));
  await receiveN(b, 20);
  await waitFor('transmit counted', () => f.counter('a', 'RX_PACKETS') === 21n);
  t.equal(f.counter('a', 'GUEST_NOTIFICATIONS'), 0n, 'a sender with NO_INTERRUPT is never notified');
  t.ok(f.counter('b', 'GUEST_NOTIFICATIONS') >= 1n, 'the receiver was notified');
});

t.test('multi-queue: each queue pair carries its own traffic', async (t) => {
  const { f, a, b } = pair(t, { queues: 2 });
  t.ok(a.features() & bit(MQ), 'MQ negotiated');
  await f.waitConnected('a');
  await f.waitConnected('b');
  t.equal(f.port('a').vrings?.length, 4, 'two queue pairs: four vrings');
  await exchange(t, a, b, [60, 1514], 0);
  await exchange(t, a, b, [61, 1500], 1);
  await waitFor('queue pair 1 counted', () => f.counter('a', 'RX_PACKETS', 1) === 2n);
});

t.test('MTU is accepted and reported', async (t) => {
  const { f, a } = pair(t, { a: { mtu: 9000 } });
  t.ok(a.features() & bit(MTU), 'MTU feature negotiated');
  await waitFor('mtu', () => f.port('a').mtu === 9000);
});

t.test('the mode switches at run time while frames flow, and nothing is lost', async (t) => {
  const { f, a, b } = pair(t);
  await f.waitConnected('a');
  await f.waitConnected('b');
  const sleeps = (): bigint => {
    const l = f.engine.counterLayout();
    return f.engine.counters()[l.pmdBase + native.pmdCounters.findIndex((c) => c.id === 'SLEEPS')];
  };
  let seq = 0;
  for (const mode of ['bypass', 'kernel', 'bypass', 'kernel'] as const) {
    // Frames are sent, the mode switches under them, and they must all arrive, in order.
    const sent = Array.from({ length: 100 }, () => frame(128, seq++));
    for (const s of sent) a.send(0, s);
    f.engine.setMode(mode);
    const got = await receiveN(b, sent.length);
    t.ok(
      got.length === sent.length && got.every((g, i) => g.equals(sent[i])),
      `${mode}: 100 frames sent across the switch arrive unchanged, in order`,
    );
    // An idle PMD sleeps in kernel mode and never in bypass mode.
    await new Promise((r) => setTimeout(r, 300));
    const s0 = sleeps();
    await new Promise((r) => setTimeout(r, 300));
    const slept = sleeps() - s0;
    if (mode === 'kernel') t.ok(slept > 0n, `kernel: the idle PMD sleeps (${slept} sleeps in 300 ms)`);
    else t.equal(slept, 0n, 'bypass: the PMD never sleeps');
  }
});

t.test('server socket: the front end leaves and comes back', async (t) => {
  const f = new Fixture();
  t.teardown(() => f.close());
  const pa = f.vhost('a');
  const pb = f.vhost('b');
  f.engine.wire('a', 'b');
  const b = f.peer({ path: pb });
  for (let round = 0; round < 3; round++) {
    const a = new (frontend().VirtioUser)({ path: pa, timeoutMs: 5000 });
    await f.waitConnected('a');
    await exchange(t, a, b, [100, 1514]);
    a.close();
    await waitFor('disconnected', () => f.port('a').connected === false);
  }
  await waitFor('three disconnected events', () => f.events.filter((e) => e.kind === 'disconnected' && e.port === 'a').length === 3);
  t.pass('a disconnected event for each departure');
});

t.test('client socket: we connect to a listening front end and reconnect after it restarts', async (t) => {
  const f = new Fixture();
  t.teardown(() => f.close());
  const pb = f.vhost('b');
  const pa = f.sock('a');
  f.engine.addPort('vhost-user', 'a', { path: pa, client: true, queues: 1 });
  f.engine.wire('a', 'b');
  const b = f.peer({ path: pb });
  for (let round = 0; round < 2; round++) {
    // The backend retries every second, so the listening front end is connected to within that.
    const a = new (frontend().VirtioUser)({ path: pa, server: true, timeoutMs: 5000 });
    await f.waitConnected('a');
    await exchange(t, a, b, [64, 1514]);
    await exchange(t, b, a, [64]);
    a.close();
    await waitFor('disconnected', () => f.port('a').connected === false);
  }
});

t.test('memory regions: several at start, one added and one removed while running', async (t) => {
  const { f, a, b } = pair(t, { a: { memRegions: 3, memSize: 24 << 20 } });
  await f.waitConnected('a');
  await f.waitConnected('b');
  t.equal(f.port('a').memRegions, 3, 'three regions mapped');
  a.addRegion(4 << 20);
  await waitFor('region added', () => f.port('a').memRegions === 4);
  await exchange(t, a, b, [1514, 60]);
  a.removeRegion(3);
  await waitFor('region removed', () => f.port('a').memRegions === 3);
  await exchange(t, a, b, [1514, 60]);
});
