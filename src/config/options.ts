// User input is validated here, once, at the edge: the command line and the --config file become one
// flat, checked ServeConfig, and everything below (Switch, native addon) trusts it. Every problem is a
// UsageError whose one-line message names the flag (or config key) and the bad value.
import * as fs from 'node:fs';
import * as os from 'node:os';
import type { Mode } from '../native';
import { readTokenFile } from '../api/token';
import { lookupAccount, lookupGroup, type Account } from './account';

export class UsageError extends Error {
  override name = 'UsageError';
}

export const MAX_QUEUE_PAIRS = 8;
export const MIN_FRAME = 60;
export const MAX_FRAME = 9000;
export const DEFAULT_FRAME = 64;
export const DEFAULT_METRICS_HOST = '127.0.0.1';
/** Where `vhostwire stats` looks when no --url is given; serve listens there with `--metrics 9470`. */
export const DEFAULT_METRICS_PORT = 9470;
// sun_path is 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH = 107;
const NAME_RE = /^[A-Za-z0-9_.-]{1,32}$/;
// What Linux accepts as an interface name: 1-15 bytes, no '/', ':' or whitespace, not "." or "..".
const IFNAME_RE = /^[^/:\s]{1,15}$/;
const MAX_IFNAME = 15;

export interface VhostUserSpec {
  name: string;
  path: string;
  client: boolean;
  queues: number;
}

export interface UplinkSpec {
  name: string;
  /** host interface */
  ifname: string;
}

export interface GenSpec {
  name: string;
  /** frame bytes */
  size: number;
  /** packets per second, 0 = unlimited */
  rate: number;
  /** packets in total, 0 = unlimited */
  count: number;
}

export interface Endpoint {
  host: string;
  port: number;
}

export interface ServeConfig {
  vhostUser: VhostUserSpec[];
  uplink: UplinkSpec[];
  sink: string[];
  gen: GenSpec[];
  wire: Array<[string, string]>;
  mode: Mode;
  /** CPUs to pin one PMD thread each to; empty: one unpinned PMD thread. */
  pmdCores: number[];
  metrics: Endpoint | null;
  control: ControlConfig;
}

/** The serve flags as yargs hands them over: raw strings, repeatable flags as arrays. */
export interface ServeFlags {
  vhostUser?: string[];
  uplink?: string[];
  sink?: string[];
  gen?: string[];
  wire?: string[];
  mode?: string;
  pmdCores?: string;
  metrics?: string;
  config?: string;
  api?: string;
  apiOwner?: string;
  apiTcp?: boolean;
  apiTokenFile?: string;
  user?: string;
}

function fail(where: string, message: string): never {
  throw new UsageError(`${where}: ${message}`);
}

function flagWhere(flag: string, value: string): string {
  return `${flag} ${JSON.stringify(value)}`;
}

// Strict decimal: "08" and "1e3" are fine for Number() but are typos on a command line.
function parseUint(where: string, what: string, text: string): number {
  if (!/^(0|[1-9][0-9]*)$/.test(text)) fail(where, `${what} must be a non-negative integer, got "${text}"`);
  const n = Number(text);
  if (!Number.isSafeInteger(n)) fail(where, `${what} is too large: ${text}`);
  return n;
}

function parseRate(where: string, text: string): number {
  if (!/^(0|[1-9][0-9]*)(\.[0-9]+)?$/.test(text)) fail(where, `rate must be a non-negative number of packets per second, got "${text}"`);
  return Number(text);
}

function checkRange(where: string, what: string, n: number, min: number, max: number): number {
  if (n < min || n > max) fail(where, `${what} must be ${min}..${max}, got ${n}`);
  return n;
}

function checkName(where: string, name: string): string {
  if (!NAME_RE.test(name)) fail(where, `port name "${name}" must be 1-32 of A-Z a-z 0-9 _ . -`);
  return name;
}

function checkSocketPath(where: string, path: string): string {
  if (path === '') fail(where, 'socket path is empty');
  if (Buffer.byteLength(path) > MAX_SOCKET_PATH) fail(where, `socket path is longer than ${MAX_SOCKET_PATH} bytes`);
  return path;
}

/** `NAME=PATH[,client][,queues=N]` */
export function parseVhostUser(text: string): VhostUserSpec {
  const where = flagWhere('--vhost-user', text);
  const eq = text.indexOf('=');
  if (eq <= 0 || eq === text.length - 1) fail(where, 'expected NAME=PATH[,client][,queues=N]');
  const [path, ...opts] = text.slice(eq + 1).split(',');
  const spec: VhostUserSpec = {
    name: checkName(where, text.slice(0, eq)),
    path: checkSocketPath(where, path),
    client: false,
    queues: 1,
  };
  const seen = new Set<string>();
  for (const opt of opts) {
    const [key, value] = splitOption(opt);
    if (seen.has(key)) fail(where, `option "${key}" given twice`);
    seen.add(key);
    if (key === 'client' && value === undefined) spec.client = true;
    else if (key === 'queues' && value !== undefined)
      spec.queues = checkRange(where, 'queues', parseUint(where, 'queues', value), 1, MAX_QUEUE_PAIRS);
    else fail(where, `unknown option "${opt}" (expected client or queues=N)`);
  }
  return spec;
}

export function interfaceExists(ifname: string): boolean {
  return fs.existsSync(`/sys/class/net/${ifname}`);
}

function checkInterface(where: string, ifname: string): string {
  if (!IFNAME_RE.test(ifname) || ifname === '.' || ifname === '..' || Buffer.byteLength(ifname) > MAX_IFNAME)
    fail(where, `"${ifname}" is not an interface name (1-${MAX_IFNAME} bytes, no '/', ':' or spaces)`);
  if (!interfaceExists(ifname)) fail(where, `interface "${ifname}" does not exist (no /sys/class/net/${ifname})`);
  return ifname;
}

/** `NAME=IFNAME`: the interface must exist now. */
export function parseUplink(text: string): UplinkSpec {
  const where = flagWhere('--uplink', text);
  const eq = text.indexOf('=');
  if (eq <= 0 || eq === text.length - 1) fail(where, 'expected NAME=IFNAME');
  return { name: checkName(where, text.slice(0, eq)), ifname: checkInterface(where, text.slice(eq + 1)) };
}

/** `NAME[,size=N][,rate=PPS][,count=N]` */
export function parseGen(text: string): GenSpec {
  const where = flagWhere('--gen', text);
  const [name, ...opts] = text.split(',');
  const spec: GenSpec = { name: checkName(where, name), size: DEFAULT_FRAME, rate: 0, count: 0 };
  const seen = new Set<string>();
  for (const opt of opts) {
    const [key, value] = splitOption(opt);
    if (seen.has(key)) fail(where, `option "${key}" given twice`);
    seen.add(key);
    if (value === undefined) fail(where, `unknown option "${opt}" (expected size=N, rate=PPS or count=N)`);
    if (key === 'size') spec.size = checkRange(where, 'size', parseUint(where, 'size', value), MIN_FRAME, MAX_FRAME);
    else if (key === 'rate') spec.rate = parseRate(where, value);
    else if (key === 'count') spec.count = parseUint(where, 'count', value);
    else fail(where, `unknown option "${opt}" (expected size=N, rate=PPS or count=N)`);
  }
  return spec;
}

function splitOption(opt: string): [string, string | undefined] {
  const eq = opt.indexOf('=');
  return eq < 0 ? [opt, undefined] : [opt.slice(0, eq), opt.slice(eq + 1)];
}

export function parseSink(text: string): string {
  return checkName(flagWhere('--sink', text), text);
}

/** `A=B`; whether A and B exist is checked against the whole configuration. */
export function parseWire(text: string): [string, string] {
  const where = flagWhere('--wire', text);
  const parts = text.split('=');
  if (parts.length !== 2) fail(where, 'expected A=B (two port names)');
  return [checkName(where, parts[0]), checkName(where, parts[1])];
}

export function parseMode(text: string, where = flagWhere('--mode', text)): Mode {
  if (text !== 'bypass' && text !== 'kernel') fail(where, 'expected bypass or kernel');
  return text;
}

/** `1`, `0,1`, `2-3`, `0,2-3`: each CPU must exist on this machine. */
export function parsePmdCores(text: string, cpuCount = os.cpus().length, where = flagWhere('--pmd-cores', text)): number[] {
  const cores: number[] = [];
  for (const item of text.split(',')) {
    const m = /^([0-9]+)(?:-([0-9]+))?$/.exec(item);
    if (!m) fail(where, `expected a CPU list such as 1, 0,1 or 2-3, got "${item}"`);
    const first = parseUint(where, 'CPU', m[1]);
    const last = m[2] === undefined ? first : parseUint(where, 'CPU', m[2]);
    if (last < first) fail(where, `range ${item} runs backwards`);
    for (let cpu = first; cpu <= last; cpu++) {
      if (cpu >= cpuCount) fail(where, `CPU ${cpu} does not exist (this machine has CPUs 0-${cpuCount - 1})`);
      if (cores.includes(cpu)) fail(where, `CPU ${cpu} listed twice`);
      cores.push(cpu);
    }
  }
  return cores;
}

/** `HOST:PORT`, `[IPv6]:PORT` or just `PORT` (host 127.0.0.1: metrics stay local unless asked). */
export function parseEndpoint(text: string, where = flagWhere('--metrics', text)): Endpoint {
  const m = /^(?:(\[[0-9A-Fa-f:.]+\]|[^:[\]]+):)?([^:]*)$/.exec(text);
  if (!m || m[2] === '') fail(where, 'expected HOST:PORT or PORT');
  const host = m[1] === undefined ? DEFAULT_METRICS_HOST : m[1].replace(/^\[(.*)\]$/, '$1');
  const port = checkRange(where, 'port', parseUint(where, 'port', m[2]), 0, 65535);
  return { host, port };
}

// ---- the control plane: the API's sockets, who may change things, the user serve runs as ----

export interface ControlConfig {
  /** --api PATH: the unix-socket API, where changes are made; the socket gets mode 0660 and this owner */
  api: { path: string; uid: number; gid: number } | null;
  /** --api-tcp: changes are accepted on the --metrics listener too (from this host) */
  apiTcp: boolean;
  /** --api-token-file: the bearer token changes over TCP must carry */
  apiToken: string | null;
  /** --user: the user serve becomes after setup (serve must start as root) */
  user: Account | null;
}

/** The control settings of one source (the flags, or the config file), checked one by one. */
interface ControlSettings {
  api?: string;
  /** --api-owner: parts not given come from --user or the process */
  apiOwner?: { uid?: number; gid?: number };
  apiTcp?: boolean;
  apiToken?: string;
  user?: Account;
}

const CONTROL_KEYS = ['api', 'apiOwner', 'apiTcp', 'apiTokenFile', 'user'];

function resolve<T>(where: string, lookup: () => T): T {
  try {
    return lookup();
  } catch (e) {
    return fail(where, (e as Error).message);
  }
}

/** `USER[:GROUP]` or `:GROUP` */
function parseOwner(where: string, text: string): { uid?: number; gid?: number } {
  const colon = text.indexOf(':');
  const user = colon < 0 ? text : text.slice(0, colon);
  const group = colon < 0 ? undefined : text.slice(colon + 1);
  if (user === '' && (group === undefined || group === '')) fail(where, 'expected USER, USER:GROUP or :GROUP');
  return {
    uid: user === '' ? undefined : resolve(where, () => lookupAccount(user).uid),
    gid: group === undefined ? undefined : resolve(where, () => lookupGroup(group)),
  };
}

/** `USER[:GROUP]`, an existing unprivileged user; changing to it needs root. */
function parseUser(where: string, text: string): Account {
  const account = resolve(where, () => lookupAccount(text));
  if (account.uid === 0) fail(where, 'uid 0 is root: name the unprivileged user serve should become');
  const euid = process.geteuid?.() ?? 0;
  if (euid !== 0)
    fail(where, `changing user needs root, and this process runs as uid ${euid}: start serve as that user instead, with the capabilities docs/security.md lists`);
  return account;
}

function controlSettings(raw: { api?: string; apiOwner?: string; apiTcp?: boolean; apiTokenFile?: string; user?: string }, where: (key: string, flag: string, value?: string) => string): ControlSettings {
  const out: ControlSettings = {};
  if (raw.api !== undefined) out.api = checkSocketPath(where('api', '--api', raw.api), raw.api);
  if (raw.apiOwner !== undefined) out.apiOwner = parseOwner(where('apiOwner', '--api-owner', raw.apiOwner), raw.apiOwner);
  if (raw.apiTcp !== undefined) out.apiTcp = raw.apiTcp;
  if (raw.apiTokenFile !== undefined) {
    const file = raw.apiTokenFile;
    try {
      out.apiToken = readTokenFile(where('apiTokenFile', '--api-token-file'), file);
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
  }
  if (raw.user !== undefined) out.user = parseUser(where('user', '--user', raw.user), raw.user);
  return out;
}

function loadControlSettings(obj: JsonObject, top: string): ControlSettings {
  const at = (key: string): string => `${top}: ${key}`;
  if (obj.apiTcp !== undefined && typeof obj.apiTcp !== 'boolean') fail(at('apiTcp'), `expected true or false, got ${describe(obj.apiTcp)}`);
  const text = (key: string): string | undefined => (obj[key] === undefined ? undefined : configString(at(key), obj[key]));
  return controlSettings(
    { api: text('api'), apiOwner: text('apiOwner'), apiTcp: obj.apiTcp as boolean | undefined, apiTokenFile: text('apiTokenFile'), user: text('user') },
    (key, _flag, value) => (value === undefined ? at(key) : `${at(key)} ${JSON.stringify(value)}`),
  );
}

/** The flags override the file, setting by setting. */
function buildControlConfig(file: ControlSettings, flags: ServeFlags): ControlConfig {
  const s: ControlSettings = { ...file, ...controlSettings(flags, (_key, flag, value) => (value === undefined ? flag : flagWhere(flag, value))) };
  if (s.apiOwner !== undefined && s.api === undefined) fail('--api-owner', 'only meaningful with --api PATH');
  if (s.apiToken !== undefined && s.apiTcp !== true)
    fail('--api-token-file', 'only meaningful with --api-tcp (who may use the unix socket is decided by its owner and mode)');
  const uid = s.apiOwner?.uid ?? s.user?.uid ?? process.geteuid?.() ?? 0;
  const gid = s.apiOwner?.gid ?? s.user?.gid ?? process.getegid?.() ?? 0;
  return {
    api: s.api === undefined ? null : { path: s.api, uid, gid },
    apiTcp: s.apiTcp === true,
    apiToken: s.apiToken ?? null,
    user: s.user ?? null,
  };
}

/** What only the whole configuration can tell. */
function checkControl(config: ServeConfig): void {
  const { api, apiTcp } = config.control;
  if (apiTcp && config.metrics === null) fail('--api-tcp', 'changes over TCP are taken on the --metrics listener: give --metrics HOST:PORT too');
  const port = api && config.vhostUser.find((v) => v.path === api.path);
  if (api && port) fail(flagWhere('--api', api.path), `socket path is already used by port "${port.name}"`);
}

// ---- the --config file ----

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type JsonObject = { [key: string]: Json };

const CONFIG_KEYS = ['vhostUser', 'uplink', 'sink', 'gen', 'wire', 'mode', 'pmdCores', 'metrics', ...CONTROL_KEYS];

function isObject(v: Json | undefined): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function describe(v: Json | undefined): string {
  return v === undefined ? 'nothing' : JSON.stringify(v);
}

function configString(where: string, v: Json | undefined): string {
  if (typeof v !== 'string') fail(where, `expected a string, got ${describe(v)}`);
  return v;
}

function configUint(where: string, v: Json | undefined): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0)
    fail(where, `expected a non-negative integer, got ${describe(v)}`);
  return v;
}

function configArray(where: string, v: Json | undefined): Json[] {
  if (!Array.isArray(v)) fail(where, `expected an array, got ${describe(v)}`);
  return v;
}

function configObject(where: string, v: Json | undefined, keys: string[]): JsonObject {
  if (!isObject(v)) fail(where, `expected an object, got ${describe(v)}`);
  for (const key of Object.keys(v)) if (!keys.includes(key)) fail(where, `unknown key "${key}" (expected ${keys.join(', ')})`);
  return v;
}

/** A config file's contents, checked; keys the file does not give stay undefined. */
type ConfigFile = Partial<Omit<ServeConfig, 'control'>> & { control?: ControlSettings };

export function loadConfigFile(file: string, cpuCount = os.cpus().length): ConfigFile {
  const top = `--config ${JSON.stringify(file)}`;
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    fail(top, `cannot read: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
  }
  let json: Json;
  try {
    json = JSON.parse(text) as Json;
  } catch (e) {
    fail(top, `invalid JSON: ${(e as Error).message}`);
  }
  const obj = configObject(top, json, CONFIG_KEYS);
  const out: ConfigFile = {};
  if (obj.vhostUser !== undefined) {
    out.vhostUser = configArray(`${top}: vhostUser`, obj.vhostUser).map((item, i) => {
      const where = `${top}: vhostUser[${i}]`;
      const o = configObject(where, item, ['name', 'path', 'client', 'queues']);
      if (o.client !== undefined && typeof o.client !== 'boolean')
        fail(`${where}.client`, `expected true or false, got ${describe(o.client)}`);
      return {
        name: checkName(where, configString(`${where}.name`, o.name)),
        path: checkSocketPath(where, configString(`${where}.path`, o.path)),
        client: o.client === true,
        queues: o.queues === undefined ? 1 : checkRange(where, 'queues', configUint(`${where}.queues`, o.queues), 1, MAX_QUEUE_PAIRS),
      };
    });
  }
  if (obj.uplink !== undefined) {
    out.uplink = configArray(`${top}: uplink`, obj.uplink).map((item, i) => {
      const where = `${top}: uplink[${i}]`;
      const o = configObject(where, item, ['name', 'ifname']);
      return {
        name: checkName(where, configString(`${where}.name`, o.name)),
        ifname: checkInterface(where, configString(`${where}.ifname`, o.ifname)),
      };
    });
  }
  if (obj.sink !== undefined) {
    out.sink = configArray(`${top}: sink`, obj.sink).map((item, i) =>
      checkName(`${top}: sink[${i}]`, configString(`${top}: sink[${i}]`, item)),
    );
  }
  if (obj.gen !== undefined) {
    out.gen = configArray(`${top}: gen`, obj.gen).map((item, i) => {
      const where = `${top}: gen[${i}]`;
      const o = configObject(where, item, ['name', 'size', 'rate', 'count']);
      if (o.rate !== undefined && (typeof o.rate !== 'number' || !Number.isFinite(o.rate) || o.rate < 0))
        fail(`${where}.rate`, `expected a non-negative number, got ${describe(o.rate)}`);
      return {
        name: checkName(where, configString(`${where}.name`, o.name)),
        size: o.size === undefined ? DEFAULT_FRAME : checkRange(where, 'size', configUint(`${where}.size`, o.size), MIN_FRAME, MAX_FRAME),
        rate: o.rate ?? 0,
        count: o.count === undefined ? 0 : configUint(`${where}.count`, o.count),
      };
    });
  }
  if (obj.wire !== undefined) {
    out.wire = configArray(`${top}: wire`, obj.wire).map((item, i) => {
      const where = `${top}: wire[${i}]`;
      const pair = configArray(where, item);
      if (pair.length !== 2) fail(where, `expected ["A", "B"], got ${describe(item)}`);
      const a = checkName(where, configString(where, pair[0]));
      const b = checkName(where, configString(where, pair[1]));
      return [a, b];
    });
  }
  if (obj.mode !== undefined) out.mode = parseMode(configString(`${top}: mode`, obj.mode), `${top}: mode`);
  if (obj.pmdCores !== undefined) {
    const where = `${top}: pmdCores`;
    // Either the flag's syntax ("0,2-3") or a plain array of CPU numbers.
    const list = Array.isArray(obj.pmdCores)
      ? obj.pmdCores.map((c, i) => String(configUint(`${where}[${i}]`, c))).join(',')
      : configString(where, obj.pmdCores);
    out.pmdCores = parsePmdCores(list, cpuCount, where);
  }
  if (obj.metrics !== undefined) {
    out.metrics = parseEndpoint(configString(`${top}: metrics`, obj.metrics), `${top}: metrics`);
  }
  out.control = loadControlSettings(obj, top);
  return out;
}

// ---- the whole configuration ----

function wireWhere(a: string, b: string, fromFile: boolean): string {
  return fromFile ? `--config: wire ["${a}", "${b}"]` : `--wire ${a}=${b}`;
}

/**
 * Merges the config file (if any) with the flags: list flags add to the file's lists, single-valued
 * flags override the file. Then checks what only the whole configuration can tell (unique names and
 * paths, wires between existing ports).
 */
export function buildServeConfig(flags: ServeFlags, cpuCount = os.cpus().length): ServeConfig {
  const file = flags.config === undefined ? {} : loadConfigFile(flags.config, cpuCount);
  const fileWires = file.wire ?? [];
  const config: ServeConfig = {
    vhostUser: [...(file.vhostUser ?? []), ...(flags.vhostUser ?? []).map(parseVhostUser)],
    uplink: [...(file.uplink ?? []), ...(flags.uplink ?? []).map(parseUplink)],
    sink: [...(file.sink ?? []), ...(flags.sink ?? []).map(parseSink)],
    gen: [...(file.gen ?? []), ...(flags.gen ?? []).map(parseGen)],
    wire: [...fileWires, ...(flags.wire ?? []).map(parseWire)],
    mode: flags.mode === undefined ? (file.mode ?? 'bypass') : parseMode(flags.mode),
    pmdCores: flags.pmdCores === undefined ? (file.pmdCores ?? []) : parsePmdCores(flags.pmdCores, cpuCount),
    metrics: flags.metrics === undefined ? (file.metrics ?? null) : parseEndpoint(flags.metrics),
    control: buildControlConfig(file.control ?? {}, flags),
  };
  checkControl(config);

  const names = new Map<string, string>();
  const claim = (flag: string, name: string): void => {
    const previous = names.get(name);
    if (previous !== undefined) fail(`${flag} ${JSON.stringify(name)}`, `port name "${name}" is already used by ${previous}`);
    names.set(name, flag);
  };
  const paths = new Map<string, string>();
  for (const v of config.vhostUser) {
    claim('--vhost-user', v.name);
    const other = paths.get(v.path);
    if (other !== undefined) fail(`--vhost-user ${JSON.stringify(v.name)}`, `socket path ${v.path} is already used by port "${other}"`);
    paths.set(v.path, v.name);
  }
  const interfaces = new Map<string, string>();
  for (const u of config.uplink) {
    claim('--uplink', u.name);
    const other = interfaces.get(u.ifname);
    if (other !== undefined) fail(`--uplink ${JSON.stringify(u.name)}`, `interface ${u.ifname} is already used by uplink "${other}"`);
    interfaces.set(u.ifname, u.name);
  }
  for (const s of config.sink) claim('--sink', s);
  for (const g of config.gen) claim('--gen', g.name);

  const wired = new Map<string, string>();
  config.wire.forEach(([a, b], i) => {
    const where = wireWhere(a, b, i < fileWires.length);
    if (a === b) fail(where, 'a port cannot be wired to itself');
    for (const p of [a, b]) {
      if (!names.has(p)) fail(where, `no port named "${p}"`);
      const other = wired.get(p);
      if (other !== undefined) fail(where, `port "${p}" is already wired (${other}); a port is in at most one wire`);
    }
    wired.set(a, `${a}=${b}`);
    wired.set(b, `${a}=${b}`);
  });
  return config;
}

// ---- vhostwire peer ----

export interface PeerFlags {
  connect?: string;
  server?: boolean;
  tx?: string;
  rx?: boolean;
  duration?: string;
  queues?: string;
  rate?: string;
  count?: string;
}

export interface PeerConfig {
  path: string;
  server: boolean;
  queues: number;
  /** frame bytes to transmit, 0: do not transmit */
  txSize: number;
  txRate: number;
  txCount: number;
  rx: boolean;
  /** seconds to run, 0: until interrupted */
  duration: number;
}

export const DEFAULT_PEER_SECONDS = 10;

/** Without --tx or --rx the peer receives: listening is the harmless default. */
export function buildPeerConfig(flags: PeerFlags): PeerConfig {
  if (flags.connect === undefined) fail('--connect', 'the socket path is required');
  const path = checkSocketPath(flagWhere('--connect', flags.connect), flags.connect);
  const txSize =
    flags.tx === undefined ? 0 : checkRange(flagWhere('--tx', flags.tx), 'size', parseUint(flagWhere('--tx', flags.tx), 'size', flags.tx), MIN_FRAME, MAX_FRAME);
  for (const [flag, value] of [['--rate', flags.rate], ['--count', flags.count]] as const) {
    if (value !== undefined && txSize === 0) fail(flagWhere(flag, value), 'only meaningful with --tx SIZE');
  }
  let duration = DEFAULT_PEER_SECONDS;
  if (flags.duration !== undefined) {
    const where = flagWhere('--duration', flags.duration);
    if (!/^[0-9]+(\.[0-9]+)?$/.test(flags.duration)) fail(where, 'expected seconds (0: until interrupted)');
    duration = Number(flags.duration);
  }
  return {
    path,
    server: flags.server === true,
    queues: flags.queues === undefined ? 1 : checkRange(flagWhere('--queues', flags.queues), 'queues', parseUint(flagWhere('--queues', flags.queues), 'queues', flags.queues), 1, MAX_QUEUE_PAIRS),
    txSize,
    txRate: flags.rate === undefined ? 0 : parseRate(flagWhere('--rate', flags.rate), flags.rate),
    txCount: flags.count === undefined ? 0 : parseUint(flagWhere('--count', flags.count), 'count', flags.count),
    rx: flags.rx === true || txSize === 0,
    duration,
  };
}
