// The control API's refusals over real sockets, against a real `vhostwire serve`: changes over TCP off
// unless --api-tcp, the unix socket taking them; Host, Origin and content type on both listeners; the
// bearer token; oversized headers and bodies; slow clients and connection floods while a scrape still
// answers. Every refusal is checked for its status, its message and its count in /metrics.
import t, { type Test } from 'tap';
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import { Cli, freePort, runCli, tempDir, waitFor } from '../support/helpers';

type Addr = { port: number; host?: string } | { path: string };

interface Raw {
  status: number;
  headers: Record<string, string>;
  body: string;
  /** the server closed the connection */
  closed: boolean;
}

/** Parses what a server sent on one connection (one response). */
function parse(text: string, closed: boolean): Raw {
  const end = text.indexOf('\r\n\r\n');
  const head = end < 0 ? text : text.slice(0, end);
  const [status, ...lines] = head.split('\r\n');
  const headers: Record<string, string> = {};
  for (const l of lines) {
    const i = l.indexOf(':');
    if (i > 0) headers[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim();
  }
  let body = end < 0 ? '' : text.slice(end + 4);
  if (headers['transfer-encoding'] === 'chunked') {
    let out = '';
    for (let rest = body; ;) {
      const nl = rest.indexOf('\r\n');
      const n = parseInt(rest.slice(0, nl), 16);
      if (!(n > 0)) break;
      out += rest.slice(nl + 2, nl + 2 + n);
      rest = rest.slice(nl + 2 + n + 2);
    }
    body = out;
  }
  return { status: Number(status.split(' ')[1] ?? 0), headers, body, closed };
}

function connect(addr: Addr): net.Socket {
  return 'path' in addr ? net.connect(addr.path) : net.connect(addr.port, addr.host ?? '127.0.0.1');
}

/** Writes `data` on a new connection and waits for the server to answer and close it. */
function raw(addr: Addr, data: string, timeoutMs = 20000): Promise<Raw> {
  return new Promise((resolve, reject) => {
    const s = connect(addr);
    let got = '';
    const timer = setTimeout(() => {
      s.destroy();
      resolve(parse(got, false));
    }, timeoutMs);
    s.setEncoding('utf8');
    s.on('data', (d: string) => (got += d));
    s.on('close', () => {
      clearTimeout(timer);
      resolve(parse(got, true));
    });
    s.on('error', (e: NodeJS.ErrnoException) => (e.code === 'ECONNRESET' || e.code === 'EPIPE' ? undefined : reject(e)));
    s.write(data);
  });
}

/** A request with exactly these headers (no Host unless given) and Content-Length for the body. */
function request(method: string, path: string, headers: Record<string, string>, body = ''): string {
  const h = Object.entries({ ...headers, ...(body || method === 'PUT' ? { 'Content-Length': String(Buffer.byteLength(body)) } : {}) });
  return `${method} ${path} HTTP/1.1\r\n${h.map(([k, v]) => `${k}: ${v}\r\n`).join('')}Connection: close\r\n\r\n${body}`;
}

const MODE = JSON.stringify({ mode: 'bypass' });
const json = { 'Content-Type': 'application/json' };

/** vhostwire_api_refusals_total by "listener/reason", non-zero ones only; one connection of its own. */
async function refusals(port: number): Promise<Record<string, number>> {
  const text = (await raw({ port }, request('GET', '/metrics', { Host: 'localhost' }))).body;
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/^vhostwire_api_refusals_total\{listener="(\w+)",reason="(\w+)"\} (\d+)$/gm))
    if (m[3] !== '0') out[`${m[1]}/${m[2]}`] = Number(m[3]);
  return out;
}

async function modeNow(base: string): Promise<string> {
  return ((await (await fetch(`${base}/api/mode`)).json()) as { mode: string }).mode;
}

/** A serve with one sink in kernel mode and the given API flags; its TCP base URL and socket path. */
async function startServe(
  t: Test,
  flags: (api: string, port: number) => string[],
): Promise<{ serve: Cli; base: string; port: number; api: string }> {
  const tmp = tempDir();
  t.teardown(tmp.cleanup);
  const port = await freePort();
  const api = tmp.sock('api');
  const serve = new Cli(['serve', '--sink', 's0', '--mode', 'kernel', ...flags(api, port)]);
  t.teardown(() => serve.kill('SIGKILL'));
  await serve.line(/^ready$/);
  return { serve, base: `http://127.0.0.1:${port}`, port, api };
}

t.test('changes over TCP are refused without --api-tcp, with a message naming both ways; the unix socket takes them', async (t) => {
  const { serve, base, port, api } = await startServe(t, (api, port) => ['--metrics', `127.0.0.1:${port}`, '--api', api]);
  t.match(serve.stdout, `metrics on ${base}/metrics, ports on ${base}/api/ports (read-only)\n`);
  t.match(serve.stdout, new RegExp(`^API on ${api} \\(mode 0660, owner 0:0\\)$`, 'm'));
  t.equal(fs.statSync(api).mode & 0o7777, 0o660, 'the socket is mode 0660');

  // The issue's request: what a web page reaches through DNS rebinding.
  const rebinding = await raw(
    { port },
    request(
      'PUT',
      '/api/mode',
      { Host: `evil.example:${port}`, Origin: `http://evil.example:${port}`, 'Content-Type': 'text/plain' },
      MODE,
    ),
  );
  t.equal(rebinding.status, 403, 'the rebinding request is refused');
  t.same(JSON.parse(rebinding.body), {
    error:
      'changes are not accepted over TCP: use the unix-socket API (serve --api PATH, then e.g. vhostwire mode kernel --api PATH) or start serve with --api-tcp',
    reason: 'changes_over_tcp_off',
  });
  t.ok(rebinding.closed, 'and the connection closed');
  const local = await raw({ port }, request('PUT', '/api/mode', { Host: `127.0.0.1:${port}`, ...json }, MODE));
  t.equal(local.status, 403, 'so is a well-formed one from this host');
  t.equal(await modeNow(base), 'kernel', 'the mode did not change');

  // What `vhostwire mode kernel --url ...` does now: it fails loudly and says what to do instead.
  const cli = await runCli(['mode', 'bypass', '--url', base]);
  t.equal(cli.code, 1, 'mode --url exits 1');
  t.equal(
    cli.stderr,
    `vhostwire mode [mode]: ${base}/api/mode: HTTP 403: changes are not accepted over TCP: use the unix-socket API (serve --api PATH, then e.g. vhostwire mode kernel --api PATH) or start serve with --api-tcp\n`,
  );
  t.match(await runCli(['mode', '--url', base]), { code: 0, stdout: 'mode kernel\n' }, 'reading over TCP still works');
  t.match(await runCli(['mode', 'bypass', '--api', api]), { code: 0, stdout: 'mode bypass (was kernel)\n' }, 'the unix socket switches it');
  t.equal(await modeNow(base), 'bypass');
  const stats = await runCli(['stats', '--api', api]);
  t.equal(stats.code, 0, `stats --api (${stats.stderr})`);
  t.match(stats.stdout, /^s0\s+sink\s+up/m);
  t.match(await runCli(['mode', '--api', api, '--url', base]), {
    code: 2,
    stderr: 'vhostwire mode [mode]: Arguments api and url are mutually exclusive\n',
  });
  t.same(await refusals(port), { 'tcp/changes_over_tcp_off': 3 }, 'three refusals, counted under their reason');
  serve.kill('SIGTERM');
  t.same(await serve.wait(), { code: 0, signal: null });
  t.notOk(fs.existsSync(api), 'the API socket is removed at exit');
});

t.test('Host, Origin and content type decide on both listeners; each refusal is counted', async (t) => {
  const { serve, base, port, api } = await startServe(t, (api, port) => ['--metrics', `127.0.0.1:${port}`, '--api', api, '--api-tcp']);
  t.match(serve.stdout, `(changes from any local user: --api-token-file requires a token)\n`, 'serve says who may change things over TCP');
  const refused: Array<[string, Record<string, string>, string, number, string, RegExp]> = [
    ['a foreign Host', { Host: 'evil.example', ...json }, MODE, 403, 'foreign_host', /^Host "evil.example" is not this host/],
    ['a loopback address as a subdomain', { Host: '127.0.0.1.evil.example', ...json }, MODE, 403, 'foreign_host', /is not this host/],
    ['localhost as a subdomain', { Host: 'localhost.evil.example', ...json }, MODE, 403, 'foreign_host', /is not this host/],
    [
      'a foreign Origin',
      { Host: 'localhost', Origin: 'http://evil.example', ...json },
      MODE,
      403,
      'foreign_origin',
      /^Origin "http:\/\/evil.example" is not http:\/\/localhost: changes from web pages are refused$/,
    ],
    ['the null Origin', { Host: 'localhost', Origin: 'null', ...json }, MODE, 403, 'foreign_origin', /^Origin "null"/],
    [
      'an https Origin',
      { Host: 'localhost', Origin: 'https://localhost', ...json },
      MODE,
      403,
      'foreign_origin',
      /^Origin "https:\/\/localhost"/,
    ],
    [
      'text/plain',
      { Host: 'localhost', 'Content-Type': 'text/plain' },
      MODE,
      415,
      'wrong_content_type',
      /^a change must be sent as Content-Type: application\/json, not "text\/plain"$/,
    ],
    [
      'a form',
      { Host: 'localhost', 'Content-Type': 'application/x-www-form-urlencoded' },
      'mode=bypass',
      415,
      'wrong_content_type',
      /not "application\/x-www-form-urlencoded"/,
    ],
    ['no content type', { Host: 'localhost' }, MODE, 415, 'wrong_content_type', /not without one$/],
    ['a body that is not JSON', { Host: 'localhost', ...json }, 'mode=bypass', 400, 'bad_body', /^the body is not JSON/],
    [
      'an unknown mode',
      { Host: 'localhost', ...json },
      '{"mode":"fast"}',
      400,
      'bad_body',
      /^the body must be \{"mode": "bypass"\} or \{"mode": "kernel"\}, not \{"mode":"fast"\}$/,
    ],
  ];
  for (const [listener, addr] of [
    ['tcp', { port }],
    ['unix', { path: api }],
  ] as const) {
    for (const [what, headers, body, status, reason, message] of refused) {
      const r = await raw(addr, request('PUT', '/api/mode', headers, body));
      t.equal(r.status, status, `${listener}: ${what}: ${status}`);
      const answer = JSON.parse(r.body) as { error: string; reason: string };
      t.equal(answer.reason, reason, `${listener}: ${what}: ${reason}`);
      t.match(answer.error, message, `${listener}: ${what}: the message says what was wrong`);
    }
    t.equal(await modeNow(base), 'kernel', `${listener}: nothing changed the mode`);
  }
  const expected: Record<string, number> = {};
  for (const listener of ['tcp', 'unix'])
    for (const [, , , , reason] of refused) expected[`${listener}/${reason}`] = (expected[`${listener}/${reason}`] ?? 0) + 1;
  t.same(await refusals(port), expected, 'every refusal counted once, by listener and reason');

  const accepted: Array<[Addr, Record<string, string>, string]> = [
    [{ port }, { Host: `127.0.0.1:${port}`, ...json }, 'bypass'],
    [
      { port },
      { Host: `localhost:${port}`, Origin: `http://localhost:${port}`, 'Content-Type': 'application/json; charset=utf-8' },
      'kernel',
    ],
    [{ port }, { Host: `[::1]:${port}`, ...json }, 'bypass'],
    [{ path: api }, { Host: 'localhost', Origin: 'http://localhost', ...json }, 'kernel'],
  ];
  for (const [addr, headers, mode] of accepted) {
    const r = await raw(addr, request('PUT', '/api/mode', headers, JSON.stringify({ mode })));
    t.equal(r.status, 200, `accepted: ${JSON.stringify(headers)}`);
    t.equal(await modeNow(base), mode);
  }
  const reads = await raw({ port }, request('GET', '/api/ports', { Host: 'evil.example', Origin: 'http://evil.example' }));
  t.equal(reads.status, 200, 'reads are open whatever Host and Origin say, as Prometheus expects');
});

t.test(
  'changes over TCP from another host are refused; it may still scrape',
  { skip: process.getuid?.() === 0 ? false : 'needs root: a network namespace' },
  async (t) => {
    const ns = `vwapi${process.pid}`;
    const [here, there] = [`vwah${process.pid}`, `vwan${process.pid}`];
    const [hostIp, nsIp] = ['10.233.0.1', '10.233.0.2'];
    const ip = (...args: string[]): string => execFileSync('ip', args, { encoding: 'utf8' });
    ip('netns', 'add', ns);
    t.teardown(() => {
      spawnSync('ip', ['link', 'del', here], { stdio: 'ignore' });
      spawnSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
    });
    ip('link', 'add', here, 'type', 'veth', 'peer', 'name', there, 'netns', ns);
    ip('addr', 'add', `${hostIp}/24`, 'dev', here);
    ip('link', 'set', here, 'up');
    ip('-n', ns, 'addr', 'add', `${nsIp}/24`, 'dev', there);
    ip('-n', ns, 'link', 'set', there, 'up');
    const port = await freePort();
    const serve = new Cli(['serve', '--sink', 's0', '--mode', 'kernel', '--metrics', `${hostIp}:${port}`, '--api-tcp']);
    t.teardown(() => serve.kill('SIGKILL'));
    await serve.line(/^ready$/);
    // A client inside the namespace: its address is 10.233.0.2, not a loopback one.
    const fromNs = (method: string, headers: Record<string, string>, body = ''): Raw => {
      const js = `const s=require('net').connect(${port},'${hostIp}');let g='';s.on('data',d=>g+=d);s.on('close',()=>process.stdout.write(g));s.write(${JSON.stringify(request(method, method === 'GET' ? '/metrics' : '/api/mode', headers, body))});`;
      return parse(execFileSync('ip', ['netns', 'exec', ns, process.execPath, '-e', js], { encoding: 'utf8' }), true);
    };
    const put = fromNs('PUT', { Host: 'localhost', ...json }, MODE);
    t.equal(put.status, 403);
    t.same(JSON.parse(put.body), { error: `changes over TCP are accepted from this host only, not from ${nsIp}`, reason: 'not_local' });
    const scrape = fromNs('GET', { Host: `${hostIp}:${port}` });
    t.equal(scrape.status, 200, 'a remote scraper still gets /metrics');
    t.match(scrape.body, /^vhostwire_api_refusals_total\{listener="tcp",reason="not_local"\} 1$/m, 'with the refusal counted');
  },
);

t.test('a bearer token for changes over TCP', async (t) => {
  const tmp = tempDir();
  t.teardown(tmp.cleanup);
  const file = `${tmp.dir}/token`;
  const token = randomBytes(32).toString('base64');
  fs.writeFileSync(file, `${token}\n`, { mode: 0o600 });
  const { serve, base, port } = await startServe(t, (_api, port) => [
    '--metrics',
    `127.0.0.1:${port}`,
    '--api-tcp',
    '--api-token-file',
    file,
  ]);
  t.match(serve.stdout, `(changes from this host with the bearer token)\n`);
  const put = (auth?: string): Promise<Raw> =>
    raw({ port }, request('PUT', '/api/mode', { Host: 'localhost', ...json, ...(auth ? { Authorization: auth } : {}) }, MODE));
  const none = await put();
  t.equal(none.status, 401, 'no token: 401');
  t.equal(none.headers['www-authenticate'], 'Bearer realm="vhostwire"');
  t.equal(JSON.parse(none.body).reason, 'no_token');
  const wrongToken = randomBytes(32).toString('base64');
  for (const auth of [`Bearer ${wrongToken}`, `Bearer ${token.slice(0, -2)}`, `Basic ${token}`, 'Bearer']) {
    const r = await put(auth);
    t.equal(r.status, 401, `${auth.slice(0, 12)}...: 401`);
    t.same(JSON.parse(r.body), { error: "the bearer token is not the one in serve's --api-token-file", reason: 'bad_token' });
  }
  t.equal(await modeNow(base), 'kernel', 'nothing changed');
  const without = await runCli(['mode', 'bypass', '--url', base]);
  t.equal(without.code, 1);
  t.match(without.stderr, /HTTP 401: changes over TCP need the bearer token of serve --api-token-file: pass --api-token-file FILE/);
  t.match(
    await runCli(['mode', 'bypass', '--url', base, '--api-token-file', file]),
    { code: 0, stdout: 'mode bypass (was kernel)\n' },
    'the client sends the token from its file',
  );
  t.equal((await fetch(`${base}/metrics`)).status, 200, 'reads need no token');
  t.same(await refusals(port), { 'tcp/no_token': 2, 'tcp/bad_token': 4 });

  fs.writeFileSync(`${tmp.dir}/open`, `${token}\n`, { mode: 0o644 });
  fs.chmodSync(`${tmp.dir}/open`, 0o644);
  fs.writeFileSync(`${tmp.dir}/short`, 'abc123\n', { mode: 0o600 });
  const bad: Array<[string[], string]> = [
    [
      ['serve', '--metrics', String(port + 1), '--api-tcp', '--api-token-file', `${tmp.dir}/open`],
      `--api-token-file "${tmp.dir}/open": mode 0644 lets other users read or change it; chmod 600 (or 640) it`,
    ],
    [
      ['serve', '--metrics', String(port + 1), '--api-tcp', '--api-token-file', `${tmp.dir}/short`],
      `--api-token-file "${tmp.dir}/short": the token is 6 characters; use at least 16, e.g. head -c 32 /dev/urandom | base64`,
    ],
    [
      ['serve', '--metrics', String(port + 1), '--api-token-file', file],
      '--api-token-file: only meaningful with --api-tcp (who may use the unix socket is decided by its owner and mode)',
    ],
  ];
  for (const [args, line] of bad) t.match(await runCli(args), { code: 2, stderr: `vhostwire serve: ${line}\n` }, line);
  t.match(
    await runCli(['mode', 'kernel', '--url', base, '--api-token-file', `${tmp.dir}/open`]),
    { code: 2, stderr: /^vhostwire mode \[mode\]: --api-token-file ".*open": mode 0644/ },
    'the client checks its token file the same way',
  );
});

t.test('bounds: oversized headers and bodies, malformed requests, unknown routes', async (t) => {
  const { base, port, api } = await startServe(t, (api, port) => ['--metrics', `127.0.0.1:${port}`, '--api', api, '--api-tcp']);
  const cases: Array<[string, Addr, string, number, string, string]> = [
    [
      'a 9000-byte header',
      { port },
      `GET /metrics HTTP/1.1\r\nHost: localhost\r\nX-Pad: ${'a'.repeat(9000)}\r\n\r\n`,
      431,
      'header_too_large',
      'the request headers are larger than 8192 bytes',
    ],
    [
      'a 9000-byte header, unix',
      { path: api },
      `GET /metrics HTTP/1.1\r\nHost: localhost\r\nX-Pad: ${'a'.repeat(9000)}\r\n\r\n`,
      431,
      'header_too_large',
      'the request headers are larger than 8192 bytes',
    ],
    [
      'a body announced larger than 16 KiB',
      { port },
      `PUT /api/mode HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 20000\r\n\r\n{`,
      413,
      'body_too_large',
      'the body is larger than 16384 bytes',
    ],
    [
      'a chunked body growing past 16 KiB',
      { path: api },
      `PUT /api/mode HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n5000\r\n${' '.repeat(0x5000)}\r\n0\r\n\r\n`,
      413,
      'body_too_large',
      'the body is larger than 16384 bytes',
    ],
    ['not HTTP', { port }, 'HELLO\r\n\r\n', 400, 'malformed_request', 'not a valid HTTP/1.1 request (HPE_INVALID_METHOD)'],
    [
      'HTTP/1.1 without Host',
      { port },
      'GET /metrics HTTP/1.1\r\n\r\n',
      400,
      'malformed_request',
      'an HTTP/1.1 request must carry a Host header',
    ],
    [
      'an unknown path',
      { port },
      request('GET', '/admin', { Host: 'localhost' }),
      404,
      'not_found',
      'no such endpoint: /admin (there are /metrics, /api/ports, /api/ports/NAME, /api/mode, /api/bridges, /api/bridges/NAME/fdb)',
    ],
    [
      'a method the route lacks',
      { path: api },
      request('DELETE', '/api/mode', { Host: 'localhost' }),
      405,
      'method_not_allowed',
      'DELETE /api/mode: use GET, PUT',
    ],
    [
      'a CORS preflight',
      { port },
      request('OPTIONS', '/api/mode', { Host: 'localhost', Origin: 'http://evil.example' }),
      405,
      'method_not_allowed',
      'OPTIONS /api/mode: use GET, PUT',
    ],
  ];
  for (const [what, addr, data, status, reason, error] of cases) {
    const r = await raw(addr, data);
    t.equal(r.status, status, `${what}: ${status}`);
    t.same(JSON.parse(r.body), { error, reason }, `${what}: ${reason}`);
    t.ok(r.closed, `${what}: connection closed`);
    t.notOk(r.headers['access-control-allow-origin'], `${what}: no CORS header`);
  }
  t.same(await refusals(port), {
    'tcp/header_too_large': 1,
    'unix/header_too_large': 1,
    'tcp/body_too_large': 1,
    'unix/body_too_large': 1,
    'tcp/malformed_request': 2,
    'tcp/not_found': 1,
    'unix/method_not_allowed': 1,
    'tcp/method_not_allowed': 1,
  });
  t.equal(await modeNow(base), 'kernel');
});

interface Held {
  socket: net.Socket;
  /** what it got, once the server closed it */
  done: Promise<Raw>;
  closed: boolean;
}

/** Opens a connection that sends `data` and then nothing. */
function hold(addr: Addr, data: string): Held {
  const socket = connect(addr);
  let got = '';
  socket.setEncoding('utf8');
  socket.on('data', (d: string) => (got += d));
  socket.on('error', () => undefined);
  let closed: (r: Raw) => void = () => undefined;
  const held: Held = { socket, done: new Promise<Raw>((resolve) => (closed = resolve)), closed: false };
  socket.on('close', () => {
    held.closed = true;
    closed(parse(got, true));
  });
  socket.write(data);
  return held;
}

t.test('slow clients: they are timed out, evicted when others need the room, and a scrape still answers', async (t) => {
  const { port, api } = await startServe(t, (api, port) => ['--metrics', `127.0.0.1:${port}`, '--api', api, '--api-tcp']);
  // One connection per scrape, so that each one's effect on the budget is known.
  const scrape = async (): Promise<number> => (await raw({ port }, request('GET', '/metrics', { Host: 'localhost' }))).status;

  // A client that says nothing, one that dribbles its headers, one that never sends its body.
  const silent = hold({ port }, '');
  const dribbling = hold({ port }, 'GET /metrics HTTP/1.1\r\nHost: loc');
  const bodiless = hold(
    { path: api },
    'PUT /api/mode HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 17\r\n\r\n{',
  );
  t.equal(await scrape(), 200, 'a scrape answers while they hold their connections');
  for (const [what, c] of [
    ['silent', silent],
    ['dribbling', dribbling],
    ['bodiless', bodiless],
  ] as const) {
    const r = await c.done;
    t.equal(r.status, 408, `${what}: cut off with 408`);
    t.equal(JSON.parse(r.body).reason, 'request_timeout', `${what}: request_timeout`);
  }

  // More dribbling clients than a listener takes: the oldest make room, each told why.
  const N = 80;
  const flood: Held[] = [];
  for (let i = 0; i < N; i++) {
    flood.push(hold({ port }, 'GET /metrics HTTP/1.1\r\nHost: loc'));
    await new Promise((r) => setTimeout(r, 2));
  }
  t.equal(await scrape(), 200, `a scrape answers with ${N} slow clients connected`);
  const evicted = N - 64 + 1;
  t.equal((await refusals(port))['tcp/connection_evicted'], evicted, 'each connection beyond 64 evicted one, the scrape too');
  const first = await flood[0].done;
  t.equal(first.status, 503, 'the oldest slow client was closed');
  t.same(JSON.parse(first.body), {
    error: 'closed to make room: 64 connections were open and this one had not finished its request',
    reason: 'connection_evicted',
  });
  for (const c of flood) c.socket.destroy();

  // Every slot busy with a change whose body never comes: a new connection is refused at once, while the
  // unix socket, a budget of its own, still takes a change; once they time out, scrapes come back. A
  // probe that arrives before all 64 requests are read evicts one that is not yet: it is replaced.
  const before = await refusals(port);
  const put = (): Held =>
    hold({ port }, 'PUT /api/mode HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 17\r\n\r\n{');
  const busy = Array.from({ length: 64 }, put);
  const replaced: Array<Promise<Raw>> = [];
  let full: Raw | undefined;
  await waitFor(
    'a connection refused because all 64 are busy',
    async () => {
      busy.forEach((c, i) => {
        if (!c.closed) return;
        replaced.push(c.done);
        busy[i] = put();
      });
      await new Promise((r) => setTimeout(r, 50));
      full = await raw({ port }, request('GET', '/metrics', { Host: 'localhost' }));
      return full.status === 503;
    },
    10000,
  );
  t.same(
    JSON.parse(full!.body),
    { error: '64 connections are open and all are being answered; try again', reason: 'too_many_connections' },
    'a connection beyond 64 busy ones: 503',
  );
  t.match(
    await runCli(['mode', 'bypass', '--api', api]),
    { code: 0, stdout: 'mode bypass (was kernel)\n' },
    'the unix socket still takes a change',
  );
  const cut = await Promise.all(busy.map((c) => c.done));
  t.equal(cut.filter((r) => r.status === 408).length, 64, 'the 64 busy ones are cut off by the request timeout');
  const evictedBusy = await Promise.all(replaced);
  t.ok(
    evictedBusy.every((r) => JSON.parse(r.body).reason === 'connection_evicted'),
    `the ${evictedBusy.length} replaced ones had been evicted for a probe`,
  );
  const after = await refusals(port);
  t.equal(after['tcp/request_timeout'] - before['tcp/request_timeout'], 64, 'timeouts counted');
  t.equal((after['tcp/connection_evicted'] ?? 0) - (before['tcp/connection_evicted'] ?? 0), evictedBusy.length, 'evictions counted');
  t.equal(after['unix/request_timeout'], 1);
  t.ok(after['tcp/too_many_connections'] >= 1, `refused connections counted (${after['tcp/too_many_connections']})`);
  t.equal(await scrape(), 200, 'scrapes answer again');
});

t.test('an idle keep-alive connection is closed', async (t) => {
  const { port } = await startServe(t, (_api, port) => ['--metrics', `127.0.0.1:${port}`]);
  const c = hold({ port }, 'GET /api/mode HTTP/1.1\r\nHost: localhost\r\n\r\n');
  const r = await c.done;
  t.equal(r.status, 200, 'answered, then left open for keep-alive until the server closed it');
});

t.test('control flags: bad ones exit 2 with one line naming the flag', async (t) => {
  const tmp = tempDir();
  t.teardown(tmp.cleanup);
  const sock = tmp.sock('x');
  const cases: Array<[string[], string]> = [
    [['serve', '--api-tcp'], '--api-tcp: changes over TCP are taken on the --metrics listener: give --metrics HOST:PORT too'],
    [['serve', '--api-owner', 'root'], '--api-owner: only meaningful with --api PATH'],
    [
      ['serve', '--api', sock, '--api-owner', ':vwnogroup'],
      `--api-owner ":vwnogroup": no group named "vwnogroup" (getent group vwnogroup found nothing)`,
    ],
    [['serve', '--api', sock, '--api-owner', 'bad name'], `--api-owner "bad name": "bad name" is neither a name nor a number`],
    [['serve', '--api', sock, '--vhost-user', `vm0=${sock}`], `--api "${sock}": socket path is already used by port "vm0"`],
    [['serve', '--api', 'x'.repeat(120)], `--api "${'x'.repeat(120)}": socket path is longer than 107 bytes`],
    [['serve', '--user', 'vwnouser'], '--user "vwnouser": no user named "vwnouser" (getent passwd vwnouser found nothing)'],
    [['serve', '--user', 'root'], '--user "root": uid 0 is root: name the unprivileged user serve should become'],
    [
      ['serve', '--user', 'nobody:vwnogroup'],
      '--user "nobody:vwnogroup": no group named "vwnogroup" (getent group vwnogroup found nothing)',
    ],
  ];
  const results = await Promise.all(cases.map(([args]) => runCli(args)));
  for (const [i, [args, line]] of cases.entries())
    t.match(results[i], { code: 2, stdout: '', stderr: `vhostwire serve: ${line}\n` }, args.join(' '));
});

/** The TCP ports process pid listens on (its socket inodes, looked up in /proc/net/tcp and tcp6). */
function listeningPorts(pid: number): number[] {
  const inodes = new Set(
    fs.readdirSync(`/proc/${pid}/fd`).flatMap((fd) => {
      const m = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${pid}/fd/${fd}`));
      return m ? [m[1]] : [];
    }),
  );
  const ports: number[] = [];
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    for (const line of fs.readFileSync(table, 'utf8').split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length > 9 && f[3] === '0A' && inodes.has(f[9])) ports.push(parseInt(f[1].split(':')[1], 16));
    }
  }
  return ports.sort();
}

t.test('SIGUSR1 does not open the Node.js inspector, which would let any local user run code in serve', async (t) => {
  const { serve, port } = await startServe(t, (_api, port) => ['--metrics', `127.0.0.1:${port}`]);
  t.same(listeningPorts(serve.pid), [port], 'serve listens on its --metrics port only');
  serve.kill('SIGUSR1');
  await serve.line(/^SIGUSR1: ignored \(serve does not open the Node.js inspector\)$/);
  t.same(listeningPorts(serve.pid), [port], 'and still only there');
  serve.kill('SIGTERM');
  t.same(await serve.wait(), { code: 0, signal: null });
});

t.test('the API socket: a live one is not taken over, one left by a killed serve is replaced', async (t) => {
  const first = await startServe(t, (api) => ['--api', api]);
  const second = await runCli(['serve', '--sink', 's0', '--mode', 'kernel', '--api', first.api]);
  t.match(
    second,
    { code: 1, stderr: `vhostwire serve: --api ${first.api}: another process is listening on it\n` },
    'a second serve on the same path exits 1',
  );
  t.match(await runCli(['mode', '--api', first.api]), { code: 0, stdout: 'mode kernel\n' }, 'the first one still answers');
  first.serve.kill('SIGKILL');
  await first.serve.wait();
  t.ok(fs.existsSync(first.api), 'a killed serve leaves its socket behind');
  const third = new Cli(['serve', '--sink', 's0', '--mode', 'kernel', '--api', first.api]);
  t.teardown(() => third.kill('SIGKILL'));
  await third.line(/^ready$/);
  t.match(
    await runCli(['mode', 'bypass', '--api', first.api]),
    { code: 0, stdout: 'mode bypass (was kernel)\n' },
    'the next serve removed it and listens there',
  );
  fs.writeFileSync(`${first.api}.file`, '');
  t.match(
    await runCli(['serve', '--api', `${first.api}.file`]),
    { code: 1, stderr: `vhostwire serve: --api ${first.api}.file: exists and is not a socket\n` },
    'a file that is not a socket is left alone',
  );
  t.ok(fs.existsSync(`${first.api}.file`));
});
