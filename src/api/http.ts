// The HTTP API of a running switch, the same over the unix socket (serve --api PATH) and over TCP
// (serve --metrics HOST:PORT): Prometheus text at /metrics, the ports as JSON at /api/ports (what
// `vhostwire stats` reads), the mode at /api/mode (GET; PUT switches it, what `vhostwire mode` sends).
// Every route is declared once, in ROUTES; a route that changes state says so (`change: true`) and is
// then guarded (guard.ts: which listener, Host, Origin, content type, token) and given a bounded JSON
// body. Where it listens and what any client may hold is server.ts and limits.ts.
import type * as http from 'node:http';
import type { Registry } from 'prom-client';
import { native } from '../native';
import { hostInterface } from '../ports';
import { checkChange } from './guard';
import { LIMITS } from './limits';
import { refusal, refusalBody, RefusalCounter, type ListenerKind, type Refusal } from './refusals';
import { listenApi, type ApiListener, type Handler, type UnixTarget } from './server';
import type { Switch, SwitchPortInfo } from '../switch';

export type PortState = 'connected' | 'disconnected' | 'up';

/**
 * One element of GET /api/ports: what every port has, then whatever its kind says about itself (a
 * vhost-user port's path, features and vrings, an uplink's interface and driver; see src/ports/<kind>.ts).
 * Feature bits are hex strings ("0x130000000"); counters are numbers: exact up to 2^53, far beyond any
 * real count.
 */
export interface PortJson {
  name: string;
  kind: string;
  state: PortState;
  queuePairs: number;
  peer: string;
  forwarder: string;
  pmd: number;
  /** ports on a host interface: the interface's own counters, to compare with ours */
  interfaceStatistics?: Record<string, number>;
  /** one object per queue pair: counter id -> value */
  counters: Array<Record<string, number>>;
  [detail: string]: unknown;
}

export function portToJson(p: SwitchPortInfo): PortJson {
  const { counters, counterSet: _set, ...rest } = p;
  const details = Object.fromEntries(Object.entries(rest).map(([k, v]) => [k, typeof v === 'bigint' ? `0x${v.toString(16)}` : v]));
  return {
    ...details,
    name: p.name,
    kind: p.kind,
    state: p.state as PortState,
    queuePairs: p.queuePairs,
    peer: p.peer,
    forwarder: p.forwarder,
    pmd: p.pmd,
    counters: counters.map((set) => Object.fromEntries(Object.entries(set).map(([id, v]) => [id, Number(v)]))),
  };
}

/** /api/ports: every port, uplinks with their interface's own counters read now. */
export async function portsJson(sw: Switch): Promise<PortJson[]> {
  return Promise.all(
    sw.ports().map(async (p) => {
      const j = portToJson(p);
      const ifname = hostInterface(p);
      if (ifname) j.interfaceStatistics = (await native.netdevStats(ifname)).link ?? undefined;
      return j;
    }),
  );
}

interface Reply {
  status: number;
  type: string;
  body: string;
}

interface Context {
  sw: Switch;
  registry: Registry;
}

interface Route {
  method: 'GET' | 'PUT';
  path: string;
  /** Changes state: only through the guard, and handed the request's JSON body. */
  change: boolean;
  handle(ctx: Context, body: unknown): Reply | Refusal | Promise<Reply | Refusal>;
}

const json = (status: number, body: unknown): Reply => ({ status, type: 'application/json', body: JSON.stringify(body) });

function setMode({ sw }: Context, body: unknown): Reply | Refusal {
  const mode = (body as { mode?: unknown } | null)?.mode;
  if (mode !== 'bypass' && mode !== 'kernel')
    return refusal(400, 'bad_body', `the body must be {"mode": "bypass"} or {"mode": "kernel"}, not ${JSON.stringify(body)}`);
  const was = sw.mode;
  try {
    sw.setMode(mode);
  } catch (e) {
    return json(500, { error: e instanceof Error ? e.message : String(e) });
  }
  return json(200, { mode, was });
}

/** Every route the API has. */
const ROUTES: Route[] = [
  {
    method: 'GET',
    path: '/metrics',
    change: false,
    handle: async ({ registry }) => ({ status: 200, type: registry.contentType, body: await registry.metrics() }),
  },
  { method: 'GET', path: '/api/ports', change: false, handle: async ({ sw }) => json(200, await portsJson(sw)) },
  { method: 'GET', path: '/api/mode', change: false, handle: ({ sw }) => json(200, { mode: sw.mode }) },
  { method: 'PUT', path: '/api/mode', change: true, handle: setMode },
];

const isRefusal = (r: Reply | Refusal): r is Refusal => 'reason' in r;

/** The JSON body of a change, at most LIMITS.maxBodyBytes. */
function readBody(req: http.IncomingMessage): Promise<unknown> {
  const tooLarge = refusal(413, 'body_too_large', `the body is larger than ${LIMITS.maxBodyBytes} bytes`);
  if (Number(req.headers['content-length'] ?? 0) > LIMITS.maxBodyBytes) return Promise.reject(tooLarge);
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > LIMITS.maxBodyBytes) {
        req.removeAllListeners('data');
        reject(tooLarge);
      } else chunks.push(c);
    });
    req.on('end', () => {
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')));
      } catch (e) {
        reject(refusal(400, 'bad_body', `the body is not JSON: ${(e as Error).message}`));
      }
    });
    req.on('error', reject);
  });
}

function createHandler(ctx: Context, refusals: RefusalCounter): Handler {
  // Concurrent reads of one route share one answer: a scrape storm renders /metrics once per round.
  const inflight = new Map<Route, Promise<Reply | Refusal>>();
  const read = (route: Route): Promise<Reply | Refusal> => {
    let p = inflight.get(route);
    if (p === undefined) {
      p = Promise.resolve(route.handle(ctx, undefined)).finally(() => inflight.delete(route));
      inflight.set(route, p);
    }
    return p;
  };

  return (req, res, policy) => {
    const refuse = (r: Refusal): void => {
      refusals.count(policy.kind, r.reason);
      res.writeHead(r.status, { 'content-type': 'application/json', connection: 'close', ...r.headers });
      res.end(refusalBody(r));
    };
    const answer = (r: Reply | Refusal): void => {
      if (isRefusal(r)) return refuse(r);
      res.writeHead(r.status, { 'content-type': r.type });
      res.end(r.body);
    };
    const failed = (e: unknown): void => {
      if (e !== null && typeof e === 'object' && 'reason' in e) return refuse(e as Refusal);
      answer(json(500, { error: e instanceof Error ? e.message : String(e) }));
    };

    if (req.httpVersion === '1.1' && req.headers.host === undefined)
      return refuse(refusal(400, 'malformed_request', 'an HTTP/1.1 request must carry a Host header'));
    const path = (req.url ?? '/').split('?')[0];
    const here = ROUTES.filter((r) => r.path === path);
    if (here.length === 0)
      return refuse(
        refusal(404, 'not_found', `no such endpoint: ${path} (there are ${[...new Set(ROUTES.map((r) => r.path))].join(', ')})`),
      );
    const route = here.find((r) => r.method === (req.method === 'HEAD' ? 'GET' : req.method));
    if (route === undefined) {
      const allowed = here.map((r) => r.method).join(', ');
      return refuse(refusal(405, 'method_not_allowed', `${req.method} ${path}: use ${allowed}`, { allow: allowed }));
    }
    if (!route.change) {
      read(route).then(answer, failed);
      return;
    }
    const denied = checkChange(req, policy);
    if (denied) return refuse(denied);
    readBody(req)
      .then((body) => route.handle(ctx, body))
      .then(answer, failed);
  };
}

export interface ApiOptions {
  /** serve --metrics HOST:PORT: read-only unless changes (--api-tcp), then with token if set */
  tcp?: { host: string; port: number; changes: boolean; token: string | null };
  /** serve --api PATH: reads and changes */
  unix?: UnixTarget;
}

export interface Api {
  /** http://HOST:PORT of the TCP listener */
  url?: string;
  /** the unix socket's path */
  path?: string;
  close(): Promise<void>;
}

/** Starts the listeners asked for, all answered by one handler; refusals are counted on `registry`. */
export async function startApi(sw: Switch, registry: Registry, options: ApiOptions): Promise<Api> {
  const kinds: ListenerKind[] = [...(options.tcp ? ['tcp' as const] : []), ...(options.unix ? ['unix' as const] : [])];
  const refusals = new RefusalCounter(registry, kinds);
  const handle = createHandler({ sw, registry }, refusals);
  const listeners: ApiListener[] = [];
  const close = async (): Promise<void> => {
    await Promise.all(listeners.map((l) => l.close()));
  };
  try {
    if (options.tcp) {
      const { host, port, changes, token } = options.tcp;
      listeners.push(await listenApi({ tcp: { host, port } }, { kind: 'tcp', changes, token }, handle, refusals));
    }
    if (options.unix)
      listeners.push(await listenApi({ unix: options.unix }, { kind: 'unix', changes: true, token: null }, handle, refusals));
  } catch (e) {
    await close();
    throw e;
  }
  const tcp = options.tcp ? listeners[0] : undefined;
  const unix = options.unix ? listeners[listeners.length - 1] : undefined;
  return { url: tcp?.address, path: unix?.address, close };
}
