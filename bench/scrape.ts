// `npm run bench -- scrape`, in two parts. `time` (bench/scrape-time.ts): how long one scrape of 256 ports
// x 8 queues takes. `storm`, here: does a scrape storm slow the data path? One `vhostwire serve` (bypass, the
// PMD pinned to core 1) forwards a gen's frames into a sink as fast as it can; each round measures that
// rate over a quiet window and over a window in which a worker thread of this process hammers the API
// (--clients concurrent keep-alive clients alternating GET /metrics and GET /api/ports, as fast as
// they are answered, plus --slow connections that dribble their headers). The windows alternate
// order round by round; the ratio (storm / quiet) is taken per round and its median is what we quote.
// The rate is the sink's transmit counter read from /api/ports at both ends of a window.
//
// Placement: the PMD on --pmd-cores (1), everything else, serve's other threads and this process with
// its storm, on the remaining CPUs, as an operator places a busy-polling backend (a control plane on
// the PMD's core takes its time slices, however little it does). --unpinned leaves the scheduler alone
// and shows what that costs.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { whole } from './args';
import { runScrapeTime, SCRAPE_TIME_DEFAULTS, scrapeTimeVerdict, type ScrapeTimeOptions } from './scrape-time';
import { ROOT, ServeProcess, serveUnavailable, sleep } from './serve';
import { median } from './stats';

export interface ScrapeBenchOptions {
  rounds: number;
  /** measurement window, each of quiet and storm */
  seconds: number;
  clients: number;
  slow: number;
  pmdCores: string;
  /** leave serve's other threads and the storm wherever the scheduler puts them */
  unpinned: boolean;
  resultsDir: string | null;
}

export const SCRAPE_DEFAULTS: ScrapeBenchOptions = {
  rounds: 7,
  seconds: 3,
  clients: 16,
  slow: 32,
  pmdCores: '1',
  unpinned: false,
  resultsDir: path.join(ROOT, 'bench', 'results'),
};

export interface ScrapeRound {
  quietMpps: number;
  stormMpps: number;
  ratio: number;
  /** requests the storm had answered per second */
  stormRps: number;
}

export interface ScrapeResult {
  options: Omit<ScrapeBenchOptions, 'resultsDir'>;
  rounds: ScrapeRound[];
  medianRatio: number | null;
  host: { cpus: number; loadavg: number[] };
}

interface StormOrder {
  base: string;
  clients: number;
  slow: number;
}

// The storm, in a worker thread: until told to stop, then it reports how many answers it got.
async function storm({ base, clients, slow }: StormOrder): Promise<void> {
  let stop = false;
  let answered = 0;
  parentPort!.once('message', () => (stop = true));
  const agent = new http.Agent({ keepAlive: true, maxSockets: clients });
  const held: net.Socket[] = [];
  const url = new URL(base);
  const dribble = (): void => {
    if (stop) return;
    const s = net.connect(Number(url.port), url.hostname);
    s.on('error', () => undefined);
    s.on('close', () => setTimeout(dribble, 100));
    s.write('GET /metrics HTTP/1.1\r\nHost: loc');
    held.push(s);
  };
  for (let i = 0; i < slow; i++) dribble();
  const loop = async (i: number): Promise<void> => {
    for (let n = i; !stop; n++) {
      await new Promise<void>((resolve) => {
        http
          .get(`${base}${n % 2 ? '/api/ports' : '/metrics'}`, { agent }, (res) => {
            res.resume();
            res.on('end', () => {
              answered++;
              resolve();
            });
          })
          .on('error', () => resolve());
      });
    }
  };
  await Promise.all(Array.from({ length: clients }, (_, i) => loop(i)));
  for (const s of held) s.destroy();
  agent.destroy();
  parentPort!.postMessage(answered);
}

if (!isMainThread && (workerData as { scrapeStorm?: StormOrder }).scrapeStorm)
  void storm((workerData as { scrapeStorm: StormOrder }).scrapeStorm);

/** CPUs other than the PMDs', e.g. "0" on 2 cores with the PMD on 1. */
function otherCpus(pmdCores: string): string {
  const pmd = new Set(
    pmdCores.split(',').flatMap((r) => {
      const [a, b = a] = r.split('-').map(Number);
      return Array.from({ length: b - a + 1 }, (_, i) => a + i);
    }),
  );
  const rest = os
    .cpus()
    .map((_, i) => i)
    .filter((i) => !pmd.has(i));
  if (rest.length === 0) throw new Error(`--pmd-cores ${pmdCores} leaves no CPU for the rest: use --unpinned`);
  return rest.join(',');
}

/** Every thread of pid except its PMD threads (named vw-pmd*) onto cpus. */
function pinExceptPmds(pid: number, cpus: string): void {
  for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
    if (fs.readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').startsWith('vw-pmd')) continue;
    execFileSync('taskset', ['-p', '-c', cpus, tid], { stdio: 'ignore' });
  }
}

async function sinkPackets(serve: ServeProcess): Promise<number> {
  return (await serve.ports()).find((p) => p.name === 's0')?.counters[0]?.TX_PACKETS ?? 0;
}

async function window(serve: ServeProcess, seconds: number): Promise<number> {
  const [n0, t0] = [await sinkPackets(serve), process.hrtime.bigint()];
  await sleep(seconds * 1000);
  const [n1, t1] = [await sinkPackets(serve), process.hrtime.bigint()];
  return (n1 - n0) / (Number(t1 - t0) / 1e9) / 1e6;
}

export async function runScrapeBench(o: ScrapeBenchOptions, log: (line: string) => void): Promise<ScrapeResult> {
  const missing = serveUnavailable();
  if (missing) throw new Error(missing);
  const serve = await ServeProcess.start({
    args: ['--gen', 'g0', '--sink', 's0', '--wire', 'g0=s0', '--mode', 'bypass', '--pmd-cores', o.pmdCores],
  });
  const rounds: ScrapeRound[] = [];
  try {
    if (!o.unpinned) {
      const cpus = otherCpus(o.pmdCores);
      pinExceptPmds(serve.pid, cpus);
      // This process's threads; the storm's worker, started later, inherits the main thread's placement.
      pinExceptPmds(process.pid, cpus);
      log(`serve's PMD on CPU ${o.pmdCores}; its other threads and the storm on CPU ${cpus}`);
    }
    await window(serve, 1);
    for (let r = 0; r < o.rounds; r++) {
      const measure = async (withStorm: boolean): Promise<[number, number]> => {
        if (!withStorm) return [await window(serve, o.seconds), 0];
        const w = new Worker(__filename, { workerData: { scrapeStorm: { base: serve.url, clients: o.clients, slow: o.slow } } });
        await sleep(500);
        const mpps = await window(serve, o.seconds);
        const answered = new Promise<number>((resolve) => w.once('message', resolve));
        const t0 = process.hrtime.bigint();
        w.postMessage('stop');
        const n = await answered;
        await w.terminate();
        return [mpps, n / (o.seconds + 0.5 + Number(process.hrtime.bigint() - t0) / 1e9)];
      };
      const stormFirst = r % 2 === 1;
      const first = await measure(stormFirst);
      const second = await measure(!stormFirst);
      const [quiet, stormed] = stormFirst ? [second, first] : [first, second];
      const round = { quietMpps: quiet[0], stormMpps: stormed[0], ratio: stormed[0] / quiet[0], stormRps: stormed[1] };
      rounds.push(round);
      log(
        `round ${r + 1}: quiet ${round.quietMpps.toFixed(2)} Mpps, storm ${round.stormMpps.toFixed(2)} Mpps (${Math.round(round.stormRps)} answers/s), storm/quiet ${round.ratio.toFixed(3)}`,
      );
    }
  } finally {
    await serve.stop();
  }
  const { resultsDir, ...options } = o;
  const res: ScrapeResult = {
    options,
    rounds,
    medianRatio: median(rounds.map((x) => x.ratio)),
    host: { cpus: os.cpus().length, loadavg: os.loadavg() },
  };
  if (resultsDir) {
    fs.mkdirSync(resultsDir, { recursive: true });
    const file = path.join(resultsDir, `scrape-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
    fs.writeFileSync(file, JSON.stringify(res, null, 2) + '\n');
    log(`results: ${file}`);
  }
  return res;
}

const PARTS = ['time', 'storm'] as const;
type Part = (typeof PARTS)[number];

const USAGE = `usage: npm run bench -- scrape [--parts time,storm] [--ports N] [--queues N] [--scrapes N]
                              [--rounds N] [--seconds S] [--clients N] [--slow N] [--pmd-cores LIST] [--unpinned] [--no-json]
  time:  --scrapes timed GETs of /metrics of a serve with --ports vhost-user ports x --queues queue pairs
         (defaults: ${SCRAPE_TIME_DEFAULTS.scrapes} scrapes of ${SCRAPE_TIME_DEFAULTS.ports} x ${SCRAPE_TIME_DEFAULTS.queues})
  storm: the forwarding rate with and without a storm of API clients
         (defaults: ${SCRAPE_DEFAULTS.rounds} rounds, ${SCRAPE_DEFAULTS.seconds} s windows, ${SCRAPE_DEFAULTS.clients} clients, ${SCRAPE_DEFAULTS.slow} slow connections, PMD on CPU ${SCRAPE_DEFAULTS.pmdCores})
`;

export async function scrapeBenchMain(argv: string[]): Promise<number> {
  const { parseArgs } = await import('node:util');
  const o: ScrapeBenchOptions = { ...SCRAPE_DEFAULTS };
  const t: ScrapeTimeOptions = { ...SCRAPE_TIME_DEFAULTS };
  let parts: Part[] = [...PARTS];
  try {
    const { values } = parseArgs({
      args: argv,
      options: {
        rounds: { type: 'string' },
        seconds: { type: 'string' },
        clients: { type: 'string' },
        slow: { type: 'string' },
        'pmd-cores': { type: 'string' },
        parts: { type: 'string' },
        ports: { type: 'string' },
        queues: { type: 'string' },
        scrapes: { type: 'string' },
        unpinned: { type: 'boolean' },
        'no-json': { type: 'boolean' },
        help: { type: 'boolean' },
      },
      strict: true,
    });
    if (values.help) {
      process.stdout.write(USAGE);
      return 0;
    }
    const count = (flag: string, v: string | undefined, min: number): number | undefined => {
      if (v === undefined) return undefined;
      const n = Number(v);
      if (!Number.isInteger(n) || n < min) throw new Error(`--${flag}: expected an integer >= ${min}, got "${v}"`);
      return n;
    };
    o.rounds = count('rounds', values.rounds, 1) ?? o.rounds;
    o.seconds = count('seconds', values.seconds, 1) ?? o.seconds;
    o.clients = count('clients', values.clients, 1) ?? o.clients;
    o.slow = count('slow', values.slow, 0) ?? o.slow;
    o.pmdCores = values['pmd-cores'] ?? o.pmdCores;
    if (values.unpinned) o.unpinned = true;
    if (values['no-json']) o.resultsDir = null;
    if (values.parts !== undefined)
      parts = values.parts.split(',').map((p) => {
        if (!(PARTS as readonly string[]).includes(p)) throw new Error(`--parts: expected time and/or storm, got "${p}"`);
        return p as Part;
      });
    if (values.ports !== undefined) t.ports = whole('--ports', values.ports, 1, 4096);
    if (values.queues !== undefined) t.queues = whole('--queues', values.queues, 1, 8);
    if (values.scrapes !== undefined) t.scrapes = whole('--scrapes', values.scrapes, 1, 100000);
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  if (parts.includes('time')) {
    const r = await runScrapeTime(t, console.log);
    console.log(scrapeTimeVerdict(r));
    if (o.resultsDir) {
      fs.mkdirSync(o.resultsDir, { recursive: true });
      const file = path.join(o.resultsDir, `scrape-time-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
      fs.writeFileSync(file, JSON.stringify({ ...r, host: { cpus: os.cpus().length, loadavg: os.loadavg() } }, null, 2) + '\n');
      console.log(`results: ${file}`);
    }
  }
  if (!parts.includes('storm')) return 0;
  const res = await runScrapeBench(o, console.log);
  const ratios = res.rounds.map((r) => r.ratio);
  console.log(
    `\nstorm/quiet forwarding rate: median ${res.medianRatio?.toFixed(3)} (min ${Math.min(...ratios).toFixed(3)}, max ${Math.max(...ratios).toFixed(3)}, ${ratios.length} rounds)`,
  );
  return 0;
}
