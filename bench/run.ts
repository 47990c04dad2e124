// Benchmark entry point: `npm run bench -- vhost [--rounds N] [--seconds S] [--sizes 64,1518] ...`,
// `npm run bench -- g2g` (guest to guest against DPDK testpmd and OVS-DPDK, bench/g2g.ts),
// `npm run bench -- vm` (guest to guest through QEMU VMs, bench/vm.ts) and `npm run bench -- scrape`
// (the data path's rate with and without a storm of API clients, bench/scrape.ts) and `npm run bench --
// hostile` (a victim pair's round trip beside a hostile guest on the same PMD, bench/hostile.ts) and
// `npm run bench -- uplink` (our uplink against DPDK's af_packet and af_xdp PMDs, bench/uplink.ts) and
// `npm run bench -- queues` (guest to guest by queue pairs, on one and two PMD threads, bench/queues.ts)
// `npm run bench -- tcp` (an iperf3 stream between two namespaces through our uplinks, a Linux bridge and
// OVS-DPDK, offloads on and off, bench/tcp.ts)
// (package.json: "bench": "node dist/bench/run.js"). See bench/README.md.
import { parseArgs } from 'node:util';
import { DEFAULTS, formatTable, runVhostBench, verdicts, writeResult, type Direction, type VhostBenchOptions } from './vhost';

const USAGE = `usage: npm run bench -- vhost [options]
       npm run bench -- g2g [--help]
       npm run bench -- vm [--help]
       npm run bench -- scrape [--help]
       npm run bench -- hostile [--help]
       npm run bench -- ports [--help]
       npm run bench -- bridge [--help]
       npm run bench -- uplink [--help]
       npm run bench -- queues [--help]
       npm run bench -- tcp [--help]

  --rounds N          rounds per case; implementations alternate within each round (default ${DEFAULTS.rounds})
  --seconds S         measurement window per run (default ${DEFAULTS.seconds})
  --warmup S          settling time before the window (default ${DEFAULTS.warmupSeconds})
  --sizes LIST        frame sizes in bytes (default ${DEFAULTS.sizes.join(',')})
  --directions LIST   guest-tx,guest-rx (default both)
  --dpdk-only         measure DPDK's vhost PMD only (ours is skipped)
  --pmd-cores LIST    our PMD placement (default ${DEFAULTS.pmdCores})
  --no-json           do not write bench/results/vhost-<timestamp>.json
  --verbose           show every process's output
`;

class UsageError extends Error {}

function positiveNumber(flag: string, v: string, integer: boolean): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0 || (integer && !Number.isInteger(n)))
    throw new UsageError(`${flag}: expected a positive ${integer ? 'integer' : 'number'}, got "${v}"`);
  return n;
}

export function parseVhostArgs(argv: string[]): VhostBenchOptions {
  const { values } = parseArgs({
    args: argv,
    options: {
      rounds: { type: 'string' },
      seconds: { type: 'string' },
      warmup: { type: 'string' },
      sizes: { type: 'string' },
      directions: { type: 'string' },
      'dpdk-only': { type: 'boolean' },
      'pmd-cores': { type: 'string' },
      'no-json': { type: 'boolean' },
      verbose: { type: 'boolean' },
    },
    strict: true,
  });
  const o: VhostBenchOptions = { ...DEFAULTS };
  if (values.rounds !== undefined) o.rounds = positiveNumber('--rounds', values.rounds, true);
  if (values.seconds !== undefined) o.seconds = positiveNumber('--seconds', values.seconds, false);
  if (values.warmup !== undefined) o.warmupSeconds = Number(values.warmup) === 0 ? 0 : positiveNumber('--warmup', values.warmup, false);
  if (values.sizes !== undefined) {
    o.sizes = values.sizes.split(',').map((s) => {
      const n = positiveNumber('--sizes', s, true);
      // testpmd's --txpkts: one segment, within the default 2048-byte mbuf (minus headroom).
      if (n < 60 || n > 1518) throw new UsageError(`--sizes: ${n} is outside 60..1518`);
      return n;
    });
  }
  if (values.directions !== undefined) {
    o.directions = values.directions.split(',').map((d) => {
      if (d !== 'guest-tx' && d !== 'guest-rx') throw new UsageError(`--directions: expected guest-tx and/or guest-rx, got "${d}"`);
      return d as Direction;
    });
  }
  if (values['dpdk-only']) o.dpdkOnly = true;
  if (values['pmd-cores'] !== undefined) o.pmdCores = values['pmd-cores'];
  if (values['no-json']) o.resultsDir = null;
  if (values.verbose) o.verbose = true;
  return o;
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '-h' || name === '--help') {
    process.stdout.write(USAGE);
    return name === undefined ? 2 : 0;
  }
  if (name === 'vm') return (await import('./vm')).vmBenchMain(rest);
  if (name === 'scrape') return (await import('./scrape')).scrapeBenchMain(rest);
  if (name === 'g2g') return (await import('./g2g')).g2gBenchMain(rest);
  if (name === 'hostile') return (await import('./hostile')).hostileBenchMain(rest);
  if (name === 'ports') return (await import('./ports')).portsBenchMain(rest);
  if (name === 'bridge')
    return rest.includes('--engine')
      ? (await import('./bridge')).bridgeBenchMain(rest.filter((x) => x !== '--engine'))
      : (await import('./g2g')).bridgeG2gMain(rest);
  if (name === 'uplink') return (await import('./uplink')).uplinkBenchMain(rest, () => interrupted);
  if (name === 'queues') return (await import('./queues')).queuesBenchMain(rest);
  if (name === 'tcp') return (await import('./tcp')).tcpBenchMain(rest, () => interrupted);
  if (name !== 'vhost') {
    process.stderr.write(
      `unknown benchmark "${name}" (available: vhost, g2g, vm, scrape, hostile, ports, bridge, uplink, queues, tcp)\n${USAGE}`,
    );
    return 2;
  }
  let opts: VhostBenchOptions;
  try {
    opts = parseVhostArgs(rest);
  } catch (e) {
    process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n${USAGE}`);
    return 2;
  }
  const res = await runVhostBench(opts, console.log, () => interrupted);
  console.log('');
  console.log(formatTable(res));
  console.log('');
  if (!res.ours.ran) console.log(`ours did not run: ${res.ours.reason}`);
  for (const v of verdicts(res)) console.log(v);
  if (opts.resultsDir)
    console.log(`\nresults: ${writeResult(res, opts.resultsDir, ['npm run bench --', 'vhost', ...rest].join(' ')).join(', ')}`);
  return interrupted ? 130 : 0;
}

// Ctrl-C reaches the whole process group, so the testpmd and serve children quit by themselves; we stop
// after the current run, clean up (runtime dirs, sockets) and print what we have. Twice: exit now.
let interrupted = false;
process.on('SIGINT', () => {
  if (interrupted) process.exit(130);
  interrupted = true;
  console.error('\ninterrupted: cleaning up after the current run (Ctrl-C again to exit now)');
});

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: unknown) => {
    console.error(e instanceof Error ? e.message : String(e));
    process.exit(1);
  },
);
