// What the commands that talk to a running `vhostwire serve --metrics` (stats, mode) share: the --url
// option, and requests whose failures say which address could not be reached.
import { DEFAULT_METRICS_HOST, DEFAULT_METRICS_PORT, UsageError } from '../config/options';

export const urlOption = {
  url: {
    type: 'string',
    requiresArg: true,
    default: `http://${DEFAULT_METRICS_HOST}:${DEFAULT_METRICS_PORT}`,
    describe: 'where serve --metrics listens',
  },
} as const;

/** path (e.g. /api/ports) on the server --url names; a usage error when --url is not a URL. */
export function apiUrl(base: string, path: string): URL {
  try {
    return new URL(path, base);
  } catch {
    throw new UsageError(`--url ${JSON.stringify(base)}: not a URL`);
  }
}

/** fetch, with a connection failure said in terms of the address. */
export async function request(url: URL, init?: RequestInit): Promise<Response> {
  try {
    return await fetch(url, init);
  } catch (e) {
    const cause = (e as { cause?: { code?: string; message?: string } }).cause;
    throw new Error(`cannot reach ${url.href}: ${cause?.code ?? cause?.message ?? String(e)}`);
  }
}
