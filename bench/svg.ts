// A grouped bar chart as a standalone SVG document: one group per category (frame size), one bar per
// series (switch or implementation) in each group. Written by hand so the benchmarks need no charting
// dependency; every bar carries data-* attributes and a <title>, so a test (or a reader's browser
// tooltip) can get the figures back out of the file.

export interface BarSeries {
  name: string;
  /** one value per category; null: no figure (drawn as a gap, labelled "n/a") */
  values: Array<number | null>;
}

export interface BarChart {
  title: string;
  /** second line under the title: date, command, host */
  subtitle?: string;
  categories: string[];
  /** x axis caption, e.g. "frame size (bytes)" */
  categoryLabel: string;
  /** y axis caption, e.g. "Mpps" */
  valueLabel: string;
  series: BarSeries[];
}

const PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f'];

export function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&apos;');
}

/** A tick step of 1, 2 or 5 times a power of ten giving about `target` intervals up to max. */
export function niceStep(max: number, target = 5): number {
  if (!(max > 0)) return 1;
  const raw = max / target;
  const p = 10 ** Math.floor(Math.log10(raw));
  const m = raw / p;
  return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
}

/** Figures as the bars' labels show them: 3 significant digits, at most 2 decimals. */
export function formatValue(v: number): string {
  if (v >= 100) return v.toFixed(0);
  if (v >= 10) return v.toFixed(1);
  return v.toFixed(2);
}

const n = (x: number): string => String(Math.round(x * 10) / 10);

export function barChartSvg(c: BarChart): string {
  for (const s of c.series)
    if (s.values.length !== c.categories.length)
      throw new Error(`series "${s.name}" has ${s.values.length} values for ${c.categories.length} categories`);
  const barW = 26;
  const barGap = 4;
  const groupGap = 28;
  const groupW = Math.max(1, c.series.length) * (barW + barGap) - barGap;
  const left = 64;
  const right = 20;
  const top = c.subtitle ? 64 : 44;
  const plotH = 260;
  const legendH = 22 * Math.ceil(c.series.length / 4);
  const bottom = 48 + legendH;
  const plotW = Math.max(320, c.categories.length * (groupW + groupGap) + groupGap);
  const width = left + plotW + right;
  const height = top + plotH + bottom;
  const values = c.series.flatMap((s) => s.values.filter((v): v is number => v !== null && Number.isFinite(v)));
  const step = niceStep(Math.max(0, ...values));
  const yMax = Math.max(step, Math.ceil(Math.max(0, ...values) / step) * step);
  const y = (v: number): number => top + plotH - (v / yMax) * plotH;
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
  );
  out.push(`<rect x="0" y="0" width="${width}" height="${height}" fill="#ffffff"/>`);
  out.push(
    `<text class="title" x="${n(width / 2)}" y="22" text-anchor="middle" font-size="15" font-weight="bold">${escapeXml(c.title)}</text>`,
  );
  if (c.subtitle)
    out.push(
      `<text class="subtitle" x="${n(width / 2)}" y="42" text-anchor="middle" font-size="11" fill="#555555">${escapeXml(c.subtitle)}</text>`,
    );
  for (let v = 0; v <= yMax + step / 1e6; v += step) {
    out.push(`<line x1="${left}" x2="${left + plotW}" y1="${n(y(v))}" y2="${n(y(v))}" stroke="#dddddd"/>`);
    out.push(`<text class="tick" x="${left - 6}" y="${n(y(v) + 4)}" text-anchor="end">${escapeXml(formatValue(v))}</text>`);
  }
  out.push(`<line x1="${left}" x2="${left}" y1="${top}" y2="${top + plotH}" stroke="#333333"/>`);
  out.push(`<line x1="${left}" x2="${left + plotW}" y1="${top + plotH}" y2="${top + plotH}" stroke="#333333"/>`);
  out.push(
    `<text class="axis" x="16" y="${n(top + plotH / 2)}" text-anchor="middle" transform="rotate(-90 16 ${n(top + plotH / 2)})">${escapeXml(c.valueLabel)}</text>`,
  );
  c.categories.forEach((cat, ci) => {
    const gx = left + groupGap + ci * (groupW + groupGap);
    c.series.forEach((s, si) => {
      const v = s.values[ci];
      const x = gx + si * (barW + barGap);
      const color = PALETTE[si % PALETTE.length];
      const attrs = `data-series="${escapeXml(s.name)}" data-category="${escapeXml(cat)}"`;
      if (v === null || !Number.isFinite(v)) {
        out.push(
          `<text class="missing" ${attrs} x="${n(x + barW / 2)}" y="${n(top + plotH - 4)}" text-anchor="middle" font-size="9" fill="#999999">n/a</text>`,
        );
        return;
      }
      const h = Math.max(0, top + plotH - y(v));
      out.push(
        `<rect class="bar" ${attrs} data-value="${v}" x="${n(x)}" y="${n(top + plotH - h)}" width="${barW}" height="${n(h)}" fill="${color}"><title>${escapeXml(`${s.name}, ${cat}: ${formatValue(v)} ${c.valueLabel}`)}</title></rect>`,
      );
      out.push(
        `<text class="value" x="${n(x + barW / 2)}" y="${n(top + plotH - h - 3)}" text-anchor="middle" font-size="9">${escapeXml(formatValue(v))}</text>`,
      );
    });
    out.push(`<text class="category" x="${n(gx + groupW / 2)}" y="${top + plotH + 16}" text-anchor="middle">${escapeXml(cat)}</text>`);
  });
  out.push(
    `<text class="axis" x="${n(left + plotW / 2)}" y="${top + plotH + 34}" text-anchor="middle">${escapeXml(c.categoryLabel)}</text>`,
  );
  const legendW = plotW / 4;
  c.series.forEach((s, si) => {
    const lx = left + (si % 4) * legendW;
    const ly = top + plotH + 48 + Math.floor(si / 4) * 22;
    out.push(`<rect class="swatch" x="${n(lx)}" y="${ly}" width="12" height="12" fill="${PALETTE[si % PALETTE.length]}"/>`);
    out.push(`<text class="legend" x="${n(lx + 18)}" y="${ly + 10}">${escapeXml(s.name)}</text>`);
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
