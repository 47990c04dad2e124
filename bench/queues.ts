// `npm run bench -- queues`: how the guest-to-guest wire scales with queue pairs and PMD threads. The g2g
// setup (bench/g2g.ts: one testpmd holding two virtio-user ports in mac-forward mode with tx_first), its
// ports given 1, 2, 4 and 8 queue pairs, our wire served by one PMD thread and by two (its queue pairs then
// spread over both), with DPDK testpmd's io forward between two vhost PMD ports with as many queues
// beside it. Rounds alternate the three, and the ratios are taken round by round.
//
// The front end forwards every queue on one core; on a 2-core machine a second PMD thread shares a core
// with it, so the run says what two PMDs cost or gain there, not how far they scale on more cores.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { benchFlags, whole } from './args';
import { G2G_DEFAULTS, runG2g, type G2gOptions } from './g2g';
import { median, summarize, type RatioSummary } from './stats';
import { barChartSvg } from './svg';

type Variant = 'ours-1pmd' | 'ours-2pmd' | 'dpdk';
const VARIANTS: Variant[] = ['ours-1pmd', 'ours-2pmd', 'dpdk'];

export interface QueuesOptions {
  rounds: number;
  queues: number[];
  size: number;
  seconds: number;
  warmupSeconds: number;
  /** PMD cores of the two-PMD variant */
  twoPmdCores: string;
  resultsDir: string | null;
  verbose: boolean;
}

export const QUEUES_DEFAULTS: QueuesOptions = {
  rounds: 3,
  queues: [1, 2, 4, 8],
  size: 64,
  seconds: 3,
  warmupSeconds: 1,
  twoPmdCores: '0,1',
  resultsDir: path.join(__dirname, '..', '..', 'bench', 'results'),
  verbose: false,
};

interface QueuesCase {
  queues: number;
  mpps: Record<Variant, number | null>;
  /** two PMD threads against one, and each against DPDK, medians of per-round ratios */
  twoVsOne: RatioSummary;
  oneVsDpdk: RatioSummary;
  twoVsDpdk: RatioSummary;
}

async function one(o: QueuesOptions, v: Variant, queues: number, log: (s: string) => void): Promise<number | null> {
  const g: G2gOptions = {
    ...G2G_DEFAULTS,
    rounds: 1,
    sizes: [o.size],
    seconds: o.seconds,
    warmupSeconds: o.warmupSeconds,
    switches: [v === 'dpdk' ? 'dpdk' : 'ours'],
    resultsDir: null,
    verbose: o.verbose,
    queues,
    pmdCores: v === 'ours-2pmd' ? o.twoPmdCores : '1',
  };
  const r = await runG2g(g, o.verbose ? log : () => {});
  const s = r.samples[0];
  if (!s || s.mpps === null) {
    const why = s?.error ?? Object.values(r.skipped)[0] ?? 'no sample';
    log(`  ${v} with ${queues} queue pairs failed: ${why}`);
    return null;
  }
  return s.mpps;
}

export async function runQueues(o: QueuesOptions, log: (s: string) => void): Promise<QueuesCase[]> {
  const got = new Map<string, Array<number | null>>();
  const key = (v: Variant, q: number): string => `${v}/${q}`;
  for (let round = 0; round < o.rounds; round++)
    for (const q of o.queues) {
      const order = VARIANTS.map((_, i) => VARIANTS[(i + round) % VARIANTS.length]);
      const line: string[] = [];
      for (const v of order) {
        const mpps = await one(o, v, q, log);
        got.set(key(v, q), [...(got.get(key(v, q)) ?? []), mpps]);
        line.push(`${v} ${mpps === null ? 'failed' : mpps.toFixed(2)}`);
      }
      log(`round ${round + 1}, ${q} queue pairs: ${line.join(', ')} Mpps`);
    }
  return o.queues.map((q) => {
    const of = (v: Variant): Array<number | null> => got.get(key(v, q)) ?? [];
    const ratio = (a: Variant, b: Variant): RatioSummary =>
      summarize(of(a).map((x, r) => (x !== null && of(b)[r] != null && of(b)[r]! > 0 ? x / of(b)[r]! : null)));
    const med = (v: Variant): number | null => median(of(v).filter((x): x is number => x !== null));
    return {
      queues: q,
      mpps: { 'ours-1pmd': med('ours-1pmd'), 'ours-2pmd': med('ours-2pmd'), dpdk: med('dpdk') },
      twoVsOne: ratio('ours-2pmd', 'ours-1pmd'),
      oneVsDpdk: ratio('ours-1pmd', 'dpdk'),
      twoVsDpdk: ratio('ours-2pmd', 'dpdk'),
    };
  });
}

const fmt = (x: number | null | undefined, d = 2): string => (x === null || x === undefined ? '-' : x.toFixed(d));

export function formatQueues(cases: QueuesCase[]): string {
  const rows = [['queue pairs', 'ours 1 PMD', 'ours 2 PMDs', 'dpdk io', '2 PMDs / 1', '1 PMD / dpdk', '2 PMDs / dpdk']];
  for (const c of cases)
    rows.push([
      String(c.queues),
      fmt(c.mpps['ours-1pmd']),
      fmt(c.mpps['ours-2pmd']),
      fmt(c.mpps.dpdk),
      fmt(c.twoVsOne.median),
      fmt(c.oneVsDpdk.median),
      fmt(c.twoVsDpdk.median),
    ]);
  const w = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows.map((r) => r.map((x, i) => x.padStart(w[i])).join('  ')).join('\n');
}

const USAGE = `usage: npm run bench -- queues [--queues 1,2,4,8] [--rounds N] [--size BYTES] [--seconds S] [--warmup S]
                               [--two-pmd-cores 0,1] [--no-json] [--verbose]
  Guest to guest (the g2g setup) with N queue pairs per port: our wire on one PMD thread (CPU 1) and on
  two (its queue pairs spread), and DPDK testpmd's io forward, Mpps and ratios per queue count.
`;

export async function queuesBenchMain(argv: string[]): Promise<number> {
  const o: QueuesOptions = { ...QUEUES_DEFAULTS };
  try {
    const flags = benchFlags(argv, ['queues', 'rounds', 'size', 'seconds', 'warmup', 'two-pmd-cores'] as const, USAGE);
    if (!flags) return 0;
    const { values } = flags;
    if (values.queues !== undefined) o.queues = values.queues.split(',').map((s) => whole('--queues', s, 1, 8));
    if (values.rounds !== undefined) o.rounds = whole('--rounds', values.rounds, 1, 100);
    if (values.size !== undefined) o.size = whole('--size', values.size, 60, 1518);
    if (values.seconds !== undefined) o.seconds = whole('--seconds', values.seconds, 1, 600);
    if (values.warmup !== undefined) o.warmupSeconds = whole('--warmup', values.warmup, 0, 600);
    if (values['two-pmd-cores'] !== undefined) {
      if (!/^\d+,\d+$/.test(values['two-pmd-cores']))
        throw new Error(`--two-pmd-cores: expected two CPUs such as 0,1, got "${values['two-pmd-cores']}"`);
      o.twoPmdCores = values['two-pmd-cores'];
    }
    if (flags.noJson) o.resultsDir = null;
    if (flags.verbose) o.verbose = true;
  } catch (e) {
    process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n${USAGE}`);
    return 2;
  }
  console.log(
    `queues benchmark: ${o.rounds} rounds x ${o.seconds} s (+${o.warmupSeconds} s), ${o.size}-byte frames, queue pairs ${o.queues.join(',')}; ` +
      `front end forwards on CPU 0; ours on CPU 1 or on ${o.twoPmdCores}; DPDK forwards on CPU 1 (${os.cpus().length} CPUs)`,
  );
  const startedAt = new Date().toISOString();
  const cases = await runQueues(o, console.log);
  console.log('');
  console.log(formatQueues(cases));
  if (o.resultsDir) {
    fs.mkdirSync(o.resultsDir, { recursive: true });
    const stamp = startedAt.replace(/[:.]/g, '-');
    const json = path.join(o.resultsDir, `queues-${stamp}.json`);
    fs.writeFileSync(
      json,
      `${JSON.stringify({ options: o, startedAt, host: { cpus: os.cpus().length, loadavg: os.loadavg() }, cases }, null, 2)}\n`,
    );
    const svg = path.join(o.resultsDir, `queues-${stamp}.svg`);
    fs.writeFileSync(
      svg,
      barChartSvg({
        title: 'Guest to guest by queue pairs: vhostwire wire on 1 and 2 PMD threads vs DPDK testpmd io',
        subtitle: `${startedAt.slice(0, 16)} UTC, npm run bench -- queues ${argv.join(' ')}, median of ${o.rounds} rounds, ${o.size} B`,
        categories: cases.map((c) => `${c.queues} queue pair${c.queues > 1 ? 's' : ''}`),
        categoryLabel: 'queue pairs per port',
        valueLabel: 'Mpps',
        series: VARIANTS.map((v) => ({ name: v, values: cases.map((c) => c.mpps[v]) })),
      }),
    );
    console.log(`\nresults: ${json}, ${svg}`);
  }
  return 0;
}
