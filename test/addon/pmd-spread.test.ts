// Queue pairs spread over PMD threads: a wire of multi-queue vhost-user ports runs queue pair q of each
// side on PMD q mod 2, and where several PMDs fill one receive ring of a guest (a side with fewer queue
// pairs) they take turns under the ring's lock. Frames of one queue pair stay in order, every frame is
// counted once however many PMDs counted it, and a guest whose memory vanishes under two PMDs loses only
// its own rings.
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import t, { type Test } from 'tap';
import { native, type NativeEngine } from '../../src/native';
import type { NativeVirtioUser } from '../../src/harness/frontend-native';
import { Fixture, frame, receiveN, waitFor } from '../support/fixture';

const ids = native.queueCounters.map((c) => c.id);
const pmdCounter = (e: NativeEngine, pmd: number, id: string): bigint => {
  const l = e.counterLayout();
  return e.counters()[l.pmdBase + pmd * l.pmdStride + native.pmdCounters.findIndex((c) => c.id === id)];
};

/** Sum of a counter over every queue pair of a port. */
const sum = (f: Fixture, port: string, id: string): bigint => {
  let n = 0n;
  for (let q = 0; q < f.port(port).queuePairs; q++) n += f.counter(port, id, q);
  return n;
};
const drops = (f: Fixture, port: string, prefix: string): bigint =>
  ids.filter((id) => id.startsWith(prefix)).reduce((n, id) => n + sum(f, port, id), 0n);

async function wired(qa: number, qb: number) {
  const f = new Fixture('kernel', [-1, -1]);
  const pa = f.vhost('a', qa);
  const pb = f.vhost('b', qb);
  f.engine.wire('a', 'b');
  const a = f.peer({ path: pa, queuePairs: qa });
  const b = f.peer({ path: pb, queuePairs: qb });
  await f.waitConnected('a');
  await f.waitConnected('b');
  return { f, a, b };
}

/** n frames from `from` into `to` at full speed; every one is accounted for on both sides. */
async function stream(t: Test, f: Fixture, from: NativeVirtioUser, to: NativeVirtioUser, names: [string, string], n: number) {
  const [src, dst] = names;
  // What the front ends and the ports counted before (frames sent one by one count too), once the PMDs
  // have published what they counted of those.
  await waitFor('the earlier frames to be counted', () => {
    const took = sum(f, src, 'RX_PACKETS') === BigInt(from.stats().txPackets);
    return took && sum(f, dst, 'TX_PACKETS') === BigInt(to.stats().rxPackets);
  });
  const sent0 = from.stats().txPackets,
    got0 = to.stats().rxPackets;
  const rx0 = sum(f, src, 'RX_PACKETS'),
    tx0 = sum(f, dst, 'TX_PACKETS'),
    drops0 = drops(f, dst, 'DROP_TX_');
  to.startTraffic({ rx: true });
  from.startTraffic({ txSize: 64, txCount: n });
  await waitFor(`${src}'s front end to send ${n}`, () => from.stats().txPackets - sent0 === n, 30_000);
  await waitFor(`the switch to take all ${n} from ${src}`, () => sum(f, src, 'RX_PACKETS') - rx0 === BigInt(n), 10_000);
  await waitFor(
    `every frame transmitted into ${dst} or dropped with a reason`,
    () => sum(f, dst, 'TX_PACKETS') - tx0 + drops(f, dst, 'DROP_TX_') - drops0 === BigInt(n),
    10_000,
  );
  const sent = sum(f, dst, 'TX_PACKETS') - tx0;
  await waitFor(`${dst}'s front end to receive the ${sent} transmitted`, () => BigInt(to.stats().rxPackets - got0) === sent, 10_000);
  t.ok(sent > 0n, `${sent} of ${n} reached ${dst}, the rest dropped and counted`);
  t.equal(BigInt(to.stats().rxPackets - got0), sent, `${dst}'s front end received exactly what the switch counted`);
  to.stopTraffic();
  from.stopTraffic();
}

t.test('a wire of 4-queue ports serves queue pair q on PMD q mod 2, in order per queue pair', async (t) => {
  const { f, a, b } = await wired(4, 4);
  t.teardown(() => f.close());
  t.same(f.port('a').queuePmds, [0, 1, 0, 1], "a's queue pairs alternate between the PMDs");
  t.same(f.port('b').queuePmds, [0, 1, 0, 1], "b's too, each beside the queue pair it feeds");
  for (let q = 0; q < 4; q++) {
    const sent = Array.from({ length: 40 }, (_, i) => frame(60 + i, q * 1000 + i));
    for (const s of sent) a.send(q, s);
    const got = await receiveN(b, sent.length, q);
    t.same(
      got.map((g) => g.readUInt32BE(14)),
      sent.map((s) => s.readUInt32BE(14)),
      `queue pair ${q}: 40 frames arrive on b's queue pair ${q} in order`,
    );
  }
  const busy0 = pmdCounter(f.engine, 0, 'BUSY_ITERATIONS');
  const busy1 = pmdCounter(f.engine, 1, 'BUSY_ITERATIONS');
  await stream(t, f, a, b, ['a', 'b'], 200_000);
  await waitFor(
    'both PMDs to publish',
    () => pmdCounter(f.engine, 0, 'BUSY_ITERATIONS') > busy0 && pmdCounter(f.engine, 1, 'BUSY_ITERATIONS') > busy1,
  );
  t.pass('both PMDs moved frames');
});

t.test('two PMDs filling one receive ring take turns under its lock and count every frame once', async (t) => {
  const { f, a, b } = await wired(4, 1);
  t.teardown(() => f.close());
  t.same(f.port('a').queuePmds, [0, 1, 0, 1], "a's queue pairs alternate between the PMDs");
  t.same(f.port('b').queuePmds, [0], "b's one queue pair is on PMD 0; PMD 1 fills its receive ring too");
  // Frames of each of a's queue pairs, interleaved, arrive on b's one ring with each queue pair's order kept.
  for (let i = 0; i < 30; i++) for (let q = 0; q < 4; q++) a.send(q, frame(64, q * 1000 + i));
  const got = (await receiveN(b, 120, 0)).map((g) => g.readUInt32BE(14));
  t.equal(got.length, 120, 'all 120 frames arrive');
  for (let q = 0; q < 4; q++)
    t.same(
      got.filter((s) => Math.floor(s / 1000) === q),
      Array.from({ length: 30 }, (_, i) => q * 1000 + i),
      `a's queue pair ${q}: its 30 frames in order`,
    );
  await stream(t, f, a, b, ['a', 'b'], 300_000);
  // And back: b's one queue pair feeds a's queue pair 0 only.
  await stream(t, f, b, a, ['b', 'a'], 50_000);
  t.equal(
    f.counter('a', 'TX_PACKETS', 1) + f.counter('a', 'TX_PACKETS', 2) + f.counter('a', 'TX_PACKETS', 3),
    0n,
    "nothing into a's other queue pairs",
  );
});

// As the survival suite's truncation test, in a child process so that a regression kills the child and
// not the suite: b's front end cuts the file behind its memory while a's four queue pairs, on two PMDs,
// stream into b's one receive ring.
t.test('a guest whose memory vanishes under two PMDs loses its own rings, and only those', async (t) => {
  const dist = path.resolve(__dirname, '..', '..');
  const script = `
    const fs = require('fs');
    const { Fixture, waitFor } = require(${JSON.stringify(path.join(dist, 'test', 'support', 'fixture.js'))});
    (async () => {
      const f = new Fixture('kernel', [-1, -1]);
      const broken = (port) => f.events.filter((e) => e.port === port && e.kind === 'ring-broken').map((e) => [e.queue, e.reason]);
      f.vhost('a', 4); f.vhost('b', 1);
      f.engine.wire('a', 'b');
      const a = f.peer({ path: f.sock('a'), queuePairs: 4 });
      const b = f.peer({ path: f.sock('b'), queuePairs: 1 });
      await f.waitConnected('a'); await f.waitConnected('b');
      b.startTraffic({ rx: true });
      a.startTraffic({ txSize: 64, txCount: 0 });
      const rx = (p) => [0, 1, 2, 3].slice(0, f.port(p).queuePairs).reduce((n, q) => n + f.counter(p, 'RX_PACKETS', q), 0n);
      await waitFor('traffic into b', () => f.counter('b', 'TX_PACKETS') > 1000n, 10000);
      b.stopTraffic();
      fs.ftruncateSync(b.memFd(), 0);
      await waitFor('b broken', () => broken('b').length === 2, 10000);
      const before = rx('a');
      await waitFor('a still read', () => rx('a') > before + 1000n, 10000);
      a.stopTraffic();
      const out = { b: broken('b').sort(), a: broken('a'), aConnected: f.port('a').connected };
      f.close();
      console.log(JSON.stringify(out));
      process.exit(0);
    })().catch((e) => { console.error(e); process.exit(1); });
  `;
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 60_000 });
  t.equal(r.status, 0, `the process survives (signal ${r.signal}, stderr ${r.stderr})`);
  const out = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as { b: [number, string][]; a: unknown[]; aConnected: boolean };
  t.same(
    out.b,
    [
      [0, 'memory_gone'],
      [1, 'memory_gone'],
    ],
    "both of b's rings stop, memory_gone",
  );
  t.same(out.a, [], "a's rings are untouched");
  t.ok(out.aConnected, "a's guest stays connected, its frames still read");
});

const macBytes = (n: number): Buffer => Buffer.from([2, 0, 0, 0, 0, n]);
/** A frame to MAC 02:..:dst from 02:..:src with seq in its payload. */
function eth(dst: number, src: number, seq: number): Buffer {
  const f = Buffer.alloc(64);
  macBytes(dst).copy(f, 0);
  macBytes(src).copy(f, 6);
  f.writeUInt16BE(0x88b5, 12);
  f.writeUInt32BE(seq, 14);
  return f;
}

/** vhost-user ports of `queues` queue pairs on bridge br0, two PMD threads, each with our front end. */
async function bridged(t: Test, names: string[], queues: number) {
  const f = new Fixture('kernel', [-1, -1]);
  t.teardown(() => f.close());
  for (const n of names) f.vhost(n, queues);
  const members = names.map((port) => ({ port }));
  f.engine.addBridge('br0', {}, members);
  const vu = Object.fromEntries(names.map((n) => [n, f.peer({ path: f.sock(n), queuePairs: queues })]));
  for (const n of names) await f.waitConnected(n);
  return { f, vu };
}

t.test('a bridge of 2-queue ports runs on both PMDs: learned from both, unicast and flooded exactly', async (t) => {
  const names = ['a', 'b', 'c'];
  const { f, vu } = await bridged(t, names, 2);
  for (const n of names) t.same(f.port(n).queuePmds, [0, 1], `${n}: queue pair q on PMD q`);
  const br = () => f.engine.bridges().find((b) => b.name === 'br0')!;
  const member = (p: string) => br().members.find((m) => m.port === p)!;

  // b announces itself on both queue pairs, so both PMDs learn it (one entry); the broadcast floods.
  for (const q of [0, 1]) vu.b.send(q, eth(0xff, 2, q));
  for (const p of ['a', 'c']) {
    const got = [...(await receiveN(vu[p], 1, 0, 2000)), ...(await receiveN(vu[p], 1, 1, 2000))];
    t.equal(got.length, 2, `${p} gets b's two broadcasts, one per queue pair`);
  }
  t.equal(member('b').macs, 1, "b's MAC learned once, from both PMDs");
  // a sends to b on both queue pairs: unicast, each frame to b only, in order per queue pair.
  for (let i = 0; i < 50; i++) for (const q of [0, 1]) vu.a.send(q, eth(2, 1, q * 1000 + i));
  for (const q of [0, 1]) {
    const got = await receiveN(vu.b, 50, q);
    t.same(
      got.map((g) => g.readUInt32BE(14)),
      Array.from({ length: 50 }, (_, i) => q * 1000 + i),
      `b's queue pair ${q}: a's 50 frames in order`,
    );
  }
  t.same([vu.c.receive(0, 100).length, vu.c.receive(1, 100).length], [0, 0], 'c gets none of them');
  t.equal(member('a').rx, 100, 'the bridge took 100 from a');
  t.equal(member('b').tx, 100, 'and delivered the 100 into b');
  t.same([member('a').tx, member('c').tx], [2, 2], "a and c each got b's two broadcasts");
  t.equal(br().flooded, 2, 'two frames flooded');
  t.equal(br().floodCopies, 4, 'two copies each');
  t.equal(member('a').macs + member('b').macs, 2, 'a and b each learned once');
});

t.test('a member that does not spread keeps a bridge on one PMD; it spreads again when that member leaves', async (t) => {
  const { f, vu } = await bridged(t, ['a', 'b'], 2);
  const { a, b } = vu;
  t.same(f.port('a').queuePmds, [0, 1], 'two vhost-user ports: spread');
  f.engine.addPort('sink', 's0', {});
  f.engine.bridgeAddPort('br0', { port: 's0' });
  t.same(
    ['a', 'b', 's0'].map((n) => f.port(n).queuePmds),
    [[0, 0], [0, 0], [0]],
    'with a sink: every queue on one PMD',
  );
  for (const q of [0, 1]) a.send(q, eth(0xff, 1, q));
  await waitFor('the sink to count both broadcasts', () => f.counter('s0', 'TX_PACKETS') === 2n);
  t.equal((await receiveN(b, 1, 0, 2000)).length + (await receiveN(b, 1, 1, 2000)).length, 2, 'b gets both too');
  f.engine.bridgeRemovePort('br0', 's0');
  t.same(f.port('a').queuePmds, [0, 1], 'the sink gone: spread again');
  for (const q of [0, 1]) a.send(q, eth(0xff, 1, 10 + q));
  t.equal((await receiveN(b, 1, 0, 2000)).length + (await receiveN(b, 1, 1, 2000)).length, 2, 'b still gets what a floods');
});

t.test('a full-rate stream through a bridge on two PMDs is counted exactly', async (t) => {
  const { f, vu } = await bridged(t, ['a', 'b'], 4);
  const { a, b } = vu;
  await stream(t, f, a, b, ['a', 'b'], 200_000);
  const m = (p: string) => f.engine.bridges()[0].members.find((x) => x.port === p)!;
  t.equal(m('a').rx, 200_000, "the bridge's count of a's frames, summed over both PMDs");
  t.equal(BigInt(m('b').tx), sum(f, 'b', 'TX_PACKETS'), "its count into b is b's own");
});
