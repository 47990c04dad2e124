// The arithmetic every paired benchmark quotes: ratios taken round by round (the two sides of a round
// are seconds apart, rounds are minutes apart on a noisy machine) and summarised by their median and
// range, never by a mean that one disturbed round can drag.

export function median(xs: number[]): number | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/** a/b for one round; null when either side is missing or b is not a usable divisor. */
export function ratio(a: number | null | undefined, b: number | null | undefined): number | null {
  if (a === null || a === undefined || b === null || b === undefined || !(b > 0)) return null;
  return a / b;
}

export interface RatioSummary {
  median: number | null;
  min: number | null;
  max: number | null;
  /** rounds that produced a ratio */
  n: number;
}

/** Median and range of the per-round ratios; rounds without a ratio (null) are left out. */
export function summarize(ratios: Array<number | null>): RatioSummary {
  const xs = ratios.filter((r): r is number => r !== null && Number.isFinite(r));
  return {
    median: median(xs),
    min: xs.length ? Math.min(...xs) : null,
    max: xs.length ? Math.max(...xs) : null,
    n: xs.length,
  };
}

/** "1.23 (1.10..1.31)", or "-" without a ratio. */
export function formatSummary(s: RatioSummary): string {
  if (s.median === null) return '-';
  return `${s.median.toFixed(2)} (${s.min!.toFixed(2)}..${s.max!.toFixed(2)})`;
}
