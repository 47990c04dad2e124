// Survival (stage.ts): vring indices, sizes and addresses out of range, and every ring rule broken in one
// session, each break signalling the err eventfd.
import t, { type Test } from 'tap';
import { frontend, type NativeVirtioUser, type RawDesc } from '../../../src/harness/frontend-native';
import { frame, waitFor, HDR_LEN, VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE } from '../../support/fixture';
import { REQ, NOFD, u64, state, vringAddr, desc, ack, ask, withFds } from '../../support/vhost-user-wire';
import { RX, TX, QSIZE, pattern, fdCount, sleep, f, victim, rxWorks, txWorks, closeVictim, survives, eventsOf, baseline } from './stage';

baseline();

t.test('out-of-range vring indices are refused on every vring message', async (t) => {
  const v = await victim();
  const h = v.h;
  const rings = v.ringUaddrs(RX);
  const indices = [2, 3, 255, 256, 0x10000, 0x7fffffff, 0xffffffff];
  await withFds(['eventfd'], h, async ([efd]) => {
    const before = fdCount();
    for (const i of indices) {
      t.equal(ack(h, REQ.SET_VRING_NUM, state(i, QSIZE)), 1n, `SET_VRING_NUM index ${i}`);
      t.equal(ack(h, REQ.SET_VRING_BASE, state(i, 0)), 1n, `SET_VRING_BASE index ${i}`);
      t.equal(ack(h, REQ.SET_VRING_ENABLE, state(i, 1)), 1n, `SET_VRING_ENABLE index ${i}`);
      t.equal(ack(h, REQ.SET_VRING_ADDR, vringAddr(i, 0, rings)), 1n, `SET_VRING_ADDR index ${i}`);
      t.equal(ask(h, REQ.GET_VRING_BASE, state(i, 0)).length, 0, `GET_VRING_BASE index ${i}: empty reply`);
    }
    // KICK/CALL/ERR: an 8-bit index, the NOFD bit, nothing else.
    const files = [2n, 3n, 255n, 2n | NOFD, 255n | NOFD, 0x200n, 0x200n | NOFD, 1n << 32n, (1n << 32n) | NOFD, -1n];
    for (const req of [REQ.SET_VRING_KICK, REQ.SET_VRING_CALL, REQ.SET_VRING_ERR]) {
      for (const u of files) {
        const fds = BigInt.asUintN(64, u) & NOFD ? [] : [efd];
        t.equal(ack(h, req, u64(u), fds), 1n, `request ${req} with 0x${BigInt.asUintN(64, u).toString(16)}`);
      }
    }
    t.equal(fdCount(), before, 'every fd those carried is closed');
  });
  const p = f.port('v');
  t.ok(p.connected && p.vrings!.every((r) => r.started && r.enabled && !r.broken), 'both vrings still run');
  await rxWorks(t, h, 'indices');
  await txWorks(t, h, 'indices');
  v.check(t);
  await closeVictim(v);
  await survives(t, 'out-of-range indices');
});

t.test('SET_VRING_NUM and ring addresses: bad values refused, the ring comes back', async (t) => {
  const v = await victim();
  const h = v.h;
  const kick = h.vringFds(RX).kick;
  t.equal(ask(h, REQ.GET_VRING_BASE, state(RX, 0)).length, 8, 'receive vring stopped');
  for (const num of [0, 3, 100, 255, 257, 32767, 32769, 65535, 65536, 0x10100, 0xffffffff])
    t.equal(ack(h, REQ.SET_VRING_NUM, state(RX, num)), 1n, `SET_VRING_NUM ${num} refused`);
  t.equal(ack(h, REQ.SET_VRING_NUM, state(RX, 32768)), 0n, 'SET_VRING_NUM 32768 accepted');
  t.equal(ack(h, REQ.SET_VRING_NUM, state(RX, QSIZE)), 0n, `SET_VRING_NUM ${QSIZE} accepted`);

  const good = v.ringUaddrs(RX);
  const r0 = h.regions()[0];
  const end = r0.uaddr + r0.size;
  const n = BigInt(QSIZE);
  const bad: [string, { desc: bigint; avail: bigint; used: bigint }][] = [
    ['descriptor table misaligned', { ...good, desc: good.desc + 8n }],
    ['descriptor table running 16 bytes past the end of memory', { ...good, desc: end - 16n * n + 16n }],
    ['avail ring misaligned', { ...good, avail: good.avail + 1n }],
    ['avail ring whose used_event field is past the end', { ...good, avail: end - (6n + 2n * n) + 2n }],
    ['used ring misaligned', { ...good, used: good.used + 2n }],
    ['used ring whose avail_event field is past the end', { ...good, used: end - (6n + 8n * n) + 4n }],
    ['descriptor table at user address 0', { ...good, desc: 0n }],
    ['descriptor table wrapping 2^64', { ...good, desc: (1n << 64n) - 16n }],
    ['used ring before the region', { ...good, used: r0.uaddr - 4096n }],
  ];
  for (const [what, a] of bad) {
    t.equal(ack(h, REQ.SET_VRING_ADDR, vringAddr(RX, 0, a)), 0n, `${what}: recorded on a stopped ring`);
    t.equal(ack(h, REQ.SET_VRING_KICK, u64(RX), [kick]), 1n, `${what}: the ring refuses to start`);
    t.notOk(f.port('v').vrings![RX].started, `${what}: not started`);
  }
  // On a running ring the new addresses are refused at once and the ring stops.
  t.equal(ack(h, REQ.SET_VRING_ADDR, vringAddr(RX, 0, good)), 0n, 'good addresses back');
  h.restartVring(RX);
  t.ok(f.port('v').vrings![RX].started, 'the ring runs again');
  await rxWorks(t, h, 'after a restart');
  t.equal(
    ack(h, REQ.SET_VRING_ADDR, vringAddr(RX, 0, { ...good, used: end })),
    1n,
    'a running ring refuses a used ring at the end of memory',
  );
  t.notOk(f.port('v').vrings![RX].started, 'and stops');
  t.equal(ack(h, REQ.SET_VRING_ADDR, vringAddr(RX, 0, good)), 0n, 'good addresses again');
  h.restartVring(RX);
  await rxWorks(t, h, 'ring addresses');
  await txWorks(t, h, 'ring addresses');
  v.check(t);
  await closeVictim(v);
  await survives(t, 'SET_VRING_NUM and ring addresses');
});

// ---------------------------------------------------------------------------------------------------
// ring rules, all broken in one session; each break must signal the err eventfd (G5)

interface Rule {
  what: string;
  reason: string;
  counter: string;
  /** Writes the chain (or avail entry, or avail index) that breaks the transmit vring at avail position p. */
  post: (h: NativeVirtioUser, p: number, x: Pkt) => void;
}
interface Pkt {
  whole: bigint;
  table: (descs: RawDesc[]) => bigint;
}

function postDescs(h: NativeVirtioUser, descs: RawDesc[]): void {
  descs.forEach((d, i) => h.rawDesc(TX, i, d));
  h.rawAvailPush(TX, 0);
}

const txRules: Rule[] = [
  {
    what: 'address outside guest memory',
    reason: 'bad_address',
    counter: 'INVALID_BAD_ADDRESS',
    post: (h) => postDescs(h, [{ addr: frontend().guestBase - 4096n, len: 100, flags: 0, next: 0 }]),
  },
  {
    what: 'address + length wrapping 2^64',
    reason: 'bad_address',
    counter: 'INVALID_BAD_ADDRESS',
    post: (h) => postDescs(h, [{ addr: 0xffffffffffffff00n, len: 0x200, flags: 0, next: 0 }]),
  },
  {
    what: 'a buffer running past the end of memory',
    reason: 'bad_address',
    counter: 'INVALID_BAD_ADDRESS',
    post: (h) => postDescs(h, [{ addr: frontend().guestBase + BigInt(h.memSize()) - 50n, len: 100, flags: 0, next: 0 }]),
  },
  {
    what: 'next beyond the queue',
    reason: 'bad_next',
    counter: 'INVALID_BAD_NEXT',
    post: (h, _p, x) => postDescs(h, [{ addr: x.whole, len: HDR_LEN, flags: VRING_DESC_F_NEXT, next: QSIZE }]),
  },
  {
    what: 'a descriptor loop',
    reason: 'chain_too_long',
    counter: 'INVALID_CHAIN_TOO_LONG',
    post: (h, _p, x) =>
      postDescs(h, [
        { addr: x.whole, len: HDR_LEN, flags: VRING_DESC_F_NEXT, next: 1 },
        { addr: x.whole, len: 64, flags: VRING_DESC_F_NEXT, next: 0 },
      ]),
  },
  { what: 'a head beyond the queue', reason: 'bad_head', counter: 'INVALID_BAD_HEAD', post: (h) => h.rawAvailPush(TX, QSIZE + 3) },
  {
    what: 'an avail index more than a queue ahead',
    reason: 'avail_index_ahead',
    counter: 'INVALID_AVAIL_AHEAD',
    post: (h, p) => h.rawSetAvailIdx(TX, (p + QSIZE + 1) & 0xffff),
  },
  {
    what: 'a device-writable buffer on the transmit queue',
    reason: 'writable_on_tx',
    counter: 'INVALID_WRITABLE_ON_TX',
    post: (h, _p, x) => postDescs(h, [{ addr: x.whole, len: HDR_LEN + 64, flags: VRING_DESC_F_WRITE, next: 0 }]),
  },
  {
    what: 'an indirect table of 20 bytes',
    reason: 'bad_indirect_length',
    counter: 'INVALID_INDIRECT_LENGTH',
    post: (h, _p, x) =>
      postDescs(h, [{ addr: x.table([{ addr: x.whole, len: 76, flags: 0, next: 0 }]), len: 20, flags: VRING_DESC_F_INDIRECT, next: 0 }]),
  },
  {
    what: 'an indirect table of 0 bytes',
    reason: 'bad_indirect_length',
    counter: 'INVALID_INDIRECT_LENGTH',
    post: (h, _p, x) =>
      postDescs(h, [{ addr: x.table([{ addr: x.whole, len: 76, flags: 0, next: 0 }]), len: 0, flags: VRING_DESC_F_INDIRECT, next: 0 }]),
  },
  {
    what: 'an indirect table outside memory',
    reason: 'bad_address',
    counter: 'INVALID_BAD_ADDRESS',
    post: (h) => postDescs(h, [{ addr: frontend().guestBase - 64n, len: 32, flags: VRING_DESC_F_INDIRECT, next: 0 }]),
  },
  {
    what: 'indirect inside indirect',
    reason: 'nested_indirect',
    counter: 'INVALID_INDIRECT_NESTED',
    post: (h, _p, x) => {
      const inner = x.table([{ addr: x.whole, len: 76, flags: 0, next: 0 }]);
      postDescs(h, [
        {
          addr: x.table([{ addr: inner, len: 16, flags: VRING_DESC_F_INDIRECT, next: 0 }]),
          len: 16,
          flags: VRING_DESC_F_INDIRECT,
          next: 0,
        },
      ]);
    },
  },
  {
    what: 'indirect together with NEXT',
    reason: 'indirect_with_next',
    counter: 'INVALID_INDIRECT_WITH_NEXT',
    post: (h, _p, x) =>
      postDescs(h, [
        {
          addr: x.table([{ addr: x.whole, len: 76, flags: 0, next: 0 }]),
          len: 16,
          flags: VRING_DESC_F_INDIRECT | VRING_DESC_F_NEXT,
          next: 1,
        },
        { addr: x.whole, len: 76, flags: 0, next: 0 },
      ]),
  },
  {
    what: 'next beyond the indirect table',
    reason: 'bad_next',
    counter: 'INVALID_BAD_NEXT',
    post: (h, _p, x) =>
      postDescs(h, [
        {
          addr: x.table([
            { addr: x.whole, len: HDR_LEN, flags: VRING_DESC_F_NEXT, next: 5 },
            { addr: x.whole + BigInt(HDR_LEN), len: 64, flags: 0, next: 0 },
          ]),
          len: 32,
          flags: VRING_DESC_F_INDIRECT,
          next: 0,
        },
      ]),
  },
];

/** Waits for the next ring-broken event of v after `since`, and checks reason, counters and err fds. */
async function expectBreak(
  t: Test,
  h: NativeVirtioUser,
  since: number,
  vring: number,
  reason: string,
  counter: string,
  before: { c: bigint; broken: bigint },
  what: string,
): Promise<void> {
  await waitFor(`ring-broken (${what})`, () => eventsOf(since, 'ring-broken').length > 0, 3000);
  const evs = eventsOf(since, 'ring-broken');
  t.same(
    evs.map((e) => [e.queue, e.reason]),
    [[vring, reason]],
    `${what}: one ring-broken event, vring ${vring}, ${reason}`,
  );
  await waitFor('counters', () => f.counter('v', counter) > before.c && f.counter('v', 'RINGS_BROKEN') > before.broken, 2000).catch(
    () => {},
  );
  t.equal(f.counter('v', counter) - before.c, 1n, `${what}: ${counter} counted once`);
  t.equal(f.counter('v', 'RINGS_BROKEN') - before.broken, 1n, `${what}: RINGS_BROKEN counted once`);
  // G5: the err eventfd the front end registered is signalled, once, and only that vring's.
  let signals = 0;
  await waitFor('err eventfd', () => (signals += Math.max(0, h.readErr(vring))) > 0, 2000).catch(() => {});
  await sleep(5);
  signals += Math.max(0, h.readErr(vring));
  t.equal(signals, 1, `${what}: the err eventfd of vring ${vring} is signalled once`);
  t.equal(h.readErr(vring ^ 1), 0, `${what}: the other vring's err eventfd is not`);
  const p = f.port('v');
  t.ok(
    p.connected && p.vrings![vring].broken && !p.vrings![vring ^ 1].broken,
    `${what}: only vring ${vring} is broken, the connection is up`,
  );
}

t.test('every ring rule broken in one session; each break signals the err eventfd', async (t) => {
  const v = await victim();
  const h = v.h;
  h.setVringErr(RX);
  h.setVringErr(TX);
  t.equal(h.readErr(RX), 0, 'no signal before anything broke');
  const data = Buffer.concat([Buffer.alloc(HDR_LEN), frame(64, 77)]);
  const whole = v.guard('a read-only transmit packet', data);
  const x: Pkt = {
    whole,
    table: (descs) => v.guard('an indirect table', Buffer.concat(descs.map(desc))),
  };
  const txAvail = h.ringAddrs(TX).avail;
  let p = 0; // the transmit vring's avail index
  for (const rule of txRules) {
    const since = f.events.length;
    const before = { c: f.counter('v', rule.counter), broken: f.counter('v', 'RINGS_BROKEN') };
    rule.post(h, p, x);
    h.kick(TX);
    await expectBreak(t, h, since, TX, rule.reason, rule.counter, before, rule.what);
    // Repair: the entry at p names a valid packet again, then the ring restarts from its used index.
    h.rawDesc(TX, 0, { addr: whole, len: data.length, flags: 0, next: 0 });
    if (rule.reason === 'avail_index_ahead') {
      h.rawSetAvailIdx(TX, p);
      h.rawAvailPush(TX, 0);
    } else {
      h.memWrite(txAvail + 4n + 2n * BigInt(p % QSIZE), Buffer.from([0, 0]));
    }
    const forwarded = f.counter('v', 'RX_PACKETS');
    h.restartVring(TX);
    await waitFor(`the repaired chain consumed after "${rule.what}"`, () => h.rawUsedIdx(TX) === ((p + 1) & 0xffff), 3000);
    await waitFor('counted', () => f.counter('v', 'RX_PACKETS') > forwarded, 2000).catch(() => {});
    t.ok(f.counter('v', 'RX_PACKETS') > forwarded, `${rule.what}: after a restart the ring forwards again`);
    t.notOk(f.port('v').vrings![TX].broken, `${rule.what}: no longer broken`);
    p++;
  }

  // Receive-side rules: every receive descriptor rewritten, then the generator's frames meet them.
  const rxDesc = h.ringAddrs(RX).desc;
  const orig = h.memRead(rxDesc, 16 * QSIZE)!;
  const ro = v.guard('a read-only receive buffer', pattern(2048, 9));
  const rxRules: [string, RawDesc, string, string][] = [
    ['a read-only buffer on the receive queue', { addr: ro, len: 2048, flags: 0, next: 0 }, 'readonly_on_rx', 'INVALID_READONLY_ON_RX'],
    [
      'a receive buffer outside memory',
      { addr: frontend().guestBase + (1n << 40n), len: 2048, flags: VRING_DESC_F_WRITE, next: 0 },
      'bad_address',
      'INVALID_BAD_ADDRESS',
    ],
    [
      'a receive chain with next beyond the queue',
      { addr: ro, len: 2048, flags: VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, next: 999 },
      'bad_next',
      'INVALID_BAD_NEXT',
    ],
  ];
  for (const [what, d, reason, counter] of rxRules) {
    const since = f.events.length;
    const before = { c: f.counter('v', counter), broken: f.counter('v', 'RINGS_BROKEN') };
    for (let i = 0; i < QSIZE; i++) h.rawDesc(RX, i, d);
    h.receive(0, 4096); // hands consumed buffers back, now under the bad descriptors
    await expectBreak(t, h, since, RX, reason, counter, before, what);
    h.memWrite(rxDesc, orig);
    h.restartVring(RX);
    await rxWorks(t, h, `${what}, repaired and restarted`);
  }
  t.equal(h.readErr(TX), 0, 'no late err signals on the transmit vring');
  v.check(t);
  await closeVictim(v);

  // The one rule that needs other features: indirect descriptors when INDIRECT_DESC was not negotiated.
  const w = await victim({ indirect: false });
  w.h.setVringErr(RX);
  w.h.setVringErr(TX);
  const wp = w.guard('a read-only transmit packet', data);
  const tbl = w.guard('an indirect table', desc({ addr: wp, len: data.length, flags: 0, next: 0 }));
  const since = f.events.length;
  const before = { c: f.counter('v', 'INVALID_INDIRECT_NOT_NEGOTIATED'), broken: f.counter('v', 'RINGS_BROKEN') };
  w.h.rawDesc(TX, 0, { addr: tbl, len: 16, flags: VRING_DESC_F_INDIRECT, next: 0 });
  w.h.rawAvailPush(TX, 0);
  w.h.kick(TX);
  await expectBreak(
    t,
    w.h,
    since,
    TX,
    'indirect_not_negotiated',
    'INVALID_INDIRECT_NOT_NEGOTIATED',
    before,
    'indirect without INDIRECT_DESC',
  );
  w.check(t);
  await closeVictim(w);
  await survives(t, 'every ring rule');
});
