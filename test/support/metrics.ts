// Reading /metrics the way a scraper does, and the family table of docs/metrics.md, for the tests that
// hold the two against each other (test/cli/metrics.test.ts) and against Prometheus and the dashboard.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Registry } from 'prom-client';
import { ROOT } from './helpers';

export interface DocumentedFamily {
  name: string;
  type: string;
  labels: string[];
}

/** The rows of docs/metrics.md's tables: | `name` | type | labels | meaning |. */
export function documentedFamilies(): DocumentedFamily[] {
  const text = fs.readFileSync(path.join(ROOT, 'docs', 'metrics.md'), 'utf8');
  const rows: DocumentedFamily[] = [];
  for (const m of text.matchAll(/^\| `(vhostwire_[a-z0-9_]+)` \| (counter|gauge|histogram|summary) \| *([a-z_, ]*?) *\|/gm)) {
    rows.push({
      name: m[1],
      type: m[2],
      labels: m[3]
        .split(',')
        .map((l) => l.trim())
        .filter((l) => l !== ''),
    });
  }
  return rows;
}

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface Scrape {
  /** family name -> type, from the # TYPE lines */
  types: Map<string, string>;
  samples: Sample[];
}

/**
 * Parses the text format after promtool (Prometheus's own parser and linter) has accepted it: promtool
 * fails the test on anything a real Prometheus would reject or warn about, this only splits the lines.
 */
export function parseScrape(text: string): Scrape {
  execFileSync('promtool', ['check', 'metrics'], { input: text, stdio: ['pipe', 'pipe', 'pipe'] });
  const types = new Map<string, string>();
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    const type = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (type) types.set(type[1], type[2]);
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    samples.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return { types, samples };
}

/** The sum of the samples of one family whose labels include `match`. */
export function total(s: Scrape, name: string, match: Record<string, string> = {}): number {
  let n = 0;
  for (const x of s.samples) if (x.name === name && Object.entries(match).every(([k, v]) => x.labels[k] === v)) n += x.value;
  return n;
}

/**
 * A registry's /metrics text and the text prom-client's own Registry.metrics() writes for the same
 * registry, both started in one synchronous pass so that they read one snapshot of the counter block.
 */
export async function ownAndPromClientText(registry: Registry): Promise<[string, string]> {
  return Promise.all([registry.metrics(), Registry.prototype.metrics.call(registry)]);
}
