// One test per descriptor rule: a hostile front end (our own, through its raw ring access) breaks the
// rule on a live port; the backend must stop that ring with the right reason (counter and event),
// keep the connection's other queue working, and keep a well-behaved pair of ports exchanging frames.
import t, { type Test } from 'tap';
import { frontend, type NativeVirtioUser, type RawDesc } from '../../src/harness/frontend-native';
import {
  Fixture,
  frame,
  receiveN,
  waitFor,
  HDR_LEN,
  VRING_DESC_F_INDIRECT,
  VRING_DESC_F_NEXT,
  VRING_DESC_F_WRITE,
} from '../support/fixture';

const TX = 1; // the guest's transmit vring of queue pair 0 (we read from it)
const RX = 0; // the guest's receive vring (we write into it)
const QSIZE = 256;

interface Hostile {
  f: Fixture;
  h: NativeVirtioUser;
  good: [NativeVirtioUser, NativeVirtioUser];
}

/** A good pair g0<->g1, a rate-limited generator, and a hostile port h (not wired yet). */
async function setup(t: Test, opts: { indirect?: boolean } = {}): Promise<Hostile> {
  const f = new Fixture();
  t.teardown(() => f.close());
  const g0p = f.vhost('g0');
  const g1p = f.vhost('g1');
  f.engine.wire('g0', 'g1');
  f.engine.addPort('gen', 'gen', { size: 64, rate: 2000, count: 0 });
  const hp = f.vhost('h');
  const good: [NativeVirtioUser, NativeVirtioUser] = [f.peer({ path: g0p }), f.peer({ path: g1p })];
  const h = f.peer({ path: hp, queueSize: QSIZE, indirect: opts.indirect ?? true });
  await f.waitConnected('h');
  return { f, h, good };
}

/** Writes a virtio-net header + frame into fresh guest memory; returns its address. */
function packet(h: NativeVirtioUser, hdr: Buffer = Buffer.alloc(HDR_LEN), body: Buffer = frame(64, 1)): bigint {
  const data = Buffer.concat([hdr, body]);
  const addr = h.alloc(data.length);
  h.memWrite(addr, data);
  return addr;
}

function post(h: NativeVirtioUser, vring: number, descs: RawDesc[], head = 0): void {
  descs.forEach((d, i) => h.rawDesc(vring, i, d));
  h.rawAvailPush(vring, head);
  h.kick(vring);
}

async function expectBroken(t: Test, x: Hostile, vring: number, reason: string, counter: string): Promise<void> {
  const { f } = x;
  await waitFor(`ring-broken ${reason}`, () => f.events.some((e) => e.kind === 'ring-broken' && e.port === 'h' && e.queue === vring));
  const ev = f.events.find((e) => e.kind === 'ring-broken' && e.port === 'h')!;
  t.equal(ev.reason, reason, `ring-broken event says ${reason}`);
  t.equal(ev.queue, vring, `on vring ${vring}`);
  await waitFor(`${counter} counted`, () => f.counter('h', counter) === 1n && f.counter('h', 'RINGS_BROKEN') === 1n);
  t.pass(`${counter} and RINGS_BROKEN counted once`);
  t.ok(f.port('h').vrings?.[vring].broken, 'the vring is reported broken');
  t.ok(f.port('h').connected, 'the connection stays up');
  // Every other port carries on.
  const [g0, g1] = x.good;
  const sent = frame(200, 7);
  t.ok(g0.send(0, sent));
  const got = await receiveN(g1, 1);
  t.same(got[0], sent, 'a well-behaved pair still exchanges frames');
}

/** The hostile port's receive vring keeps getting the generator's frames after its transmit vring broke. */
async function rxStillWorks(t: Test, x: Hostile): Promise<void> {
  const got = await receiveN(x.h, 3);
  t.equal(got.length, 3, "the connection's other vring still works");
}

async function txRule(t: Test, descs: (h: NativeVirtioUser) => RawDesc[], reason: string, counter: string, opts = {}) {
  const x = await setup(t, opts);
  post(x.h, TX, descs(x.h));
  x.f.engine.wire('h', 'gen');
  await expectBroken(t, x, TX, reason, counter);
  await rxStillWorks(t, x);
}

t.test('address outside guest memory', (t) =>
  txRule(t, () => [{ addr: frontend().guestBase - 4096n, len: 100, flags: 0, next: 0 }], 'bad_address', 'INVALID_BAD_ADDRESS'),
);

t.test('address + length wraps around 2^64', (t) =>
  txRule(t, () => [{ addr: 0xffffffffffffff00n, len: 0x200, flags: 0, next: 0 }], 'bad_address', 'INVALID_BAD_ADDRESS'),
);

t.test('buffer running past the end of guest memory', (t) =>
  txRule(
    t,
    (h) => [{ addr: frontend().guestBase + BigInt(h.memSize()) - 50n, len: 100, flags: 0, next: 0 }],
    'bad_address',
    'INVALID_BAD_ADDRESS',
  ),
);

t.test('a buffer ending exactly at the end of guest memory is accepted', async (t) => {
  const x = await setup(t);
  const end = frontend().guestBase + BigInt(x.h.memSize());
  const data = Buffer.concat([Buffer.alloc(HDR_LEN), frame(88, 3)]);
  x.h.memWrite(end - BigInt(data.length), data);
  x.f.engine.unwire('g1');
  x.f.engine.wire('h', 'g1');
  post(x.h, TX, [{ addr: end - BigInt(data.length), len: data.length, flags: 0, next: 0 }]);
  const got = await receiveN(x.good[1], 1);
  t.same(got[0], frame(88, 3), 'the frame arrives intact');
});

t.test('next index beyond the queue', (t) =>
  txRule(t, (h) => [{ addr: packet(h), len: HDR_LEN + 64, flags: VRING_DESC_F_NEXT, next: QSIZE }], 'bad_next', 'INVALID_BAD_NEXT'),
);

t.test('a descriptor loop', (t) =>
  txRule(
    t,
    (h) => {
      const a = packet(h);
      return [
        { addr: a, len: HDR_LEN, flags: VRING_DESC_F_NEXT, next: 1 },
        { addr: a, len: 64, flags: VRING_DESC_F_NEXT, next: 0 },
      ];
    },
    'chain_too_long',
    'INVALID_CHAIN_TOO_LONG',
  ),
);

t.test('head index beyond the queue', async (t) => {
  const x = await setup(t);
  x.h.rawAvailPush(TX, QSIZE + 3);
  x.h.kick(TX);
  x.f.engine.wire('h', 'gen');
  await expectBroken(t, x, TX, 'bad_head', 'INVALID_BAD_HEAD');
});

t.test('a head already in flight named again', async (t) => {
  const x = await setup(t);
  post(x.h, TX, [{ addr: packet(x.h), len: HDR_LEN + 64, flags: 0, next: 0 }]);
  x.h.rawAvailPush(TX, 0);
  x.h.kick(TX);
  x.f.engine.wire('h', 'gen');
  await expectBroken(t, x, TX, 'head_in_flight', 'INVALID_HEAD_IN_FLIGHT');
  t.equal(x.h.rawUsedIdx(TX), 1, 'the chain taken before the repeat is returned, once');
  t.same(x.h.rawUsedElem(TX, 0), { id: 0, len: 0 }, 'as head 0, nothing written');
  await rxStillWorks(t, x);
});

t.test('avail index more than a queue ahead', async (t) => {
  const x = await setup(t);
  x.h.rawSetAvailIdx(TX, QSIZE + 1);
  x.h.kick(TX);
  x.f.engine.wire('h', 'gen');
  await expectBroken(t, x, TX, 'avail_index_ahead', 'INVALID_AVAIL_AHEAD');
  await rxStillWorks(t, x);
});

t.test('device-writable buffer on the transmit queue', (t) =>
  txRule(
    t,
    (h) => [{ addr: packet(h), len: HDR_LEN + 64, flags: VRING_DESC_F_WRITE, next: 0 }],
    'writable_on_tx',
    'INVALID_WRITABLE_ON_TX',
  ),
);

/** An indirect table of the given descriptors in guest memory. */
function table(h: NativeVirtioUser, descs: RawDesc[]): bigint {
  const b = Buffer.alloc(16 * descs.length);
  descs.forEach((d, i) => {
    b.writeBigUInt64LE(d.addr, 16 * i);
    b.writeUInt32LE(d.len, 16 * i + 8);
    b.writeUInt16LE(d.flags, 16 * i + 12);
    b.writeUInt16LE(d.next, 16 * i + 14);
  });
  const a = h.alloc(b.length);
  h.memWrite(a, b);
  return a;
}

t.test('indirect table length not a multiple of 16', (t) =>
  txRule(
    t,
    (h) => [{ addr: table(h, [{ addr: packet(h), len: 76, flags: 0, next: 0 }]), len: 20, flags: VRING_DESC_F_INDIRECT, next: 0 }],
    'bad_indirect_length',
    'INVALID_INDIRECT_LENGTH',
  ),
);

t.test('indirect table of length zero', (t) =>
  txRule(
    t,
    (h) => [{ addr: table(h, [{ addr: packet(h), len: 76, flags: 0, next: 0 }]), len: 0, flags: VRING_DESC_F_INDIRECT, next: 0 }],
    'bad_indirect_length',
    'INVALID_INDIRECT_LENGTH',
  ),
);

t.test('indirect table outside guest memory', (t) =>
  txRule(
    t,
    () => [{ addr: frontend().guestBase - 64n, len: 32, flags: VRING_DESC_F_INDIRECT, next: 0 }],
    'bad_address',
    'INVALID_BAD_ADDRESS',
  ),
);

t.test('indirect inside indirect', (t) =>
  txRule(
    t,
    (h) => {
      const inner = table(h, [{ addr: packet(h), len: 76, flags: 0, next: 0 }]);
      const outer = table(h, [{ addr: inner, len: 16, flags: VRING_DESC_F_INDIRECT, next: 0 }]);
      return [{ addr: outer, len: 16, flags: VRING_DESC_F_INDIRECT, next: 0 }];
    },
    'nested_indirect',
    'INVALID_INDIRECT_NESTED',
  ),
);

t.test('indirect descriptor that also has NEXT', (t) =>
  txRule(
    t,
    (h) => [
      {
        addr: table(h, [{ addr: packet(h), len: 76, flags: 0, next: 0 }]),
        len: 16,
        flags: VRING_DESC_F_INDIRECT | VRING_DESC_F_NEXT,
        next: 1,
      },
      { addr: packet(h), len: 76, flags: 0, next: 0 },
    ],
    'indirect_with_next',
    'INVALID_INDIRECT_WITH_NEXT',
  ),
);

t.test('next index beyond the indirect table', (t) =>
  txRule(
    t,
    (h) => {
      const p = packet(h);
      const tab = table(h, [
        { addr: p, len: HDR_LEN, flags: VRING_DESC_F_NEXT, next: 5 },
        { addr: p + BigInt(HDR_LEN), len: 64, flags: 0, next: 0 },
      ]);
      return [{ addr: tab, len: 32, flags: VRING_DESC_F_INDIRECT, next: 0 }];
    },
    'bad_next',
    'INVALID_BAD_NEXT',
  ),
);

t.test('indirect descriptor when INDIRECT_DESC was not negotiated', (t) =>
  txRule(
    t,
    (h) => [{ addr: table(h, [{ addr: packet(h), len: 76, flags: 0, next: 0 }]), len: 16, flags: VRING_DESC_F_INDIRECT, next: 0 }],
    'indirect_not_negotiated',
    'INVALID_INDIRECT_NOT_NEGOTIATED',
    { indirect: false },
  ),
);

/** Rewrites every receive descriptor the front end posted, then lets the generator fill them. */
async function rxRule(t: Test, desc: (h: NativeVirtioUser, i: number) => RawDesc, reason: string, counter: string) {
  const x = await setup(t);
  for (let i = 0; i < QSIZE; i++) x.h.rawDesc(RX, i, desc(x.h, i));
  x.f.engine.wire('h', 'gen');
  await expectBroken(t, x, RX, reason, counter);
  return x;
}

t.test('read-only buffer on the receive queue is refused and never written', async (t) => {
  const pattern = Buffer.alloc(2048, 0xab);
  let buf = 0n;
  const x = await rxRule(
    t,
    (h, i) => {
      if (i === 0) {
        buf = h.alloc(2048);
        h.memWrite(buf, pattern);
      }
      return { addr: buf, len: 2048, flags: 0, next: 0 };
    },
    'readonly_on_rx',
    'INVALID_READONLY_ON_RX',
  );
  t.same(x.h.memRead(buf, 2048), pattern, 'the read-only buffer is unchanged');
});

t.test('receive buffer outside guest memory', (t) =>
  rxRule(
    t,
    () => ({ addr: frontend().guestBase + (1n << 40n), len: 2048, flags: VRING_DESC_F_WRITE, next: 0 }),
    'bad_address',
    'INVALID_BAD_ADDRESS',
  ),
);

t.test('virtio-net header rules drop the packet and keep the ring', async (t) => {
  const x = await setup(t);
  x.f.engine.unwire('g1');
  x.f.engine.wire('h', 'g1');
  const bad: RawDesc[][] = [
    // chain shorter than the header
    [{ addr: packet(x.h), len: 8, flags: 0, next: 0 }],
    // GSO asked for although never negotiated
    [{ addr: packet(x.h, Buffer.from([0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])), len: HDR_LEN + 64, flags: 0, next: 0 }],
    // checksum offload asked for although never negotiated
    [{ addr: packet(x.h, Buffer.from([1, 0, 0, 0, 0, 0, 14, 0, 16, 0, 0, 0])), len: HDR_LEN + 64, flags: 0, next: 0 }],
  ];
  bad.forEach((descs, i) => {
    x.h.rawDesc(TX, i, descs[0]);
    x.h.rawAvailPush(TX, i);
  });
  // A header split over two descriptors, then the frame in a third: valid.
  const p = packet(x.h, Buffer.alloc(HDR_LEN), frame(100, 5));
  x.h.rawDesc(TX, 3, { addr: p, len: 5, flags: VRING_DESC_F_NEXT, next: 4 });
  x.h.rawDesc(TX, 4, { addr: p + 5n, len: HDR_LEN - 5, flags: VRING_DESC_F_NEXT, next: 5 });
  x.h.rawDesc(TX, 5, { addr: p + BigInt(HDR_LEN), len: 100, flags: 0, next: 0 });
  x.h.rawAvailPush(TX, 3);
  x.h.kick(TX);
  const got = await receiveN(x.good[1], 1);
  t.same(got[0], frame(100, 5), 'a header spanning descriptors is accepted and the frame arrives intact');
  await waitFor('bad headers counted', () => x.f.counter('h', 'DROP_RX_BAD_HEADER') === 3n);
  t.pass('three bad headers dropped and counted');
  await waitFor('all four returned', () => x.h.rawUsedIdx(TX) === 4);
  for (let i = 0; i < 4; i++) t.equal(x.h.rawUsedElem(TX, i).len, 0, `used length of transmit chain ${i} is 0`);
  t.equal(x.f.counter('h', 'RINGS_BROKEN'), 0n, 'no ring broken');
  t.notOk(
    x.f.events.some((e) => e.kind === 'ring-broken'),
    'no ring-broken event',
  );
});

t.test('a transmit chain no longer than the header is dropped, not forwarded as an empty frame', async (t) => {
  const x = await setup(t);
  x.f.engine.unwire('g1');
  x.f.engine.wire('h', 'g1');
  // A bare header (its 12 bytes, nothing after), then a valid packet behind it.
  x.h.rawDesc(TX, 0, { addr: packet(x.h, Buffer.alloc(HDR_LEN), Buffer.alloc(0)), len: HDR_LEN, flags: 0, next: 0 });
  x.h.rawAvailPush(TX, 0);
  const p = packet(x.h, Buffer.alloc(HDR_LEN), frame(60, 9));
  x.h.rawDesc(TX, 1, { addr: p, len: HDR_LEN + 60, flags: 0, next: 0 });
  x.h.rawAvailPush(TX, 1);
  x.h.kick(TX);
  const got = await receiveN(x.good[1], 1);
  t.same(got[0], frame(60, 9), 'the first frame to arrive is the valid one');
  await waitFor('the bare header counted', () => x.f.counter('h', 'DROP_RX_BAD_HEADER') === 1n);
  t.pass('the bare header is dropped as bad_header');
  await waitFor('both returned', () => x.h.rawUsedIdx(TX) === 2);
  t.equal(x.h.rawUsedElem(TX, 0).len, 0, 'used length of the bare header is 0');
  t.equal(x.f.counter('h', 'RINGS_BROKEN'), 0n, 'no ring broken');
  await new Promise((r) => setTimeout(r, 50));
  t.same(x.good[1].receive(0, 8), [], 'no empty frame arrived after it either');
});
