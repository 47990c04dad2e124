// Offloads toward a host uplink. In kernel mode the AF_PACKET socket hands the kernel a guest's partial
// checksum and TCP super-frame as they are, in a virtio_net_hdr (PACKET_VNET_HDR): the veth carries them
// whole to its peer, where a packet socket sees one frame each (test/interop/uplink-tcp.test.ts has a
// kernel TCP stack take them). With offloads=off, and in bypass mode (AF_XDP takes none), they are
// completed and segmented in software before the kernel sees them: every captured frame's IPv4 and TCP
// checksums are checked here, and the segments' payloads joined back. A veth pair, the uplink on the end
// here, the other end in a namespace of its own where the packet socket captures what arrives.
import t, { type Test } from 'tap';
import { execFileSync, spawn } from 'node:child_process';
import { Fixture, waitFor } from '../support/fixture';
import { sum16, tcpFrame as tcp } from '../support/tcp-frame';

const skip = process.getuid?.() === 0 ? false : 'needs root: network namespaces, veth pairs, AF_PACKET sockets';

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8' });
}

/** Ethernet/IPv4/TCP 10.232.0.2 -> 10.232.0.1 from src to dst, ACK PSH, a partial checksum. */
function tcpFrame(dstMac: Buffer, srcMac: Buffer, payload: Buffer, seq: number): Buffer {
  const [srcIp, dstIp] = [Buffer.from([10, 232, 0, 2]), Buffer.from([10, 232, 0, 1])];
  return tcp({ payload, seq, id: 0, ack: 0, flags: 0x18, dstMac, srcMac, srcIp, dstIp }).frame;
}

function hdr(flags: number, gsoType: number, gsoSize: number): Buffer {
  const b = Buffer.alloc(12);
  b[0] = flags;
  b[1] = gsoType;
  b.writeUInt16LE(54, 2);
  b.writeUInt16LE(gsoSize, 4);
  b.writeUInt16LE(34, 6);
  b.writeUInt16LE(16, 8);
  return b;
}

/** A veth pair, `host` here for the uplink, `peer` in namespace `ns`; removed when t ends. No IPv6. */
function vethNamespace(t: Test, tag: string): { ns: string; host: string; peer: string; peerMac: Buffer } {
  const ns = `${tag}${process.pid}`,
    host = `${tag}h${process.pid}`,
    peer = `${tag}p${process.pid}`;
  ip('netns', 'add', ns);
  t.teardown(() => {
    try {
      ip('link', 'del', host);
    } catch {
      // gone with the namespace
    }
    ip('netns', 'del', ns);
  });
  ip('link', 'add', host, 'type', 'veth', 'peer', 'name', peer, 'netns', ns);
  execFileSync('sysctl', ['-qw', `net.ipv6.conf.${host}.disable_ipv6=1`]);
  ip('netns', 'exec', ns, 'sysctl', '-qw', `net.ipv6.conf.${peer}.disable_ipv6=1`);
  ip('-n', ns, 'link', 'set', peer, 'up');
  ip('link', 'set', host, 'up');
  const peerMac = Buffer.from(
    (JSON.parse(ip('-n', ns, '-j', 'link', 'show', peer)) as Array<{ address: string }>)[0].address.replace(/:/g, ''),
    'hex',
  );
  return { ns, host, peer, peerMac };
}

/**
 * A packet socket on `peer` in `ns`: the first n TCP frames to port 5201 (IPv4 or IPv6) it receives.
 * Resolves `ready` once it listens, and `frames` when it has n (or fails after 10 s without one).
 */
function capture(t: Test, ns: string, peer: string, n: number): { ready: Promise<void>; frames: Promise<Buffer[]> } {
  const py = [
    'import socket, sys',
    's = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))',
    's.bind((sys.argv[1], 0))',
    's.settimeout(10)',
    'print("ready", flush=True)',
    'got = 0',
    'while got < int(sys.argv[2]):',
    '    f = s.recv(70000)',
    '    l4 = {b"\\x08\\x00": 34, b"\\x86\\xdd": 54}.get(f[12:14])',
    '    if l4 and len(f) > l4 + 4 and f[l4 - 11 if l4 == 34 else 20] == 6 and f[l4 + 2:l4 + 4] == bytes([0x14, 0x51]):',
    '        print(f.hex(), flush=True)',
    '        got += 1',
  ].join('\n');
  const cap = spawn('ip', ['netns', 'exec', ns, 'python3', '-c', py, peer, String(n)], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => {
    if (cap.exitCode === null) cap.kill();
  });
  let out = '';
  cap.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  const exited = new Promise<void>((r) => cap.once('exit', () => r()));
  return {
    ready: waitFor('the capture is ready', () => out.startsWith('ready\n'), 10000),
    frames: exited.then(() =>
      out
        .split('\n')
        .slice(1)
        .filter((l) => l)
        .map((l) => Buffer.from(l, 'hex')),
    ),
  };
}

t.test('offloads toward a veth uplink: as they are in kernel mode, in software otherwise', { skip }, async (t) => {
  const { ns, host, peer, peerMac } = vethNamespace(t, 'vwo');
  const feMac = Buffer.from('027677000002', 'hex');

  const cases = [
    { mode: 'kernel', withholdOffloads: false },
    { mode: 'kernel', withholdOffloads: true },
    { mode: 'bypass', withholdOffloads: false },
  ] as const;
  for (const { mode, withholdOffloads } of cases) {
    const whole = mode === 'kernel' && !withholdOffloads;
    await t.test(`${mode} mode${withholdOffloads ? ', offloads=off' : ''}`, async (t) => {
      const f = new Fixture(mode);
      t.teardown(() => f.close());
      const path = f.vhost('vm');
      f.engine.addPort('uplink', 'up', { ifname: host, withholdOffloads });
      f.engine.wire('vm', 'up');
      const fe = f.peer({ path, offloads: true, rxBufSize: 65536, queueSize: 64, memSize: 64 << 20 });
      await f.waitConnected('vm');

      const n = whole ? 2 : 1 + Math.ceil(20000 / 1448);
      const cap = capture(t, ns, peer, n);
      await cap.ready;

      const small = Buffer.alloc(1000, 7);
      t.ok(fe.send(0, tcpFrame(peerMac, feMac, small, 1), hdr(1, 0, 0)), 'a partial checksum sent');
      const big = Buffer.alloc(20000);
      for (let i = 0; i < big.length; i++) big[i] = (i * 13 + (i >> 9)) & 0xff;
      t.ok(fe.send(0, tcpFrame(peerMac, feMac, big, 5000), hdr(1, 1, 1448)), 'a 20000-byte super-frame sent');
      const frames = await cap.frames;
      t.equal(frames.length, n, `${n} frames reached the namespace`);
      if (whole) {
        t.ok(frames[0].subarray(54).equals(small), 'the partial checksum frame as it was sent');
        t.ok(frames[1].length === 20054 && frames[1].subarray(54).equals(big), 'the super-frame whole');
        await waitFor('counted', () => f.counter('up', 'TX_SUPER_FRAMES') === 1n);
        t.equal(f.counter('up', 'TX_SEGMENTED') + f.counter('up', 'TX_CSUM_COMPLETED'), 0n, 'nothing done in software');
        return;
      }
      const ok = frames.every(
        (x) => sum16(x.subarray(14, 34)) === 0xffff && sum16(x.subarray(34), sum16(x.subarray(26, 34), x.length - 34 + 6)) === 0xffff,
      );
      t.ok(ok, 'every one with a valid IPv4 header checksum and TCP checksum');
      t.ok(frames[0].subarray(54).equals(small), 'the first is the small frame, its payload intact');
      const segs = frames.slice(1);
      t.ok(
        segs.every((s, k) => s.readUInt32BE(38) === 5000 + k * 1448 && s.length <= 1514),
        'segments in order, none longer than the MTU allows',
      );
      t.ok(Buffer.concat(segs.map((s) => s.subarray(54))).equals(big), 'the segments joined are the super-frame payload');
      await waitFor('counted', () => f.counter('up', 'TX_SEGMENTED') === 1n);
      t.equal(f.counter('up', 'TX_SEGMENTS'), BigInt(n - 1), 'segments counted on the uplink');
      t.equal(f.counter('up', 'TX_CSUM_COMPLETED'), 1n, 'the checksum completed counted on the uplink');
    });
  }
});

// The software fallback against Linux's own: one super-frame, segmented once by us (a guest's TSO frame
// to an uplink with offloads=off) and once by the kernel (the same frame and header handed to a packet
// socket with PACKET_VNET_HDR on an interface with TSO and checksum offload off, so the kernel's GSO
// segments it and fills the checksums before the veth carries it), both captured on the far end: every
// segment must be the same, byte for byte (IPv4 ids, lengths, sequence numbers, flags, checksums).
const KERNEL_SEND = [
  'import socket, sys',
  'proto = int(sys.argv[2])',
  's = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(proto))',
  's.setsockopt(263, 15, 1)  # SOL_PACKET, PACKET_VNET_HDR: the 10-byte virtio_net_hdr first',
  's.bind((sys.argv[1], proto))',
  's.send(bytes.fromhex(sys.stdin.read().strip()))',
].join('\n');

t.test("software segmentation: each segment the same as the kernel's GSO makes of the same super-frame", { skip }, async (t) => {
  const { ns, host, peer, peerMac } = vethNamespace(t, 'vwk');
  // The kernel segments (and completes checksums) in software only toward a device without TSO and
  // checksum offload; `tx off` takes TSO with it.
  execFileSync('ethtool', ['-K', host, 'tx', 'off']);
  const f = new Fixture('kernel');
  t.teardown(() => f.close());
  const path = f.vhost('vm');
  f.engine.addPort('uplink', 'up', { ifname: host, withholdOffloads: true });
  f.engine.wire('vm', 'up');
  const fe = f.peer({ path, offloads: true, rxBufSize: 65536, queueSize: 64, memSize: 64 << 20 });
  await f.waitConnected('vm');

  const [ACK, PSH, FIN, CWR] = [0x10, 0x08, 0x01, 0x80];
  const body = (n: number, seed: number): Buffer => Buffer.from(Array.from({ length: n }, (_, i) => (i * 31 + seed + (i >> 8)) & 0xff));
  const cases = [
    { what: 'TCPv4, ACK PSH', o: { payload: body(20000, 1), flags: ACK | PSH, id: 0xfffe }, mss: 1448, ecn: false },
    {
      what: 'TCPv4 with timestamps, FIN and CWR, ECN, an odd tail, the sequence number wrapping',
      o: {
        payload: body(30001, 2),
        flags: ACK | PSH | FIN | CWR,
        seq: 0xffffa000,
        options: Buffer.from([1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]),
      },
      mss: 1436,
      ecn: true,
    },
    { what: 'TCPv6', o: { v6: true, payload: body(15000, 3), flags: ACK | PSH }, mss: 1440, ecn: false },
  ];
  let ours = 0;
  for (const c of cases) {
    await t.test(c.what, async (t) => {
      const sent = tcp({ ...c.o, dstMac: peerMac, srcMac: Buffer.from('027677000003', 'hex') });
      const n = Math.ceil(c.o.payload.length / c.mss);
      const h = Buffer.alloc(12);
      h[0] = 1; // NEEDS_CSUM
      h[1] = (c.o.v6 ? 4 : 1) | (c.ecn ? 0x80 : 0); // GSO_TCPV6 or GSO_TCPV4, GSO_ECN
      h.writeUInt16LE(sent.hlen, 2);
      h.writeUInt16LE(c.mss, 4);
      h.writeUInt16LE(sent.l4, 6);
      h.writeUInt16LE(16, 8);

      const mine = capture(t, ns, peer, n);
      await mine.ready;
      t.ok(fe.send(0, sent.frame, h), 'the super-frame sent by the guest');
      const a = await mine.frames;
      ours += n;
      await waitFor('segmented by us', () => f.counter('up', 'TX_SEGMENTS') === BigInt(ours));

      const theirs = capture(t, ns, peer, n);
      await theirs.ready;
      execFileSync('python3', ['-c', KERNEL_SEND, host, String(c.o.v6 ? 0x86dd : 0x0800)], {
        input: Buffer.concat([h.subarray(0, 10), sent.frame]).toString('hex'),
      });
      const b = await theirs.frames;

      t.equal(a.length, n, `${n} segments of ours reached the far end`);
      t.equal(b.length, n, `${n} segments of the kernel's reached the far end`);
      for (let k = 0; k < Math.min(a.length, b.length); k++) {
        if (a[k].equals(b[k])) continue;
        const at = a[k].findIndex((x, i) => x !== b[k][i]);
        t.fail(`segment ${k}: ours (${a[k].length} bytes) and the kernel's (${b[k].length}) differ first at byte ${at}`, {
          ours: a[k].subarray(0, sent.hlen).toString('hex'),
          kernel: b[k].subarray(0, sent.hlen).toString('hex'),
        });
      }
      t.ok(a.length === n && a.every((x, k) => x.equals(b[k])), 'every segment the same as the kernel made');
    });
  }
});
