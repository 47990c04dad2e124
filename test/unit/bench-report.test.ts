// The benchmarks' reporting: the SVG bar chart (parsed back out of the text it writes) and the paired
// ratio arithmetic the tables and BELOW TARGET lines are built on. No processes.
import t from 'tap';
import { barChartSvg, escapeXml, niceStep } from '../../bench/svg';
import { formatSummary, median, ratio, summarize } from '../../bench/stats';

interface Bar {
  series: string;
  category: string;
  value: number;
  height: number;
  title: string;
}

function attr(tag: string, name: string): string {
  const m = new RegExp(`\\s${name}="([^"]*)"`).exec(tag);
  if (!m) throw new Error(`no ${name} in ${tag}`);
  return m[1];
}

const unescape = (s: string): string =>
  s
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&quot;/g, '"')
    .replace(/&apos;/g, "'")
    .replace(/&amp;/g, '&');

function bars(svg: string): Bar[] {
  return [...svg.matchAll(/<rect class="bar"([^>]*)><title>([^<]*)<\/title><\/rect>/g)].map((m) => ({
    series: unescape(attr(m[1], 'data-series')),
    category: unescape(attr(m[1], 'data-category')),
    value: Number(attr(m[1], 'data-value')),
    height: Number(attr(m[1], 'height')),
    title: unescape(m[2]),
  }));
}

const texts = (svg: string, cls: string): string[] =>
  [...svg.matchAll(new RegExp(`<text class="${cls}"[^>]*>([^<]*)</text>`, 'g'))].map((m) => unescape(m[1]));

t.test('a grouped bar chart: one bar per series and category, labels and values read back', async (tt) => {
  const svg = barChartSvg({
    title: 'guest to guest <g2g>',
    subtitle: '2026-12-06, npm run bench -- g2g',
    categories: ['64', '256', '512', '1518'],
    categoryLabel: 'frame size (bytes)',
    valueLabel: 'Mpps',
    series: [
      { name: 'vhostwire', values: [10, 8, 6, 2] },
      { name: 'testpmd io', values: [8, 7, 5, 1.5] },
      { name: 'OVS-DPDK & co', values: [7, null, 4.5, 1] },
    ],
  });
  tt.match(svg, /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
  tt.ok(svg.trimEnd().endsWith('</svg>'));
  // Every element opened is closed or self-closing: a rough well-formedness check.
  const opened = (svg.match(/<(?!\/)[a-z]+[^>]*[^/]>/g) ?? []).length;
  const closed = (svg.match(/<\/[a-z]+>/g) ?? []).length;
  tt.equal(opened, closed, 'open and close tags balance');
  const b = bars(svg);
  tt.equal(b.length, 11, '4 x 3 bars minus the missing one');
  tt.same(texts(svg, 'category'), ['64', '256', '512', '1518']);
  tt.same(texts(svg, 'legend'), ['vhostwire', 'testpmd io', 'OVS-DPDK & co']);
  tt.same(texts(svg, 'title'), ['guest to guest <g2g>']);
  tt.same(texts(svg, 'subtitle'), ['2026-12-06, npm run bench -- g2g']);
  tt.same(texts(svg, 'missing'), ['n/a']);
  tt.match(svg, /data-series="OVS-DPDK &amp; co" data-category="256" x=/, 'the gap is where the null is');
  const v = b.find((x) => x.series === 'vhostwire' && x.category === '64')!;
  tt.equal(v.value, 10);
  tt.equal(v.title, 'vhostwire, 64: 10.0 Mpps');
  // Heights are proportional to the values.
  const o = b.find((x) => x.series === 'OVS-DPDK & co' && x.category === '1518')!;
  tt.ok(Math.abs(v.height / o.height - 10) < 0.2, `height ratio ${v.height / o.height}`);
  const series = b.filter((x) => x.category === '512').map((x) => x.series);
  tt.same(series, ['vhostwire', 'testpmd io', 'OVS-DPDK & co'], 'series in the same order in each group');
  tt.same(texts(svg, 'value').slice(0, 3), ['10.0', '8.00', '7.00']);
});

t.test('a chart without figures still draws its axes; a series of the wrong length is refused', async (tt) => {
  const svg = barChartSvg({
    title: 'x',
    categories: ['64'],
    categoryLabel: 'c',
    valueLabel: 'Mpps',
    series: [{ name: 'a', values: [null] }],
  });
  tt.equal(bars(svg).length, 0);
  tt.ok(texts(svg, 'tick').length >= 2);
  tt.throws(
    () => barChartSvg({ title: 'x', categories: ['64', '128'], categoryLabel: 'c', valueLabel: 'v', series: [{ name: 'a', values: [1] }] }),
    /1 values for 2 categories/,
  );
});

t.test('ticks step by 1, 2 or 5 times a power of ten', async (tt) => {
  tt.equal(niceStep(10), 2);
  tt.equal(niceStep(23), 5);
  tt.equal(niceStep(0.9), 0.2);
  tt.equal(niceStep(0), 1);
  tt.equal(escapeXml(`a<b>&"c'`), 'a&lt;b&gt;&amp;&quot;c&apos;');
});

t.test('median, per-round ratios and their summary', async (tt) => {
  tt.equal(median([]), null);
  tt.equal(median([3]), 3);
  tt.equal(median([5, 1, 3]), 3);
  tt.equal(median([4, 1, 3, 2]), 2.5);
  tt.equal(ratio(6, 3), 2);
  tt.equal(ratio(null, 3), null);
  tt.equal(ratio(3, 0), null, 'a dead reference gives no ratio, not Infinity');
  tt.equal(ratio(3, undefined), null);
  const s = summarize([1.2, null, 0.9, 1.5, 1.1]);
  tt.same(s, { median: 1.15, min: 0.9, max: 1.5, n: 4 });
  tt.equal(formatSummary(s), '1.15 (0.90..1.50)');
  tt.same(summarize([null]), { median: null, min: null, max: null, n: 0 });
  tt.equal(formatSummary(summarize([])), '-');
});
