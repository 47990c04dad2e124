// The pieces every parser of user input is built from: one error type whose one-line message names the
// flag (or config key) and the bad value, strict number syntax, option lists, and the checks of JSON
// values from a --config file. Port kinds (src/ports/) and the serve options (options.ts) share them.
import { native } from '../native';

export class UsageError extends Error {
  override name = 'UsageError';
}

/** The limits user input is checked against: the addon's own (native.limits), stated once there. */
export const limits = native.limits;

const NAME_RE = /^[A-Za-z0-9_.-]{1,32}$/;
// sun_path is 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH = 107;

export function fail(where: string, message: string): never {
  throw new UsageError(`${where}: ${message}`);
}

export function flagWhere(flag: string, value: string): string {
  return `${flag} ${JSON.stringify(value)}`;
}

// Strict decimal: "08" and "1e3" are fine for Number() but are typos on a command line.
export function parseUint(where: string, what: string, text: string): number {
  if (!/^(0|[1-9][0-9]*)$/.test(text)) fail(where, `${what} must be a non-negative integer, got "${text}"`);
  const n = Number(text);
  if (!Number.isSafeInteger(n)) fail(where, `${what} is too large: ${text}`);
  return n;
}

export function checkRange(where: string, what: string, n: number, min: number, max: number): number {
  if (n < min || n > max) fail(where, `${what} must be ${min}..${max}, got ${n}`);
  return n;
}

export function checkName(where: string, name: string): string {
  if (!NAME_RE.test(name)) fail(where, `port name "${name}" must be 1-32 of A-Z a-z 0-9 _ . -`);
  return name;
}

export function checkSocketPath(where: string, path: string): string {
  if (path === '') fail(where, 'socket path is empty');
  if (Buffer.byteLength(path) > MAX_SOCKET_PATH) fail(where, `socket path is longer than ${MAX_SOCKET_PATH} bytes`);
  return path;
}

/**
 * The `KEY` and `KEY=VALUE` options after a flag's first part (`vm0=/x,client,queues=2`): each key at most
 * once. A key given without a value maps to undefined.
 */
export function parseOptions(where: string, opts: string[]): Map<string, string | undefined> {
  const out = new Map<string, string | undefined>();
  for (const opt of opts) {
    const eq = opt.indexOf('=');
    const [key, value] = eq < 0 ? [opt, undefined] : [opt.slice(0, eq), opt.slice(eq + 1)];
    if (out.has(key)) fail(where, `option "${key}" given twice`);
    out.set(key, value);
  }
  return out;
}

/** `NAME=REST` as flags for a port spell it. */
export function splitNamed(where: string, text: string, syntax: string): [string, string] {
  const eq = text.indexOf('=');
  if (eq <= 0 || eq === text.length - 1) fail(where, `expected ${syntax}`);
  return [checkName(where, text.slice(0, eq)), text.slice(eq + 1)];
}

// ---- values from the --config file ----

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
export type JsonObject = { [key: string]: Json };

export function isObject(v: Json | undefined): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function describe(v: Json | undefined): string {
  return v === undefined ? 'nothing' : JSON.stringify(v);
}

export function configString(where: string, v: Json | undefined): string {
  if (typeof v !== 'string') fail(where, `expected a string, got ${describe(v)}`);
  return v;
}

export function configUint(where: string, v: Json | undefined): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) fail(where, `expected a non-negative integer, got ${describe(v)}`);
  return v;
}

export function configBool(where: string, v: Json | undefined): boolean {
  if (typeof v !== 'boolean') fail(where, `expected true or false, got ${describe(v)}`);
  return v;
}

export function configArray(where: string, v: Json | undefined): Json[] {
  if (!Array.isArray(v)) fail(where, `expected an array, got ${describe(v)}`);
  return v;
}

export function configObject(where: string, v: Json | undefined, keys: string[]): JsonObject {
  if (!isObject(v)) fail(where, `expected an object, got ${describe(v)}`);
  for (const key of Object.keys(v)) if (!keys.includes(key)) fail(where, `unknown key "${key}" (expected ${keys.join(', ')})`);
  return v;
}
