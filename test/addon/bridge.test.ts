// The learning bridge (addon/forward/bridge.h) with our own front ends on every port: learning, flooding,
// aging, VLAN access and trunk ports, port security, isolation, the table limits and members leaving and
// joining at run time, with exact counts. Absence is asserted without timing: after the frames under test a
// broadcast marker is sent, and since one PMD thread runs the whole bridge in order, a port that got the
// marker would have got the earlier frames first.
import t, { type Test } from 'tap';
import type { BridgeOptions, BridgePortOptions } from '../../src/native';
import type { NativeVirtioUser } from '../../src/harness/frontend-native';
import { Fixture, receiveN, waitFor } from '../support/fixture';

const BCAST = 'ff:ff:ff:ff:ff:ff';
const mac = (n: number) => `02:00:00:00:00:${n.toString(16).padStart(2, '0')}`;
const macNum = (s: string) => parseInt(s.replace(/:/g, ''), 16);
const macBytes = (s: string) => Buffer.from(s.replace(/:/g, ''), 'hex');

/** An Ethernet frame dst <- src, 802.1Q-tagged when vlan is given, with seq in its payload. */
function eth(dst: string, src: string, seq: number, vlan?: number, len = 64): Buffer {
  const head = vlan === undefined ? 14 : 18;
  const f = Buffer.alloc(len);
  macBytes(dst).copy(f, 0);
  macBytes(src).copy(f, 6);
  if (vlan !== undefined) {
    f.writeUInt16BE(0x8100, 12);
    f.writeUInt16BE(vlan, 14);
  }
  f.writeUInt16BE(0x88b5, head - 2); // local experimental EtherType
  f.writeUInt32BE(seq, head);
  for (let i = head + 4; i < len; i++) f[i] = (seq + i) & 0xff;
  return f;
}

/** The same frame with its 802.1Q tag taken out. */
function untag(f: Buffer): Buffer {
  return Buffer.concat([f.subarray(0, 12), f.subarray(16)]);
}

interface Bridge {
  f: Fixture;
  vu: Record<string, NativeVirtioUser>;
  /**
   * What `port` received before a broadcast marker sent from `from` (markers filtered out). Frames sent from
   * `from` earlier than the marker are forwarded before it, so a frame of theirs that is not here was not
   * delivered to `port`.
   */
  drain: (port: string, from: string) => Promise<Buffer[]>;
  /**
   * What `port` holds now, with every forward() already started finished (reading the bridges pauses its
   * PMD): after a flooded frame was seen at one destination, its copy to every other one has been made.
   */
  quiet: (port: string) => Buffer[];
  stats: () => ReturnType<Fixture['engine']['bridges']>[number];
  member: (port: string) => ReturnType<Fixture['engine']['bridges']>[number]['members'][number];
}

const MARKER = 1_000_000;
let markerSeq = MARKER;
const seqOf = (f: Buffer) => f.readUInt32BE(f.readUInt16BE(12) === 0x8100 ? 18 : 14);

async function bridge(t: Test, members: BridgePortOptions[], options: BridgeOptions = {}): Promise<Bridge> {
  const f = new Fixture();
  t.teardown(() => f.close());
  const vu: Record<string, NativeVirtioUser> = {};
  for (const m of members) f.vhost(m.port);
  f.engine.addBridge('br0', options, members);
  for (const m of members) vu[m.port] = f.peer({ path: f.sock(m.port) });
  for (const m of members) await f.waitConnected(m.port);
  const stats = () => f.engine.bridges().find((b) => b.name === 'br0')!;
  const member = (port: string) => stats().members.find((m) => m.port === port)!;
  const drain = async (port: string, from: string) => {
    const seq = markerSeq++;
    const i = members.findIndex((m) => m.port === from);
    const cfg = members[i];
    // From the sender's own address (port security admits no other) in its first VLAN.
    const src =
      cfg.mac !== undefined
        ? cfg.mac
            .toString(16)
            .padStart(12, '0')
            .replace(/(..)(?!$)/g, '$1:')
        : mac(0xe0 + i);
    vu[from].send(0, eth(BCAST, src, seq, cfg.trunk ? cfg.trunk[0] : undefined));
    const got: Buffer[] = [];
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline) {
      for (const x of vu[port].receive(0, 64)) {
        if (seqOf(x) === seq) return got;
        if (seqOf(x) < MARKER) got.push(x);
      }
      await new Promise((r) => setTimeout(r, 5));
    }
    throw new Error(`${port} did not get the marker from ${from}`);
  };
  const quiet = (port: string) => {
    stats();
    return vu[port].receive(0, 64).filter((x) => seqOf(x) < MARKER);
  };
  return { f, vu, drain, quiet, stats, member };
}

t.test('floods broadcast to every other port, learns, and sends the reply to one port only', async (t) => {
  const { f, vu, quiet, stats } = await bridge(t, [{ port: 'a' }, { port: 'b' }, { port: 'c' }]);
  const hello = eth(BCAST, mac(1), 1);
  vu.a.send(0, hello);
  const atB = await receiveN(vu.b, 1);
  const atC = await receiveN(vu.c, 1);
  t.same([atB[0]?.equals(hello), atC[0]?.equals(hello)], [true, true], 'b and c get the broadcast unchanged');
  t.same(quiet('a'), [], 'the broadcast does not come back to a');

  const reply = eth(mac(1), mac(2), 2);
  vu.b.send(0, reply);
  t.ok((await receiveN(vu.a, 1))[0]?.equals(reply), "a gets b's reply");
  t.same(quiet('c'), [], 'the reply to a learned MAC is not flooded to c');

  const back = eth(mac(2), mac(1), 3);
  vu.a.send(0, back);
  t.ok((await receiveN(vu.b, 1))[0]?.equals(back), 'a to b once b is learned');
  t.same(quiet('c'), [], 'and not flooded to c');

  const s = stats();
  t.equal(s.flooded, 1, 'one frame flooded');
  t.equal(s.floodCopies, 2, 'into two copies');
  t.equal(s.learned, 2, 'two MACs learned');
  const fdb = f.engine.fdb('br0');
  t.equal(fdb.length, 2, 'two entries');
  const entry = (m: string) => fdb.find((e) => e.mac === macNum(m));
  t.equal(entry(mac(1))?.port, 'a', 'MAC 1 learned on a');
  t.equal(entry(mac(2))?.port, 'b', 'MAC 2 learned on b');
  t.equal(entry(mac(1))?.static, false, 'learned, not static');
  t.ok(entry(mac(1))!.ageSeconds < 300, 'with an age below the ageing time');
});

t.test('unknown unicast floods to all but the ingress; flood=off ports do not get it', async (t) => {
  const { vu, quiet } = await bridge(t, [{ port: 'a' }, { port: 'b' }, { port: 'c', flood: false }]);
  const fr = eth(mac(0x42), mac(1), 1);
  vu.a.send(0, fr);
  t.ok((await receiveN(vu.b, 1))[0]?.equals(fr), 'b gets the unknown unicast');
  t.same(quiet('c'), [], 'c (flood=off) does not');
  t.same(quiet('a'), [], 'a does not get its own frame back');
  const bc = eth(BCAST, mac(1), 2);
  vu.a.send(0, bc);
  t.ok((await receiveN(vu.c, 1))[0]?.equals(bc), 'c still gets broadcasts');
});

t.test('a destination on the port the frame came from is dropped and counted', async (t) => {
  const { vu, drain, member } = await bridge(t, [{ port: 'a' }, { port: 'b' }, { port: 'c' }]);
  vu.a.send(0, eth(BCAST, mac(1), 1));
  vu.a.send(0, eth(BCAST, mac(3), 2));
  await receiveN(vu.b, 2);
  vu.a.send(0, eth(mac(3), mac(1), 3));
  t.same(await drain('b', 'a'), [], 'nothing for b');
  t.equal(member('a').drops.local, 1, 'counted as local on a');
});

t.test('learned entries age out with a short age', async (t) => {
  const { f, vu, stats } = await bridge(t, [{ port: 'a' }, { port: 'b' }], { ageingSeconds: 1, maxMacs: 8 });
  vu.a.send(0, eth(BCAST, mac(1), 1));
  await receiveN(vu.b, 1);
  t.equal(f.engine.fdb('br0').length, 1, 'one entry learned');
  await waitFor('the entry to age out', () => f.engine.fdb('br0').length === 0, 10_000);
  t.equal(stats().aged, 1, 'counted as aged');
  t.equal(stats().macs, 0, 'table empty');
  const fr = eth(mac(1), mac(2), 2);
  vu.b.send(0, fr);
  t.ok((await receiveN(vu.a, 1))[0]?.equals(fr), 'after aging, a frame to it is flooded again and arrives');
});

t.test('static entries: never flooded to others, never aged', async (t) => {
  const { f, vu, quiet, stats } = await bridge(t, [{ port: 'a' }, { port: 'b' }, { port: 'c' }], {
    ageingSeconds: 1,
    maxMacs: 8,
    static: [{ port: 'b', mac: macNum(mac(9)) }],
  });
  const fr = eth(mac(9), mac(1), 1);
  vu.a.send(0, fr);
  t.ok((await receiveN(vu.b, 1))[0]?.equals(fr), 'the static MAC is reached on b');
  t.same(quiet('c'), [], 'and not flooded to c');
  await waitFor('the learned entry to age out', () => stats().aged === 1, 10_000);
  t.same(
    f.engine.fdb('br0').map((e) => [e.mac, e.port, e.static]),
    [[macNum(mac(9)), 'b', true]],
    'only the static entry is left',
  );
});

t.test('access ports of different VLANs do not see each other; a trunk gets the tag', async (t) => {
  const { vu, drain, quiet, member, stats } = await bridge(t, [
    { port: 'a', vlan: 10 },
    { port: 'b', vlan: 10 },
    { port: 'c', vlan: 20 },
    { port: 'd', trunk: [10, 20] },
  ]);
  const fr = eth(BCAST, mac(1), 1);
  vu.a.send(0, fr);
  t.ok((await receiveN(vu.b, 1))[0]?.equals(fr), 'b (same VLAN) gets it untagged');
  const atD = (await receiveN(vu.d, 1))[0];
  t.equal(atD?.length, fr.length + 4, 'the trunk gets it four bytes longer');
  t.equal(atD?.subarray(12, 16).toString('hex'), '8100000a', 'tagged with VLAN 10 after the MACs');
  t.ok(atD && untag(atD).equals(fr), 'the rest of the frame unchanged');
  t.same(quiet('c'), [], 'c (VLAN 20) does not get it');

  const tagged = eth(BCAST, mac(4), 2, 20);
  vu.d.send(0, tagged);
  t.ok((await receiveN(vu.c, 1))[0]?.equals(untag(tagged)), 'a VLAN 20 frame from the trunk arrives untagged at c');
  t.same([quiet('a'), quiet('b')], [[], []], 'a and b (VLAN 10) do not get it');

  vu.d.send(0, eth(BCAST, mac(4), 3, 30));
  vu.d.send(0, eth(BCAST, mac(4), 4));
  t.same(await drain('a', 'd'), [], 'a gets neither a VLAN 30 frame nor an untagged one from the trunk');
  vu.a.send(0, eth(BCAST, mac(1), 5, 10));
  t.same(await drain('b', 'a'), [], 'b does not get a tagged frame from an access port');
  t.equal(member('d').drops.vlan, 2, 'the trunk counts a VLAN it does not carry and an untagged frame (no native)');
  t.equal(member('a').drops.vlan, 1, 'the access port counts a tagged frame');
  t.same(
    stats().vlanDrops,
    [
      { vlan: '10', drops: 1 },
      { vlan: '20', drops: 0 },
      { vlan: 'untagged', drops: 1 },
      { vlan: 'other', drops: 1 },
    ],
    "by VLAN: the tagged frame from the access port in 10, the trunk's untagged one and its VLAN 30 (carried nowhere) apart",
  );
});

t.test('trunk native VLAN: untagged frames join it and leave untagged', async (t) => {
  const { vu } = await bridge(t, [
    { port: 'a', vlan: 10 },
    { port: 'd', trunk: [20], native: 10 },
    { port: 'e', trunk: [10, 20] },
  ]);
  const fr = eth(BCAST, mac(1), 1);
  vu.d.send(0, fr);
  t.ok((await receiveN(vu.a, 1))[0]?.equals(fr), 'an untagged frame from d reaches the VLAN 10 access port');
  t.equal((await receiveN(vu.e, 1))[0]?.subarray(12, 16).toString('hex'), '8100000a', 'and the other trunk with tag 10');
  const back = eth(BCAST, mac(2), 2);
  vu.a.send(0, back);
  t.ok((await receiveN(vu.d, 1))[0]?.equals(back), 'VLAN 10 leaves d untagged (its native VLAN)');
  t.equal((await receiveN(vu.e, 1))[0]?.subarray(12, 16).toString('hex'), '8100000a', 'and e tagged');
});

t.test('port security: only the configured source MAC is admitted', async (t) => {
  const { vu, quiet, member } = await bridge(t, [{ port: 'a', mac: macNum(mac(1)) }, { port: 'b' }]);
  vu.a.send(0, eth(BCAST, mac(7), 1));
  vu.a.send(0, eth(BCAST, mac(8), 2));
  const ok = eth(BCAST, mac(1), 3);
  vu.a.send(0, ok);
  t.ok((await receiveN(vu.b, 1))[0]?.equals(ok), 'the first frame b gets is the one from the configured MAC');
  t.same(quiet('b'), [], 'the spoofed ones never arrive');
  t.equal(member('a').drops.spoofed, 2, 'two spoofed frames counted');
});

t.test('isolated ports reach only ports that are not isolated', async (t) => {
  const { vu, drain, quiet, member } = await bridge(t, [{ port: 'a', isolated: true }, { port: 'b', isolated: true }, { port: 'c' }]);
  const fr = eth(BCAST, mac(1), 1);
  vu.a.send(0, fr);
  t.ok((await receiveN(vu.c, 1))[0]?.equals(fr), 'c gets the broadcast');
  t.same(quiet('b'), [], 'b (isolated) does not');
  vu.b.send(0, eth(BCAST, mac(2), 2));
  await receiveN(vu.c, 1);
  vu.a.send(0, eth(mac(2), mac(1), 3));
  t.same(await drain('c', 'a'), [], 'a unicast to a learned isolated port goes nowhere');
  t.same(quiet('b'), [], 'not to b either');
  t.equal(member('a').drops.isolated, 1, 'and is counted');
});

t.test('table limits: per-port refusals, then eviction from the port holding the most', async (t) => {
  const { f, vu, stats } = await bridge(t, [{ port: 'a' }, { port: 'b' }, { port: 'c' }], {
    maxMacs: 4,
    maxMacsPerPort: 2,
  });
  for (let i = 0; i < 5; i++) vu.a.send(0, eth(BCAST, mac(0x10 + i), i));
  t.equal((await receiveN(vu.b, 5)).length, 5, 'b gets the five frames');
  t.equal((await receiveN(vu.c, 5)).length, 5, 'c too');
  let s = stats();
  t.equal(s.learned, 2, 'a learns its limit of two');
  t.equal(s.refusedPortLimit, 3, 'three refused at the per-port limit');
  vu.b.send(0, eth(BCAST, mac(0x20), 10));
  vu.b.send(0, eth(BCAST, mac(0x21), 11));
  await receiveN(vu.a, 2);
  await receiveN(vu.c, 2);
  t.equal(stats().macs, 4, 'the table is full');
  vu.c.send(0, eth(BCAST, mac(0x30), 12));
  await receiveN(vu.a, 1);
  await receiveN(vu.b, 1);
  s = stats();
  t.equal(s.evicted, 1, 'one entry evicted to make room');
  t.equal(s.refusedTableFull, 0, 'none refused: there was a learned entry to take');
  t.equal(s.macs, 4, 'still four entries');
  const byPort = (p: string) => f.engine.fdb('br0').filter((e) => e.port === p).length;
  t.same([byPort('a'), byPort('b'), byPort('c')], [1, 2, 1], 'taken from a (the first of the ports holding the most)');
  t.same(
    s.members.map((m) => m.macs),
    [1, 2, 1],
    'members account for every learned entry',
  );
});

t.test('a MAC moving to another port follows and is counted', async (t) => {
  const { f, vu, quiet, stats } = await bridge(t, [{ port: 'a' }, { port: 'b' }, { port: 'c' }]);
  vu.a.send(0, eth(BCAST, mac(1), 1));
  await receiveN(vu.b, 1);
  await receiveN(vu.c, 1);
  vu.b.send(0, eth(BCAST, mac(1), 2));
  await receiveN(vu.a, 1);
  await receiveN(vu.c, 1);
  t.equal(stats().moved, 1, 'one move');
  t.equal(f.engine.fdb('br0')[0]?.port, 'b', 'now on b');
  const fr = eth(mac(1), mac(3), 3);
  vu.c.send(0, fr);
  t.ok((await receiveN(vu.b, 1))[0]?.equals(fr), 'frames to it go to b');
  t.same(quiet('a'), [], 'not to a');
});

t.test('members leave and join at run time while the others keep their traffic', async (t) => {
  const { f, vu, quiet, stats } = await bridge(t, [{ port: 'a' }, { port: 'b' }, { port: 'c' }]);
  for (let i = 0; i < 10; i++) vu.a.send(0, eth(BCAST, mac(1), i));
  t.equal((await receiveN(vu.b, 10)).length, 10, 'b gets ten frames');
  t.equal((await receiveN(vu.c, 10)).length, 10, 'c gets ten frames');
  vu.c.send(0, eth(BCAST, mac(3), 99));
  await receiveN(vu.a, 1);
  await receiveN(vu.b, 1);
  f.engine.bridgeRemovePort('br0', 'c');
  t.notOk(
    f.engine.fdb('br0').some((e) => e.port === 'c'),
    "c's entries left with it",
  );
  for (let i = 10; i < 20; i++) vu.a.send(0, eth(BCAST, mac(1), i));
  const atB = await receiveN(vu.b, 10);
  t.same(
    atB.map(seqOf),
    Array.from({ length: 10 }, (_, i) => i + 10),
    'b gets the next ten, in order',
  );
  t.same(quiet('c'), [], 'c, out of the bridge, gets nothing');
  t.same(
    stats().members.map((m) => m.port),
    ['a', 'b'],
    'two members left',
  );
  t.equal(f.port('c').forwarder, '', 'c is in no forwarder');
  t.throws(() => f.engine.bridgeRemovePort('br0', 'c'), /port "c" is not in bridge "br0"/);

  f.engine.bridgeAddPort('br0', { port: 'c' });
  const fr = eth(BCAST, mac(1), 50);
  vu.a.send(0, fr);
  t.ok((await receiveN(vu.c, 1))[0]?.equals(fr), 'c joined again and gets floods');
  await receiveN(vu.b, 1);
  f.engine.removePort('b');
  t.same(
    stats().members.map((m) => m.port),
    ['a', 'c'],
    'removing a port takes it out of the bridge only',
  );
  vu.a.send(0, fr);
  t.equal((await receiveN(vu.c, 1)).length, 1, 'the others still forward');
});

t.test('short frames are dropped and counted; a port is in one wire or one bridge', async (t) => {
  const { f, vu, drain, member } = await bridge(t, [{ port: 'a' }, { port: 'b' }]);
  vu.a.send(0, Buffer.alloc(10, 0xff));
  vu.a.send(0, Buffer.concat([macBytes(BCAST), macBytes(mac(1)), Buffer.from([0x81, 0x00, 0x00])]));
  t.same(await drain('b', 'a'), [], 'neither reaches b');
  t.equal(member('a').drops.runt, 2, 'both counted as runts');
  f.vhost('x');
  t.throws(() => f.engine.wire('a', 'x'), /port "a" is already in bridge "br0"/);
  t.throws(() => f.engine.addBridge('br1', {}, [{ port: 'x' }, { port: 'b' }]), /port "b" is already in bridge "br0"/);
  t.throws(() => f.engine.bridgeAddPort('nope', { port: 'x' }), /no bridge named "nope"/);
  t.equal(f.port('a').forwarder, 'br0', 'ports say which bridge they are in');
});

t.test('a generator sending from many source MACs fills the table with exactly those, a static entry steers them', async (t) => {
  const f = new Fixture();
  t.teardown(() => f.close());
  f.engine.addPort('gen', 'g0', { size: 64, rate: 0, count: 1000, macs: 100 });
  f.engine.addPort('sink', 's0', {});
  f.engine.addPort('sink', 's1', {});
  // The generator's destination, 02:00:00:00:00:02, held by s0: nothing floods to s1.
  f.engine.addBridge('br0', { static: [{ mac: 0x020000000002, port: 's0' }] }, [{ port: 'g0' }, { port: 's0' }, { port: 's1' }]);
  await waitFor('1000 frames through the bridge', () => f.engine.bridges()[0].members.find((m) => m.port === 's0')!.tx === 1000);
  const fdb = f.engine.fdb('br0');
  const learned = fdb.filter((e) => !e.static);
  t.equal(learned.length, 100, '100 learned entries');
  t.ok(
    learned.every((e) => e.port === 'g0' && Math.floor(e.mac / 2 ** 24) === 0x020100),
    'every one on g0, from 02:01:00:xx:xx:xx',
  );
  t.same(new Set(learned.map((e) => e.mac % 2 ** 24)).size, 100, 'all different');
  t.equal(f.engine.bridges()[0].flooded, 0, 'none flooded');
});
