// Bounded work: a hostile front end builds the rings that used to make one burst walk a queue's worth of
// descriptors per packet (long chains, zero-length descriptors, many heads sharing one tail) at queue
// sizes 256, 1024 (QEMU's largest) and 32768 (the spec's). The backend must cut the work at its budgets
// (virtio/ring.h: 256 descriptors a chain, 4096 a burst), count each cut, keep the ring (a budget is not
// a ring rule), and keep a well-behaved pair on the same PMD exchanging frames meanwhile.
import t, { type Test } from 'tap';
import type { NativeVirtioUser } from '../../src/harness/frontend-native';
import { Fixture, frame, receiveN, waitFor, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE } from '../support/fixture';

const TX = 1; // the guest's transmit vring (the backend reads it)
const RX = 0; // the guest's receive vring (the backend writes it)
const CHAIN_BUDGET = 256;
const BURST_BUDGET = 4096;

interface Setup {
  f: Fixture;
  h: NativeVirtioUser;
  g0: NativeVirtioUser;
  g1: NativeVirtioUser;
}

/** A good pair g0<->g1 and a hostile port h with queues of qsize, all on one PMD. */
async function setup(t: Test, qsize: number, mrgRxbuf = true): Promise<Setup> {
  const f = new Fixture();
  t.teardown(() => f.close());
  const g0p = f.vhost('g0');
  const g1p = f.vhost('g1');
  f.engine.wire('g0', 'g1');
  const hp = f.vhost('h');
  const g0 = f.peer({ path: g0p });
  const g1 = f.peer({ path: g1p });
  // Small receive buffers keep a 32768-entry ring's memory modest.
  const h = f.peer({ path: hp, queueSize: qsize, mrgRxbuf, rxBufSize: 128, memSize: 96 << 20 });
  await f.waitConnected('h');
  await f.waitConnected('g0');
  await f.waitConnected('g1');
  return { f, h, g0, g1 };
}

/** The victims still exchange frames, in both directions, while the hostile port is being served. */
async function victimsExchange(t: Test, x: Setup, what: string): Promise<void> {
  for (let seq = 0; seq < 20; seq++) {
    const a = frame(100, seq);
    t.ok(x.g0.send(0, a), 'g0 sends');
    const got = await receiveN(x.g1, 1);
    if (!got[0]?.equals(a)) return void t.fail(`g1 got frame ${seq} intact ${what}`);
    const b = frame(100, 1000 + seq);
    t.ok(x.g1.send(0, b), 'g1 sends');
    const back = await receiveN(x.g0, 1);
    if (!back[0]?.equals(b)) return void t.fail(`g0 got frame ${1000 + seq} intact ${what}`);
  }
  t.pass(`20 round trips between g0 and g1 ${what}`);
}

/**
 * The bound itself, from the counters rather than a clock: no burst on any port read more descriptors
 * than the burst budget, the hostile one's reached it when its attack filled bursts, and the victims'
 * bursts stayed small. (What that means for the victims' round trip is measured by `npm run bench --
 * hostile`, not timed here.)
 */
async function noBurstBeyondBudget(t: Test, x: Setup, reached: boolean): Promise<void> {
  const h = x.f.counter('h', 'LONGEST_BURST_DESCRIPTORS');
  t.ok(h <= BigInt(BURST_BUDGET), `the hostile port's longest burst read ${h} descriptors, at most the budget of ${BURST_BUDGET}`);
  if (reached) t.ok(h > BigInt(BURST_BUDGET - CHAIN_BUDGET), `and its attack took bursts up to the budget (${h})`);
  for (const g of ['g0', 'g1']) {
    // The victims' counters reach the shared block when the PMD next publishes them.
    await waitFor(`${g}'s counters published`, () => x.f.counter(g, 'LONGEST_BURST_DESCRIPTORS') > 0n, 5000);
    const v = x.f.counter(g, 'LONGEST_BURST_DESCRIPTORS');
    t.ok(v > 0n && v <= 64n, `victim ${g}'s longest burst read ${v} descriptors`);
  }
}

for (const qsize of [256, 1024, 32768]) {
  t.test(`queue size ${qsize}: receive buffers of zero-length descriptors sharing one tail`, async (t) => {
    const x = await setup(t, qsize);
    // Descriptor i is zero bytes long and leads to i+1; the last is one writable byte. Every head the
    // front end posted now starts a chain of qsize - i descriptors holding one byte, so placing one
    // 64-byte frame would walk about 76 of them: thousands of descriptors a packet before the budgets.
    const tail = x.h.alloc(1);
    for (let i = 0; i < qsize; i++)
      x.h.rawDesc(
        RX,
        i,
        i < qsize - 1
          ? { addr: tail, len: 0, flags: VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, next: i + 1 }
          : { addr: tail, len: 1, flags: VRING_DESC_F_WRITE, next: 0 },
      );
    x.f.engine.addPort('gen', 'gen', { size: 64, rate: 200000, count: 0 });
    x.f.engine.wire('h', 'gen');
    await waitFor('bursts cut at the burst budget', () => x.f.counter('h', 'BUDGET_CUTS_BURST') >= 10n, 10000);
    await victimsExchange(t, x, 'while the generator hammers the hostile ring');
    t.ok(x.f.counter('h', 'DROP_TX_BUDGET') > 0n, 'the packets of a cut burst are dropped as budget');
    t.equal(x.f.counter('h', 'TX_PACKETS'), 0n, 'nothing is written into one-byte buffers');
    if (qsize > CHAIN_BUDGET) t.ok(x.f.counter('h', 'BUDGET_CUTS_CHAIN') > 0n, 'chains longer than 256 descriptors are cut');
    else t.equal(x.f.counter('h', 'BUDGET_CUTS_CHAIN'), 0n, 'no chain of a 256-entry ring is over the chain budget');
    t.equal(x.f.counter('h', 'RINGS_BROKEN'), 0n, 'a budget is not a broken ring rule');
    t.notOk(x.f.port('h').vrings?.[RX].broken, 'the receive vring keeps running');
    await noBurstBeyondBudget(t, x, true);
  });

  t.test(`queue size ${qsize}: transmit chains of one-byte descriptors`, async (t) => {
    const x = await setup(t, qsize);
    x.f.engine.addPort('sink', 'sink', {});
    x.f.engine.wire('h', 'sink');
    // Chains of `len` one-byte descriptors, all reading the same zero byte: the header reads as no
    // offloads, and a chain under the budget is a valid (zero-filled) frame.
    const len = qsize === 256 ? 128 : 300;
    const chains = Math.floor(qsize / len);
    const byte = x.h.alloc(1);
    for (let c = 0; c < chains; c++) {
      for (let k = 0; k < len; k++) {
        const i = c * len + k;
        x.h.rawDesc(TX, i, { addr: byte, len: 1, flags: k < len - 1 ? VRING_DESC_F_NEXT : 0, next: i + 1 });
      }
      x.h.rawAvailPush(TX, c * len);
    }
    x.h.kick(TX);
    await waitFor('every chain returned', () => x.h.rawUsedIdx(TX) === chains, 10000);
    // Counters reach the shared block when the PMD publishes them, a little after the chains came back.
    const settled = len > CHAIN_BUDGET ? 'DROP_RX_TOO_MANY_DESCRIPTORS' : 'RX_PACKETS';
    await waitFor(`${settled} published`, () => x.f.counter('h', settled) === BigInt(chains), 10000);
    await victimsExchange(t, x, 'after the long chains');
    if (len > CHAIN_BUDGET) {
      t.equal(x.f.counter('h', 'DROP_RX_TOO_MANY_DESCRIPTORS'), BigInt(chains), `all ${chains} chains of ${len} descriptors dropped`);
      t.equal(x.f.counter('h', 'BUDGET_CUTS_CHAIN'), BigInt(chains), 'each cut at the chain budget');
      t.equal(x.f.counter('h', 'RX_PACKETS'), 0n, 'none forwarded');
      // 16 chains at the budget fill a burst's 4096 descriptors.
      if (chains > 16) t.ok(x.f.counter('h', 'BUDGET_CUTS_BURST') > 0n, 'bursts cut at the burst budget');
    } else {
      t.equal(x.f.counter('h', 'RX_PACKETS'), BigInt(chains), `the ${chains} chains of ${len} descriptors are frames`);
      t.equal(x.f.counter('h', 'BUDGET_CUTS_CHAIN'), 0n, 'no chain cut');
    }
    t.equal(x.f.counter('h', 'RINGS_BROKEN'), 0n, 'a budget is not a broken ring rule');
    await noBurstBeyondBudget(t, x, len > CHAIN_BUDGET && chains > 16);
  });
}
