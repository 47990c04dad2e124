// The HTTP API of a running switch, the same over the unix socket (serve --api PATH) and over TCP
// (serve --metrics HOST:PORT): Prometheus text at /metrics, the ports as JSON at /api/ports (what
// `vhostwire stats` and `port list` read; POST adds a port, DELETE /api/ports/NAME removes one: ports.ts),
// the mode at /api/mode (GET; PUT switches it, what `vhostwire mode` sends), the bridges at /api/bridges
// and one bridge's MAC table at /api/bridges/NAME/fdb (`vhostwire fdb`).
// Every route is declared once, in ROUTES; a route that changes state says so (`change: true`) and is
// then guarded (guard.ts: which listener, Host, Origin, content type, token) and given a bounded JSON
// body. Where it listens and what any client may hold is server.ts and limits.ts.
import type * as http from 'node:http';
import type { Registry } from 'prom-client';
import { native } from '../native';
import { hostInterface } from '../ports';
import { exposition } from './exposition';
import { checkChange } from './guard';
import { LIMITS } from './limits';
import { addPort, deletePort, type PortAnswer } from './ports';
import { refusal, refusalBody, RefusalCounter, type ListenerKind, type Refusal } from './refusals';
import { listenApi, type ApiListener, type Handler, type UnixTarget } from './server';
import type { Switch, SwitchPortInfo } from '../switch';
import { formatMac } from '../config/bridge';

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
  queuePmds: number[];
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
    queuePmds: p.queuePmds,
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
  body: string | Buffer;
}

interface Context {
  sw: Switch;
  registry: Registry;
  /** socket paths the API itself listens on: no port may take them */
  reserved: string[];
}

interface Route {
  method: 'GET' | 'PUT' | 'POST' | 'DELETE';
  /** A segment ":name" matches one segment of the request's path, handed to handle as params.name. */
  path: string;
  /** Changes state: only through the guard, and handed the request's JSON body. */
  change: boolean;
  handle(ctx: Context, body: unknown, params: Record<string, string>): Reply | Refusal | Promise<Reply | Refusal>;
}

/** One element of GET /api/bridges/NAME/fdb. */
export interface FdbJson {
  mac: string;
  vlan: number;
  port: string;
  ageSeconds: number;
  static: boolean;
}

function fdb({ sw }: Context, bridge: string): Reply | Refusal {
  if (!sw.bridges().some((b) => b.name === bridge))
    return refusal(
      404,
      'not_found',
      `no bridge named ${JSON.stringify(bridge)} (there are: ${
        sw
          .bridges()
          .map((b) => b.name)
          .join(', ') || 'none'
      })`,
    );
  const rows: FdbJson[] = sw
    .fdb(bridge)
    .map((e) => ({ mac: formatMac(e.mac), vlan: e.vlan, port: e.port, ageSeconds: Math.floor(e.ageSeconds), static: e.static }))
    .sort((a, b) => a.vlan - b.vlan || a.mac.localeCompare(b.mac));
  return json(200, rows);
}

const json = (status: number, body: unknown): Reply => ({ status, type: 'application/json', body: JSON.stringify(body) });
const answered = (a: PortAnswer): Reply => json(a.status, a.body);

/** The route's params if `path` matches its pattern, else null. */
function match(pattern: string, path: string): Record<string, string> | null {
  const want = pattern.split('/');
  const got = path.split('/');
  if (want.length !== got.length) return null;
  const params: Record<string, string> = {};
  for (let i = 0; i < want.length; i++) {
    if (want[i].startsWith(':')) {
      let value: string;
      try {
        value = decodeURIComponent(got[i]);
      } catch {
        return null;
      }
      if (value === '') return null;
      params[want[i].slice(1)] = value;
    } else if (want[i] !== got[i]) return null;
  }
  return params;
}

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
    handle: async ({ registry }) => ({ status: 200, type: registry.contentType, body: await exposition(registry) }),
  },
  { method: 'GET', path: '/api/ports', change: false, handle: async ({ sw }) => json(200, await portsJson(sw)) },
  { method: 'POST', path: '/api/ports', change: true, handle: (ctx, body) => answered(addPort(ctx, body)) },
  { method: 'DELETE', path: '/api/ports/:name', change: true, handle: ({ sw }, _body, { name }) => answered(deletePort(sw, name)) },
  { method: 'GET', path: '/api/mode', change: false, handle: ({ sw }) => json(200, { mode: sw.mode }) },
  { method: 'PUT', path: '/api/mode', change: true, handle: setMode },
  { method: 'GET', path: '/api/bridges', change: false, handle: ({ sw }) => json(200, sw.bridges()) },
  { method: 'GET', path: '/api/bridges/:name/fdb', change: false, handle: (ctx, _body, { name }) => fdb(ctx, name) },
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
      // A change that carries nothing (DELETE) has no body to parse.
      if (size === 0) return resolve(undefined);
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
  // Concurrent reads of one path share one answer: a scrape storm renders /metrics once per round.
  const inflight = new Map<string, Promise<Reply | Refusal>>();
  const read = (route: Route, path: string, params: Record<string, string>): Promise<Reply | Refusal> => {
    const key = `${route.method} ${path}`;
    let p = inflight.get(key);
    if (p === undefined) {
      p = Promise.resolve(route.handle(ctx, undefined, params)).finally(() => inflight.delete(key));
      inflight.set(key, p);
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
    const here = ROUTES.filter((r) => match(r.path, path) !== null);
    if (here.length === 0)
      return refuse(
        refusal(
          404,
          'not_found',
          `no such endpoint: ${path} (there are ${[...new Set(ROUTES.map((r) => r.path.replace(/:(\w+)/g, (_, p: string) => p.toUpperCase())))].join(', ')})`,
        ),
      );
    const route = here.find((r) => r.method === (req.method === 'HEAD' ? 'GET' : req.method));
    if (route === undefined) {
      const allowed = here.map((r) => r.method).join(', ');
      return refuse(refusal(405, 'method_not_allowed', `${req.method} ${path}: use ${allowed}`, { allow: allowed }));
    }
    if (!route.change) {
      read(route, path, match(route.path, path)!).then(answer, failed);
      return;
    }
    const denied = checkChange(req, policy);
    if (denied) return refuse(denied);
    const params = match(route.path, path)!;
    readBody(req)
      .then((body) => route.handle(ctx, body, params))
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
  const handle = createHandler({ sw, registry, reserved: options.unix ? [options.unix.path] : [] }, refusals);
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
