// A TCP transfer between two kernel TCP stacks through vhostwire: ns A -veth- uplink a =wire= uplink b
// -veth- ns B, every veth with the kernel's offload defaults (TSO, GSO, GRO and checksum offload on, as
// the README's uplink example leaves them). Several MB each way, compared by SHA-256. In kernel mode
// the AF_PACKET uplinks carry the stacks' super-frames as they are (PACKET_VNET_HDR), counted both ways;
// with offloads=off on the uplinks, or in bypass mode (AF_XDP), what goes to the kernel is segmented and
// completed in software; the mode is switched while the engine runs, which reopens the sockets. Bypass
// mode needs the namespaces' transmit checksum offload off: XDP sees their frames before the checksums
// are filled in and has no header to say so.
import t from 'tap';
import { Fixture } from '../support/fixture';
import { TcpPair, sha256, tcpTransfer, transferBytes } from '../support/tcp-pair';

const skip = process.getuid?.() === 0 ? false : 'needs root: network namespaces, veth pairs, AF_PACKET sockets';

const MB = 1 << 20;

t.test('TCP through two veth uplinks with TSO and GRO on', { skip }, async (t) => {
  const pair = new TcpPair();
  t.teardown(() => pair.close());
  const all = ['tcp-segmentation-offload', 'generic-segmentation-offload', 'generic-receive-offload', 'tx-checksumming'];
  t.strictSame(pair.offloadsOn(pair.a), all, "the namespaces' veths have TSO, GSO, GRO and checksum offload on");
  t.strictSame(pair.offloadsOn(pair.a, true), all, "and so have the uplinks' interfaces");
  const up = transferBytes(8 * MB, 1),
    down = transferBytes(6 * MB, 2);
  const want = { atB: sha256(up), atA: sha256(down) };

  const uplinks = (f: Fixture, extra: Record<string, boolean | number>): void => {
    f.engine.addPort('uplink', 'a', { ifname: pair.a.host, ...extra });
    f.engine.addPort('uplink', 'b', { ifname: pair.b.host, ...extra });
    f.engine.wire('a', 'b');
  };
  const count = (f: Fixture, port: string, id: string): bigint => f.counter(port, id);

  await t.test('kernel mode: super-frames both ways, then bypass mode and back', async (t) => {
    const f = new Fixture('kernel');
    t.teardown(() => f.close());
    uplinks(f, {});
    t.strictSame(await tcpTransfer(pair, up, down, 5301), want, 'both directions arrive intact');
    const rxA = count(f, 'a', 'RX_SUPER_FRAMES'),
      txB = count(f, 'b', 'TX_SUPER_FRAMES'),
      rxB = count(f, 'b', 'RX_SUPER_FRAMES'),
      txA = count(f, 'a', 'TX_SUPER_FRAMES');
    t.ok(rxA > 0n && txB > 0n, `A to B: ${rxA} super-frames from the kernel on a, ${txB} to the kernel on b`);
    t.ok(rxB > 0n && txA > 0n, `B to A: ${rxB} super-frames from the kernel on b, ${txA} to the kernel on a`);
    t.equal(count(f, 'b', 'TX_SEGMENTED') + count(f, 'a', 'TX_SEGMENTED'), 0n, 'nothing segmented in software');
    const bytes = count(f, 'a', 'RX_BYTES'),
      frames = count(f, 'a', 'RX_PACKETS');
    t.ok(bytes / frames > 4000n, `frames from A average ${bytes / frames} bytes (more than any MTU-sized frame)`);
    t.equal(count(f, 'a', 'DROP_RX_TRUNCATED') + count(f, 'b', 'DROP_RX_TRUNCATED'), 0n, 'no frame arrived cut short');

    f.engine.setMode('bypass');
    t.equal(f.port('a').driver, 'af_xdp', 'bypass mode: AF_XDP');
    // AF_XDP has no virtio_net_hdr: a local sender must fill its checksums in (README, bypass mode).
    pair.txChecksums(false);
    const before = count(f, 'b', 'TX_SUPER_FRAMES');
    t.strictSame(await tcpTransfer(pair, up, down, 5302), want, 'bypass mode: both directions arrive intact');
    t.equal(count(f, 'b', 'TX_SUPER_FRAMES'), before, 'bypass mode: no super-frame to AF_XDP');
    pair.txChecksums(true);

    f.engine.setMode('kernel');
    t.equal(f.port('a').driver, 'af_packet', 'back to kernel mode: AF_PACKET');
    t.strictSame(await tcpTransfer(pair, up, down, 5303), want, 'kernel mode again: both directions arrive intact');
    t.ok(count(f, 'b', 'TX_SUPER_FRAMES') > before, 'super-frames again after the sockets were reopened');
  });

  await t.test('tpacket=v2: each frame handed over as it is written, super-frames both ways', async (t) => {
    const f = new Fixture('kernel');
    t.teardown(() => f.close());
    uplinks(f, { tpacket: 2 });
    t.equal(f.port('a').tpacket, 'v2', 'the uplink says it reads a TPACKET_V2 ring');
    t.strictSame(await tcpTransfer(pair, up, down, 5305), want, 'both directions arrive intact');
    t.ok(count(f, 'a', 'RX_SUPER_FRAMES') > 0n && count(f, 'b', 'TX_SUPER_FRAMES') > 0n, 'super-frames from and to the kernel');
    t.equal(count(f, 'a', 'DROP_RX_TRUNCATED') + count(f, 'b', 'DROP_RX_TRUNCATED'), 0n, 'no frame arrived cut short');
    t.equal(count(f, 'a', 'INVALID_KERNEL_ENTRY') + count(f, 'b', 'INVALID_KERNEL_ENTRY'), 0n, 'no slot refused');
  });

  await t.test('offloads=off: the kernel is sent plain frames, segmented in software', async (t) => {
    const f = new Fixture('kernel');
    t.teardown(() => f.close());
    uplinks(f, { withholdOffloads: true });
    t.strictSame(await tcpTransfer(pair, up, down, 5304), want, 'both directions arrive intact');
    t.equal(count(f, 'a', 'TX_SUPER_FRAMES') + count(f, 'b', 'TX_SUPER_FRAMES'), 0n, 'no super-frame to the kernel');
    t.ok(count(f, 'b', 'TX_SEGMENTED') > 0n, `${count(f, 'b', 'TX_SEGMENTED')} super-frames from A segmented toward B`);
    t.ok(count(f, 'a', 'RX_SUPER_FRAMES') > 0n, 'the kernel still said which frames were super-frames');
  });
});
