// The CLI as a user runs it: `node bin/vhostwire.js ...` in a child process. Bad input exits 2 with
// one line naming the flag; a real serve exposes metrics and ports over HTTP, reports front ends
// connecting, and on SIGTERM removes its sockets and exits 0; demo and peer move real packets.
import t from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import { Cli, freePort, runCli, sample, tempDir, waitFor } from '../support/helpers';

t.test('bad input: exit 2, one line on stderr naming the flag', async (t) => {
  const tmp = tempDir();
  t.teardown(tmp.cleanup);
  const missingIf = `vwnone${process.pid}`.slice(0, 15);
  const cases: Array<[string[], string]> = [
    [['serve', '--vhost-user', 'vm0'], 'vhostwire serve: --vhost-user "vm0": expected NAME=PATH[,client][,queues=N]'],
    [
      ['serve', '--vhost-user', 'vm0=/tmp/a.sock,queues=9'],
      'vhostwire serve: --vhost-user "vm0=/tmp/a.sock,queues=9": queues must be 1..8, got 9',
    ],
    [['serve', '--vhost-user', 'vm0=/tmp/a.sock', '--wire', 'vm0=vm9'], 'vhostwire serve: --wire vm0=vm9: no port named "vm9"'],
    [['serve', '--sink', 's0', '--sink', 's0'], 'vhostwire serve: --sink "s0": port name "s0" is already used by --sink'],
    [
      ['serve', '--uplink', `up0=${missingIf}`],
      `vhostwire serve: --uplink "up0=${missingIf}": interface "${missingIf}" does not exist (no /sys/class/net/${missingIf})`,
    ],
    [['serve', '--gen', 'g0,size=59'], 'vhostwire serve: --gen "g0,size=59": size must be 60..65535, got 59'],
    [['serve', '--mode', 'fast'], 'vhostwire serve: --mode "fast": expected bypass or kernel'],
    [
      ['serve', '--pmd-cores', '999'],
      `vhostwire serve: --pmd-cores "999": CPU 999 does not exist (this machine has CPUs 0-${os.cpus().length - 1})`,
    ],
    [
      ['serve', '--metrics', 'localhost:http'],
      'vhostwire serve: --metrics "localhost:http": port must be a non-negative integer, got "http"',
    ],
    [['serve', '--config', `${tmp.dir}/none.json`], `vhostwire serve: --config "${tmp.dir}/none.json": cannot read: ENOENT`],
    [['serve', '--bogus'], 'vhostwire serve: Unknown argument: bogus'],
    [['serve', '--sink', 'a', 'b'], 'vhostwire serve: Unknown argument: b'],
    [['serve', '--sink'], 'vhostwire serve: Not enough arguments following: sink'],
    [['peer'], 'vhostwire peer: Missing required argument: connect'],
    [['peer', '--connect', '/tmp/x.sock', '--tx', '10'], 'vhostwire peer: --tx "10": size must be 60..65535, got 10'],
    [['demo', '--seconds', '0'], 'vhostwire demo: --seconds "0": expected whole seconds, 1..3600'],
    [['stats', '--url', 'nope'], 'vhostwire stats: --url "nope": not a URL'],
    [['frobnicate'], 'vhostwire: Unknown argument: frobnicate'],
    [[], 'vhostwire: name a command: serve, peer, demo, stats, mode, port, fdb or vm (see --help)'],
  ];
  // Independent short-lived processes: run them side by side.
  const results = await Promise.all(cases.map(([args]) => runCli(args)));
  for (const [i, [args, line]] of cases.entries()) {
    const r = results[i];
    t.equal(r.code, 2, `exit 2 for ${args.join(' ')}`);
    t.equal(r.stderr, `${line}\n`, `one line for ${args.join(' ')}`);
    t.equal(r.stdout, '', 'nothing on stdout');
  }
});

t.test('--help works and exits 0', async (t) => {
  for (const args of [['--help'], ['serve', '--help'], ['peer', '--help'], ['demo', '--help'], ['stats', '--help']]) {
    const r = await runCli(args);
    t.equal(r.code, 0, args.join(' '));
    t.match(r.stdout, /vhostwire/);
  }
});

async function get(url: string): Promise<{ status: number; type: string; body: string }> {
  const res = await fetch(url);
  return { status: res.status, type: res.headers.get('content-type') ?? '', body: await res.text() };
}

t.test('serve: metrics, ports, events, clean shutdown on SIGTERM', async (t) => {
  const tmp = tempDir();
  t.teardown(tmp.cleanup);
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const vm0 = tmp.sock('vm0');
  const vm1 = tmp.sock('vm1');
  const api = tmp.sock('api');
  const serve = new Cli([
    'serve',
    '--vhost-user',
    `vm0=${vm0}`,
    '--vhost-user',
    `vm1=${vm1}`,
    '--wire',
    'vm0=s0',
    '--sink',
    's0',
    '--mode',
    'kernel',
    '--metrics',
    `127.0.0.1:${port}`,
    '--api',
    api,
  ]);
  t.teardown(() => serve.kill('SIGKILL'));
  await serve.line(/^ready$/);
  t.match(serve.stdout, `vm0: vhost-user ${vm0} (server, 1 queue pair)`);
  t.match(serve.stdout, `vm1: vhost-user ${vm1} (server, 1 queue pair)`);
  t.match(serve.stdout, 's0: sink');
  t.match(serve.stdout, /wire vm0=s0 on PMD 0/);
  t.match(serve.stdout, `metrics on ${base}/metrics`);
  t.ok(fs.existsSync(vm0) && fs.existsSync(vm1), 'both sockets exist');

  const metrics = await get(`${base}/metrics`);
  t.equal(metrics.status, 200);
  t.match(metrics.type, 'text/plain; version=0.0.4');
  t.equal(sample(metrics.body, 'vhostwire_port_receive_packets_total{port="vm0",queue="0"}'), 0);
  t.equal(sample(metrics.body, 'vhostwire_port_transmit_bytes_total{port="vm1",queue="0"}'), 0);
  t.equal(sample(metrics.body, 'vhostwire_port_drops_total{port="vm1",queue="0",direction="transmit",reason="no_buffer"}'), 0);
  t.equal(sample(metrics.body, 'vhostwire_port_invalid_descriptors_total{port="vm0",queue="0",reason="bad_next"}'), 0);
  t.equal(sample(metrics.body, 'vhostwire_port_up{port="vm0"}'), 0, 'no front end yet');
  t.equal(sample(metrics.body, 'vhostwire_port_up{port="s0"}'), 1, 'a sink is always up');
  t.ok(sample(metrics.body, 'vhostwire_pmd_iterations_total{pmd="0",state="idle"}') !== undefined, 'PMD counters');
  t.match(metrics.body, '# TYPE vhostwire_port_drops_total counter');
  t.equal(metrics.body.match(/^# TYPE vhostwire_port_drops_total /gm)?.length, 1, 'drops by reason are one family');

  const ports = await get(`${base}/api/ports`);
  t.equal(ports.status, 200);
  t.match(ports.type, 'application/json');
  const list = JSON.parse(ports.body) as Array<Record<string, unknown>>;
  t.same(list.map((p) => p.name).sort(), ['s0', 'vm0', 'vm1']);
  const p0 = list.find((p) => p.name === 'vm0')!;
  t.match(p0, { kind: 'vhost-user', state: 'disconnected', peer: 's0', path: vm0, client: false, queuePairs: 1 });
  t.match(
    list.find((p) => p.name === 'vm1'),
    { state: 'disconnected', peer: '' },
  );
  t.same((p0.counters as Array<Record<string, number>>)[0].RX_PACKETS, 0);
  t.match(
    list.find((p) => p.name === 's0'),
    { kind: 'sink', state: 'up', peer: 'vm0' },
  );

  t.equal((await get(`${base}/nope`)).status, 404);

  // A real front end: what it sends into vm0 is counted on vm0, then on the sink it is wired to.
  const peer = new Cli(['peer', '--connect', vm0, '--tx', '64', '--count', '1000', '--rate', '20000', '--duration', '1']);
  t.teardown(() => peer.kill('SIGKILL'));
  await serve.line(/^vm0: connected$/);
  const peerExit = await peer.wait(15000);
  t.equal(peerExit.code, 0, `peer exits 0 (stderr: ${peer.stderr})`);
  t.match(peer.stdout, /^tx 1000 packets \([0-9.]+ Mpps\), rx \d+ packets \([0-9.]+ Mpps\)$/m, 'summary line');
  await serve.line(/^vm0: disconnected$/);
  await waitFor('vm0 receive and s0 transmit counters at 1000', async () => {
    const m = await get(`${base}/metrics`);
    return (
      sample(m.body, 'vhostwire_port_receive_packets_total{port="vm0",queue="0"}') === 1000 &&
      sample(m.body, 'vhostwire_port_transmit_packets_total{port="s0",queue="0"}') === 1000
    );
  });

  const stats = await runCli(['stats', '--url', base]);
  t.equal(stats.code, 0, `stats exits 0 (stderr: ${stats.stderr})`);
  t.match(stats.stdout, /^PORT\s+KIND\s+STATE/m);
  t.match(stats.stdout, /^vm0\s+vhost-user\s+disconnected\s+s0/m);
  t.match(stats.stdout, /^s0\s+sink\s+up\s+vm0/m);

  // The mode, read over TCP and switched at run time over the unix-socket API.
  t.match(await runCli(['mode', '--url', base]), { code: 0, stdout: 'mode kernel\n' }, 'mode shows kernel');
  t.match(await runCli(['mode', 'bypass', '--api', api]), { code: 0, stdout: 'mode bypass (was kernel)\n' }, 'mode bypass switches');
  await serve.line(/^mode bypass \(was kernel\)$/);
  t.same(JSON.parse((await get(`${base}/api/mode`)).body), { mode: 'bypass' }, 'GET /api/mode agrees');
  const bad = await runCli(['mode', 'fast', '--url', base]);
  t.equal(bad.code, 2, 'an unknown mode is a usage error');
  t.match(bad.stderr, /^vhostwire mode \[mode\]: mode: must be bypass or kernel, not "fast"\n$/);

  serve.kill('SIGTERM');
  const exit = await serve.wait();
  t.same(exit, { code: 0, signal: null }, `exit 0 after SIGTERM (stderr: ${serve.stderr})`);
  t.match(serve.stdout, /SIGTERM: closing\nclosed\n$/);
  t.notOk(fs.existsSync(vm0), 'vm0 socket removed');
  t.notOk(fs.existsSync(vm1), 'vm1 socket removed');
  t.notOk(fs.existsSync(api), 'API socket removed');
  t.equal(serve.stderr, '');
});

t.test('serve: a socket path another backend listens on is a one-line error, exit 1', async (t) => {
  const tmp = tempDir();
  t.teardown(tmp.cleanup);
  const first = new Cli(['serve', '--vhost-user', `vm0=${tmp.sock('vm0')}`, '--mode', 'kernel']);
  t.teardown(() => first.kill('SIGKILL'));
  await first.line(/^ready$/);
  const second = await runCli(['serve', '--vhost-user', `vm0=${tmp.sock('vm0')}`, '--mode', 'kernel']);
  t.equal(second.code, 1);
  t.match(second.stderr, /^vhostwire serve: add vhost-user port "vm0" \(.*vm0\.sock\): .+\n$/);
  first.kill('SIGINT');
  t.same(await first.wait(), { code: 0, signal: null }, 'SIGINT closes cleanly too');
  t.notOk(fs.existsSync(tmp.sock('vm0')), 'socket removed');
});

t.test('demo: the README command moves frames and exits 0', async (t) => {
  const r = await runCli(['demo', '--no-vm', '--seconds', '2'], 30000);
  t.equal(r.code, 0, `exit 0 (stderr: ${r.stderr})`);
  t.match(r.stdout, /^ {2}1s {2}vm0 sent [0-9.]+ Mpps {2}vm1 received [0-9.]+ Mpps/m);
  const total = /total: vm0 sent (\d+) frames, vm1 received (\d+)/.exec(r.stdout);
  t.ok(total && Number(total[2]) > 0, 'frames arrived');
  t.match(r.stdout, /closed\n$/);
});
