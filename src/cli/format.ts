// Human-readable numbers and tables for the commands' output.

/** 1234567 -> "1.235 Mpps" */
export function mpps(pps: number): string {
  return `${(pps / 1e6).toFixed(3)} Mpps`;
}

/** Left-aligned columns separated by two spaces; the first row is the header. */
export function table(rows: string[][]): string {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  return rows
    .map((r) =>
      r
        .map((cell, c) => cell.padEnd(widths[c]))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

/** Scaled to stay readable at any rate: "1.235 Mpps", "12.3 kpps", "7 pps". */
export function pps(n: number): string {
  if (n >= 1e6) return mpps(n);
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} kpps`;
  return `${Math.round(n)} pps`;
}
