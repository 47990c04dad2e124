// UDP super-frames from the kernel. A sender with UDP_SEGMENT (as QUIC stacks use it) hands its veth one
// skb per 8 datagrams; the veth carries it whole, and our AF_PACKET uplink on the far end reads it with a
// virtio_net_hdr of gso_type GSO_UDP_L4. Toward a guest (which is never offered USO) each is cut into its
// datagrams in software: every one checked here byte by byte, its IPv4 or IPv6 header and UDP checksum
// included. Toward another kernel-mode uplink it goes whole, and a kernel UDP socket in the other
// namespace receives every datagram; with offloads=off it is segmented on the way, and the same holds.
import t from 'tap';
import { execFileSync, spawn } from 'node:child_process';
import { Fixture, receiveN, waitFor } from '../support/fixture';
import { TcpPair } from '../support/tcp-pair';
import { sum16 } from '../support/tcp-frame';

const skip = process.getuid?.() === 0 ? false : 'needs root: network namespaces, veth pairs, AF_PACKET sockets';

const GSO = 1400; // payload bytes per datagram
const PER = 8; // datagrams per super-frame
const N = 50; // super-frames per destination
const PORT = 5411;

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8' });
}

function macOf(ns: string, dev: string): string {
  return (JSON.parse(ip('-n', ns, '-j', 'link', 'show', dev)) as Array<{ address: string }>)[0].address;
}

// Datagram i: its index, big-endian, then GSO - 4 bytes of (i & 0xff). N super-frames of PER, 2 ms apart.
const SENDER = [
  'import socket, sys, time',
  'dst, port, gso, n, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])',
  's = socket.socket(socket.AF_INET6 if ":" in dst else socket.AF_INET, socket.SOCK_DGRAM)',
  's.setsockopt(17, 103, gso)  # SOL_UDP, UDP_SEGMENT',
  'for k in range(n):',
  '    s.sendto(b"".join((k * per + j).to_bytes(4, "big") + bytes([(k * per + j) & 0xff]) * (gso - 4) for j in range(per)), (dst, port))',
  '    time.sleep(0.002)',
].join('\n');

function datagramOk(d: Buffer): number | undefined {
  if (d.length !== GSO) return undefined;
  const i = d.readUInt32BE(0);
  for (let k = 4; k < d.length; k++) if (d[k] !== (i & 0xff)) return undefined;
  return i;
}

function send(ns: string, dst: string): void {
  execFileSync('ip', ['netns', 'exec', ns, 'python3', '-c', SENDER, dst, String(PORT), String(GSO), String(N), String(PER)]);
}

t.test('UDP super-frames from the kernel, segmented for a guest', { skip }, async (t) => {
  const ns = `vwu${process.pid}`,
    host = `vwuh${process.pid}`,
    peer = `vwup${process.pid}`;
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
  ip('-n', ns, 'link', 'set', peer, 'up');
  ip('link', 'set', host, 'up');
  ip('-n', ns, 'addr', 'add', '10.235.0.1/24', 'dev', peer);
  ip('-n', ns, 'addr', 'add', 'fd00:235::1/64', 'dev', peer, 'nodad');
  // The guest answers no neighbour solicitation: its address is known.
  const feMac = '02:76:77:00:00:05';
  ip('-n', ns, 'neigh', 'add', '10.235.0.2', 'lladdr', feMac, 'dev', peer);
  ip('-n', ns, 'neigh', 'add', 'fd00:235::2', 'lladdr', feMac, 'dev', peer);

  const f = new Fixture('kernel');
  t.teardown(() => f.close());
  const path = f.vhost('vm');
  f.engine.addPort('uplink', 'up', { ifname: host });
  f.engine.wire('up', 'vm');
  const fe = f.peer({ path, queueSize: 256 });
  await f.waitConnected('vm');

  for (const v6 of [false, true]) {
    const before = { rx: f.counter('up', 'RX_SUPER_FRAMES'), seg: f.counter('vm', 'TX_SEGMENTED') };
    const got: Buffer[] = [];
    // The guest takes its frames while the sender runs: its ring holds 256, the sender sends 400.
    const sender = new Promise<void>((resolve, reject) => {
      const p = spawn('ip', [
        'netns',
        'exec',
        ns,
        'python3',
        '-c',
        SENDER,
        v6 ? 'fd00:235::2' : '10.235.0.2',
        String(PORT),
        String(GSO),
        String(N),
        String(PER),
      ]);
      p.once('error', reject);
      p.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`sender exited ${code}`))));
    });
    const ours = (x: Buffer) =>
      v6
        ? x.readUInt16BE(12) === 0x86dd && x[20] === 17 && x.readUInt16BE(56) === PORT
        : x.readUInt16BE(12) === 0x0800 && x[23] === 17 && x.readUInt16BE(36) === PORT;
    const deadline = Date.now() + 15000;
    while (got.filter(ours).length < N * PER && Date.now() < deadline) got.push(...(await receiveN(fe, N * PER, 0, 100)));
    await sender;
    const frames = got.filter(ours);
    const name = v6 ? 'IPv6' : 'IPv4';
    t.equal(frames.length, N * PER, `${name}: ${N * PER} datagrams reached the guest`);

    const l4 = v6 ? 54 : 34;
    const bad = frames.filter((x) => {
      const l4len = x.length - l4;
      if (x.readUInt16BE(l4 + 4) !== l4len) return true;
      if (v6 ? x.readUInt16BE(18) !== l4len : sum16(x.subarray(14, 34)) !== 0xffff || x.readUInt16BE(16) !== x.length - 14) return true;
      const pseudo = v6 ? sum16(x.subarray(22, 54), l4len + 17) : sum16(x.subarray(26, 34), l4len + 17);
      return x.readUInt16BE(l4 + 6) === 0 || sum16(x.subarray(l4), pseudo) !== 0xffff;
    });
    t.equal(
      bad.length,
      0,
      `${name}: every datagram with its own lengths, ${v6 ? '' : 'a valid IPv4 header checksum, '}and a valid UDP checksum`,
    );
    const idx = frames.map((x) => datagramOk(x.subarray(l4 + 8)));
    t.strictSame(idx, [...Array(N * PER).keys()], `${name}: each datagram's payload intact, in order`);
    if (!v6) {
      // As Linux's GSO numbers them: the super-frame's identification, plus the segment's index.
      const ids = frames.map((x) => x.readUInt16BE(18));
      const off = ids.filter((id, i) => id !== ((ids[i - (i % PER)] + (i % PER)) & 0xffff));
      t.equal(off.length, 0, "IPv4: each segment's identification is the super-frame's plus its index");
    }
    await waitFor('counted', () => f.counter('vm', 'TX_SEGMENTED') - before.seg === f.counter('up', 'RX_SUPER_FRAMES') - before.rx);
    const supers = f.counter('up', 'RX_SUPER_FRAMES') - before.rx;
    t.ok(supers > 0n, `${name}: ${supers} super-frames read from the kernel, each segmented for the guest`);
  }
  t.equal(f.counter('up', 'DROP_RX_BAD_GSO_TYPE'), 0n, 'none refused for its gso_type');
  t.equal(f.counter('vm', 'DROP_TX_BAD_GSO'), 0n, 'none the segmentation could not parse');
});

t.test('UDP super-frames between two kernel-mode uplinks: whole, or segmented with offloads=off', { skip }, async (t) => {
  const pair = new TcpPair('u');
  t.teardown(() => pair.close());
  ip('-n', pair.a.ns, 'neigh', 'add', pair.b.addr, 'lladdr', macOf(pair.b.ns, pair.b.peer), 'dev', pair.a.peer);
  // A receiver in B: the datagrams it got intact and any it got otherwise, once the sender is done.
  const RECEIVER = [
    'import socket, sys',
    's = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)',
    's.setsockopt(socket.SOL_SOCKET, 33, 1 << 24)  # SO_RCVBUFFORCE: the socket is not what is tested',
    's.bind((sys.argv[1], int(sys.argv[2]))); s.settimeout(3)',
    'print("ready", flush=True)',
    'want, gso, got, bad = int(sys.argv[3]), int(sys.argv[4]), set(), 0',
    'try:',
    '    while len(got) + bad < want:',
    '        d = s.recv(65536); i = int.from_bytes(d[:4], "big")',
    '        if len(d) == gso and d[4:] == bytes([i & 0xff]) * (gso - 4): got.add(i)',
    '        else: bad += 1',
    'except TimeoutError: pass',
    'print(len(got), bad, flush=True)',
  ].join('\n');

  for (const withholdOffloads of [false, true]) {
    await t.test(withholdOffloads ? 'offloads=off on the way out' : 'offloads on', async (t) => {
      const f = new Fixture('kernel');
      t.teardown(() => f.close());
      f.engine.addPort('uplink', 'a', { ifname: pair.a.host });
      f.engine.addPort('uplink', 'b', { ifname: pair.b.host, withholdOffloads });
      f.engine.wire('a', 'b');
      const p = spawn('ip', [
        'netns',
        'exec',
        pair.b.ns,
        'python3',
        '-c',
        RECEIVER,
        pair.b.addr,
        String(PORT),
        String(N * PER),
        String(GSO),
      ]);
      let out = '';
      p.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
      const done = new Promise<number | null>((r) => p.once('exit', r));
      t.teardown(() => {
        if (p.exitCode === null) p.kill();
      });
      await waitFor('the receiver is ready', () => out.startsWith('ready\n'), 10000);
      send(pair.a.ns, pair.b.addr);
      t.equal(await done, 0, 'the receiver exits 0');
      t.equal(out.split('\n')[1], `${N * PER} 0`, `B's UDP socket received all ${N * PER} datagrams intact`);
      const supers = f.counter('a', 'RX_SUPER_FRAMES');
      t.ok(supers > 0n, `${supers} UDP super-frames read from the kernel on a`);
      if (withholdOffloads) {
        t.equal(f.counter('b', 'TX_SUPER_FRAMES'), 0n, 'none went to the kernel whole');
        t.equal(f.counter('b', 'TX_SEGMENTED'), supers, 'each segmented on the way to b');
      } else {
        t.equal(f.counter('b', 'TX_SUPER_FRAMES'), supers, 'each went to the kernel whole');
        t.equal(f.counter('b', 'TX_SEGMENTED'), 0n, 'nothing segmented in software');
      }
    });
  }
});
