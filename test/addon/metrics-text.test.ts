// /metrics writes the counter-block families' text itself (src/api/metrics.ts, CounterBlockRegistry):
// the text must be exactly what prom-client writes for the same samples, family by family and line by
// line, with traffic flowing, queues of several ports, PMD families and a bridge beside them, ports
// added and removed, and an uplink's own families; and the JSON view, still prom-client's, carries the
// same families.
import t from 'tap';
import { execFileSync, spawnSync } from 'node:child_process';
import { createRegistry } from '../../src/api/metrics';
import { Switch } from '../../src/switch';
import { tempDir } from '../support/helpers';
import { ownAndPromClientText, parseScrape, total } from '../support/metrics';
import { waitFor } from '../support/fixture';

t.test("the counter-block families' text is prom-client's, byte for byte", async (t) => {
  const tmp = tempDir();
  t.teardown(tmp.cleanup);
  const sw = new Switch({ mode: 'kernel' });
  t.teardown(() => sw.close());
  for (const [name, queues] of [
    ['vm0', 8],
    ['vm1', 1],
  ] as const)
    sw.addPort({ kind: 'vhost-user', name, path: tmp.sock(name), client: false, queues });
  sw.addPort({ kind: 'gen', name: 'g0', size: 300, rate: 100000, count: 0 });
  sw.addPort({ kind: 'sink', name: 's0' });
  sw.wire('g0', 's0');
  // The bridge's families are prom-client's own and read the bridge apart from the block: its traffic
  // ends before the comparison, so both texts see the same figures there.
  sw.addPort({ kind: 'gen', name: 'g1', size: 64, rate: 1000, count: 20, macs: 4 });
  sw.addPort({ kind: 'sink', name: 's1' });
  sw.addBridge('br0', {}, [{ port: 'g1' }, { port: 's1' }]);
  const registry = createRegistry(sw);

  const tx = (port: string): number => Number(sw.ports().find((p) => p.name === port)?.counters[0]?.TX_PACKETS ?? 0);
  await waitFor('g0 moves frames and g1 has sent its 20', () => tx('s0') > 1000 && tx('s1') === 20);
  for (let k = 0; k < 5; k++) {
    const [own, theirs] = await ownAndPromClientText(registry);
    t.equal(own, theirs, `scrape ${k}: the same text (${own.length} bytes)`);
  }
  // The lines are laid out once per arrangement of ports: a port added or removed lays them out again.
  sw.addPort({ kind: 'vhost-user', name: 'vm2', path: tmp.sock('vm2'), client: false, queues: 2 });
  let [own, theirs] = await ownAndPromClientText(registry);
  t.equal(own, theirs, 'the same text with vm2 added');
  t.match(own, /\nvhostwire_port_receive_packets_total\{port="vm2",queue="1"\} 0\n/, "vm2's second queue is there");
  sw.removePort('vm1');
  [own, theirs] = await ownAndPromClientText(registry);
  t.equal(own, theirs, 'the same text with vm1 removed');
  t.notMatch(own, /port="vm1"/, 'vm1 is gone');

  const s = parseScrape(own);
  t.equal(total(s, 'vhostwire_port_receive_packets_total', { port: 'vm0' }), 0, 'vm0 has received nothing');
  t.equal(
    s.samples.filter((x) => x.name === 'vhostwire_port_receive_packets_total' && x.labels.port === 'vm0').length,
    8,
    'one sample per queue pair',
  );
  t.ok(total(s, 'vhostwire_port_transmit_packets_total', { port: 's0' }) > 1000, 's0 counts what g0 sends');

  const json = await registry.getMetricsAsJSON();
  t.same(json.map((m) => m.name).sort(), [...s.types.keys()].sort(), 'the JSON view has every family of the text');
});

// The uplink-only families (kernel drops, ring events) and the interface's own counters: on a veth pair
// made for the test, with an uplink of a switch in this process sending a gen's frames out of it.
t.test(
  "an uplink's families: the same text as prom-client's",
  { skip: process.getuid?.() === 0 ? false : 'needs root: a veth pair' },
  async (t) => {
    const ns = `vwmt${process.pid}`;
    const host = `vwmth${process.pid}`;
    const ip = (...args: string[]): string => execFileSync('ip', args, { encoding: 'utf8' });
    ip('netns', 'add', ns);
    t.teardown(() => {
      spawnSync('ip', ['link', 'del', host], { stdio: 'ignore' });
      spawnSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
    });
    ip('link', 'add', host, 'type', 'veth', 'peer', 'name', `vwmtp${process.pid}`, 'netns', ns);
    ip('-n', ns, 'link', 'set', `vwmtp${process.pid}`, 'up');
    ip('link', 'set', host, 'up');
    const sw = new Switch({ mode: 'kernel' });
    t.teardown(() => sw.close());
    sw.addPort({ kind: 'uplink', name: 'up0', ifname: host, queue: 0, queues: 1 });
    sw.addPort({ kind: 'gen', name: 'g0', size: 100, rate: 10000, count: 200 });
    sw.wire('g0', 'up0');
    const registry = createRegistry(sw);
    await waitFor(
      'g0 has sent its 200 out of up0',
      () => Number(sw.ports().find((p) => p.name === 'up0')?.counters[0]?.TX_PACKETS ?? 0) === 200,
    );
    const [own, theirs] = await ownAndPromClientText(registry);
    t.equal(own, theirs, `the same text (${own.length} bytes)`);
    const s = parseScrape(own);
    t.equal(
      s.samples.filter((x) => x.name === 'vhostwire_uplink_kernel_drops_total' && x.labels.port === 'up0').length,
      4,
      "up0's kernel drop reasons",
    );
    t.notOk(
      s.samples.some((x) => x.name === 'vhostwire_uplink_kernel_drops_total' && x.labels.port === 'g0'),
      'none for the gen',
    );
    t.ok(
      total(s, 'vhostwire_uplink_interface_statistic', { port: 'up0', stat: 'tx_packets' }) >= 200,
      "the interface's own count is there",
    );
  },
);
