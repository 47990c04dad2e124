// Checksum and TCP segmentation offloads end to end with our own front ends on real vhost-user sockets:
// negotiation and offloads=off, partial checksums and super-frames carried as they are to a guest that took
// the offloads, completed and segmented in software for one that did not (every segment's checksums checked
// here, the payloads joined back and compared), through a wire and through a bridge that pushes a VLAN tag,
// and hostile headers, each dropped and counted by its reason.
import t, { type Test } from 'tap';
import { Fixture, waitFor } from '../support/fixture';
import { sum16, tcpFrame, type Tcp } from '../support/tcp-frame';

const bit = (n: number) => 1n << BigInt(n);
const CSUM = 0,
  GUEST_CSUM = 1,
  GUEST_TSO4 = 7,
  GUEST_TSO6 = 8,
  GUEST_ECN = 9,
  HOST_TSO4 = 11,
  HOST_TSO6 = 12,
  HOST_ECN = 13;
const OFFLOADS = [CSUM, GUEST_CSUM, GUEST_TSO4, GUEST_TSO6, GUEST_ECN, HOST_TSO4, HOST_TSO6, HOST_ECN];
const NEEDS_CSUM = 1;
const GSO_TCPV4 = 1,
  GSO_UDP = 3,
  GSO_TCPV6 = 4,
  GSO_UDP_L4 = 5,
  GSO_ECN = 0x80;
const FIN = 0x01,
  PSH = 0x08,
  CWR = 0x80,
  ACK = 0x10;
// Big enough buffers for a 64 KB super-frame in one send, and merged receive buffers for it.
const BIG = { rxBufSize: 65536, queueSize: 64, memSize: 64 << 20 };

interface Hdr {
  flags?: number;
  gsoType?: number;
  hdrLen?: number;
  gsoSize?: number;
  csumStart?: number;
  csumOffset?: number;
}
function hdr(h: Hdr): Buffer {
  const b = Buffer.alloc(12);
  b[0] = h.flags ?? 0;
  b[1] = h.gsoType ?? 0;
  b.writeUInt16LE(h.hdrLen ?? 0, 2);
  b.writeUInt16LE(h.gsoSize ?? 0, 4);
  b.writeUInt16LE(h.csumStart ?? 0, 6);
  b.writeUInt16LE(h.csumOffset ?? 0, 8);
  return b;
}
function readHdr(b: Buffer): Required<Hdr> {
  return {
    flags: b[0],
    gsoType: b[1],
    hdrLen: b.readUInt16LE(2),
    gsoSize: b.readUInt16LE(4),
    csumStart: b.readUInt16LE(6),
    csumOffset: b.readUInt16LE(8),
  };
}

/** The one's-complement sum of b (RFC 1071), folded, not complemented. */
function payload(n: number, seed = 0): Buffer {
  const p = Buffer.alloc(n);
  for (let i = 0; i < n; i++) p[i] = (i * 7 + seed + (i >> 8)) & 0xff;
  return p;
}

/** Whether a received frame's IPv4 header checksum and TCP checksum are right. */
function checksumsOk(f: Buffer, v6: boolean): { ip: boolean; tcp: boolean } {
  const l3 = 14;
  const l4 = l3 + (v6 ? 40 : (f[l3] & 0xf) * 4);
  const tcpLen = f.length - l4;
  const pseudo = v6 ? sum16(f.subarray(l3 + 8, l3 + 40), tcpLen + 6) : sum16(f.subarray(l3 + 12, l3 + 20), tcpLen + 6);
  return { ip: v6 || sum16(f.subarray(l3, l4)) === 0xffff, tcp: sum16(f.subarray(l4), pseudo) === 0xffff };
}

/** Two vhost-user ports wired together; b's port withholds the offloads when bOff. */
async function pair(t: Test, bOff: boolean) {
  const f = new Fixture();
  t.teardown(() => f.close());
  const pa = f.vhost('a');
  const pb = f.vhost('b', 1, false, bOff ? { withholdOffloads: true } : {});
  f.engine.wire('a', 'b');
  const a = f.peer({ path: pa, offloads: true, ...BIG });
  const b = f.peer({ path: pb, offloads: true, ...BIG });
  await f.waitConnected('a');
  await f.waitConnected('b');
  return { f, a, b };
}

t.test('negotiation: the offloads are offered, and withheld with offloads=off', async (t) => {
  const { f, a, b } = await pair(t, true);
  for (const n of OFFLOADS) t.ok(a.features() & bit(n), `feature ${n} negotiated on a`);
  t.same([f.port('a').offloads, f.port('b').offloads], [true, false], 'the ports say whether they offer them');
  t.equal(b.features() & OFFLOADS.reduce((m, n) => m | bit(n), 0n), 0n, 'none offered to b (offloads=off)');
});

t.test('a partial checksum reaches a guest with GUEST_CSUM as it is, and is completed for one without', async (t) => {
  for (const off of [false, true]) {
    const { f, a, b } = await pair(t, off);
    const { frame, l4 } = tcpFrame({ payload: payload(1000) });
    t.ok(a.send(0, frame, hdr({ flags: NEEDS_CSUM, csumStart: l4, csumOffset: 16 })));
    const r = await receiveWithHeader(b, 1);
    t.equal(r.length, 1, 'one frame arrives');
    const h = readHdr(r[0]);
    const body = r[0].subarray(12);
    if (!off) {
      t.same([h.flags, h.csumStart, h.csumOffset], [NEEDS_CSUM, l4, 16], 'GUEST_CSUM: the header still asks for the checksum');
      t.ok(body.equals(frame), 'the frame is as sent, its checksum left partial');
      t.equal(f.counter('b', 'TX_CSUM_COMPLETED'), 0n, 'nothing completed');
    } else {
      t.equal(h.flags, 0, 'offloads=off: a plain header');
      t.ok(checksumsOk(body, false).tcp, 'the TCP checksum was completed and is right');
      t.ok(
        body.subarray(0, l4 + 16).equals(frame.subarray(0, l4 + 16)) && body.subarray(l4 + 18).equals(frame.subarray(l4 + 18)),
        'only the checksum changed',
      );
      await waitFor('completion counted', () => f.counter('b', 'TX_CSUM_COMPLETED') === 1n);
      t.pass('the checksum completed is counted on b');
    }
  }
});

async function receiveWithHeader(vu: ReturnType<Fixture['peer']>, count: number, timeoutMs = 5000): Promise<Buffer[]> {
  const got: Buffer[] = [];
  const deadline = Date.now() + timeoutMs;
  while (got.length < count && Date.now() < deadline) {
    got.push(...vu.receive(0, count - got.length, true));
    if (got.length < count) await new Promise((r) => setTimeout(r, 5));
  }
  return got;
}

t.test('a super-frame crosses to a guest with TSO as one frame with its header, counted both ways', async (t) => {
  const { f, a, b } = await pair(t, false);
  for (const v6 of [false, true]) {
    const { frame, l4 } = tcpFrame({ v6, payload: payload(60000) });
    const gsoType = v6 ? GSO_TCPV6 : GSO_TCPV4;
    const h = { flags: NEEDS_CSUM, gsoType, gsoSize: 1448, hdrLen: 200, csumStart: l4, csumOffset: 16 };
    t.ok(a.send(0, frame, hdr(h)), `send a ${frame.length}-byte ${v6 ? 'TCPv6' : 'TCPv4'} super-frame`);
    const r = await receiveWithHeader(b, 1);
    t.equal(r.length, 1, 'it arrives as one frame');
    t.same(readHdr(r[0]), h, 'with the header it was sent with');
    t.ok(r[0].subarray(12).equals(frame), 'and every byte of it');
  }
  await waitFor('super-frames counted', () => f.counter('a', 'RX_SUPER_FRAMES') === 2n && f.counter('b', 'TX_SUPER_FRAMES') === 2n);
  t.equal(f.counter('b', 'TX_SEGMENTED'), 0n, 'nothing was segmented');
});

/** Checks the segments of a super-frame as the RFCs want them. */
function checkSegments(t: Test, segs: Buffer[], sent: ReturnType<typeof tcpFrame>, o: Tcp, mss: number) {
  const v6 = !!o.v6;
  const n = Math.ceil(o.payload.length / mss);
  t.equal(segs.length, n, `${n} segments`);
  const { l3, l4, hlen } = sent;
  let ok = true;
  const parts: Buffer[] = [];
  segs.forEach((s, k) => {
    const c = checksumsOk(s, v6);
    const len = Math.min(mss, o.payload.length - k * mss);
    const flags = s[l4 + 13];
    const want = (o.flags ?? ACK) & ~(k < n - 1 ? FIN | PSH : 0) & ~(k > 0 ? CWR : 0);
    const checks: [boolean, string][] = [
      [c.ip, 'IPv4 header checksum'],
      [c.tcp, 'TCP checksum'],
      [s.length === hlen + len, `length ${hlen + len}`],
      [s.readUInt32BE(l4 + 4) === ((o.seq ?? 1000) + k * mss) >>> 0, 'sequence number'],
      [flags === want, `flags ${want.toString(16)} (got ${flags.toString(16)})`],
      [s.subarray(l4 + 20, hlen).equals(sent.frame.subarray(l4 + 20, hlen)), 'TCP options kept'],
      [v6 ? s.readUInt16BE(l3 + 4) === s.length - l4 : s.readUInt16BE(l3 + 2) === s.length - l3, 'IP length'],
      [v6 || s.readUInt16BE(l3 + 4) === (((o.id ?? 0x1234) + k) & 0xffff), 'IPv4 identification'],
    ];
    for (const [good, what] of checks)
      if (!good) {
        t.fail(`segment ${k}: ${what}`);
        ok = false;
      }
    parts.push(s.subarray(hlen));
  });
  if (ok) t.pass('every segment: checksums, length, sequence number, flags, options and IP fields right');
  t.ok(Buffer.concat(parts).equals(o.payload), 'the payloads joined are the super-frame payload');
}

t.test('a super-frame is segmented in software for a guest without TSO: TCPv4 with options, ECN/CWR, FIN/PSH; TCPv6', async (t) => {
  const { f, a, b } = await pair(t, true);
  const cases: { o: Tcp; mss: number; ecn: boolean }[] = [
    // Timestamps (NOP NOP TS) and an odd tail: 30000 = 20 * 1448 + 1040.
    {
      o: {
        payload: payload(30000, 1),
        options: Buffer.from([1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]),
        flags: ACK | PSH | FIN | CWR,
        seq: 0xfffff000,
      },
      mss: 1448,
      ecn: true,
    },
    { o: { v6: true, payload: payload(20000, 2), flags: ACK | PSH }, mss: 1440, ecn: false },
    { o: { payload: payload(500, 3) }, mss: 1448, ecn: false },
  ];
  let segments = 0;
  for (const c of cases) {
    const sent = tcpFrame(c.o);
    const gsoType = (c.o.v6 ? GSO_TCPV6 : GSO_TCPV4) | (c.ecn ? GSO_ECN : 0);
    t.ok(a.send(0, sent.frame, hdr({ flags: NEEDS_CSUM, gsoType, gsoSize: c.mss, hdrLen: sent.hlen, csumStart: sent.l4, csumOffset: 16 })));
    const n = Math.ceil(c.o.payload.length / c.mss);
    segments += n;
    const segs = await receiveWithHeader(b, n);
    t.ok(
      segs.every((s) => readHdr(s).flags === 0 && readHdr(s).gsoType === 0),
      'segments arrive with plain headers',
    );
    checkSegments(
      t,
      segs.map((s) => s.subarray(12)),
      sent,
      c.o,
      c.mss,
    );
  }
  await waitFor('segmentation counted', () => f.counter('b', 'TX_SEGMENTED') === 3n);
  t.equal(f.counter('b', 'TX_SEGMENTS'), BigInt(segments), `${segments} segments counted`);
  t.equal(f.counter('b', 'TX_PACKETS'), BigInt(segments), 'b was sent every segment');
});

t.test('through a bridge that pushes a VLAN tag: carried to a trunk guest with TSO, segmented for one without', async (t) => {
  const f = new Fixture();
  t.teardown(() => f.close());
  f.vhost('a');
  f.vhost('tso');
  f.vhost('plain', 1, false, { withholdOffloads: true });
  f.engine.addBridge('br0', {}, [
    { port: 'a', vlan: 10 },
    { port: 'tso', trunk: [10] },
    { port: 'plain', trunk: [10] },
  ]);
  const a = f.peer({ path: f.sock('a'), offloads: true, ...BIG });
  const tso = f.peer({ path: f.sock('tso'), offloads: true, ...BIG });
  const plain = f.peer({ path: f.sock('plain'), offloads: true, ...BIG });
  for (const p of ['a', 'tso', 'plain']) await f.waitConnected(p);
  // A broadcast destination, so the frame floods to both trunks.
  const o: Tcp = { payload: payload(10000, 4), flags: ACK | PSH };
  const sent = tcpFrame(o);
  Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).copy(sent.frame, 0);
  const h = { flags: NEEDS_CSUM, gsoType: GSO_TCPV4, gsoSize: 1000, hdrLen: sent.hlen, csumStart: sent.l4, csumOffset: 16 };
  t.ok(a.send(0, sent.frame, hdr(h)));
  const [big] = await receiveWithHeader(tso, 1);
  t.ok(big, 'the TSO trunk gets one frame');
  const bh = readHdr(big);
  t.same(
    [bh.gsoType, bh.gsoSize, bh.hdrLen, bh.csumStart],
    [GSO_TCPV4, 1000, sent.hlen + 4, sent.l4 + 4],
    'its header moved with the tag (hdr_len and csum_start + 4)',
  );
  const body = big.subarray(12);
  t.same([body.readUInt16BE(12), body.readUInt16BE(14)], [0x8100, 10], 'tagged with VLAN 10');
  t.ok(Buffer.concat([body.subarray(0, 12), body.subarray(16)]).equals(sent.frame), 'and otherwise as sent');
  const segs = await receiveWithHeader(plain, 10);
  t.equal(segs.length, 10, 'the trunk without offloads gets 10 segments');
  // Checked untagged: the tag sits between the MACs and the EtherType.
  checkSegments(
    t,
    segs.map((s) => {
      const x = s.subarray(12);
      t.equal(x.readUInt16BE(12), 0x8100);
      return Buffer.concat([x.subarray(0, 12), x.subarray(16)]);
    }),
    sent,
    o,
    1000,
  );
});

t.test('hostile offload headers are dropped, each counted by its reason, and the ring goes on', async (t) => {
  const { f, a, b } = await pair(t, true);
  const { frame, l4, hlen } = tcpFrame({ payload: payload(3000) });
  const gso = { flags: NEEDS_CSUM, gsoType: GSO_TCPV4, gsoSize: 1448, hdrLen: hlen, csumStart: l4, csumOffset: 16 };
  const cases: [Hdr, string, Buffer?][] = [
    [{ ...gso, gsoType: GSO_UDP }, 'DROP_RX_BAD_GSO_TYPE'],
    [{ ...gso, gsoType: 2 }, 'DROP_RX_BAD_GSO_TYPE'],
    // UDP segmentation is taken from the kernel only: a guest is never offered USO.
    [{ ...gso, gsoType: GSO_UDP_L4 }, 'DROP_RX_BAD_HEADER'],
    [{ ...gso, gsoType: GSO_UDP_L4 | GSO_ECN }, 'DROP_RX_ECN_WITHOUT_TSO'],
    [{ ...gso, gsoSize: 0 }, 'DROP_RX_BAD_GSO_SIZE'],
    [{ ...gso, gsoSize: 2 }, 'DROP_RX_BAD_GSO_SIZE'],
    [{ ...gso, hdrLen: frame.length + 1 }, 'DROP_RX_BAD_HDR_LEN'],
    [{ flags: NEEDS_CSUM, csumStart: frame.length - 1, csumOffset: 0 }, 'DROP_RX_BAD_CSUM_OFFSET'],
    [{ flags: NEEDS_CSUM, csumStart: 0xffff, csumOffset: 0xffff }, 'DROP_RX_BAD_CSUM_OFFSET'],
    [{ ...gso, csumOffset: 0xfff0 }, 'DROP_RX_BAD_CSUM_OFFSET'],
    [{ gsoType: GSO_ECN }, 'DROP_RX_ECN_WITHOUT_TSO'],
    [{ ...gso, flags: 0 }, 'DROP_RX_GSO_WITHOUT_CSUM'],
  ];
  for (const [h] of cases) t.ok(a.send(0, frame, hdr(h)));
  // A super-frame whose IP protocol is UDP: valid as a header, but segmentation cannot parse it as TCP.
  const udp = tcpFrame({ payload: payload(3000), proto: 17 });
  t.ok(a.send(0, udp.frame, hdr(gso)));
  // Then a good one: it arrives, so the ring still works.
  t.ok(a.send(0, frame, hdr({ flags: NEEDS_CSUM, csumStart: l4, csumOffset: 16 })));
  const got = await receiveWithHeader(b, 1);
  t.equal(got.length, 1, 'the good frame after them arrives');
  const want = new Map<string, bigint>();
  for (const [, id] of cases) want.set(id, (want.get(id) ?? 0n) + 1n);
  await waitFor('drops counted', () => f.counter('b', 'DROP_TX_BAD_GSO') === 1n);
  for (const [id, n] of want) t.equal(f.counter('a', id), n, `${id}: ${n}`);
  t.equal(f.counter('b', 'DROP_TX_BAD_GSO'), 1n, 'the UDP super-frame dropped on the way to b (bad_gso_headers)');
  t.equal(f.counter('a', 'RINGS_BROKEN'), 0n, 'no ring broken');
  t.equal(b.receive(0, 16).length, 0, 'nothing else reached b');
});

t.test('a guest that did not negotiate the offloads cannot use them', async (t) => {
  const f = new Fixture();
  t.teardown(() => f.close());
  f.vhost('a', 1, false, { withholdOffloads: true });
  f.vhost('b');
  f.engine.wire('a', 'b');
  const a = f.peer({ path: f.sock('a'), offloads: true, ...BIG });
  const b = f.peer({ path: f.sock('b'), offloads: true, ...BIG });
  await f.waitConnected('a');
  await f.waitConnected('b');
  const { frame, l4, hlen } = tcpFrame({ payload: payload(3000) });
  t.ok(a.send(0, frame, hdr({ flags: NEEDS_CSUM, csumStart: l4, csumOffset: 16 })));
  t.ok(a.send(0, frame, hdr({ flags: NEEDS_CSUM, gsoType: GSO_TCPV4, gsoSize: 1448, hdrLen: hlen, csumStart: l4, csumOffset: 16 })));
  t.ok(a.send(0, frame.subarray(0, 1514)));
  const got = await receiveWithHeader(b, 1);
  t.equal(got.length, 1, 'only the plain frame arrives');
  await waitFor('bad headers counted', () => f.counter('a', 'DROP_RX_BAD_HEADER') === 2n);
  t.pass('both offload headers dropped as bad_header');
});

t.test('segmenting is bounded per burst: super-frames past 2048 segments are dropped and counted', async (t) => {
  const { f, a } = await pair(t, true);
  // Three 60000-byte super-frames at a gso_size of 60 (1000 segments each), made available together and
  // announced with one kick, so that one burst takes them: the third would pass the budget.
  const TX = 1;
  const sent = tcpFrame({ payload: payload(60000) });
  const h = hdr({ flags: NEEDS_CSUM, gsoType: GSO_TCPV4, gsoSize: 60, hdrLen: sent.hlen, csumStart: sent.l4, csumOffset: 16 });
  const chain = Buffer.concat([h, sent.frame]);
  // The PMD idle long enough to sleep on the kick eventfd (kernel mode).
  await new Promise((r) => setTimeout(r, 300));
  for (let i = 0; i < 3; i++) {
    const addr = a.alloc(chain.length);
    t.ok(addr, `chain ${i} has memory`);
    a.memWrite(addr, chain);
    a.rawDesc(TX, i, { addr, len: chain.length, flags: 0, next: 0 });
    a.rawAvailPush(TX, i);
  }
  a.kick(TX);
  await waitFor('all three taken', () => f.counter('a', 'RX_SUPER_FRAMES') === 3n);
  await waitFor('counted', () => f.counter('b', 'DROP_TX_SEGMENT_BUDGET') + f.counter('b', 'TX_SEGMENTED') === 3n);
  t.equal(f.counter('b', 'TX_SEGMENTED'), 2n, 'two segmented');
  t.equal(f.counter('b', 'TX_SEGMENTS'), 2000n, 'into 2000 segments');
  t.equal(f.counter('b', 'DROP_TX_SEGMENT_BUDGET'), 1n, 'the third dropped at the budget');
});
