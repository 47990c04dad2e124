// The HTTP face of a running switch: Prometheus text at /metrics, the ports as JSON at /api/ports (what
// `vhostwire stats` reads), and the mode at /api/mode (GET; PUT switches it, what `vhostwire mode`
// sends). Nothing else is served. The only change accepted, PUT /api/mode, must come from this host,
// whatever address the server listens on: metrics are often exposed wider than control should be.
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import { sysfsStatistics } from './ethtool';
import { hostInterface } from '../ports';
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
      if (ifname) j.interfaceStatistics = (await sysfsStatistics(ifname).catch(() => undefined)) ?? undefined;
      return j;
    }),
  );
}

export interface HttpServer {
  /** e.g. http://127.0.0.1:9470 */
  url: string;
  close(): Promise<void>;
}

const LOOPBACK = /^(127\.|::1$|::ffff:127\.)/;

function serveMode(sw: Switch, req: http.IncomingMessage, send: (status: number, type: string, body: string) => void): void {
  const json = (status: number, body: unknown) => send(status, 'application/json', JSON.stringify(body));
  if (req.method === 'GET') {
    json(200, { mode: sw.mode });
    return;
  }
  if (req.method !== 'PUT') {
    json(405, { error: 'use GET to read the mode or PUT to change it' });
    return;
  }
  if (!LOOPBACK.test(req.socket.remoteAddress ?? '')) {
    json(403, { error: `mode changes are accepted from this host only, not from ${req.socket.remoteAddress}` });
    return;
  }
  let body = '';
  req.setEncoding('utf8');
  req.on('data', (c: string) => {
    body += c;
    if (body.length > 1024) req.destroy();
  });
  req.on('end', () => {
    let mode: unknown;
    try {
      mode = (JSON.parse(body) as { mode?: unknown }).mode;
    } catch {
      json(400, { error: 'the body must be JSON: {"mode": "bypass"} or {"mode": "kernel"}' });
      return;
    }
    if (mode !== 'bypass' && mode !== 'kernel') {
      json(400, { error: `mode must be "bypass" or "kernel", not ${JSON.stringify(mode)}` });
      return;
    }
    const was = sw.mode;
    try {
      sw.setMode(mode);
    } catch (e) {
      json(500, { error: e instanceof Error ? e.message : String(e) });
      return;
    }
    json(200, { mode, was });
  });
}

export async function startHttp(sw: Switch, registry: Registry, host: string, port: number): Promise<HttpServer> {
  const server = http.createServer((req, res) => {
    const send = (status: number, type: string, body: string): void => {
      res.writeHead(status, { 'content-type': type });
      res.end(body);
    };
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/api/mode') {
      serveMode(sw, req, send);
      return;
    }
    if (req.method !== 'GET' || (path !== '/metrics' && path !== '/api/ports')) {
      send(404, 'text/plain; charset=utf-8', 'not found\n');
      return;
    }
    const body =
      path === '/metrics'
        ? registry.metrics().then((text) => [registry.contentType, text])
        : portsJson(sw).then((ports) => ['application/json', JSON.stringify(ports)]);
    body.then(
      ([type, text]) => send(200, type, text),
      (e: unknown) => send(500, 'text/plain; charset=utf-8', `${e instanceof Error ? e.message : String(e)}\n`),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address() as AddressInfo;
  const shown = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  let closing: Promise<void> | undefined;
  return {
    url: `http://${shown}:${addr.port}`,
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        // Keep-alive clients (Prometheus) would otherwise hold close() open.
        server.closeAllConnections();
      });
      return closing;
    },
  };
}
