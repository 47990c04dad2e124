// Host uplinks through the real kernel stack. A veth pair: the uplink on the end in our namespace, the
// other end in a namespace of its own with an IPv4 address; a vhost-user port served to our own front
// end (VirtioUser) wired to the uplink. The namespace's kernel answers pings and counts what reaches its
// interface; a raw socket inside it sends frames the other way. Kernel mode, one PMD thread.
//
// VLAN tags: the receiving kernel moves a frame's tag out of the frame into metadata before packet
// sockets see it, so tagged frames sent into the veth show whether the uplink puts the tag back.
import t, { type Test } from 'tap';
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import type { NativeVirtioUser } from '../../src/harness/frontend-native';
import { Fixture, receiveN } from '../support/fixture';
import { Cli, freePort, runCli, waitFor } from '../support/helpers';
import { Net, eth, icmpEcho, ip, ipBytes, ipv4, macBytes, udp } from '../support/veth-net';

const skip = process.getuid?.() === 0 ? false : 'needs root: network namespaces, veth pairs, AF_PACKET sockets';

async function sendAll(vu: NativeVirtioUser, frames: Buffer[]): Promise<void> {
  const deadline = Date.now() + 5000;
  for (const f of frames) {
    while (!vu.send(0, f)) {
      if (Date.now() > deadline) throw new Error('the front end transmit ring stayed full for 5 s');
      await sleep(1);
    }
  }
}

function openFds(): number {
  return fs.readdirSync('/proc/self/fd').length;
}

function setup(t: Test, net: Net, mode: 'kernel' | 'bypass' = 'kernel') {
  const f = new Fixture(mode);
  t.teardown(() => f.close());
  const path = f.vhost('vm');
  f.engine.addPort('uplink', 'up', { ifname: net.host });
  f.engine.wire('vm', 'up');
  const fe = f.peer({ path });
  return { f, fe };
}

/** The ICMP echo reply to an echo request the front end sent, checked field by field. */
async function ping(t: Test, net: Net, fe: NativeVirtioUser, seq: number): Promise<void> {
  const data = Buffer.from(`vhostwire uplink ping ${seq}`);
  fe.send(0, eth(net.nsMac, net.feMac, 0x0800, ipv4(net.feIp, net.nsIp, 1, icmpEcho(8, 0x7677, seq, data))));
  const [reply] = await receiveN(fe, 1, 0, 5000);
  if (!reply) {
    t.fail(`no echo reply ${seq}`);
    return;
  }
  t.same([...reply.subarray(0, 12)], [...macBytes(net.feMac), ...macBytes(net.nsMac)], 'reply addressed to the front end by the namespace');
  t.equal(reply.readUInt16BE(12), 0x0800, 'IPv4');
  const ipHdr = reply.subarray(14, 34);
  t.equal(ipHdr[9], 1, 'ICMP');
  t.same([...ipHdr.subarray(12, 20)], [...ipBytes(net.nsIp), ...ipBytes(net.feIp)], 'from the namespace to the front end');
  const icmp = reply.subarray(34);
  t.equal(icmp[0], 0, 'an echo reply');
  t.equal(icmp.readUInt16BE(6), seq, 'to our request');
  t.ok(icmp.subarray(8).equals(data), 'carrying our data back');
}

t.test('uplink on a veth pair', { skip }, async (t) => {
  const net = new Net();
  t.teardown(() => net.close());

  t.test('a missing interface is refused, naming it', async (t) => {
    const f = new Fixture('kernel');
    t.teardown(() => f.close());
    const missing = `vwnone${process.pid}`.slice(0, 15);
    t.throws(() => f.engine.addPort('uplink', 'up', { ifname: missing }), { message: `port "up": interface "${missing}" does not exist` });
    t.same(f.engine.ports(), [], 'no port was added');
  });

  // Kernel mode: AF_PACKET; bypass mode: AF_XDP (the PMD spins; the test is short).
  for (const mode of ['kernel', 'bypass'] as const)
    t.test(`${mode} mode: ping through the kernel stack, then counted frames both ways`, async (t) => {
      const { f, fe } = setup(t, net, mode);
      await f.waitConnected('vm');
      t.same(f.port('up'), {
        name: 'up',
        kind: 'uplink',
        queuePairs: 1,
        counterSet: f.port('up').counterSet,
        forwarder: 'vm=up',
        pmd: 0,
        queuePmds: [0],
        state: 'up',
        ifname: net.host,
        driver: mode === 'kernel' ? 'af_packet' : 'af_xdp',
        firstQueue: 0,
        link: 'up',
        linkChanges: 0,
        ...(mode === 'kernel' ? { tpacket: 'v3' } : {}),
        // veth has no zero-copy: asked for first, refused, copy mode instead.
        ...(mode === 'bypass' ? { xdpBind: 'copy', xdpAttach: 'native' } : {}),
        kernelDrops: ['packet_drops', 'xdp_rx_dropped', 'xdp_rx_ring_full', 'xdp_tx_invalid_descs'].map((reason) => ({
          reason,
          frames: 0,
        })),
      });
      t.equal(net.hostPromiscuity(), 1, 'the interface is in promiscuous mode');

      for (let seq = 1; seq <= 3; seq++) await ping(t, net, fe, seq);

      const N = 200;
      const size = 300;
      const toNs = Array.from({ length: N }, (_, i) =>
        eth(net.nsMac, net.feMac, 0x0800, ipv4(net.feIp, net.broadcast, 17, udp(4000, 4001, i, size - 42))),
      );
      const ns0 = net.peerStats();
      const up0 = { tx: f.counter('up', 'TX_PACKETS'), txBytes: f.counter('up', 'TX_BYTES'), rx: f.counter('up', 'RX_PACKETS') };
      const vm0 = f.counter('vm', 'RX_PACKETS');
      await sendAll(fe, toNs);
      await waitFor(`${N} frames transmitted by the uplink`, () => f.counter('up', 'TX_PACKETS') - up0.tx >= BigInt(N));
      await waitFor(`${N} frames counted by the namespace's interface`, () => net.peerStats().rxPackets - ns0.rxPackets >= N);
      const ns1 = net.peerStats();
      t.equal(f.counter('vm', 'RX_PACKETS') - vm0, BigInt(N), `the backend took ${N} frames from the front end`);
      t.equal(f.counter('up', 'TX_PACKETS') - up0.tx, BigInt(N), `the uplink transmitted ${N}`);
      t.equal(f.counter('up', 'TX_BYTES') - up0.txBytes, BigInt(N * size), `${N * size} bytes`);
      t.equal(ns1.rxPackets - ns0.rxPackets, N, `the namespace's interface received exactly ${N}`);
      t.equal(ns1.rxBytes - ns0.rxBytes, N * size, `and exactly ${N * size} bytes`);
      t.equal(ns1.txPackets, ns0.txPackets, 'and sent nothing back');
      t.equal(f.counter('up', 'RX_PACKETS'), up0.rx, 'the uplink received nothing meanwhile (its own frames are not looped back)');

      const fromNs = Array.from({ length: N }, (_, i) =>
        eth(net.feMac, net.nsMac, 0x0800, ipv4(net.nsIp, net.feIp, 17, udp(5000, 5001, i, size - 42))),
      );
      const rx0 = { up: f.counter('up', 'RX_PACKETS'), upBytes: f.counter('up', 'RX_BYTES'), vm: f.counter('vm', 'TX_PACKETS') };
      net.sendFromNamespace(fromNs);
      const got = await receiveN(fe, N, 0, 10000);
      t.equal(got.length, N, `the front end received all ${N} frames the namespace sent`);
      const firstBad = got.findIndex((g, i) => !g.equals(fromNs[i]));
      t.equal(firstBad, -1, 'unchanged and in order');
      await waitFor('receive counters published', () => f.counter('vm', 'TX_PACKETS') - rx0.vm >= BigInt(N));
      t.equal(f.counter('up', 'RX_PACKETS') - rx0.up, BigInt(N), `the uplink received ${N}`);
      t.equal(f.counter('up', 'RX_BYTES') - rx0.upBytes, BigInt(N * size), `${N * size} bytes`);
      t.equal(f.counter('vm', 'TX_PACKETS') - rx0.vm, BigInt(N), `the backend put ${N} into the front end`);
      t.equal((await receiveN(fe, 1, 0, 300)).length, 0, 'and nothing else');

      for (const id of [
        'DROP_TX_NO_BUFFER',
        'DROP_TX_TOO_BIG',
        'DROP_TX_NOT_READY',
        'DROP_RX_TOO_BIG',
        'DROP_RX_TRUNCATED',
        'INVALID_KERNEL_ENTRY',
      ])
        t.equal(f.counter('up', id), 0n, `uplink ${id} 0`);
    });

  t.test('VLAN-tagged frames cross in both directions with their tags', async (t) => {
    const { f, fe } = setup(t, net);
    await f.waitConnected('vm');
    const tagged = (vid: number, i: number, from: 'fe' | 'ns') =>
      from === 'ns'
        ? eth(net.feMac, net.nsMac, 0x0800, ipv4(net.nsIp, net.feIp, 17, udp(5000, 5001, i, 200)), vid)
        : eth(net.nsMac, net.feMac, 0x0800, ipv4(net.feIp, net.broadcast, 17, udp(4000, 4001, i, 200)), vid);
    const fromNs = Array.from({ length: 20 }, (_, i) => tagged(i % 2 ? 10 : 4094, i, 'ns'));
    net.sendFromNamespace(fromNs);
    const got = await receiveN(fe, fromNs.length, 0, 5000);
    t.equal(got.length, fromNs.length, 'every tagged frame arrives');
    t.equal(
      got.findIndex((g, i) => !g.equals(fromNs[i])),
      -1,
      'with its tag back in place, byte for byte',
    );
    await waitFor('counted', () => f.counter('up', 'RX_BYTES') === BigInt(fromNs.reduce((n, x) => n + x.length, 0)));
    t.pass('received bytes count the tag');

    const ns0 = net.peerStats();
    const toNs = [tagged(10, 0, 'fe'), tagged(20, 1, 'fe')];
    await sendAll(fe, toNs);
    await waitFor('the namespace to count them', () => net.peerStats().rxPackets - ns0.rxPackets === toNs.length);
    t.equal(net.peerStats().rxBytes - ns0.rxBytes, toNs[0].length + toNs[1].length, 'tagged frames go out whole');
  });

  t.test('on a bridge: an access port gets trunk frames untagged, and its frames leave the trunk tagged', async (t) => {
    const f = new Fixture('kernel');
    t.teardown(() => f.close());
    const path = f.vhost('vm');
    f.engine.addPort('uplink', 'up', { ifname: net.host });
    f.engine.addBridge('br0', {}, [
      { port: 'vm', vlan: 10 },
      { port: 'up', trunk: [10] },
    ]);
    const fe = f.peer({ path });
    await f.waitConnected('vm');
    const frame = (vid: number | undefined, i: number, from: 'fe' | 'ns') =>
      from === 'ns'
        ? eth(net.feMac, net.nsMac, 0x0800, ipv4(net.nsIp, net.feIp, 17, udp(5000, 5001, i, 200)), vid)
        : eth(net.nsMac, net.feMac, 0x0800, ipv4(net.feIp, net.broadcast, 17, udp(4000, 4001, i, 200)), vid);
    const untag = (b: Buffer) => Buffer.concat([b.subarray(0, 12), b.subarray(16)]);
    // VLAN 20 frames are not carried by the trunk: dropped; the VLAN 10 ones reach the access port.
    const fromNs = Array.from({ length: 10 }, (_, i) => frame(i % 2 ? 20 : 10, i, 'ns'));
    net.sendFromNamespace(fromNs);
    const want = fromNs.filter((_, i) => i % 2 === 0).map(untag);
    const got = await receiveN(fe, want.length, 0, 5000);
    t.equal(got.length, want.length, 'the five VLAN 10 frames arrive');
    t.equal(
      got.findIndex((g, i) => !g.equals(want[i])),
      -1,
      'untagged, byte for byte',
    );
    await waitFor('the VLAN 20 drops counted', () => f.engine.bridges()[0].members[1].drops.vlan === 5);
    t.pass('five VLAN 20 frames dropped at the trunk and counted');

    const ns0 = net.peerStats();
    const toNs = [frame(undefined, 0, 'fe'), frame(undefined, 1, 'fe')];
    await sendAll(fe, toNs);
    await waitFor('the namespace to count them', () => net.peerStats().rxPackets - ns0.rxPackets === toNs.length);
    t.equal(
      net.peerStats().rxBytes - ns0.rxBytes,
      toNs[0].length + toNs[1].length + 8,
      'both leave the uplink four bytes longer: tagged in the one copy into its ring',
    );
    t.equal(f.engine.fdb('br0').find((e) => e.port === 'up')?.vlan, 10, "the namespace's MAC is learned on the trunk in VLAN 10");
  });

  t.test('frames longer than the interface MTU are dropped and counted, the rest still go', async (t) => {
    const { f, fe } = setup(t, net);
    await f.waitConnected('vm');
    const big = eth(net.nsMac, net.feMac, 0x0800, ipv4(net.feIp, net.broadcast, 17, udp(4000, 4001, 0, 1473)));
    t.equal(big.length, 1515, 'one byte more than a 1500-byte MTU and the Ethernet header allow');
    const ns0 = net.peerStats();
    await sendAll(fe, [big]);
    await waitFor('too_big counted', () => f.counter('up', 'DROP_TX_TOO_BIG') === 1n);
    await ping(t, net, fe, 7);
    t.equal(net.peerStats().rxPackets - ns0.rxPackets, 1, 'only the echo request reached the namespace');

    // Lowered under the uplink: the kernel checks no MTU for a socket with PACKET_VNET_HDR, so the uplink
    // reads it again every 100 ms and drops the frame itself; the frames around it must still go, in order.
    ip('link', 'set', net.host, 'mtu', '1400');
    t.teardown(() => spawnSync('ip', ['link', 'set', net.host, 'mtu', '1500'], { stdio: 'ignore' }));
    await new Promise((r) => setTimeout(r, 250));
    const mid = eth(net.nsMac, net.feMac, 0x0800, ipv4(net.feIp, net.broadcast, 17, udp(4000, 4001, 1, 1400)));
    const echo = (seq: number) =>
      eth(net.nsMac, net.feMac, 0x0800, ipv4(net.feIp, net.nsIp, 1, icmpEcho(8, 0x7677, seq, Buffer.from('x'))));
    const tx0 = f.counter('up', 'TX_PACKETS');
    await sendAll(fe, [echo(8), mid, echo(9), echo(10)]);
    const replies = await receiveN(fe, 3, 0, 5000);
    t.same(
      replies.map((r) => r.readUInt16BE(34 + 6)),
      [8, 9, 10],
      'the three echo requests around it were answered, in order',
    );
    await waitFor('the refused frame counted', () => f.counter('up', 'DROP_TX_TOO_BIG') === 2n);
    t.equal(f.counter('up', 'TX_PACKETS') - tx0, 3n, 'transmitted: the three requests only');
  });

  // A pfifo on our end counts what passes through it: a plain packet socket's frames do, the uplink's
  // (PACKET_QDISC_BYPASS) go straight to the driver and do not.
  t.test('kernel mode: frames bypass the qdisc', async (t) => {
    const qdiscPackets = () =>
      JSON.parse(execFileSync('tc', ['-s', '-j', 'qdisc', 'show', 'dev', net.host], { encoding: 'utf8' }))[0].packets as number;
    execFileSync('tc', ['qdisc', 'replace', 'dev', net.host, 'root', 'pfifo', 'limit', '1000']);
    t.teardown(() => spawnSync('tc', ['qdisc', 'del', 'dev', net.host, 'root'], { stdio: 'ignore' }));
    const frame = eth(net.nsMac, net.feMac, 0x0800, ipv4(net.feIp, net.broadcast, 17, udp(4000, 4001, 0, 100)));
    const py = [
      'import socket, sys',
      's = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)',
      's.bind((sys.argv[1], 0))',
      'f = bytes.fromhex(sys.argv[2])',
      'for i in range(5): s.send(f)',
    ].join('\n');
    const q0 = qdiscPackets();
    execFileSync('python3', ['-c', py, net.host, frame.toString('hex')]);
    t.equal(qdiscPackets() - q0, 5, "a plain packet socket's 5 frames pass through the qdisc");

    const { f, fe } = setup(t, net, 'kernel');
    await f.waitConnected('vm');
    const N = 100;
    const ns0 = net.peerStats();
    const q1 = qdiscPackets();
    await sendAll(
      fe,
      Array.from({ length: N }, (_, i) => eth(net.nsMac, net.feMac, 0x0800, ipv4(net.feIp, net.broadcast, 17, udp(4000, 4001, i, 100)))),
    );
    await waitFor(`${N} frames counted by the namespace's interface`, () => net.peerStats().rxPackets - ns0.rxPackets >= N);
    t.equal(net.peerStats().rxPackets - ns0.rxPackets, N, `the namespace received exactly ${N}`);
    t.equal(qdiscPackets() - q1, 0, 'none of them through the qdisc');
  });

  t.test('switching mode reopens the driver; counters carry on; removal closes the socket', async (t) => {
    const f = new Fixture('kernel');
    t.teardown(() => f.close());
    const path = f.vhost('vm');
    const fe = f.peer({ path });
    await f.waitConnected('vm');
    const fds0 = openFds();
    f.engine.addPort('uplink', 'up', { ifname: net.host });
    t.equal(openFds(), fds0 + 2, 'the uplink holds two fds, its socket and the rtnetlink socket that tells it of link changes');
    f.engine.wire('vm', 'up');
    await ping(t, net, fe, 1);
    await waitFor('counted', () => f.counter('up', 'RX_PACKETS') === 1n && f.counter('up', 'TX_PACKETS') === 1n);

    f.engine.setMode('bypass');
    // AF_XDP: the socket, the XSKMAP, the program, its bpf_link and the packet socket whose membership
    // keeps the interface promiscuous; the AF_PACKET socket is closed. The rtnetlink socket stays.
    t.equal(openFds(), fds0 + 6, 'bypass: the AF_XDP driver holds five fds, the AF_PACKET socket is closed');
    t.equal(net.hostPromiscuity(), 1, 'and one promiscuous membership');
    t.ok(net.hostXdpProgram(), `an XDP program is attached (id ${net.hostXdpProgram()})`);
    await ping(t, net, fe, 2);
    f.engine.setMode('kernel');
    t.equal(openFds(), fds0 + 2, 'kernel again: one socket and the rtnetlink one');
    t.equal(net.hostXdpProgram(), undefined, 'and the XDP program is gone');
    await ping(t, net, fe, 3);
    await waitFor(
      'counters carried on across both switches',
      () => f.counter('up', 'RX_PACKETS') === 3n && f.counter('up', 'TX_PACKETS') === 3n,
    );
    t.pass('three round trips counted on one counter set');

    f.engine.removePort('up');
    t.equal(openFds(), fds0, 'removing the uplink closes its socket');
    t.equal(net.hostPromiscuity(), 0, 'and takes the interface out of promiscuous mode');
  });

  // The data path stopped (the serve process under SIGSTOP) while the namespace sends more than the
  // receive ring holds: the kernel drops the rest, and after SIGCONT every frame sent is either received,
  // dropped by us, dropped by the kernel at our socket, or dropped by the veth pair itself. The small
  // cases shrink the rings: kernel mode's to two blocks of 68 KiB, which hold what two blocks hold, no
  // more; bypass mode's to 512 entries of 2048-byte frames, which hold exactly 512 frames.
  const SMALL_RING = { blockSize: 69632, blocks: 2 };
  const SMALL_XSK = { frameSize: 2048, ringSize: 512 };
  for (const [mode, small] of [
    ['kernel', false],
    ['bypass', false],
    ['kernel', true],
    ['bypass', true],
  ] as const)
    t.test(
      `${mode} mode: a full ${small ? 'small ' : ''}receive ring: the kernel's drops counted, every frame accounted for`,
      async (t) => {
        const port = await freePort();
        const serve = new Cli([
          'serve',
          '--uplink',
          `up0=${net.host}` +
            (!small
              ? ''
              : mode === 'kernel'
                ? `,block-size=${SMALL_RING.blockSize},blocks=${SMALL_RING.blocks}`
                : `,frame-size=${SMALL_XSK.frameSize},ring-size=${SMALL_XSK.ringSize}`),
          '--sink',
          's0',
          '--wire',
          'up0=s0',
          '--mode',
          mode,
          '--metrics',
          `127.0.0.1:${port}`,
        ]);
        let stopped = false;
        t.teardown(() => {
          if (stopped) process.kill(serve.pid, 'SIGCONT');
          serve.kill('SIGKILL');
        });
        await serve.line(/^ready$/);
        type Ports = Array<{
          name: string;
          kernelDrops: Array<{ reason: string; frames: number }>;
          counters: Array<Record<string, number>>;
        }>;
        const up0 = async () =>
          ((await (await fetch(`http://127.0.0.1:${port}/api/ports`)).json()) as Ports).find((p) => p.name === 'up0')!;
        const sum = (c: Record<string, number>, pick: (id: string) => boolean): number =>
          Object.entries(c).reduce((n, [id, v]) => (pick(id) ? n + v : n), 0);
        const link0 = net.linkDrops();
        // 60-byte frames: the AF_PACKET ring (4 MiB) holds about 30,000, the AF_XDP ring 2,048.
        const frame = eth(net.feMac, net.nsMac, 0x0800, ipv4(net.nsIp, net.feIp, 17, udp(5000, 5001, 0, 18)));
        process.kill(serve.pid, 'SIGSTOP');
        stopped = true;
        const sent = net.floodFromNamespace(frame, mode === 'kernel' && !small ? 80000 : 20000);
        process.kill(serve.pid, 'SIGCONT');
        stopped = false;
        const link = () => {
          const l = net.linkDrops();
          return l.hostRx - link0.hostRx + l.peerTx - link0.peerTx;
        };
        const kernelOf = (c: Record<string, number>) => sum(c, (id) => id.startsWith('KERNEL_DROP_'));
        const oursOf = (c: Record<string, number>) => sum(c, (id) => id.startsWith('DROP_'));
        let c: Record<string, number> = {};
        let accounted = 0;
        await waitFor(`all ${sent} frames accounted for`, async () => {
          c = (await up0()).counters[0];
          accounted = c.RX_PACKETS + oursOf(c) + kernelOf(c) + link();
          return accounted >= sent;
        }).catch(() => undefined);
        // A moment more: nothing may be counted twice.
        await sleep(300);
        const p = await up0();
        c = p.counters[0];
        const kernel = kernelOf(c);
        t.comment(`sent ${sent}: received ${c.RX_PACKETS}, ours dropped ${oursOf(c)}, kernel dropped ${kernel}, veth dropped ${link()}`);
        if (mode === 'kernel')
          t.equal(c.RX_PACKETS + oursOf(c) + kernel + link(), sent, "received + our drops + the kernel's + the veth pair's = sent");
        else {
          // Bypass: the veth counts a failed XDP redirect (our RX ring full) as its own rx drop: the same
          // frames as the socket's xdp_rx_dropped, so they are counted once.
          t.equal(c.RX_PACKETS + oursOf(c) + kernel, sent, "received + our drops + the kernel's = sent");
          t.equal(link(), kernel, "the veth pair's drops are those same failed redirects");
        }
        t.ok(kernel > 0, `the kernel dropped at our full ring (${kernel})`);
        t.ok(c.RX_PACKETS > 0, 'and we received what the ring held');
        // Every frame takes at least its 48-byte header and 60 bytes of its own in a block.
        const twoBlocks = Math.floor((SMALL_RING.blocks * SMALL_RING.blockSize) / 108);
        if (mode === 'kernel' && small) t.ok(c.RX_PACKETS <= twoBlocks, `two blocks held ${c.RX_PACKETS} frames, at most ${twoBlocks} fit`);
        else if (mode === 'kernel') t.ok(c.RX_PACKETS > twoBlocks, `the default ring held ${c.RX_PACKETS}, more than two blocks could`);
        else t.equal(c.RX_PACKETS, small ? SMALL_XSK.ringSize : 2048, `the fill ring held ${small ? SMALL_XSK.ringSize : 2048} frames`);
        t.equal(
          p.kernelDrops.reduce((n, r) => n + r.frames, 0),
          kernel,
          `the port description shows the same kernel drops (${p.kernelDrops.map((r) => `${r.reason}=${r.frames}`).join(' ')})`,
        );
        const stats = await runCli(['stats', '--url', `http://127.0.0.1:${port}`]);
        t.equal(stats.code, 0, `stats exits 0 (${stats.stderr})`);
        const shown = p.kernelDrops
          .filter((r) => r.frames > 0)
          .map((r) => `${r.reason}=${r.frames}`)
          .join(' ');
        // SOCKET DROPS, then the DIFFERENCE column.
        t.match(stats.stdout, new RegExp(`^up0 .* ${shown}  +rx `, 'm'), `stats shows the socket's drops beside ours (${shown})`);
        if (mode === 'bypass') {
          // Zero-copy is asked for first; veth has none, so the sockets run in copy mode, and say so.
          t.match(
            stats.stdout,
            new RegExp(`^up0\\s+${net.host}\\s+up\\s+af_xdp/copy/native\\s`, 'm'),
            'stats: AF_XDP in copy mode, the program native',
          );
          const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
          t.match(metrics, /^vhostwire_uplink_xdp_mode\{port="up0",bind="copy",attach="native"\} 1$/m, '/metrics: the same');
        }
        serve.kill('SIGTERM');
        t.same(await serve.wait(), { code: 0, signal: null }, 'exit 0 on SIGTERM');
      },
    );

  t.test('serve --uplink: frames from the namespace reach a sink', async (t) => {
    const port = await freePort();
    const serve = new Cli([
      'serve',
      '--uplink',
      `up0=${net.host}`,
      '--sink',
      's0',
      '--wire',
      'up0=s0',
      '--mode',
      'kernel',
      '--metrics',
      `127.0.0.1:${port}`,
    ]);
    t.teardown(() => serve.kill('SIGKILL'));
    await serve.line(/^ready$/);
    t.match(serve.stdout, `up0: uplink on ${net.host}`);
    const N = 50;
    net.sendFromNamespace(
      Array.from({ length: N }, (_, i) => eth(net.feMac, net.nsMac, 0x0800, ipv4(net.nsIp, net.feIp, 17, udp(5000, 5001, i, 100)))),
    );
    type Ports = Array<{ name: string; kind: string; ifname?: string; counters: Array<Record<string, number>> }>;
    let ports: Ports = [];
    await waitFor('the sink to count them', async () => {
      ports = (await (await fetch(`http://127.0.0.1:${port}/api/ports`)).json()) as Ports;
      return ports.find((p) => p.name === 's0')?.counters[0].TX_PACKETS === N;
    });
    const up = ports.find((p) => p.name === 'up0');
    t.equal(up?.kind, 'uplink');
    t.equal(up?.ifname, net.host);
    t.equal(up?.counters[0].RX_PACKETS, N, `the uplink received ${N}`);

    // The kernel's own counters beside ours: the interface received at least the N frames we took.
    const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    const kernelRx = Number(
      new RegExp(`^vhostwire_uplink_interface_statistic\\{port="up0",interface="${net.host}",stat="rx_packets"\\} (\\d+)$`, 'm').exec(
        metrics,
      )?.[1],
    );
    t.ok(kernelRx >= N, `/metrics: the interface's own rx_packets (${kernelRx}) beside ours (${N})`);
    t.match(
      metrics,
      new RegExp(`^vhostwire_uplink_ethtool_statistic\\{port="up0",interface="${net.host}",stat="peer_ifindex"\\} \\d+$`, 'm'),
      "/metrics: the driver's ethtool -S counters",
    );
    const stats = await runCli(['stats', '--url', `http://127.0.0.1:${port}`]);
    t.equal(stats.code, 0, `stats exits 0 (${stats.stderr})`);
    t.match(
      stats.stdout,
      new RegExp(`^UPLINK\\s+INTERFACE\\s+LINK\\s+DRIVER\\s+RX\\s+KERNEL RX`, 'm'),
      "stats: an uplink table with the kernel's counts",
    );
    t.match(stats.stdout, new RegExp(`^up0\\s+${net.host}\\s+up\\s`, 'm'), 'with its link up');
    serve.kill('SIGTERM');
    t.same(await serve.wait(), { code: 0, signal: null }, 'exit 0 on SIGTERM');
  });
});
