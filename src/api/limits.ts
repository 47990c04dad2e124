// What any one client may hold of a listener, so that slow or oversized clients can neither keep it
// busy nor grow its memory. The figures are far above what Prometheus or our own commands need (a
// request of a few hundred bytes, answered at once) and far below what would cost anything.
import type * as http from 'node:http';
import type { Socket } from 'node:net';

export const LIMITS = {
  /** All request headers together (Node's own default is 16 KiB): beyond it, 431. */
  maxHeaderBytes: 8 * 1024,
  /** A change's JSON body: beyond it, 413. */
  maxBodyBytes: 16 * 1024,
  /** From the connection (or the end of the previous request) to the end of the headers: then 408. */
  headersTimeoutMs: 5_000,
  /** The whole request, body included: then 408. */
  requestTimeoutMs: 10_000,
  /** An idle keep-alive connection is closed after this. */
  keepAliveTimeoutMs: 5_000,
  /** A connection on which nothing moves at all (e.g. a client that stopped reading) is closed after this. */
  idleTimeoutMs: 30_000,
  /** How often Node checks the two request timeouts: their resolution. */
  timeoutCheckMs: 500,
  /** Open connections per listener; see ConnectionBudget for what happens at the limit. */
  maxConnections: 64,
} as const;

/** Options for http.createServer that carry the limits above. */
export function serverOptions(): http.ServerOptions {
  return {
    maxHeaderSize: LIMITS.maxHeaderBytes,
    headersTimeout: LIMITS.headersTimeoutMs,
    requestTimeout: LIMITS.requestTimeoutMs,
    keepAliveTimeout: LIMITS.keepAliveTimeoutMs,
    connectionsCheckingInterval: LIMITS.timeoutCheckMs,
    // Checked by the handler instead, so that this refusal is counted like the others.
    requireHostHeader: false,
  };
}

/**
 * The connections of one listener, oldest first. At the limit, a new connection closes the oldest one
 * on which no request is being answered (an idle keep-alive connection, or one still dribbling its
 * headers): a slow client holds a slot only until others need it, and a scrape still gets in. Only
 * when every connection is in the middle of being answered is the new one closed instead.
 */
export class ConnectionBudget {
  /** socket -> a request is being answered on it */
  readonly #sockets = new Map<Socket, boolean>();

  /** cut answers the socket with the refusal and closes it. */
  constructor(
    readonly max: number,
    readonly cut: (socket: Socket, reason: 'too_many_connections' | 'connection_evicted') => void,
  ) {}

  get size(): number {
    return this.#sockets.size;
  }

  admit(socket: Socket): void {
    if (this.#sockets.size >= this.max) {
      const victim = [...this.#sockets].find(([, busy]) => !busy)?.[0];
      if (victim === undefined) {
        this.cut(socket, 'too_many_connections');
        return;
      }
      this.#sockets.delete(victim);
      this.cut(victim, 'connection_evicted');
    }
    this.#sockets.set(socket, false);
    socket.once('close', () => this.#sockets.delete(socket));
  }

  /** Marks the connection as answering a request until `res` is done. */
  answering(socket: Socket, res: http.ServerResponse): void {
    if (!this.#sockets.has(socket)) return;
    this.#sockets.set(socket, true);
    res.once('close', () => {
      if (this.#sockets.has(socket)) this.#sockets.set(socket, false);
    });
  }
}
