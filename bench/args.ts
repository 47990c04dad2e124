// Checks of a benchmark's own command-line values, shared by the benchmarks that take whole numbers.
import { parseArgs } from 'node:util';

/** A whole number lo..hi, or an error naming the flag (the benchmark prints it with its usage). */
export function whole(flag: string, v: string, lo: number, hi: number): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < lo || n > hi) throw new Error(`${flag}: expected a whole number ${lo}..${hi}, got "${v}"`);
  return n;
}

/**
 * A benchmark's command line: its own string flags (`names`) and the ones every benchmark takes, --no-json,
 * --verbose and --help, parsed strictly. null after --help (the usage printed); throws on a flag it does not
 * know, for the caller to print with its usage.
 */
export function benchFlags<K extends string>(
  argv: string[],
  names: readonly K[],
  usage: string,
): { values: Partial<Record<K, string>>; noJson: boolean; verbose: boolean } | null {
  const options: Record<string, { type: 'string' | 'boolean' }> = {
    'no-json': { type: 'boolean' },
    verbose: { type: 'boolean' },
    help: { type: 'boolean' },
  };
  for (const n of names) options[n] = { type: 'string' };
  const { values } = parseArgs({ args: argv, options, strict: true });
  if (values.help) {
    process.stdout.write(usage);
    return null;
  }
  return { values: values as Partial<Record<K, string>>, noJson: values['no-json'] === true, verbose: values.verbose === true };
}
