// The bearer token that changes over TCP may be required to carry (serve --api-token-file), and that
// the client commands send (--api-token-file on mode, stats). Read from a file, never from the command
// line, where every local user can read it in /proc/PID/cmdline. Compared in constant time: both sides
// are hashed first, so neither the comparison nor the lengths tell anything about the token.
import { createHash, timingSafeEqual } from 'node:crypto';
import * as fs from 'node:fs';

/** RFC 6750's b64token: what an Authorization header can carry as it is. */
const TOKEN_RE = /^[A-Za-z0-9\-._~+/]+=*$/;
export const MIN_TOKEN_LENGTH = 16;

/** The token in `file` (one line; a trailing newline is ignored); otherwise an Error naming `flag`, for the caller to report as bad input. */
export function readTokenFile(flag: string, file: string): string {
  const where = `${flag} ${JSON.stringify(file)}`;
  let st: fs.Stats;
  let text: string;
  try {
    st = fs.statSync(file);
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new Error(`${where}: cannot read: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
  }
  if (!st.isFile()) throw new Error(`${where}: not a regular file`);
  // As ssh does with keys: a token others can read is no secret, one others can write is not ours.
  if (st.mode & 0o026)
    throw new Error(
      `${where}: mode ${(st.mode & 0o777).toString(8).padStart(4, '0')} lets other users read or change it; chmod 600 (or 640) it`,
    );
  const token = text.replace(/\r?\n$/, '');
  if (!TOKEN_RE.test(token))
    throw new Error(
      `${where}: the token must be one line of A-Z a-z 0-9 - . _ ~ + / (base64 or hex), e.g. from: head -c 32 /dev/urandom | base64`,
    );
  if (token.length < MIN_TOKEN_LENGTH)
    throw new Error(
      `${where}: the token is ${token.length} characters; use at least ${MIN_TOKEN_LENGTH}, e.g. head -c 32 /dev/urandom | base64`,
    );
  return token;
}

const digest = (s: string): Buffer => createHash('sha256').update(s).digest();

/** Whether an Authorization header value is `Bearer <token>`, compared in constant time. */
export function bearerMatches(header: string | undefined, token: string): boolean {
  const m = /^Bearer +(\S+) *$/i.exec(header ?? '');
  return timingSafeEqual(digest(m ? m[1] : ''), digest(token)) && m !== null;
}
