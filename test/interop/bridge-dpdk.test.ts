// DPDK virtio-user front ends on one learning bridge, three dpdk-testpmd processes (vm0, vm1, vm2), with
// exact counts from both sides:
//   1. vm0 sends (txonly) to a MAC nobody has used: every frame floods to vm1 and vm2, and what each
//      received (testpmd's count) plus what the bridge could not put in its ring (no_room) is exactly
//      what vm0 sent;
//   2. vm1 sends a few frames to vm0: the bridge learns vm1's MAC (and already knows vm0's from step 1);
//   3. vm0 sends to vm1's MAC again: now every frame goes to vm1 alone, vm2 gets none.
// Bypass mode, our PMD on core 1; the testpmds forward on core 0.
import t, { type Test } from 'tap';
import { findTestpmd, freeHugepages, type StopResult, type Testpmd } from '../../bench/testpmd';
import { metric, serveUnavailable, sleep, type ServeProcess } from '../../bench/serve';
import { startServe, startVirtioUser, tmpSocket, waitUntil } from '../support/testpmd-fixture';

const MAC = ['02:00:00:00:00:a0', '02:00:00:00:00:a1', '02:00:00:00:00:a2'];
const NOBODY = '02:00:00:00:00:ee';
const VM = ['vm0', 'vm1', 'vm2'];

function sent(r: StopResult): number {
  return (r.ports.get(0) ?? r.total).txPackets;
}
function received(r: StopResult): number {
  return (r.ports.get(0) ?? r.total).rxPackets;
}

interface BridgeCounts {
  flooded: number;
  copies: number;
  rx: number[];
  tx: number[];
  noRoom: number[];
}

async function bridgeCounts(serve: ServeProcess): Promise<BridgeCounts> {
  const m = await serve.metrics();
  const b = { bridge: 'br0' };
  return {
    flooded: metric(m, 'vhostwire_bridge_flooded_frames_total', b),
    copies: metric(m, 'vhostwire_bridge_flood_copies_total', b),
    rx: VM.map((port) => metric(m, 'vhostwire_bridge_port_frames_total', { ...b, port, direction: 'receive' })),
    tx: VM.map((port) => metric(m, 'vhostwire_bridge_port_frames_total', { ...b, port, direction: 'transmit' })),
    noRoom: VM.map((port) => metric(m, 'vhostwire_bridge_port_drops_total', { ...b, port, reason: 'no_room' })),
  };
}

/** Runs txonly on `from` for ms milliseconds and waits until the bridge has taken all of it. */
async function burst(t: Test, serve: ServeProcess, from: Testpmd, index: number, ms: number): Promise<number> {
  const before = (await bridgeCounts(serve)).rx[index];
  await from.startForwarding();
  await sleep(ms);
  const n = sent(await from.stopForwarding());
  t.ok(n > 0, `${VM[index]} sent ${n}`);
  const settled = await waitUntil(async () => (await bridgeCounts(serve)).rx[index] - before >= n, 10000);
  t.ok(settled, `the bridge took all ${n} from ${VM[index]}`);
  return n;
}

function delta(a: BridgeCounts, b: BridgeCounts): BridgeCounts {
  const d = (x: number[], y: number[]): number[] => x.map((v, i) => y[i] - v);
  return {
    flooded: b.flooded - a.flooded,
    copies: b.copies - a.copies,
    rx: d(a.rx, b.rx),
    tx: d(a.tx, b.tx),
    noRoom: d(a.noRoom, b.noRoom),
  };
}

if (!findTestpmd()) {
  t.plan(0, 'dpdk-testpmd is not installed (Debian 12: apt-get install dpdk-dev)');
} else if (serveUnavailable()) {
  t.plan(0, `the CLI is not built: ${serveUnavailable()}`);
} else {
  t.test('three DPDK virtio-user ports on one bridge: flood, learn, then unicast, counted exactly', { timeout: 120000 }, async (t) => {
    t.ok(freeHugepages() >= 3 * 64, 'enough free 2 MiB hugepages for three testpmds (echo 1024 > /proc/sys/vm/nr_hugepages)');
    const socks = VM.map((v) => tmpSocket(t, v));
    const serve = await startServe(t, [
      ...VM.flatMap((v, i) => ['--vhost-user', `${v}=${socks[i]}`]),
      '--bridge',
      `br0=${VM.join(',')}`,
      '--mode',
      'bypass',
      '--pmd-cores',
      '1',
    ]);
    const fronts: Testpmd[] = [];
    for (let i = 0; i < 3; i++) {
      fronts.push(
        await startVirtioUser(t, {
          path: socks[i],
          forwardMode: i === 0 ? 'txonly' : 'rxonly',
          txpkts: 64,
          vdevExtra: `mac=${MAC[i]}`,
          extraApp: [`--eth-peer=0,${i === 0 ? NOBODY : MAC[0]}`],
        }),
      );
      await serve.waitConnected(VM[i]);
    }
    const [f0, f1, f2] = fronts;

    // 1. Unknown destination: flooded to both others.
    await f1.startForwarding();
    await f2.startForwarding();
    let c0 = await bridgeCounts(serve);
    const n1 = await burst(t, serve, f0, 0, 1000);
    await sleep(300);
    const r1 = received(await f1.stopForwarding());
    const r2 = received(await f2.stopForwarding());
    let d = delta(c0, await bridgeCounts(serve));
    t.equal(d.flooded, n1, 'every frame to the unknown MAC was flooded');
    t.equal(d.copies, 2 * n1, 'one copy for each of the two other ports');
    t.equal(d.tx[0], 0, 'never back out of the port it came in on');
    t.equal(r1, d.tx[1], `vm1's testpmd received exactly what the bridge put in its ring (${r1})`);
    t.equal(r2, d.tx[2], `vm2's testpmd received exactly what the bridge put in its ring (${r2})`);
    t.ok(r1 > 0 && r2 > 0, 'both received frames');
    for (const i of [1, 2]) t.equal(d.tx[i] + d.noRoom[i], n1, `${VM[i]}: delivered + no_room = sent`);

    // 2. vm1 speaks (to vm0, learned in step 1 as the source of the flood): its MAC is learned on vm1.
    await f1.command('set fwd txonly');
    await burst(t, serve, f1, 1, 100);
    await f1.command('set fwd rxonly');
    const fdb = (await (await fetch(`${serve.url}/api/bridges/br0/fdb`)).json()) as Array<{ mac: string; port: string }>;
    t.same(
      fdb
        .filter((e) => MAC.includes(e.mac))
        .sort((a, b) => a.mac.localeCompare(b.mac))
        .map((e) => [e.mac, e.port]),
      [
        [MAC[0], 'vm0'],
        [MAC[1], 'vm1'],
      ],
      'the table holds vm0 and vm1 where they are',
    );

    // 3. To vm1's MAC: unicast to vm1 only.
    await f0.command(`set eth-peer 0 ${MAC[1]}`);
    await f1.startForwarding();
    await f2.startForwarding();
    c0 = await bridgeCounts(serve);
    const n3 = await burst(t, serve, f0, 0, 1000);
    await sleep(300);
    const r31 = received(await f1.stopForwarding());
    const r32 = received(await f2.stopForwarding());
    d = delta(c0, await bridgeCounts(serve));
    t.equal(d.flooded, 0, 'nothing flooded once the destination is known');
    t.equal(d.tx[1] + d.noRoom[1], n3, 'every frame went to vm1 (delivered + no_room = sent)');
    t.equal(r31, d.tx[1], `vm1's testpmd received exactly what was delivered (${r31})`);
    t.equal(d.tx[2] + d.noRoom[2], 0, 'none to vm2');
    t.equal(r32, 0, "vm2's testpmd received nothing");
  });
}
