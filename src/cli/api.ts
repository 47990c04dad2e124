// What the commands that talk to a running `vhostwire serve` (stats, mode, port) share: where it is (--api
// PATH, its unix socket, or --url URL, its --metrics listener), the bearer token changes over TCP may
// need, and one request helper for both, whose failures say which address could not be reached and why.
import * as http from 'node:http';
import { readTokenFile } from '../api/token';
import { DEFAULT_METRICS_HOST, DEFAULT_METRICS_PORT, UsageError } from '../config/options';

export const DEFAULT_URL = `http://${DEFAULT_METRICS_HOST}:${DEFAULT_METRICS_PORT}`;
const TIMEOUT_MS = 10_000;

export const connectionOptions = {
  api: { type: 'string', requiresArg: true, conflicts: 'url', describe: 'the unix socket of serve --api PATH (where changes are made)' },
  url: { type: 'string', requiresArg: true, describe: `where serve --metrics listens [default: ${DEFAULT_URL}]` },
  'api-token-file': {
    type: 'string',
    requiresArg: true,
    describe: 'file holding the bearer token of serve --api-token-file (changes over --url)',
  },
} as const;

export interface ConnectionFlags {
  api?: string;
  url?: string;
  'api-token-file'?: string;
}

export interface Target {
  /** the unix socket, or undefined for TCP */
  socketPath?: string;
  /** the TCP base URL (for a unix socket, http://localhost, the Host our requests name) */
  base: URL;
  token?: string;
}

export function apiTarget(flags: ConnectionFlags): Target {
  let token: string | undefined;
  if (flags['api-token-file'] !== undefined) {
    try {
      token = readTokenFile('--api-token-file', flags['api-token-file']);
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
  }
  if (flags.api !== undefined) return { socketPath: flags.api, base: new URL('http://localhost'), token };
  const url = flags.url ?? DEFAULT_URL;
  try {
    return { base: new URL(url), token };
  } catch {
    throw new UsageError(`--url ${JSON.stringify(url)}: not a URL`);
  }
}

export interface Answer {
  status: number;
  body: string;
  /** e.g. "/run/vhostwire/api.sock /api/mode" or "http://127.0.0.1:9470/api/mode", for messages */
  where: string;
}

const HINTS: Record<string, string> = {
  ENOENT: 'no such socket: is serve running with --api at that path?',
  EACCES: 'permission denied: the socket is mode 0660, for its owner and group (serve --api-owner)',
  ECONNREFUSED: 'nobody is listening there',
};

/** One request to serve, over its unix socket or TCP; a change sends `body` as JSON. */
export function apiRequest(target: Target, method: string, path: string, body?: unknown): Promise<Answer> {
  const url = new URL(path, target.base);
  const where = target.socketPath === undefined ? url.href : `${target.socketPath} ${path}`;
  const payload = body === undefined ? undefined : JSON.stringify(body);
  const headers: Record<string, string> = {};
  // Every change says JSON, even one without a body (DELETE): serve's guard asks it of all changes.
  if (method !== 'GET') headers['content-type'] = 'application/json';
  if (target.token !== undefined) headers.authorization = `Bearer ${target.token}`;
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        socketPath: target.socketPath,
        hostname: url.hostname,
        port: url.port,
        path: url.pathname,
        method,
        headers,
        timeout: TIMEOUT_MS,
        agent: false,
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text, where }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(Object.assign(new Error('timed out'), { code: 'ETIMEDOUT' })));
    req.on('error', (e: NodeJS.ErrnoException) => {
      const code = e.code ?? e.message;
      reject(new Error(`cannot reach ${target.socketPath ?? url.href}: ${code}${HINTS[code] ? ` (${HINTS[code]})` : ''}`));
    });
    req.end(payload);
  });
}

/** The JSON of a 2xx answer; otherwise an Error with the status and serve's own reason. */
export function answerJson<T>(a: Answer): T {
  let parsed: unknown;
  try {
    parsed = JSON.parse(a.body);
  } catch {
    parsed = undefined;
  }
  if (a.status < 200 || a.status > 299)
    throw new Error(`${a.where}: HTTP ${a.status}: ${(parsed as { error?: string } | undefined)?.error ?? 'no reason given'}`);
  if (parsed === undefined) throw new Error(`${a.where}: the answer is not JSON`);
  return parsed as T;
}
