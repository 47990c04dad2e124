// A bridge set up by `vhostwire serve --bridge` with VLAN port options, our own front ends on its ports,
// and what the control plane shows of it: `vhostwire fdb` over the API, /api/bridges, /api/ports and the
// bridge families in /metrics, with exact counts. Bad bridge flags exit 2 with a message naming the flag.
import { writeFileSync } from 'node:fs';
import t from 'tap';
import { frontend, type NativeVirtioUser } from '../../src/harness/frontend-native';
import { Cli, freePort, runCli, sample, tempDir, waitFor } from '../support/helpers';
import { receiveN } from '../support/fixture';

t.test('serve --bridge: VLANs from the port flags, fdb over the API, bridge metrics', async (t) => {
  const tmp = tempDir();
  t.teardown(tmp.cleanup);
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const api = tmp.sock('api');
  const serve = new Cli([
    'serve',
    '--vhost-user',
    `vm0=${tmp.sock('vm0')},vlan=10`,
    '--vhost-user',
    `vm1=${tmp.sock('vm1')},vlan=10`,
    '--vhost-user',
    `vm2=${tmp.sock('vm2')},vlan=20`,
    '--bridge',
    'br0=vm0,vm1,vm2,ageing=600',
    '--mode',
    'kernel',
    '--metrics',
    `127.0.0.1:${port}`,
    '--api',
    api,
  ]);
  t.teardown(() => serve.kill('SIGKILL'));
  await serve.line(/^ready$/);
  t.match(serve.stdout, /bridge br0 \(vm0, vm1, vm2\) on PMD 0/);

  const peers: Record<string, NativeVirtioUser> = {};
  for (const name of ['vm0', 'vm1', 'vm2']) peers[name] = new (frontend().VirtioUser)({ path: tmp.sock(name), timeoutMs: 5000 });
  t.teardown(() => Object.values(peers).forEach((p) => p.close()));
  const portsJson = async () => (await (await fetch(`${base}/api/ports`)).json()) as Array<Record<string, unknown>>;
  await waitFor('every front end connected', async () => (await portsJson()).every((p) => p.state === 'connected'));

  const fr = Buffer.alloc(64);
  Buffer.from('ffffffffffff020000000001', 'hex').copy(fr);
  fr.writeUInt16BE(0x88b5, 12);
  peers.vm0.send(0, fr);
  t.ok((await receiveN(peers.vm1, 1))[0]?.equals(fr), 'vm1 (VLAN 10) gets the broadcast of vm0');

  const fdb = await runCli(['fdb', 'br0', '--api', api]);
  t.equal(fdb.code, 0, `fdb exits 0 (stderr ${fdb.stderr})`);
  const lines = fdb.stdout.trim().split('\n');
  t.match(lines[0], /^MAC\s+VLAN\s+PORT\s+AGE$/, 'a header');
  t.match(lines[1], /^02:00:00:00:00:01\s+10\s+vm0\s+\d+s$/, 'the MAC learned on vm0 in VLAN 10');
  t.equal(lines[2], '1 entry');

  const missing = await runCli(['fdb', 'nope', '--url', base]);
  t.equal(missing.code, 1, 'an unknown bridge exits 1');
  t.match(missing.stderr, 'no bridge named "nope" (there are: br0)');

  const bridges = (await (await fetch(`${base}/api/bridges`)).json()) as Array<Record<string, unknown>>;
  t.match(bridges, [{ name: 'br0', ageingSeconds: 600, macs: 1, learned: 1, flooded: 1, floodCopies: 1 }]);
  t.equal((await portsJson()).find((p) => p.name === 'vm2')?.forwarder, 'br0', '/api/ports names the bridge of a port');

  const metrics = await (await fetch(`${base}/metrics`)).text();
  t.equal(sample(metrics, 'vhostwire_bridge_macs{bridge="br0"}'), 1);
  t.equal(sample(metrics, 'vhostwire_bridge_fdb_events_total{bridge="br0",event="learned"}'), 1);
  t.equal(sample(metrics, 'vhostwire_bridge_flooded_frames_total{bridge="br0"}'), 1);
  t.equal(sample(metrics, 'vhostwire_bridge_flood_copies_total{bridge="br0"}'), 1, 'one copy: vm2 is in another VLAN');
  t.equal(sample(metrics, 'vhostwire_bridge_port_frames_total{bridge="br0",port="vm1",direction="transmit"}'), 1);
  t.equal(sample(metrics, 'vhostwire_bridge_port_frames_total{bridge="br0",port="vm2",direction="transmit"}'), 0);
  t.equal(sample(metrics, 'vhostwire_bridge_port_drops_total{bridge="br0",port="vm0",reason="vlan_not_carried"}'), 0);

  // A port added to the running bridge in VLAN 20 reaches vm2 (VLAN 20) and none of VLAN 10; removed, it
  // leaves the others as they were.
  t.match(await runCli(['port', 'add', `vm3=${tmp.sock('vm3')}`, '--bridge', 'br0', '--vlan', '20', '--api', api]), {
    code: 0,
    stdout: 'vm3: added (vhost-user)\n',
  });
  t.equal((await portsJson()).find((p) => p.name === 'vm3')?.forwarder, 'br0', 'the added port is on br0');
  t.match(await runCli(['port', 'add', `vm4=${tmp.sock('vm4')}`, '--bridge', 'nope', '--api', api]), {
    code: 1,
    stderr: 'port "vm4": bridge: there is no bridge named "nope"',
  });
  t.match(await runCli(['port', 'add', `vm4=${tmp.sock('vm4')}`, '--vlan', '20', '--api', api]), {
    code: 1,
    stderr: 'port "vm4": vlan, trunk, mac and the other bridge options need "bridge"',
  });
  peers.vm3 = new (frontend().VirtioUser)({ path: tmp.sock('vm3'), timeoutMs: 5000 });
  await waitFor('vm3 connected', async () => (await portsJson()).find((p) => p.name === 'vm3')?.state === 'connected');
  const fr3 = Buffer.from(fr);
  Buffer.from('020000000003', 'hex').copy(fr3, 6);
  peers.vm3.send(0, fr3);
  t.ok((await receiveN(peers.vm2, 1))[0]?.equals(fr3), 'vm2 (VLAN 20) gets the broadcast of the added vm3');
  t.equal(
    sample(
      await (await fetch(`${base}/metrics`)).text(),
      'vhostwire_bridge_port_frames_total{bridge="br0",port="vm1",direction="transmit"}',
    ),
    1,
    'and VLAN 10 does not',
  );
  t.match(await runCli(['port', 'del', 'vm3', '--api', api]), { code: 0, stdout: 'vm3: removed\n' });
  t.notOk(
    (await portsJson()).some((p) => p.name === 'vm3'),
    'vm3 is gone',
  );
  peers.vm0.send(0, fr);
  t.ok((await receiveN(peers.vm1, 1))[0]?.equals(fr), 'vm0 still reaches vm1 after the removal');
  serve.kill('SIGTERM');
  t.equal((await serve.wait()).code, 0, 'serve exits cleanly');
});

t.test('a bridge from --config with a static entry: unicast to the static MAC goes to its port only', async (t) => {
  const tmp = tempDir();
  t.teardown(tmp.cleanup);
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const config = `${tmp.dir}/serve.json`;
  writeFileSync(
    config,
    JSON.stringify({
      vhostUser: ['vm0', 'vm1', 'vm2'].map((name) => ({ name, path: tmp.sock(name) })),
      bridge: [{ name: 'br0', ports: ['vm0', 'vm1', { port: 'vm2', learning: false }], ageing: 60 }],
    }),
  );
  // The flag's static entry joins the file's bridge: both sources say how br0 is set up.
  const serve = new Cli(['serve', '--config', config, '--mode', 'kernel', '--metrics', `127.0.0.1:${port}`]);
  t.teardown(() => serve.kill('SIGKILL'));
  await serve.line(/^ready$/);
  const peers: Record<string, NativeVirtioUser> = {};
  for (const name of ['vm0', 'vm1', 'vm2']) peers[name] = new (frontend().VirtioUser)({ path: tmp.sock(name), timeoutMs: 5000 });
  t.teardown(() => Object.values(peers).forEach((p) => p.close()));
  await waitFor('every front end connected', async () =>
    ((await (await fetch(`${base}/api/ports`)).json()) as Array<{ state: string }>).every((p) => p.state === 'connected'),
  );

  // A unicast to an address no one has sent from floods; vm2 does not learn, so it stays unknown.
  const fr = Buffer.alloc(64);
  Buffer.from('020000000002020000000001', 'hex').copy(fr);
  fr.writeUInt16BE(0x88b5, 12);
  peers.vm0.send(0, fr);
  t.ok((await receiveN(peers.vm1, 1))[0]?.equals(fr), 'unknown unicast floods to vm1');
  t.ok((await receiveN(peers.vm2, 1))[0]?.equals(fr), 'and to vm2');
  const back = Buffer.from(fr);
  Buffer.from('020000000001020000000002', 'hex').copy(back);
  peers.vm2.send(0, back);
  t.ok((await receiveN(peers.vm0, 1))[0]?.equals(back), 'vm2 reaches the learned vm0');
  const fdb = (await (await fetch(`${base}/api/bridges/br0/fdb`)).json()) as Array<{ port: string }>;
  t.same(
    fdb.map((e) => e.port),
    ['vm0'],
    'learning=false from the file: vm2 is not learned',
  );
  serve.kill('SIGTERM');
  t.equal((await serve.wait()).code, 0);

  const serve2 = new Cli([
    'serve',
    '--config',
    config,
    '--bridge',
    'br1=vm3,vm4,static=02:00:00:00:00:04@vm4',
    '--vhost-user',
    `vm3=${tmp.sock('vm3')}`,
    '--vhost-user',
    `vm4=${tmp.sock('vm4')}`,
    '--mode',
    'kernel',
    '--metrics',
    `127.0.0.1:${port}`,
  ]);
  t.teardown(() => serve2.kill('SIGKILL'));
  await serve2.line(/^ready$/);
  const listed = await runCli(['fdb', 'br1', '--url', base]);
  t.match(listed.stdout, /^02:00:00:00:00:04\s+0\s+vm4\s+static$/m, 'fdb marks the static entry');
  for (const name of ['vm0', 'vm1', 'vm2', 'vm3', 'vm4']) {
    peers[name]?.close();
    peers[name] = new (frontend().VirtioUser)({ path: tmp.sock(name), timeoutMs: 5000 });
  }
  await waitFor('every front end connected again', async () =>
    ((await (await fetch(`${base}/api/ports`)).json()) as Array<{ state: string }>).every((p) => p.state === 'connected'),
  );
  const to4 = Buffer.from(fr);
  Buffer.from('020000000004020000000003', 'hex').copy(to4);
  peers.vm3.send(0, to4);
  t.ok((await receiveN(peers.vm4, 1))[0]?.equals(to4), 'vm4 gets the frame for its static MAC');
  const metrics = await (await fetch(`${base}/metrics`)).text();
  t.equal(sample(metrics, 'vhostwire_bridge_flooded_frames_total{bridge="br1"}'), 0, 'without a flood');
  serve2.kill('SIGTERM');
  t.equal((await serve2.wait()).code, 0);
});

t.test('bad bridge flags exit 2 naming the flag', async (t) => {
  const tmp = tempDir();
  t.teardown(tmp.cleanup);
  const cases: Array<[string[], string]> = [
    [['--vhost-user', `a=${tmp.sock('a')},vlan=5000`, '--bridge', 'br0=a'], 'vlan must be 1..4094, got 5000'],
    [['--vhost-user', `a=${tmp.sock('a')},trunk=10:x`, '--bridge', 'br0=a'], 'trunk expects VLANs and ranges'],
    [['--vhost-user', `a=${tmp.sock('a')}`, '--bridge', 'br0=a,b'], '--bridge br0: no port named "b"'],
    [['--sink', 's0', '--sink', 's1', '--wire', 's0=s1', '--bridge', 'br0=s0'], 'port "s0" is already in wire s0=s1'],
  ];
  for (const [args, message] of cases) {
    const r = await runCli(['serve', ...args]);
    t.equal(r.code, 2, `exit 2 for ${args.join(' ')}`);
    t.match(r.stderr, message);
  }
});
