// Survival (stage.ts): a racing thread rewrites guest memory while the backend reads it (G3).
import t, { type Test } from 'tap';
import { frontend, type NativeVirtioUser } from '../../../src/harness/frontend-native';
import { frame, receiveN, HDR_LEN, VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE } from '../../support/fixture';
import { desc } from '../../support/vhost-user-wire';
import { RX, TX, pattern, sleep, times, f, g0, g1, Victim, victim, nextSeq, closeVictim, survives, eventsOf, baseline } from './stage';

baseline();

// ---------------------------------------------------------------------------------------------------
// the racer (G3)

const RACE_MS = 2000;

/**
 * Races for RACE_MS. The racer restarts the vring itself whenever the backend signals its err eventfd
 * (so a break costs microseconds, not a JS round trip); the good pair exchanges frames meanwhile.
 */
async function race(t: Test, v: Victim, vring: number, opts: Parameters<NativeVirtioUser['startRacer']>[0], what: string) {
  const h = v.h;
  h.setVringErr(vring);
  const broken0 = f.counter('v', 'RINGS_BROKEN');
  const rx0 = f.counter('v', 'RX_PACKETS');
  const tx0 = f.counter('v', 'TX_PACKETS');
  const ev0 = f.events.length;
  h.startRacer({ ...opts, restart: true });
  let exchanged = 0;
  let exchanges = 0;
  const end = Date.now() + RACE_MS;
  let s = { rounds: 0, posted: 0, restarts: 0, failedRestarts: 0 };
  try {
    while (Date.now() < end) {
      const sent = frame(90, nextSeq());
      exchanges++;
      if (g0.send(0, sent)) {
        const got = await receiveN(g1, 1, 0, 1000);
        if (got.length === 1 && got[0].equals(sent)) exchanged++;
      }
      await sleep(10);
    }
  } finally {
    s = h.stopRacer();
  }
  await sleep(50);
  const breaks = f.counter('v', 'RINGS_BROKEN') - broken0;
  const reasons = new Map<string, number>();
  for (const e of eventsOf(ev0, 'ring-broken')) reasons.set(e.reason, (reasons.get(e.reason) ?? 0) + 1);
  t.comment(
    `${what}: ${s.rounds} racer rounds, ${s.posted} chains posted, ${breaks} breaks ` +
      `(${[...reasons].map(([r, n]) => `${r} ${n}`).join(', ')}), ${s.restarts} restarts (${s.failedRestarts} failed), ` +
      `${f.counter('v', 'RX_PACKETS') - rx0} frames taken from the guest, ${f.counter('v', 'TX_PACKETS') - tx0} given to it`,
  );
  // A head is posted again only once it came back (a head named twice in flight breaks the ring on that
  // rule alone), and most chains break the ring, so each costs a restart round trip: hundreds of chains
  // in 2 s, each read while a million rewrites race it.
  t.ok(s.posted > 100 && s.rounds > 100000, `${what}: the racer ran (${s.posted} chains posted, ${s.rounds} rewrite rounds)`);
  t.equal(s.failedRestarts, 0, `${what}: every restart of the broken vring succeeded`);
  t.ok(breaks > 0 && s.restarts > 0, `${what}: the ring broke and came back`);
  t.equal(exchanged, exchanges, `${what}: the good pair exchanged all ${exchanges} frames during the race`);
  t.ok(f.port('v').connected, `${what}: the victim is still connected`);
}

t.test('a racing thread rewrites transmit descriptors, indirect entries and headers while the backend reads them', async (t) => {
  const v = await victim();
  const h = v.h;
  const body = v.guard('a read-only frame', frame(64, 5));
  const whole = v.guard('a read-only packet', Buffer.concat([Buffer.alloc(HDR_LEN), frame(64, 6)]));
  const hdr = h.alloc(64); // raced: the header of the split chain
  const tbl = h.alloc(64); // raced: a two-entry indirect table
  const d = h.ringAddrs(TX).desc;
  const D = (addr: bigint, len: number, flags = 0, next = 0) => desc({ addr, len, flags, next });
  const N = VRING_DESC_F_NEXT;
  const hdrs = [
    Buffer.alloc(HDR_LEN),
    Buffer.from([0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), // gso asked for
    Buffer.from([1, 0, 0, 0, 0, 0, 14, 0, 16, 0, 0, 0]), // csum asked for
    Buffer.from([1, 4, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
  ];
  await race(
    t,
    v,
    TX,
    {
      vring: TX,
      heads: [0, 0, 0, 1],
      targets: [
        // Valid values (or ones that only drop the packet) weigh more, so that a restarted ring parses a
        // few dozen chains before a hostile value breaks it again.
        {
          gpa: d,
          values: [
            ...times(6, [D(hdr, HDR_LEN, N, 1), D(whole, HDR_LEN + 64), D(tbl, 32, VRING_DESC_F_INDIRECT), D(whole, 70000), D(whole, 8)]),
            D(tbl, 20, VRING_DESC_F_INDIRECT),
            D(tbl, 0, VRING_DESC_F_INDIRECT),
            D(hdr, HDR_LEN, N, 300),
            D(hdr, HDR_LEN, N, 0),
            D(whole, 76, VRING_DESC_F_WRITE),
            D(frontend().guestBase - 4096n, 76),
            D(0xffffffffffffff00n, 0x200),
            D(whole, 0xffffffff),
            D(tbl, 32, VRING_DESC_F_INDIRECT | N, 1),
            D(hdr, HDR_LEN, N | VRING_DESC_F_WRITE, 1),
          ],
        },
        {
          gpa: d + 16n,
          values: [
            ...times(12, [D(body, 64)]),
            D(body, 64, N, 0),
            D(body, 64, VRING_DESC_F_WRITE),
            D(body, 64, VRING_DESC_F_INDIRECT),
            D(body, 64, N, 1),
            D(body, 0x7fffffff),
            D(frontend().guestBase + BigInt(h.memSize()) - 10n, 64),
            D(tbl, 16, VRING_DESC_F_INDIRECT),
          ],
        },
        {
          gpa: tbl,
          values: [
            ...times(6, [D(hdr, HDR_LEN, N, 1), D(whole, 76)]),
            D(hdr, HDR_LEN, N, 5),
            D(tbl, 16, VRING_DESC_F_INDIRECT),
            D(hdr, HDR_LEN, N, 0),
          ],
        },
        {
          gpa: tbl + 16n,
          values: [...times(12, [D(body, 64)]), D(body, 64, N, 0), D(body, 64, N, 1), D(body, 64, VRING_DESC_F_WRITE), D(body, 1 << 20)],
        },
        { gpa: hdr, values: hdrs },
      ],
    },
    'transmit racer',
  );
  v.check(t);
  await closeVictim(v);
  await survives(t, 'transmit racer');
});

t.test(
  'a racing thread rewrites offload headers and the protocol headers under them while the backend validates and segments',
  async (t) => {
    // With the offloads negotiated, v's super-frames go to the generator, which takes none: every one the
    // header rules let through is segmented in software, over guest memory the racer keeps rewriting.
    const v = await victim({ offloads: true });
    const h = v.h;
    const payload = 20000;
    const sf = h.alloc(54 + payload); // raced: an Ethernet/IPv4/TCP super-frame
    const body = pattern(54 + payload, 21);
    body.writeUInt16BE(0x0800, 12);
    body[14] = 0x45;
    body.writeUInt16BE(0x4000, 20); // DF, not a fragment
    body[23] = 6;
    body[46] = 0x50;
    h.memWrite(sf, body);
    const hdr = h.alloc(64); // raced: its virtio-net header
    const d = h.ringAddrs(TX).desc;
    const N = VRING_DESC_F_NEXT;
    const D = (addr: bigint, len: number, flags = 0, next = 0) => desc({ addr, len, flags, next });
    const vhdr = (flags: number, gsoType: number, hdrLen: number, gsoSize: number, csumStart: number, csumOffset: number) => {
      const b = Buffer.alloc(10);
      b[0] = flags;
      b[1] = gsoType;
      b.writeUInt16LE(hdrLen, 2);
      b.writeUInt16LE(gsoSize, 4);
      b.writeUInt16LE(csumStart, 6);
      b.writeUInt16LE(csumOffset, 8);
      return b;
    };
    const good = vhdr(1, 1, 54, 1448, 34, 16);
    await race(
      t,
      v,
      TX,
      {
        vring: TX,
        heads: [0],
        targets: [
          // Mostly a good chain; now and then one that breaks the ring, so that restarts are raced too.
          { gpa: d, values: [...times(24, [D(hdr, HDR_LEN, N, 1)]), D(hdr, HDR_LEN, N, 300)] },
          { gpa: d + 16n, values: [...times(12, [D(sf, 54 + payload)]), D(sf, 40), D(sf, 0x7fffffff)] },
          {
            gpa: hdr,
            values: [
              ...times(6, [good]),
              vhdr(1, 4, 54, 1448, 34, 16), // TCPv6 over an IPv4 frame
              vhdr(1, 0x81, 54, 1448, 34, 16), // ECN
              vhdr(1, 1, 54, 1, 34, 16), // too many segments
              vhdr(1, 1, 0xffff, 1448, 34, 16),
              vhdr(1, 1, 54, 1448, 0xffff, 0xffff),
              vhdr(1, 1, 54, 0, 34, 16),
              vhdr(0, 1, 54, 1448, 34, 16),
              vhdr(1, 0xff, 54, 1448, 34, 16),
              vhdr(1, 0, 0, 0, 34, 16), // a partial checksum only
            ],
          },
          // The IPv4 version/IHL byte, the protocol, the TCP data offset and the EtherType under them.
          { gpa: sf + 14n, values: [...times(4, [Buffer.from([0x45])]), Buffer.from([0x4f]), Buffer.from([0x40]), Buffer.from([0x65])] },
          { gpa: sf + 23n, values: [...times(4, [Buffer.from([6])]), Buffer.from([17])] },
          { gpa: sf + 46n, values: [...times(4, [Buffer.from([0x50])]), Buffer.from([0xf0]), Buffer.from([0x00]), Buffer.from([0x40])] },
          { gpa: sf + 12n, values: [...times(4, [Buffer.from([8, 0])]), Buffer.from([0x81, 0]), Buffer.from([0x86, 0xdd])] },
        ],
      },
      'offload header racer',
    );
    const segmented = f.counter('gen', 'TX_SEGMENTED');
    const refused = [
      'DROP_RX_BAD_GSO_TYPE',
      'DROP_RX_BAD_GSO_SIZE',
      'DROP_RX_BAD_HDR_LEN',
      'DROP_RX_BAD_CSUM_OFFSET',
      'DROP_RX_GSO_WITHOUT_CSUM',
    ].map((id) => f.counter('v', id));
    t.comment(
      `offload header racer: ${segmented} super-frames segmented (${f.counter('gen', 'TX_SEGMENTS')} segments), ` +
        `${f.counter('gen', 'DROP_TX_BAD_GSO')} refused by the segmenter, header refusals ${refused.join('/')}`,
    );
    t.ok(segmented > 0n, 'super-frames were segmented while raced');
    t.ok(
      refused.every((n) => n > 0n),
      'and every header rule refused some',
    );
    v.check(t);
    await closeVictim(v);
    await survives(t, 'offload header racer');
  },
);

t.test('a racing thread rewrites receive descriptors while the backend writes through them', async (t) => {
  const v = await victim();
  const h = v.h;
  // The only buffers any raced receive descriptor can name (whatever halves of two values a torn read
  // combines): bufA and bufB, 2048 bytes each. Everything else stays the backend's to leave alone.
  const bufA = h.alloc(4096);
  const bufB = h.alloc(4096);
  const after = v.guard('memory right after the raced receive buffers', pattern(16 << 10, 11));
  const d = h.ringAddrs(RX).desc;
  const W = VRING_DESC_F_WRITE;
  const N = VRING_DESC_F_NEXT;
  const combos = (addrs: bigint[], lfn: [number, number, number][]) =>
    addrs.flatMap((a) => lfn.map(([len, flags, next]) => desc({ addr: a, len, flags, next })));
  const good: [number, number, number][] = [
    [2048, W, 0],
    [2048, W | N, 1],
    [1, W, 0],
    [0, W, 0],
  ];
  const lfn: [number, number, number][] = [...good, [2048, 0, 0], [2048, W | N, 999], [2048, W | N, 0], [0xffffffff, W, 0]];
  const out = [frontend().guestBase - 8192n, 0xfffffffffffff000n];
  f.engine.unwire('v');
  f.engine.wire('v', 'genfast');
  try {
    await race(
      t,
      v,
      RX,
      {
        vring: RX,
        heads: [0, 1, 0, 1, 0],
        targets: [
          { gpa: d, values: [...times(8, combos([bufA], good)), ...combos([bufA, ...out], lfn)] },
          { gpa: d + 16n, values: [...times(8, combos([bufB], good)), ...combos([bufB, ...out], lfn)] },
        ],
      },
      'receive racer',
    );
  } finally {
    f.engine.unwire('v');
    f.engine.wire('v', 'gen');
  }
  t.ok(after > bufB, 'the guard lies after the raced buffers');
  v.check(t);
  await closeVictim(v);
  await survives(t, 'receive racer');
});
