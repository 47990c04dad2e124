// `npm run bench -- hostile`: what one hostile guest costs the others on its PMD. A victim pair (g0, g1,
// wired to each other) measures its round-trip time while a hostile port h on the same PMD runs one of
// the amplification attacks of test/addon/budget.test.ts, against the same pair beside an idle h. Rounds
// alternate (baseline first on even rounds) and the ratio attack/baseline is taken per round, for the
// median and the 99th percentile of the round trips.
//
// The data path runs in-process (the addon's engine, bypass mode: a busy-polling PMD pinned to a core) and
// the front ends are the project's own (the vhostwire_frontend addon), so the victims' round trips are
// polled from JavaScript without a timer in between: a round trip is send, then receive in a tight loop.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { native, queueCounter, type NativeEngine } from '../src/native';
import { frontend, type NativeVirtioUser, type VirtioUserOptions } from '../src/harness/frontend-native';
import { median, summarize, formatSummary, type RatioSummary } from './stats';
import { whole } from './args';

const TX = 1; // a guest's transmit vring
const RX = 0; // a guest's receive vring
const DESC_F_NEXT = 1;
const DESC_F_WRITE = 2;

export type Attack = 'rx-tail' | 'tx-chains';

export interface HostileBenchOptions {
  sizes: number[];
  attacks: Attack[];
  rounds: number;
  trips: number;
  pmdCore: number;
  resultsDir: string | null;
}

export const HOSTILE_DEFAULTS: HostileBenchOptions = {
  sizes: [256, 1024, 32768],
  attacks: ['rx-tail', 'tx-chains'],
  rounds: 5,
  trips: 2000,
  pmdCore: 1,
  resultsDir: path.join(__dirname, '..', '..', 'bench', 'results'),
};

interface Trips {
  p50: number;
  p99: number;
  max: number;
  lost: number;
}

interface CaseResult {
  attack: Attack;
  size: number;
  baseline: Trips[];
  attacked: Trips[];
  p50: RatioSummary;
  p99: RatioSummary;
  /** The hostile port's longest burst (descriptors) and the PMD's longest step (us), after the case. */
  longestBurst: number;
  longestStepUs: number;
  budgetCuts: number;
}

function frame(len: number, seq: number): Buffer {
  const f = Buffer.alloc(len);
  Buffer.from([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00]).copy(f);
  f.writeUInt32BE(seq, 14);
  return f;
}

function percentile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

class Rig {
  readonly dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostwire-bench-hostile-'));
  readonly engine: NativeEngine;
  readonly peers: NativeVirtioUser[] = [];
  g0!: NativeVirtioUser;
  g1!: NativeVirtioUser;
  h!: NativeVirtioUser;

  constructor(pmdCore: number) {
    this.engine = new native.Engine({ pmdCores: [pmdCore], mode: 'bypass', onEvent: () => {} });
  }

  private vhost(name: string): string {
    const p = path.join(this.dir, `${name}.sock`);
    this.engine.addPort('vhost-user', name, { path: p, client: false, queues: 1 });
    return p;
  }

  private peer(opts: VirtioUserOptions): NativeVirtioUser {
    const vu = new (frontend().VirtioUser)({ timeoutMs: 5000, ...opts });
    this.peers.push(vu);
    return vu;
  }

  async start(qsize: number): Promise<void> {
    const g0p = this.vhost('g0');
    const g1p = this.vhost('g1');
    this.engine.wire('g0', 'g1');
    const hp = this.vhost('h');
    this.g0 = this.peer({ path: g0p });
    this.g1 = this.peer({ path: g1p });
    this.h = this.peer({ path: hp, queueSize: qsize, mrgRxbuf: true, rxBufSize: 128, memSize: 96 << 20 });
    const deadline = Date.now() + 10_000;
    for (const n of ['g0', 'g1', 'h']) {
      for (;;) {
        const p = this.engine.ports().find((x) => x.name === n) as
          { connected?: boolean; vrings?: Array<{ started: boolean; enabled: boolean }> } | undefined;
        if (p?.connected && p.vrings?.every((v) => v.started && v.enabled)) break;
        if (Date.now() > deadline) throw new Error(`port ${n} did not connect within 10 s`);
        await new Promise((r) => setTimeout(r, 10));
      }
    }
  }

  queueCounter(port: string, id: string): number {
    return Number(queueCounter(this.engine, port, id));
  }

  pmdCounter(id: string): number {
    const idx = native.pmdCounters.findIndex((c) => c.id === id);
    const l = this.engine.counterLayout();
    return Number(this.engine.counters()[l.pmdBase + idx]);
  }

  close(): void {
    for (const p of this.peers) p.close();
    this.engine.close();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/** n round trips g0 -> g1 -> g0 of 64-byte frames, each timed from send to the reply's arrival. */
function roundTrips(r: Rig, n: number, between: () => void): Trips {
  const us: number[] = [];
  let lost = 0;
  for (let i = 0; i < n; i++) {
    between();
    const t0 = process.hrtime.bigint();
    const deadline = t0 + 100_000_000n;
    r.g0.send(0, frame(64, i));
    let ok = false;
    while (process.hrtime.bigint() < deadline) {
      if (r.g1.receive(0, 1).length) {
        r.g1.send(0, frame(64, i));
        ok = true;
        break;
      }
    }
    if (ok) {
      ok = false;
      while (process.hrtime.bigint() < deadline) {
        if (r.g0.receive(0, 1).length) {
          ok = true;
          break;
        }
      }
    }
    if (!ok) {
      lost++;
      continue;
    }
    us.push(Number(process.hrtime.bigint() - t0) / 1000);
  }
  us.sort((a, b) => a - b);
  return { p50: percentile(us, 0.5), p99: percentile(us, 0.99), max: us[us.length - 1], lost };
}

/** Arms the attack; returns what to do before each round trip to keep it going, and how to stop it. */
function arm(r: Rig, attack: Attack, qsize: number): { between: () => void; stop: () => void } {
  const { h, engine } = r;
  if (attack === 'rx-tail') {
    // Receive buffers of zero-length descriptors leading to one shared writable byte: nothing fits, so
    // every burst toward h walks descriptors until the burst budget, and the generator never stops.
    const tail = h.alloc(1);
    for (let i = 0; i < qsize; i++)
      h.rawDesc(
        RX,
        i,
        i < qsize - 1
          ? { addr: tail, len: 0, flags: DESC_F_WRITE | DESC_F_NEXT, next: i + 1 }
          : { addr: tail, len: 1, flags: DESC_F_WRITE, next: 0 },
      );
    engine.addPort('gen', 'gen', { size: 64, rate: 1_000_000, count: 0 });
    engine.wire('h', 'gen');
    return {
      between: () => {},
      stop: () => {
        engine.unwire('h');
        engine.removePort('gen');
      },
    };
  }
  // Transmit chains of 300 one-byte descriptors (over the chain budget: each is cut and dropped),
  // posted again as soon as they come back, just before each of the victims' round trips.
  engine.addPort('sink', 'sink', {});
  engine.wire('h', 'sink');
  const len = Math.min(300, qsize);
  const chains = Math.floor(qsize / len);
  const byte = h.alloc(1);
  for (let c = 0; c < chains; c++)
    for (let k = 0; k < len; k++) {
      const i = c * len + k;
      h.rawDesc(TX, i, { addr: byte, len: 1, flags: k < len - 1 ? DESC_F_NEXT : 0, next: i + 1 });
    }
  let posted = 0;
  return {
    between: () => {
      if (h.rawUsedIdx(TX) !== (posted & 0xffff)) return;
      for (let c = 0; c < chains; c++) h.rawAvailPush(TX, c * len);
      posted += chains;
      h.kick(TX);
    },
    stop: () => {
      engine.unwire('h');
      engine.removePort('sink');
    },
  };
}

export async function runHostileBench(o: HostileBenchOptions, log: (s: string) => void): Promise<CaseResult[]> {
  const out: CaseResult[] = [];
  for (const attack of o.attacks)
    for (const size of o.sizes) {
      const baseline: Trips[] = [];
      const attacked: Trips[] = [];
      let longestBurst = 0,
        longestStepUs = 0,
        budgetCuts = 0;
      for (let round = 0; round < o.rounds; round++) {
        // A fresh rig per side, so the attack's rings and counters start from nothing each time.
        for (const side of round % 2 ? ['attacked', 'baseline'] : ['baseline', 'attacked']) {
          const r = new Rig(o.pmdCore);
          try {
            await r.start(size);
            roundTrips(r, 200, () => {}); // warm-up
            if (side === 'baseline') baseline.push(roundTrips(r, o.trips, () => {}));
            else {
              const a = arm(r, attack, size);
              await new Promise((res) => setTimeout(res, 200));
              attacked.push(roundTrips(r, o.trips, a.between));
              longestBurst = Math.max(longestBurst, r.queueCounter('h', 'LONGEST_BURST_DESCRIPTORS'));
              budgetCuts += r.queueCounter('h', 'BUDGET_CUTS_BURST') + r.queueCounter('h', 'BUDGET_CUTS_CHAIN');
              longestStepUs = Math.max(longestStepUs, r.pmdCounter('LONGEST_STEP_NS') / 1000);
            }
          } finally {
            r.close();
          }
        }
      }
      const c: CaseResult = {
        attack,
        size,
        baseline,
        attacked,
        p50: summarize(attacked.map((a, i) => a.p50 / baseline[i].p50)),
        p99: summarize(attacked.map((a, i) => a.p99 / baseline[i].p99)),
        longestBurst,
        longestStepUs,
        budgetCuts,
      };
      log(
        `${attack} ${size}: victim round trip p50 ${median(baseline.map((b) => b.p50))?.toFixed(1)} -> ${median(attacked.map((a) => a.p50))?.toFixed(1)} us, ` +
          `p99 ${median(baseline.map((b) => b.p99))?.toFixed(1)} -> ${median(attacked.map((a) => a.p99))?.toFixed(1)} us; ` +
          `hostile longest burst ${longestBurst} descriptors, PMD longest step ${longestStepUs.toFixed(1)} us`,
      );
      out.push(c);
    }
  return out;
}

export function formatHostileTable(res: CaseResult[]): string {
  const rows = [
    [
      'attack',
      'queue',
      'p50 base us',
      'p50 hostile us',
      'p50 ratio',
      'p99 base us',
      'p99 hostile us',
      'p99 ratio',
      'max hostile us',
      'lost',
      'longest burst',
      'longest step us',
    ],
  ];
  for (const c of res)
    rows.push([
      c.attack,
      String(c.size),
      median(c.baseline.map((b) => b.p50))!.toFixed(1),
      median(c.attacked.map((b) => b.p50))!.toFixed(1),
      formatSummary(c.p50),
      median(c.baseline.map((b) => b.p99))!.toFixed(1),
      median(c.attacked.map((b) => b.p99))!.toFixed(1),
      formatSummary(c.p99),
      Math.max(...c.attacked.map((a) => a.max)).toFixed(0),
      String(c.attacked.reduce((s, a) => s + a.lost, 0) + c.baseline.reduce((s, a) => s + a.lost, 0)),
      String(c.longestBurst),
      c.longestStepUs.toFixed(1),
    ]);
  const w = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows.map((r) => r.map((x, i) => x.padEnd(w[i])).join('  ')).join('\n');
}

export async function hostileBenchMain(argv: string[]): Promise<number> {
  const { parseArgs } = await import('node:util');
  const usage = `usage: npm run bench -- hostile [--sizes 256,1024,32768] [--attacks rx-tail,tx-chains] [--rounds N] [--trips N] [--pmd-core N] [--no-json]\n`;
  let o: HostileBenchOptions;
  try {
    const { values } = parseArgs({
      args: argv,
      options: {
        sizes: { type: 'string' },
        attacks: { type: 'string' },
        rounds: { type: 'string' },
        trips: { type: 'string' },
        'pmd-core': { type: 'string' },
        'no-json': { type: 'boolean' },
        help: { type: 'boolean' },
      },
      strict: true,
    });
    if (values.help) {
      process.stdout.write(usage);
      return 0;
    }
    o = { ...HOSTILE_DEFAULTS };
    if (values.sizes !== undefined)
      o.sizes = values.sizes.split(',').map((s) => {
        const n = whole('--sizes', s, 64, 32768);
        if (n & (n - 1)) throw new Error(`--sizes: a queue size is a power of two, got ${n}`);
        return n;
      });
    if (values.attacks !== undefined)
      o.attacks = values.attacks.split(',').map((a) => {
        if (a !== 'rx-tail' && a !== 'tx-chains') throw new Error(`--attacks: expected rx-tail and/or tx-chains, got "${a}"`);
        return a;
      });
    if (values.rounds !== undefined) o.rounds = whole('--rounds', values.rounds, 1, 1000);
    if (values.trips !== undefined) o.trips = whole('--trips', values.trips, 10, 1_000_000);
    if (values['pmd-core'] !== undefined) o.pmdCore = whole('--pmd-core', values['pmd-core'], -1, os.cpus().length - 1);
    if (values['no-json']) o.resultsDir = null;
  } catch (e) {
    process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n${usage}`);
    return 2;
  }
  const startedAt = new Date().toISOString();
  const res = await runHostileBench(o, console.log);
  console.log('');
  console.log(formatHostileTable(res));
  if (o.resultsDir) {
    fs.mkdirSync(o.resultsDir, { recursive: true });
    const file = path.join(o.resultsDir, `hostile-${startedAt.replace(/[:.]/g, '-')}.json`);
    fs.writeFileSync(file, `${JSON.stringify({ startedAt, options: o, load: os.loadavg(), cases: res }, null, 2)}\n`);
    console.log(`\nresults: ${file}`);
  }
  return 0;
}
