// /metrics of a running serve, read through promtool (Prometheus's parser and linter): the families are
// exactly those docs/metrics.md lists, with its types and labels; the frame-size bins count the frames
// sent exactly; PMD time, mode, connection state and build info are there; and every family of one scrape
// reads one copy of the counter block (a port's bins add up to its packets while traffic flows).
import t from 'tap';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Cli, freePort, ROOT, tempDir, waitFor } from '../support/helpers';
import { documentedFamilies, parseScrape, total, type Scrape } from '../support/metrics';

const SIZES = ['0-64', '65-127', '128-255', '256-511', '512-1023', '1024-1518', '1519-max'];

t.test('a scrape lists the documented families with exact frame-size counts', async (t) => {
  const tmp = tempDir();
  t.teardown(tmp.cleanup);
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const vm0 = tmp.sock('vm0');
  const vm1 = tmp.sock('vm1');
  const serve = new Cli([
    'serve',
    ...['--vhost-user', `vm0=${vm0}`, '--vhost-user', `vm1=${vm1}`, '--wire', 'vm0=vm1'],
    // 500 frames of 300 bytes, counted once, and a steady flow for the snapshot check
    ...['--gen', 'g0,size=300,count=500', '--sink', 's0', '--wire', 'g0=s0'],
    ...['--gen', 'g1,size=1600,rate=200000', '--sink', 's1', '--wire', 'g1=s1'],
    ...['--mode', 'kernel', '--metrics', `127.0.0.1:${port}`, '--api', tmp.sock('api')],
  ]);
  t.teardown(() => serve.kill('SIGKILL'));
  await serve.line(/^ready$/);
  const scrape = async (): Promise<Scrape> => parseScrape(await (await fetch(`${base}/metrics`)).text());

  // A guest receiving on vm1 while another transmits 700 frames of 1000 bytes into vm0, and g1's frames
  // of 1600 bytes in the last bin.
  const rx = new Cli(['peer', '--connect', vm1, '--rx', '--duration', '0']);
  t.teardown(() => rx.kill('SIGKILL'));
  await serve.line(/^vm1: connected$/);
  const tx = new Cli(['peer', '--connect', vm0, '--tx', '1000', '--count', '700', '--rate', '20000', '--duration', '1']);
  t.teardown(() => tx.kill('SIGKILL'));
  t.equal((await tx.wait(15000)).code, 0, `tx peer exits 0 (stderr: ${tx.stderr})`);
  await serve.line(/^vm0: disconnected$/);
  let s = await scrape();
  await waitFor('vm0 received 700 and s0 transmitted 500', async () => {
    s = await scrape();
    return (
      total(s, 'vhostwire_port_receive_packets_total', { port: 'vm0' }) === 700 &&
      total(s, 'vhostwire_port_transmit_packets_total', { port: 's0' }) === 500
    );
  });

  // Exactly the documented families, types and labels.
  const docs = documentedFamilies();
  t.same([...s.types.keys()].sort(), docs.map((f) => f.name).sort(), 'the scrape and docs/metrics.md list the same families');
  for (const f of docs) {
    t.equal(s.types.get(f.name), f.type, `${f.name} is a ${f.type}`);
    const wrong = s.samples.filter((x) => x.name === f.name && Object.keys(x.labels).sort().join() !== [...f.labels].sort().join());
    t.same(wrong, [], `${f.name} samples carry exactly the labels ${f.labels.join(', ') || '(none)'}`);
  }

  const bins = (port: string, direction: string) =>
    SIZES.map((size) => total(s, 'vhostwire_port_packets_by_size_total', { port, direction, size }));
  t.same(bins('vm0', 'receive'), [0, 0, 0, 0, 700, 0, 0], 'vm0: 700 frames of 1000 bytes received, in 512-1023');
  t.same(bins('g0', 'receive'), [0, 0, 0, 500, 0, 0, 0], 'g0: 500 frames of 300 bytes, in 256-511');
  t.same(bins('s0', 'transmit'), [0, 0, 0, 500, 0, 0, 0], 's0: the same 500 transmitted');
  const vm1tx = total(s, 'vhostwire_port_transmit_packets_total', { port: 'vm1' });
  t.ok(vm1tx > 0, `vm1's guest received some (${vm1tx})`);
  t.same(bins('vm1', 'transmit'), [0, 0, 0, 0, vm1tx, 0, 0], "vm1's transmitted frames all in 512-1023");
  t.equal(
    vm1tx + total(s, 'vhostwire_port_drops_total', { port: 'vm1', direction: 'transmit' }),
    700,
    'what vm1 did not take is dropped with a reason',
  );

  // Notifications: in kernel mode the receiving guest is notified, or EVENT_IDX spared it.
  const notified =
    total(s, 'vhostwire_port_guest_notifications_total', { port: 'vm1' }) +
    total(s, 'vhostwire_port_guest_notifications_saved_total', { port: 'vm1' });
  t.ok(notified > 0, `vm1's used-ring updates were notified or saved (${notified})`);

  t.ok(total(s, 'vhostwire_pmd_time_seconds_total', { state: 'busy' }) > 0, 'PMD busy time');
  t.ok(total(s, 'vhostwire_pmd_time_seconds_total', { state: 'idle' }) > 0, 'PMD idle time');
  t.equal(total(s, 'vhostwire_mode', { mode: 'kernel' }), 1, 'mode kernel');
  t.equal(total(s, 'vhostwire_mode', { mode: 'bypass' }), 0);
  t.equal(total(s, 'vhostwire_port_connected', { port: 'vm1' }), 1, 'vm1 has its guest');
  t.equal(total(s, 'vhostwire_port_connected', { port: 'vm0' }), 0, 'vm0 waits for one');
  t.notOk(
    s.samples.some((x) => x.name === 'vhostwire_port_connected' && x.labels.port === 'g0'),
    'a gen has no connection state',
  );
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string };
  t.same(
    s.samples.filter((x) => x.name === 'vhostwire_build_info'),
    [{ name: 'vhostwire_build_info', labels: { version: pkg.version, node: process.version, napi: process.versions.napi }, value: 1 }],
    'build info',
  );

  // While g1 runs, each scrape's size bins add up to its packet count exactly: one copy of the block.
  for (let k = 0; k < 10; k++) {
    const x = await scrape();
    const packets = total(x, 'vhostwire_port_receive_packets_total', { port: 'g1' });
    const sum = total(x, 'vhostwire_port_packets_by_size_total', { port: 'g1', direction: 'receive' });
    t.equal(sum, packets, `scrape ${k}: g1's bins add up to its ${packets} packets`);
    if (k === 0) t.equal(total(x, 'vhostwire_port_packets_by_size_total', { port: 'g1', size: '1519-max' }), packets, 'all 1519-max');
  }

  // The fill gauge is the avail index as the last burst read it, and the flood above may have ended on a
  // ring the guest had not refilled yet: a trickle, with the guest refilling between frames, shows it.
  const trickle = new Cli(['peer', '--connect', vm0, '--tx', '1000', '--count', '20', '--rate', '100', '--duration', '1']);
  t.teardown(() => trickle.kill('SIGKILL'));
  t.equal((await trickle.wait(15000)).code, 0, `trickle peer exits 0 (stderr: ${trickle.stderr})`);
  let fill = 0;
  await waitFor('vm1 offers receive buffers', async () => {
    fill = total(await scrape(), 'vhostwire_port_ring_fill_descriptors', { port: 'vm1', direction: 'transmit' });
    return fill > 0;
  }).catch(() => undefined);
  t.ok(fill > 0, `vm1 offers receive buffers after the trickle (${fill})`);

  rx.kill('SIGTERM');
  serve.kill('SIGTERM');
  t.same(await serve.wait(), { code: 0, signal: null }, `serve exits 0 (stderr: ${serve.stderr})`);
});
