// Checks of a benchmark's own command-line values, shared by the benchmarks that take whole numbers.

/** A whole number lo..hi, or an error naming the flag (the benchmark prints it with its usage). */
export function whole(flag: string, v: string, lo: number, hi: number): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < lo || n > hi) throw new Error(`${flag}: expected a whole number ${lo}..${hi}, got "${v}"`);
  return n;
}
