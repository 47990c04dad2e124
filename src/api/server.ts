// Where the API listens: a TCP address (serve --metrics) and a unix socket (serve --api), each its own
// http.Server with the bounds of limits.ts and its own connection budget, all answered by the one
// handler of http.ts. What the server refuses before a request reaches that handler (oversized headers,
// timeouts, unparsable requests, connections beyond the budget) is answered and counted here.
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import type { AddressInfo, Socket } from 'node:net';
import type { ChangePolicy } from './guard';
import { ConnectionBudget, LIMITS, serverOptions } from './limits';
import { refusal, refusalBody, type Refusal, type RefusalCounter } from './refusals';

export type Handler = (req: http.IncomingMessage, res: http.ServerResponse, policy: ChangePolicy) => void;

export interface UnixTarget {
  path: string;
  /** owner and group of the socket file (mode 0660) */
  uid: number;
  gid: number;
}

export type Target = { tcp: { host: string; port: number } } | { unix: UnixTarget };

export interface ApiListener {
  /** http://HOST:PORT for TCP, the socket path for unix */
  readonly address: string;
  close(): Promise<void>;
}

export const SOCKET_MODE = 0o660;

/** Writes a refusal on a socket the HTTP layer has given up on, then closes it once written. */
function refuseRaw(socket: Socket, r: Refusal): void {
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  const body = refusalBody(r);
  socket.write(
    `HTTP/1.1 ${r.status} ${http.STATUS_CODES[r.status]}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  );
  socket.destroySoon();
}

function clientErrorRefusal(err: NodeJS.ErrnoException): Refusal | null {
  switch (err.code) {
    case 'HPE_HEADER_OVERFLOW':
      return refusal(431, 'header_too_large', `the request headers are larger than ${LIMITS.maxHeaderBytes} bytes`);
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return refusal(
        408,
        'request_timeout',
        `the request was not complete in time (headers within ${LIMITS.headersTimeoutMs} ms, all of it within ${LIMITS.requestTimeoutMs} ms)`,
      );
    default:
      // The parser's own errors (HPE_*); anything else is the connection failing under us.
      return err.code?.startsWith('HPE_') ? refusal(400, 'malformed_request', `not a valid HTTP/1.1 request (${err.code})`) : null;
  }
}

// A socket file nobody listens on was left by a process that died and is removed; a live one belongs to
// another process and is not taken over; anything else at the path is not ours to remove.
async function removeStaleSocket(path: string): Promise<void> {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw new Error(`--api ${path}: ${(e as NodeJS.ErrnoException).code}`);
  }
  if (!st.isSocket()) throw new Error(`--api ${path}: exists and is not a socket`);
  const live = await new Promise<boolean>((resolve, reject) => {
    const probe = net.connect(path);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', (e: NodeJS.ErrnoException) =>
      e.code === 'ECONNREFUSED' ? resolve(false) : reject(new Error(`--api ${path}: cannot probe it: ${e.code}`)),
    );
  });
  if (live) throw new Error(`--api ${path}: another process is listening on it`);
  fs.unlinkSync(path);
}

export async function listenApi(target: Target, policy: ChangePolicy, handle: Handler, refusals: RefusalCounter): Promise<ApiListener> {
  const budget = new ConnectionBudget(LIMITS.maxConnections, (socket, reason) => {
    refusals.count(policy.kind, reason);
    refuseRaw(
      socket,
      reason === 'too_many_connections'
        ? refusal(503, reason, `${LIMITS.maxConnections} connections are open and all are being answered; try again`)
        : refusal(
            503,
            reason,
            `closed to make room: ${LIMITS.maxConnections} connections were open and this one had not finished its request`,
          ),
    );
  });
  const server = http.createServer(serverOptions(), (req, res) => {
    budget.answering(req.socket, res);
    handle(req, res, policy);
  });
  server.timeout = LIMITS.idleTimeoutMs;
  server.on('connection', (socket: Socket) => budget.admit(socket));
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    const r = clientErrorRefusal(err);
    if (r === null) {
      socket.destroy();
      return;
    }
    refusals.count(policy.kind, r.reason);
    refuseRaw(socket, r);
  });

  const listening = new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.once('listening', () => {
      server.off('error', reject);
      resolve();
    });
  });
  if ('tcp' in target) {
    server.listen(target.tcp.port, target.tcp.host);
  } else {
    await removeStaleSocket(target.unix.path);
    // bind() creates the file with the umask's mode: owner-only until chmod below opens it to the group.
    const umask = process.umask(0o177);
    try {
      server.listen(target.unix.path);
    } finally {
      process.umask(umask);
    }
  }
  try {
    await listening;
  } catch (e) {
    const where = 'tcp' in target ? `--metrics ${target.tcp.host}:${target.tcp.port}` : `--api ${target.unix.path}`;
    throw new Error(`${where}: cannot listen: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
  }

  let address: string;
  if ('tcp' in target) {
    const addr = server.address() as AddressInfo;
    address = `http://${addr.family === 'IPv6' ? `[${addr.address}]` : addr.address}:${addr.port}`;
  } else {
    address = target.unix.path;
    try {
      fs.chownSync(address, target.unix.uid, target.unix.gid);
      fs.chmodSync(address, SOCKET_MODE);
    } catch (e) {
      server.close();
      throw new Error(
        `--api ${address}: cannot give it owner ${target.unix.uid}:${target.unix.gid} and mode 0660: ${(e as NodeJS.ErrnoException).code ?? String(e)}`,
      );
    }
  }
  let closing: Promise<void> | undefined;
  return {
    address,
    close() {
      // Keep-alive clients (Prometheus) would otherwise hold close() open. Closing a unix listener removes its file.
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closing;
    },
  };
}
