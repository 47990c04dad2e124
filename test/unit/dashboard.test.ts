// docs/grafana-dashboard.json parses, and every metric its queries use is a family we export: one that
// docs/metrics.md lists, which test/cli/metrics.test.ts holds against a real scrape.
import t from 'tap';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ROOT } from '../support/helpers';
import { documentedFamilies } from '../support/metrics';

interface Panel {
  title: string;
  targets?: Array<{ expr: string }>;
}

t.test('the Grafana dashboard uses only exported metric names', async (t) => {
  const dashboard = JSON.parse(fs.readFileSync(path.join(ROOT, 'docs', 'grafana-dashboard.json'), 'utf8')) as { panels: Panel[] };
  const exported = new Set(documentedFamilies().map((f) => f.name));
  const titles = dashboard.panels.map((p) => p.title);
  for (const want of ['Throughput', 'Drops', 'PMD load', 'kernel'])
    t.ok(
      titles.some((x) => x.includes(want)),
      `a panel on ${want}`,
    );
  let used = 0;
  for (const p of dashboard.panels)
    for (const { expr } of p.targets ?? [])
      for (const [name] of expr.matchAll(/vhostwire_[a-z0-9_]+/g)) {
        used++;
        t.ok(exported.has(name), `${p.title}: ${name} is exported`);
      }
  t.ok(used >= 8, `the queries name our metrics (${used})`);
});
