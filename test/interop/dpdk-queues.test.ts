// DPDK's virtio-user with two queue pairs into a wire whose queue pairs are spread over two PMD threads
// (serve --pmd-cores 0,1): testpmd's txonly sends on both of vm0's queues, each served by its own PMD,
// into vm1, whose front end (ours) receives on both; every frame testpmd sent is received by vm0 exactly,
// and each is then in vm1's front end or in one of vm1's drop counters.
import t from 'tap';
import { findTestpmd, freeHugepages } from '../../bench/testpmd';
import { metric, serveUnavailable, sleep } from '../../bench/serve';
import { Cli } from '../support/helpers';
import { startServe, startVirtioUser, tmpSocket, waitUntil } from '../support/testpmd-fixture';

const why = !findTestpmd()
  ? 'dpdk-testpmd is not installed (Debian 12: apt-get install dpdk-dev)'
  : (serveUnavailable() ?? (freeHugepages() < 64 ? `only ${freeHugepages()} free 2 MiB hugepages` : null));

t.test('testpmd txonly on two queue pairs -> a wire on two PMDs -> our front end', { timeout: 90_000, skip: why ?? false }, async (t) => {
  const s0 = tmpSocket(t, 'q0');
  const s1 = tmpSocket(t, 'q1');
  const serve = await startServe(t, [
    ...['--vhost-user', `vm0=${s0},queues=2`, '--vhost-user', `vm1=${s1},queues=2`, '--wire', 'vm0=vm1'],
    ...['--mode', 'kernel', '--pmd-cores', '0,1'],
  ]);
  const ports = await serve.ports();
  t.same(
    ports.map((p) => [p.name, p.queuePmds]),
    [
      ['vm0', [0, 1]],
      ['vm1', [0, 1]],
    ],
    'queue pair q of each port on PMD q',
  );
  const rx = new Cli(['peer', '--connect', s1, '--rx', '--queues', '2', '--duration', '0']);
  t.teardown(() => rx.kill('SIGKILL'));
  await serve.waitConnected('vm1');
  // A pace both sides keep up with while four busy threads share two cores.
  const front = await startVirtioUser(t, { path: s0, forwardMode: 'txonly', txpkts: 64, queues: 2, extraApp: ['--burst=8'] });
  await serve.waitConnected('vm0');
  await front.startForwarding();
  await sleep(2000);
  const st = await front.stopForwarding();
  const sent = (st.ports.get(0) ?? st.total).txPackets;
  t.ok(sent > 0, `testpmd transmitted ${sent} frames`);

  const c = async (name: string, labels: Record<string, string>): Promise<number> => metric(await serve.metrics(), name, labels);
  const RX = 'vhostwire_port_receive_packets_total';
  const TX = 'vhostwire_port_transmit_packets_total';
  const DROPS = 'vhostwire_port_drops_total';
  t.ok(
    await waitUntil(async () => (await c(RX, { port: 'vm0' })) === sent, 10_000),
    `vm0 received exactly the ${sent} testpmd sent (got ${await c(RX, { port: 'vm0' })})`,
  );
  for (const queue of ['0', '1']) t.ok((await c(RX, { port: 'vm0', queue })) > 0, `vm0's queue pair ${queue} carried frames`);
  t.ok(
    await waitUntil(async () => (await c(TX, { port: 'vm1' })) + (await c(DROPS, { port: 'vm1', direction: 'transmit' })) === sent, 10_000),
    'every one was put into vm1 or dropped there with a reason',
  );
  t.equal(await c('vhostwire_port_invalid_descriptors_total', { port: 'vm0' }), 0, 'no invalid descriptors');
  const delivered = await c(TX, { port: 'vm1' });
  rx.kill('SIGTERM');
  t.equal((await rx.wait()).code, 0, `our front end exits 0 (stderr: ${rx.stderr})`);
  const got = /rx (\d+) packets/.exec(rx.stdout);
  t.equal(Number(got?.[1]), delivered, `our front end received exactly the ${delivered} put into vm1`);
  await front.close();
});
