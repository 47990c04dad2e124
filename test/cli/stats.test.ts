// `vhostwire stats` against a running serve: --json samples (one object per line) over the unix-socket
// API with exact totals, --watch repeating over HTTP, --port picking one port, and a bad --port or
// --watch value as a usage error.
import t from 'tap';
import { Cli, freePort, runCli, tempDir, waitFor } from '../support/helpers';

interface Side {
  packets: number;
  pps: number;
}
interface JsonSample {
  seconds: number;
  ports: Array<{ name: string; kind: string; queues: Array<{ queue: number; rx: Side; tx: Side; drops: Record<string, number> }> }>;
}

t.test('stats --json, --watch and --port against a running serve', async (t) => {
  const tmp = tempDir();
  t.teardown(tmp.cleanup);
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const api = tmp.sock('api');
  const serve = new Cli([
    'serve',
    ...['--gen', 'g0,size=128,count=300', '--sink', 's0', '--wire', 'g0=s0'],
    ...['--gen', 'g1,rate=2000', '--sink', 's1', '--wire', 'g1=s1'],
    ...['--mode', 'kernel', '--metrics', `127.0.0.1:${port}`, '--api', api],
  ]);
  t.teardown(() => serve.kill('SIGKILL'));
  await serve.line(/^ready$/);

  // --json --watch over the unix socket: one object per sample, until we stop it.
  const watch = new Cli(['stats', '--api', api, '--json', '--watch', '0.3']);
  t.teardown(() => watch.kill('SIGKILL'));
  await waitFor('three JSON samples', () => watch.stdout.split('\n').filter((l) => l !== '').length >= 3, 10000);
  watch.kill('SIGTERM');
  await watch.wait();
  const samples = watch.stdout
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as JsonSample);
  t.same(samples[0].ports.map((p) => p.name).sort(), ['g0', 'g1', 's0', 's1'], 'every port in a sample');
  const last = samples[samples.length - 1];
  const q = (s: JsonSample, name: string) => s.ports.find((p) => p.name === name)!.queues[0];
  t.equal(q(last, 'g0').rx.packets, 300, 'g0 total: its 300 frames');
  t.equal(q(last, 's0').tx.packets, 300, 's0 total: the same 300');
  t.equal(q(last, 's0').tx.pps, 0, 'no rate once g0 has sent them all');
  t.ok(q(last, 's1').tx.pps > 0, 's1 has a rate while g1 runs');
  for (let k = 1; k < samples.length; k++)
    t.ok(q(samples[k], 's1').tx.packets >= q(samples[k - 1], 's1').tx.packets, `sample ${k}: totals never go back`);

  // --watch over HTTP, not a terminal: each sample printed after the last; --port keeps one port.
  const text = new Cli(['stats', '--url', url, '--watch', '0.3', '--port', 's0']);
  t.teardown(() => text.kill('SIGKILL'));
  await waitFor('two tables', () => (text.stdout.match(/^PORT\s+QUEUE/gm) ?? []).length >= 2, 10000);
  text.kill('SIGTERM');
  await text.wait();
  t.match(text.stdout, /^s0\s+sink\s+up\s+g0/m, 'the port table');
  t.match(text.stdout, /^s0\s+0\s+0 pps\s+0\s+0 pps\s+300\s+-$/m, 'the queue table: rates and totals');
  t.notMatch(text.stdout, /^g[01]\s/m, 'only s0');

  const once = await runCli(['stats', '--url', url, '--port', 'g0']);
  t.equal(once.code, 0, `one sample without --watch (${once.stderr})`);
  t.match(once.stdout, /^g0\s+0\s+0 pps\s+300\s+0 pps\s+0\s+-$/m);

  const bad = await runCli(['stats', '--url', url, '--port', 'nope']);
  t.equal(bad.code, 2, 'an unknown port is a usage error');
  t.match(bad.stderr, 'vhostwire stats: --port "nope": no such port (ports: g0, g1, s0, s1)');
  const badWatch = await runCli(['stats', '--url', url, '--watch', 'soon']);
  t.equal(badWatch.code, 2);
  t.match(badWatch.stderr, 'vhostwire stats: --watch "soon": expected seconds between samples, 0.1..3600');

  serve.kill('SIGTERM');
  t.same(await serve.wait(), { code: 0, signal: null }, `serve exits 0 (stderr: ${serve.stderr})`);
});
