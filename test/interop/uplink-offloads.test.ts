// Offloads toward a host uplink. In kernel mode the AF_PACKET socket hands the kernel a guest's partial
// checksum and TCP super-frame as they are, in a virtio_net_hdr (PACKET_VNET_HDR): the veth carries them
// whole to its peer, where a packet socket sees one frame each (test/interop/uplink-tcp.test.ts has a
// kernel TCP stack take them). With offloads=off, and in bypass mode (AF_XDP takes none), they are
// completed and segmented in software before the kernel sees them: every captured frame's IPv4 and TCP
// checksums are checked here, and the segments' payloads joined back. A veth pair, the uplink on the end
// here, the other end in a namespace of its own where the packet socket captures what arrives.
import t from 'tap';
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

t.test('offloads toward a veth uplink: as they are in kernel mode, in software otherwise', { skip }, async (t) => {
  const ns = `vwo${process.pid}`,
    host = `vwoh${process.pid}`,
    peer = `vwop${process.pid}`;
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

      // A packet socket in the namespace: TCP frames to port 5201, as hex lines, until it has n.
      const n = whole ? 2 : 1 + Math.ceil(20000 / 1448);
      const py = [
        'import socket, sys',
        's = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))',
        's.bind((sys.argv[1], 0))',
        's.settimeout(10)',
        'print("ready", flush=True)',
        'got = 0',
        'while got < int(sys.argv[2]):',
        '    f = s.recv(70000)',
        '    if len(f) > 37 and f[23] == 6 and f[36:38] == bytes([0x14, 0x51]):',
        '        print(f.hex(), flush=True)',
        '        got += 1',
      ].join('\n');
      const cap = spawn('ip', ['netns', 'exec', ns, 'python3', '-c', py, peer, String(n)], { stdio: ['ignore', 'pipe', 'pipe'] });
      t.teardown(() => {
        if (cap.exitCode === null) cap.kill();
      });
      let out = '';
      cap.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
      const done = new Promise<void>((r) => cap.once('exit', () => r()));
      await waitFor('the capture is ready', () => out.startsWith('ready\n'), 10000);

      const small = Buffer.alloc(1000, 7);
      t.ok(fe.send(0, tcpFrame(peerMac, feMac, small, 1), hdr(1, 0, 0)), 'a partial checksum sent');
      const big = Buffer.alloc(20000);
      for (let i = 0; i < big.length; i++) big[i] = (i * 13 + (i >> 9)) & 0xff;
      t.ok(fe.send(0, tcpFrame(peerMac, feMac, big, 5000), hdr(1, 1, 1448)), 'a 20000-byte super-frame sent');
      await done;
      const frames = out
        .split('\n')
        .slice(1)
        .filter((l) => l)
        .map((l) => Buffer.from(l, 'hex'));
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
