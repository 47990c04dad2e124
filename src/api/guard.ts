// Who may change things. A request to a route that changes state (`change: true` in http.ts) is
// accepted only when all of these hold, checked in this order on its headers, before any body is read:
//   1. the listener takes changes: the unix socket (--api PATH) always, since its file mode and owner
//      decide who can connect; TCP (--metrics) only with --api-tcp;
//   2. over TCP, the peer is on this host, and it carries the bearer token if --api-token-file is set;
//   3. the Host header names localhost or a loopback address, and an Origin header, if there is one,
//      names that same host: a web page that reaches us through DNS rebinding sends its own name as
//      Host, and a page of another site sends its own Origin;
//   4. the body is Content-Type: application/json, which a page cannot send to another origin without
//      a CORS preflight, and no preflight is ever answered.
// Read-only routes are open to anyone who can connect, as Prometheus expects.
import type { IncomingMessage } from 'node:http';
import { bearerMatches } from './token';
import { refusal, type ListenerKind, type Refusal } from './refusals';

export interface ChangePolicy {
  kind: ListenerKind;
  /** whether changes are accepted on this listener at all */
  changes: boolean;
  /** the bearer token changes must carry (TCP with --api-token-file) */
  token: string | null;
}

const LOOPBACK_PEER = /^(127\.|::1$|::ffff:127\.)/;
const HOST_RE = /^(localhost|127\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})|\[::1\])(?::(\d{1,5}))?$/i;

function isLoopbackHost(host: string): boolean {
  const m = HOST_RE.exec(host);
  if (!m) return false;
  const octets = [m[2], m[3], m[4]].filter((o) => o !== undefined).map(Number);
  return octets.every((o) => o <= 255) && (m[5] === undefined || Number(m[5]) <= 65535);
}

export function checkChange(req: IncomingMessage, policy: ChangePolicy): Refusal | null {
  if (!policy.changes)
    return refusal(
      403,
      'changes_over_tcp_off',
      'changes are not accepted over TCP: use the unix-socket API (serve --api PATH, then e.g. vhostwire mode kernel --api PATH) or start serve with --api-tcp',
    );
  if (policy.kind === 'tcp') {
    const peer = req.socket.remoteAddress ?? '';
    if (!LOOPBACK_PEER.test(peer)) return refusal(403, 'not_local', `changes over TCP are accepted from this host only, not from ${peer}`);
  }
  const host = req.headers.host;
  if (host === undefined || !isLoopbackHost(host))
    return refusal(
      403,
      'foreign_host',
      host === undefined
        ? 'a change must carry a Host header naming localhost or a loopback address'
        : `Host ${JSON.stringify(host)} is not this host: a change must name localhost or a loopback address (a web page that reaches us through DNS rebinding names its own)`,
    );
  const origin = req.headers.origin;
  if (origin !== undefined && origin.toLowerCase() !== `http://${host.toLowerCase()}`)
    return refusal(403, 'foreign_origin', `Origin ${JSON.stringify(origin)} is not http://${host}: changes from web pages are refused`);
  if (policy.kind === 'tcp' && policy.token !== null) {
    const auth = req.headers.authorization;
    const challenge = { 'www-authenticate': 'Bearer realm="vhostwire"' };
    if (auth === undefined)
      return refusal(
        401,
        'no_token',
        'changes over TCP need the bearer token of serve --api-token-file: pass --api-token-file FILE (sent as Authorization: Bearer ...)',
        challenge,
      );
    if (!bearerMatches(auth, policy.token))
      return refusal(401, 'bad_token', "the bearer token is not the one in serve's --api-token-file", challenge);
  }
  const type = req.headers['content-type'];
  if (type === undefined || type.split(';')[0].trim().toLowerCase() !== 'application/json')
    return refusal(
      415,
      'wrong_content_type',
      `a change must be sent as Content-Type: application/json, not ${type === undefined ? 'without one' : JSON.stringify(type)}`,
    );
  return null;
}
