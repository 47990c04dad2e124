// Offloads against DPDK's virtio-user (dpdk-testpmd 22.11, csum forward engine with `tso set`): our own
// front end sends a TCP super-frame into vhostwire; DPDK, which takes no super-frames (no LRO), gets it
// segmented with complete checksums (from a port with offloads=off, the same stream as plain frames); its csum engine sends each segment back as a super-frame of its own
// (TSO at 800 bytes, partial TCP checksum), which vhostwire carries to our front end as it is when that
// port took the offloads, and segments for it when the port has offloads=off. Checked by the headers, the
// checksums and the payload bytes.
import t, { type Test } from 'tap';
import { findTestpmd, freeHugepages } from '../../bench/testpmd';
import { Fixture, waitFor } from '../support/fixture';
import { startVirtioUser } from '../support/testpmd-fixture';
import { sum16, tcpFrame as tcp } from '../support/tcp-frame';

const MSS = 1448,
  DPDK_MSS = 800,
  PAYLOAD = 20000;

/** Ethernet/IPv4/TCP 10.233.0.1 -> 10.233.0.2, a partial checksum. */
function tcpFrame(payload: Buffer, seq = 1000): Buffer {
  return tcp({ payload, seq, id: 0, ack: 0, srcIp: Buffer.from([10, 233, 0, 1]), dstIp: Buffer.from([10, 233, 0, 2]) }).frame;
}

const tcpOk = (f: Buffer) => sum16(f.subarray(34), sum16(f.subarray(26, 34), f.length - 34 + 6)) === 0xffff;

async function receiveAll(vu: ReturnType<Fixture['peer']>, want: number, timeoutMs = 10000): Promise<Buffer[]> {
  const got: Buffer[] = [];
  const deadline = Date.now() + timeoutMs;
  while (got.length < want && Date.now() < deadline) {
    got.push(...vu.receive(0, 64, true));
    if (got.length < want) await new Promise((r) => setTimeout(r, 10));
  }
  return got;
}

const skip = !findTestpmd()
  ? 'dpdk-testpmd is not installed (Debian 12: apt-get install dpdk-dev)'
  : freeHugepages() < 128
    ? 'needs 128 free 2 MiB hugepages'
    : false;

async function run(t: Test, off: boolean): Promise<void> {
  const f = new Fixture('kernel');
  t.teardown(() => f.close());
  const pa = f.vhost('a', 1, false, off ? { withholdOffloads: true } : {});
  const pd = f.vhost('d');
  f.engine.wire('a', 'd');
  const a = f.peer({ path: pa, offloads: true, rxBufSize: 65536, queueSize: 64, memSize: 64 << 20 });
  const tp = await startVirtioUser(t, { path: pd, forwardMode: 'csum', extraApp: ['--port-topology=loop'] });
  // The csum engine: IPv4 checksums in software, TCP's left to the device, and TSO at 800 bytes.
  for (const c of ['port stop 0', 'csum set ip sw 0', 'csum set tcp hw 0', 'tso set 800 0', 'port start 0']) {
    const out = await tp.command(c, 20000);
    t.notMatch(out, /not supported|[Ee]rror|[Ii]nvalid/, `testpmd: ${c}`);
  }
  await f.waitConnected('d');
  await f.waitConnected('a');
  await tp.startForwarding();
  // Whatever testpmd forwards before our frame (nothing is expected) is drained.
  await waitFor('d ready', () => f.port('d').vrings?.every((v) => v.started && v.enabled) ?? false);
  const payload = Buffer.alloc(PAYLOAD);
  for (let i = 0; i < PAYLOAD; i++) payload[i] = (i * 11 + (i >> 7)) & 0xff;
  const frame = tcpFrame(payload);
  const h = Buffer.alloc(12);
  h[0] = 1;
  h[1] = 1;
  h.writeUInt16LE(54, 2);
  h.writeUInt16LE(MSS, 4);
  h.writeUInt16LE(34, 6);
  h.writeUInt16LE(16, 8);
  const segs = Math.ceil(PAYLOAD / MSS);
  if (!off) {
    t.ok(a.send(0, frame, h), `a ${frame.length}-byte super-frame sent (gso_size ${MSS})`);
    await waitFor('segmented for DPDK', () => f.counter('d', 'TX_SEGMENTS') === BigInt(segs), 10000);
    t.pass(`segmented for DPDK into ${segs} segments (it took no super-frames)`);
  } else {
    // A port with offloads=off takes no super-frame from its guest: the same stream as plain frames.
    let sent = 0;
    for (let k = 0; k < segs; k++) {
      const x = tcpFrame(payload.subarray(k * MSS, (k + 1) * MSS), 1000 + k * MSS);
      x.writeUInt16BE(~sum16(x.subarray(34)) & 0xffff, 50);
      sent += a.send(0, x) ? 1 : 0;
    }
    t.equal(sent, segs, `the same payload sent as ${segs} plain frames`);
  }
  // Each segment carries more than 800 bytes: DPDK sends each back as a super-frame.
  const dpdkFrames = segs;
  await waitFor('DPDK sent super-frames back', () => f.counter('d', 'RX_SUPER_FRAMES') === BigInt(dpdkFrames), 10000);
  t.pass(`DPDK's csum engine sent ${dpdkFrames} super-frames back (TSO at ${DPDK_MSS})`);
  const pieces: Buffer[] = [];
  if (!off) {
    const got = await receiveAll(a, dpdkFrames);
    t.equal(got.length, dpdkFrames, 'a got them as super-frames');
    let ok = true;
    for (const g of got) {
      const gh = { flags: g[0], gsoType: g[1], gsoSize: g.readUInt16LE(4), csumStart: g.readUInt16LE(6), csumOffset: g.readUInt16LE(8) };
      const body = Buffer.from(g.subarray(12));
      // Complete the partial checksum as a receiving driver would, then check it.
      const sum = ~sum16(body.subarray(gh.csumStart)) & 0xffff;
      body.writeUInt16BE(sum, gh.csumStart + gh.csumOffset);
      if (!(gh.flags === 1 && gh.gsoType === 1 && gh.gsoSize === DPDK_MSS && gh.csumStart === 34 && gh.csumOffset === 16 && tcpOk(body)))
        ok = false;
      pieces.push(body.subarray(54));
    }
    t.ok(ok, `each with NEEDS_CSUM, GSO_TCPV4, gso_size ${DPDK_MSS} and a partial checksum that completes right`);
    await waitFor('counted', () => f.counter('a', 'TX_SUPER_FRAMES') === BigInt(dpdkFrames));
  } else {
    let want = 0;
    for (let k = 0; k < segs; k++) want += Math.ceil(Math.min(MSS, PAYLOAD - k * MSS) / DPDK_MSS);
    const got = await receiveAll(a, want);
    t.equal(got.length, want, `a (offloads=off) got ${want} segments`);
    t.ok(
      got.every(
        (g) => g[0] === 0 && g[1] === 0 && tcpOk(g.subarray(12)) && sum16(g.subarray(26, 46)) === 0xffff && g.length - 12 - 54 <= DPDK_MSS,
      ),
      `plain headers, valid IPv4 and TCP checksums, at most ${DPDK_MSS} bytes of payload each`,
    );
    for (const g of got) pieces.push(g.subarray(12 + 54));
    await waitFor('counted', () => f.counter('a', 'TX_SEGMENTED') === BigInt(dpdkFrames));
  }
  t.ok(Buffer.concat(pieces).equals(payload), 'the payloads joined in order are the super-frame payload');
  await tp.stopForwarding();
}

t.test('DPDK virtio-user, testpmd csum engine with TSO', { skip, timeout: 120000 }, async (t) => {
  await t.test('to a front end that took the offloads: super-frames carried as they are', (t) => run(t, false));
  await t.test('to a front end on a port with offloads=off: segmented in software', (t) => run(t, true));
});
