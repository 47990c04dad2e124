// Multi-queue uplinks on a veth pair whose ends have four queues each. A four-queue vhost-user port, served
// to our own front end, is wired to a four-queue uplink: queue pair q of one feeds queue pair q of the
// other. The namespace sends many flows; its veth end picks a transmit queue by flow hash, which is the
// receive queue on our end. Bypass mode has one AF_XDP socket on each receive queue; kernel mode an
// AF_PACKET hash fanout group of four sockets. Either way every frame is counted on exactly one queue,
// the same queue on the uplink, the vhost-user port and the front end; with one PMD thread and with the
// queue pairs spread over two.
import t, { type Test } from 'tap';
import { setTimeout as sleep } from 'node:timers/promises';
import type { NativeVirtioUser } from '../../src/harness/frontend-native';
import { Fixture } from '../support/fixture';
import { Cli, freePort, runCli, waitFor } from '../support/helpers';
import { Net, eth, ipv4, udp } from '../support/veth-net';

const skip = process.getuid?.() === 0 ? false : 'needs root: network namespaces, veth pairs, AF_PACKET and AF_XDP sockets';
const Q = 4;

async function sendAll(vu: NativeVirtioUser, qp: number, frames: Buffer[]): Promise<void> {
  const deadline = Date.now() + 5000;
  for (const f of frames) {
    while (!vu.send(qp, f)) {
      if (Date.now() > deadline) throw new Error(`the front end transmit ring ${qp} stayed full for 5 s`);
      await sleep(1);
    }
  }
}

function perQueue(f: Fixture, port: string, id: string): bigint[] {
  return Array.from({ length: Q }, (_, q) => f.counter(port, id, q));
}

const minus = (a: bigint[], b: bigint[]): number[] => a.map((x, i) => Number(x - b[i]));
const total = (a: number[]): number => a.reduce((n, x) => n + x, 0);

/**
 * 64 flows (UDP source ports) of 8 frames each from the namespace, spread by the sender's flow hash: each
 * is counted once, on one queue, the same on the uplink, the vhost-user port and the front end.
 */
async function flowsIn(t: Test, net: Net, f: Fixture, fe: NativeVirtioUser): Promise<void> {
  const N = 512;
  const size = 200;
  const fromNs = Array.from({ length: N }, (_, i) =>
    eth(net.feMac, net.nsMac, 0x0800, ipv4(net.nsIp, net.feIp, 17, udp(6000 + (i % 64), 5001, i, size - 42))),
  );
  const up0 = perQueue(f, 'up', 'RX_PACKETS');
  const vm0 = perQueue(f, 'vm', 'TX_PACKETS');
  net.sendFromNamespace(fromNs);
  const got: Buffer[][] = Array.from({ length: Q }, () => []);
  await waitFor(
    `all ${N} frames at the front end`,
    () => {
      for (let q = 0; q < Q; q++) got[q].push(...fe.receive(q, N));
      return total(got.map((g) => g.length)) >= N;
    },
    10000,
  ).catch(() => undefined);
  await waitFor('receive counters published', () => total(minus(perQueue(f, 'vm', 'TX_PACKETS'), vm0)) >= N).catch(() => undefined);
  const upRx = minus(perQueue(f, 'up', 'RX_PACKETS'), up0);
  const vmTx = minus(perQueue(f, 'vm', 'TX_PACKETS'), vm0);
  const feRx = got.map((g) => g.length);
  t.comment(`per queue: uplink received ${upRx.join(' ')}, front end got ${feRx.join(' ')}`);
  t.equal(total(upRx), N, `the uplink received exactly ${N} over its queues`);
  t.same(vmTx, upRx, 'the vhost-user port put each queue pair’s frames into the same queue pair');
  t.same(feRx, upRx, 'and the front end received them there');
  t.ok(
    upRx.every((n) => n > 0),
    'every queue carried some of the flows',
  );
  // One flow stays on one queue, in order: the frames of each flow arrive as they were sent.
  const flowQueue = new Map<number, number>();
  let split = 0;
  let reordered = 0;
  const lastSeq = new Map<number, number>();
  got.forEach((frames, q) =>
    frames.forEach((fr) => {
      const sport = fr.readUInt16BE(34);
      const seq = fr.readUInt32BE(42);
      if ((flowQueue.get(sport) ?? q) !== q) split++;
      flowQueue.set(sport, q);
      if ((lastSeq.get(sport) ?? -1) > seq) reordered++;
      lastSeq.set(sport, seq);
    }),
  );
  t.equal(split, 0, 'no flow was split over two queues');
  t.equal(reordered, 0, 'and no flow was reordered');
  t.equal(flowQueue.size, 64, 'all 64 flows arrived');
}

t.test('multi-queue uplinks on a four-queue veth pair', { skip }, async (t) => {
  const net = new Net({ queues: Q, tag: 'q' });
  t.teardown(() => net.close());

  // On two PMD threads the queue pairs are spread, queue pair q of both ports on PMD q mod 2.
  for (const pmds of [1, 2])
    for (const mode of ['kernel', 'bypass'] as const)
      t.test(`${mode} mode, ${pmds} PMD${pmds > 1 ? 's' : ''}: ${Q} queues, every frame counted once on its own queue`, async (t: Test) => {
        const f = new Fixture(mode, Array(pmds).fill(-1));
        t.teardown(() => f.close());
        const path = f.vhost('vm', Q);
        f.engine.addPort('uplink', 'up', { ifname: net.host, queues: Q });
        f.engine.wire('vm', 'up');
        const fe = f.peer({ path, queuePairs: Q });
        await f.waitConnected('vm');
        const up = f.port('up');
        t.same(up.queuePmds, pmds > 1 ? [0, 1, 0, 1] : [0, 0, 0, 0], "the uplink's queue pairs on the PMDs");
        t.equal(up.queuePairs, Q, `the uplink has ${Q} queue pairs`);
        t.equal(up.firstQueue, 0, 'from interface queue 0');
        t.equal(up.driver, mode === 'kernel' ? 'af_packet' : 'af_xdp');
        if (mode === 'bypass') t.ok(net.hostXdpProgram(), 'one XDP program on the interface');

        await flowsIn(t, net, f, fe);

        const size = 200;
        // To the namespace: 100 frames on each of the front end's queues go out the uplink's same queue.
        const M = 100;
        const ns0 = net.peerStats();
        const tx0 = perQueue(f, 'up', 'TX_PACKETS');
        for (let q = 0; q < Q; q++)
          await sendAll(
            fe,
            q,
            Array.from({ length: M }, (_, i) =>
              eth(net.nsMac, net.feMac, 0x0800, ipv4(net.feIp, net.broadcast, 17, udp(4000 + q, 4001, i, size - 42))),
            ),
          );
        await waitFor(`${Q * M} frames counted by the namespace's interface`, () => net.peerStats().rxPackets - ns0.rxPackets >= Q * M);
        await waitFor('transmit counters published', () => total(minus(perQueue(f, 'up', 'TX_PACKETS'), tx0)) >= Q * M);
        t.same(minus(perQueue(f, 'up', 'TX_PACKETS'), tx0), Array(Q).fill(M), `the uplink transmitted ${M} on each queue`);
        t.equal(net.peerStats().rxPackets - ns0.rxPackets, Q * M, `the namespace received exactly ${Q * M}`);
        for (const id of ['DROP_TX_NO_BUFFER', 'DROP_TX_TOO_BIG', 'DROP_TX_NOT_READY', 'DROP_RX_TRUNCATED', 'INVALID_KERNEL_ENTRY'])
          t.same(perQueue(f, 'up', id), Array(Q).fill(0n), `uplink ${id} 0 on every queue`);

        // Switched at run time, the other driver opens as many sockets, on the same counter sets.
        if (mode === 'kernel') {
          f.engine.setMode('bypass');
          t.equal(f.port('up').driver, 'af_xdp', 'switched to bypass: AF_XDP');
          t.equal(f.port('up').queuePairs, Q, `still ${Q} queue pairs`);
          await flowsIn(t, net, f, fe);
          f.engine.setMode('kernel');
          t.equal(f.port('up').driver, 'af_packet', 'and back to AF_PACKET');
          await flowsIn(t, net, f, fe);
        }
      });

  t.test('bypass mode: QUEUE picks the interface queues; the others go on to the kernel stack', async (t) => {
    const f = new Fixture('bypass');
    t.teardown(() => f.close());
    const path = f.vhost('vm', 2);
    f.engine.addPort('uplink', 'up', { ifname: net.host, queue: 2, queues: 2 });
    f.engine.wire('vm', 'up');
    const fe = f.peer({ path, queuePairs: 2 });
    await f.waitConnected('vm');
    t.equal(f.port('up').firstQueue, 2, 'queue pair 0 is interface queue 2');
    const N = 512;
    const fromNs = Array.from({ length: N }, (_, i) =>
      eth(net.feMac, net.nsMac, 0x0800, ipv4(net.nsIp, net.feIp, 17, udp(6000 + (i % 64), 5001, i, 100))),
    );
    const rx0 = [f.counter('up', 'RX_PACKETS', 0), f.counter('up', 'RX_PACKETS', 1)];
    net.sendFromNamespace(fromNs);
    let got = 0;
    // Frames of queues 0 and 1 reach the host's stack instead (and die there: the address is not ours).
    await waitFor('frames of queues 2 and 3', async () => {
      got += fe.receive(0, N).length + fe.receive(1, N).length;
      return got > 0;
    });
    await sleep(500);
    got += fe.receive(0, N).length + fe.receive(1, N).length;
    const rx = [f.counter('up', 'RX_PACKETS', 0) - rx0[0], f.counter('up', 'RX_PACKETS', 1) - rx0[1]];
    t.comment(`queue pairs 0 and 1 (interface queues 2 and 3) received ${rx.join(' ')} of ${N}`);
    t.ok(rx[0] > 0n && rx[1] > 0n, 'both sockets received frames');
    t.ok(Number(rx[0] + rx[1]) < N, 'fewer than all: the flows hashed to queues 0 and 1 are not ours');
    t.equal(got, Number(rx[0] + rx[1]), 'the front end received exactly what the two queues took');
  });

  t.test('serve --uplink NAME=IFNAME@QUEUE,queues=N: per-queue counters in /api and /metrics', async (t) => {
    const port = await freePort();
    const serve = new Cli([
      'serve',
      '--uplink',
      `up0=${net.host}@1,queues=3`,
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
    t.match(serve.stdout, `up0: uplink on ${net.host}, 3 queues from queue 1`);
    const N = 256;
    net.sendFromNamespace(
      Array.from({ length: N }, (_, i) =>
        eth(net.feMac, net.nsMac, 0x0800, ipv4(net.nsIp, net.feIp, 17, udp(6000 + (i % 64), 5001, i, 100))),
      ),
    );
    type Ports = Array<{ name: string; queuePairs: number; firstQueue?: number; counters: Array<Record<string, number>> }>;
    let ports: Ports = [];
    await waitFor('the sink to count them', async () => {
      ports = (await (await fetch(`http://127.0.0.1:${port}/api/ports`)).json()) as Ports;
      return ports.find((p) => p.name === 's0')?.counters[0].TX_PACKETS === N;
    });
    const up = ports.find((p) => p.name === 'up0')!;
    t.equal(up.queuePairs, 3, '/api: three queue pairs');
    t.equal(up.firstQueue, 1, '/api: from interface queue 1');
    const rx = up.counters.map((c) => c.RX_PACKETS);
    t.equal(rx.length, 3, '/api: one counter set per queue pair');
    t.equal(
      rx.reduce((n, x) => n + x, 0),
      N,
      `/api: the queues' receive counts (${rx.join(' ')}) add up to ${N}`,
    );
    const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    for (let q = 0; q < 3; q++)
      t.match(
        metrics,
        new RegExp(`^vhostwire_port_receive_packets_total\\{port="up0",queue="${q}"\\} ${rx[q]}$`, 'm'),
        `/metrics: queue ${q} received ${rx[q]}`,
      );
    t.match(
      metrics,
      new RegExp(`^vhostwire_uplink_link_up\\{port="up0",interface="${net.host}",state="up"\\} 1$`, 'm'),
      '/metrics: the link is up',
    );
    const bad = await runCli(['serve', '--uplink', `up1=${net.host}@3,queues=2`, '--sink', 's1', '--wire', 'up1=s1']);
    t.equal(bad.code, 2, 'queues past the interface’s last are refused');
    t.match(bad.stderr, `interface "${net.host}" has ${Q} receive queues (0..${Q - 1}): queues 3..4 do not all exist`, 'saying why');
    serve.kill('SIGTERM');
    t.same(await serve.wait(), { code: 0, signal: null }, 'exit 0 on SIGTERM');
  });
});
