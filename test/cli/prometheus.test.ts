// A real Prometheus (Debian's prometheus, on loopback, its own storage in a temp dir, killed by pid)
// scrapes a running serve with docs/prometheus.yml; through its query API our series are there, a
// counted flow reads back exactly, and rate(vhostwire_port_receive_packets_total[...]) matches the samples it stored
// a generator was told to send at.
import t from 'tap';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Cli, freePort, ROOT, tempDir, waitFor } from '../support/helpers';

const RATE = 5000;

interface QueryAnswer {
  status: string;
  data: { result: Array<{ metric: Record<string, string>; value: [number, string]; values?: Array<[number, string]> }> };
}

t.test('Prometheus scrapes serve and reads our rates', async (t) => {
  const tmp = tempDir();
  t.teardown(tmp.cleanup);
  const metricsPort = await freePort();
  const promPort = await freePort();
  const serve = new Cli([
    'serve',
    ...['--gen', `g0,size=64,rate=${RATE}`, '--sink', 's0', '--wire', 'g0=s0'],
    ...['--gen', 'g1,size=512,count=1000', '--sink', 's1', '--wire', 'g1=s1'],
    ...['--mode', 'kernel', '--metrics', `127.0.0.1:${metricsPort}`],
  ]);
  t.teardown(() => serve.kill('SIGKILL'));
  await serve.line(/^ready$/);

  // The example configuration, pointed at this serve.
  const example = fs.readFileSync(path.join(ROOT, 'docs', 'prometheus.yml'), 'utf8');
  t.match(example, "targets: ['127.0.0.1:9464']", 'the example names the default listener');
  const config = path.join(tmp.dir, 'prometheus.yml');
  fs.writeFileSync(config, example.replace("targets: ['127.0.0.1:9464']", `targets: ['127.0.0.1:${metricsPort}']`));
  const prom = spawn(
    'prometheus',
    [`--config.file=${config}`, `--storage.tsdb.path=${path.join(tmp.dir, 'data')}`, `--web.listen-address=127.0.0.1:${promPort}`],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let promLog = '';
  prom.stderr.setEncoding('utf8').on('data', (d: string) => (promLog = (promLog + d).slice(-4000)));
  const promExited = new Promise((resolve) => prom.on('close', resolve));
  t.teardown(async () => {
    if (prom.exitCode === null && prom.pid !== undefined) process.kill(prom.pid, 'SIGTERM');
    await promExited;
  });

  const query = async (q: string, time?: string): Promise<QueryAnswer['data']['result']> => {
    const at = time === undefined ? '' : `&time=${time}`;
    const res = await fetch(`http://127.0.0.1:${promPort}/api/v1/query?query=${encodeURIComponent(q)}${at}`);
    const a = (await res.json()) as QueryAnswer;
    if (a.status !== 'success') throw new Error(`query ${q}: ${JSON.stringify(a)}`);
    return a.data.result;
  };
  await waitFor(
    `prometheus ready (log: ${promLog})`,
    async () => (await fetch(`http://127.0.0.1:${promPort}/-/ready`).catch(() => null))?.status === 200,
    20000,
  );

  await waitFor('the target up', async () => (await query('up{job="vhostwire"}'))[0]?.value[1] === '1', 20000);
  t.same(
    (await query('vhostwire_build_info')).map((r) => r.metric.job),
    ['vhostwire'],
    'vhostwire_build_info scraped',
  );
  await waitFor(
    "s1's 1000 frames in Prometheus",
    async () => (await query('vhostwire_port_transmit_packets_total{port="s1"}'))[0]?.value[1] === '1000',
    20000,
  );
  t.pass('a counted flow reads back exactly');
  t.equal(
    (await query('sum(vhostwire_port_packets_by_size_total{port="g1",direction="receive",size="512-1023"})'))[0]?.value[1],
    '1000',
    'and its size bin',
  );

  // Over 10 s, once Prometheus holds that much: the samples it stored rise at the generator's paced rate
  // (it catches up on any lag, so the count follows the clock); irate() is exactly the slope of the last two
  // samples; rate() is the slope over the first and last extrapolated by at most half a scrape interval
  // toward each edge of the window, so with 1 s scrapes it reads between about 0.8 and 1.1 of the slope.
  const series = 'vhostwire_port_receive_packets_total{port="g0",queue="0"}';
  let rate = NaN;
  let irate = NaN;
  let raw: Array<[number, string]> = [];
  await waitFor(
    'a rate over 10 s of samples',
    async () => {
      // Two scrape intervals in the past: every sample up to then is stored, so the three queries see the same ones.
      const at = (Date.now() / 1000 - 2).toFixed(3);
      rate = Number((await query(`rate(${series}[10s])`, at))[0]?.value[1]);
      irate = Number((await query(`irate(${series}[10s])`, at))[0]?.value[1]);
      raw = (await query(`${series}[10s]`, at))[0]?.values ?? [];
      return raw.length >= 9 && rate > 0;
    },
    30000,
  );
  const slope = (a: [number, string], b: [number, string]) => (Number(b[1]) - Number(a[1])) / (b[0] - a[0]);
  const whole = slope(raw[0], raw[raw.length - 1]);
  t.ok(Math.abs(whole - RATE) / RATE < 0.1, `the stored samples rise ${whole.toFixed(0)} per second; the generator sends ${RATE}`);
  const last = slope(raw[raw.length - 2], raw[raw.length - 1]);
  t.ok(Math.abs(irate - last) / last < 0.001, `irate() reads ${irate.toFixed(0)} pps, the last two samples ${last.toFixed(0)}`);
  t.ok(rate > 0.75 * whole && rate < 1.1 * whole, `rate() reads ${rate.toFixed(0)} pps over the ${whole.toFixed(0)} of the samples`);
  const busy = await query('sum(rate(vhostwire_pmd_time_seconds_total[10s]))');
  t.ok(Number(busy[0]?.value[1]) > 0.5, `the PMD's busy and idle time add up to about one second per second (${busy[0]?.value[1]})`);

  serve.kill('SIGTERM');
  t.same(await serve.wait(), { code: 0, signal: null }, `serve exits 0 (stderr: ${serve.stderr})`);
});
