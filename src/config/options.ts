// User input is validated here, once, at the edge: the command line and the --config file become one
// flat, checked ServeConfig, and everything below (Switch, native addon) trusts it. Every problem is a
// UsageError whose one-line message names the flag (or config key) and the bad value. What is particular to
// a port kind (its flag, its options, its config entry) lives with the kind in src/ports/.
import * as fs from 'node:fs';
import * as os from 'node:os';
import type { Mode } from '../native';
import { readTokenFile } from '../api/token';
import { portKind, portKinds, type AnyPortSpec } from '../ports';
import { lookupAccount, lookupGroup, type Account } from './account';
import { parseBridge, parseBridgeConfig, splitBridgePortOptions, type BridgePortFields, type BridgeSpec } from './bridge';
import {
  checkName,
  checkRange,
  checkSocketPath,
  configArray,
  configObject,
  configString,
  configUint,
  describe,
  fail,
  flagWhere,
  limits,
  parseUint,
  UsageError,
  type Json,
  type JsonObject,
} from './parse';

export { UsageError };

export const DEFAULT_METRICS_HOST = '127.0.0.1';
/** Where `vhostwire stats` looks when no --url is given; serve listens there with `--metrics 9470`. */
export const DEFAULT_METRICS_PORT = 9470;

export interface Endpoint {
  host: string;
  port: number;
}

export interface ServeConfig {
  /** Every port, of every kind, config-file ports first, in the order given. */
  ports: AnyPortSpec[];
  wire: Array<[string, string]>;
  bridges: BridgeSpec[];
  /** How each port given bridge options on its own flag sits in its bridge, by port name */
  bridgePorts: Record<string, BridgePortFields>;
  mode: Mode;
  /** CPUs to pin one PMD thread each to; empty: one unpinned PMD thread. */
  pmdCores: number[];
  metrics: Endpoint | null;
  control: ControlConfig;
}

/** The serve flags as yargs hands them over: raw strings, repeatable flags as arrays. */
export interface ServeFlags {
  /** Port flags by name ("vhost-user", "uplink", ...): the values of each repeatable flag */
  ports?: Record<string, string[] | undefined>;
  wire?: string[];
  bridge?: string[];
  mode?: string;
  pmdCores?: string;
  metrics?: string;
  config?: string;
  api?: string;
  apiOwner?: string;
  apiGroup?: string;
  apiTcp?: boolean;
  apiTokenFile?: string;
  user?: string;
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
  /** --api-group: the socket's group, by name or number */
  apiGroup?: number;
  apiTcp?: boolean;
  apiToken?: string;
  user?: Account;
}

const CONTROL_KEYS = ['api', 'apiOwner', 'apiGroup', 'apiTcp', 'apiTokenFile', 'user'];

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
    fail(
      where,
      `changing user needs root, and this process runs as uid ${euid}: start serve as that user instead, with the capabilities docs/security.md lists`,
    );
  return account;
}

function controlSettings(
  raw: { api?: string; apiOwner?: string; apiGroup?: string; apiTcp?: boolean; apiTokenFile?: string; user?: string },
  where: (key: string, flag: string, value?: string) => string,
): ControlSettings {
  const out: ControlSettings = {};
  if (raw.api !== undefined) out.api = checkSocketPath(where('api', '--api', raw.api), raw.api);
  if (raw.apiOwner !== undefined) out.apiOwner = parseOwner(where('apiOwner', '--api-owner', raw.apiOwner), raw.apiOwner);
  if (raw.apiGroup !== undefined) {
    const group = raw.apiGroup;
    out.apiGroup = resolve(where('apiGroup', '--api-group', group), () => lookupGroup(group));
  }
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
  if (obj.apiTcp !== undefined && typeof obj.apiTcp !== 'boolean')
    fail(at('apiTcp'), `expected true or false, got ${describe(obj.apiTcp)}`);
  const text = (key: string): string | undefined => (obj[key] === undefined ? undefined : configString(at(key), obj[key]));
  return controlSettings(
    {
      api: text('api'),
      apiOwner: text('apiOwner'),
      apiGroup: text('apiGroup'),
      apiTcp: obj.apiTcp as boolean | undefined,
      apiTokenFile: text('apiTokenFile'),
      user: text('user'),
    },
    (key, _flag, value) => (value === undefined ? at(key) : `${at(key)} ${JSON.stringify(value)}`),
  );
}

/** The flags override the file, setting by setting. */
function buildControlConfig(file: ControlSettings, flags: ServeFlags): ControlConfig {
  const s: ControlSettings = {
    ...file,
    ...controlSettings(flags, (_key, flag, value) => (value === undefined ? flag : flagWhere(flag, value))),
  };
  if (s.apiOwner !== undefined && s.api === undefined) fail('--api-owner', 'only meaningful with --api PATH');
  if (s.apiGroup !== undefined && s.api === undefined) fail('--api-group', 'only meaningful with --api PATH');
  if (s.apiGroup !== undefined && s.apiOwner?.gid !== undefined)
    fail('--api-group', 'the group is given twice: once here and once in --api-owner USER:GROUP; give one');
  if (s.apiToken !== undefined && s.apiTcp !== true)
    fail('--api-token-file', 'only meaningful with --api-tcp (who may use the unix socket is decided by its owner and mode)');
  const uid = s.apiOwner?.uid ?? s.user?.uid ?? process.geteuid?.() ?? 0;
  const gid = s.apiGroup ?? s.apiOwner?.gid ?? s.user?.gid ?? process.getegid?.() ?? 0;
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
  if (apiTcp && config.metrics === null)
    fail('--api-tcp', 'changes over TCP are taken on the --metrics listener: give --metrics HOST:PORT too');
  const port = api && config.ports.find((p) => portKind(p.kind).exclusive?.(p)?.value === api.path);
  if (api && port) fail(flagWhere('--api', api.path), `socket path is already used by port "${port.name}"`);
}

// ---- the --config file ----

const CONFIG_KEYS = [...portKinds.map((k) => k.configKey), 'wire', 'bridge', 'mode', 'pmdCores', 'metrics', ...CONTROL_KEYS];

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
  for (const kind of portKinds) {
    const items = obj[kind.configKey];
    if (items === undefined) continue;
    const specs = configArray(`${top}: ${kind.configKey}`, items).map((item, i) =>
      kind.parseConfig(`${top}: ${kind.configKey}[${i}]`, item),
    );
    out.ports = [...(out.ports ?? []), ...(specs as AnyPortSpec[])];
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
  if (obj.bridge !== undefined) {
    out.bridges = [];
    out.bridgePorts = {};
    configArray(`${top}: bridge`, obj.bridge).forEach((item, i) => {
      const { spec, ports } = parseBridgeConfig(`${top}: bridge[${i}]`, item);
      out.bridges!.push(spec);
      Object.assign(out.bridgePorts!, ports);
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
 * flags override the file. Then checks what only the whole configuration can tell (unique names,
 * resources only one port may hold, wires between existing ports).
 */
export function buildServeConfig(flags: ServeFlags, cpuCount = os.cpus().length): ServeConfig {
  const file = flags.config === undefined ? {} : loadConfigFile(flags.config, cpuCount);
  const fileWires = file.wire ?? [];
  const bridgePorts: Record<string, BridgePortFields> = { ...file.bridgePorts };
  const fromFlags = portKinds.flatMap((kind) =>
    (flags.ports?.[kind.flag] ?? []).map((text) => {
      const [rest, bridged] = splitBridgePortOptions(`--${kind.flag}`, text);
      const spec = kind.parseFlag(rest) as AnyPortSpec;
      if (bridged) {
        if (bridgePorts[spec.name])
          fail(`--${kind.flag} ${JSON.stringify(spec.name)}`, 'has bridge options both here and in --config: give them in one place');
        bridgePorts[spec.name] = bridged;
      }
      return spec;
    }),
  );
  const config: ServeConfig = {
    ports: [...(file.ports ?? []), ...fromFlags],
    wire: [...fileWires, ...(flags.wire ?? []).map(parseWire)],
    bridges: [...(file.bridges ?? []), ...(flags.bridge ?? []).map(parseBridge)],
    bridgePorts,
    mode: flags.mode === undefined ? (file.mode ?? 'bypass') : parseMode(flags.mode),
    pmdCores: flags.pmdCores === undefined ? (file.pmdCores ?? []) : parsePmdCores(flags.pmdCores, cpuCount),
    metrics: flags.metrics === undefined ? (file.metrics ?? null) : parseEndpoint(flags.metrics),
    control: buildControlConfig(file.control ?? {}, flags),
  };
  checkControl(config);

  const names = new Map<string, string>();
  const held = new Map<string, string>();
  for (const spec of config.ports) {
    const kind = portKinds.find((k) => k.kind === spec.kind)!;
    const where = `--${kind.flag} ${JSON.stringify(spec.name)}`;
    const previous = names.get(spec.name);
    if (previous !== undefined) fail(where, `port name "${spec.name}" is already used by ${previous}`);
    names.set(spec.name, `--${kind.flag}`);
    const res = kind.exclusive?.(spec);
    if (res) {
      const key = `${res.what}\0${res.value}`;
      const other = held.get(key);
      if (other !== undefined) fail(where, `${res.what} ${res.value} is already used by port "${other}"`);
      held.set(key, spec.name);
    }
  }

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

  const bridged = new Map<string, string>();
  const bridgeNames = new Set<string>();
  for (const br of config.bridges) {
    const where = `--bridge ${br.name}`;
    if (bridgeNames.has(br.name)) fail(where, `bridge name "${br.name}" given twice`);
    bridgeNames.add(br.name);
    for (const p of br.members) {
      if (!names.has(p)) fail(where, `no port named "${p}"`);
      const w = wired.get(p);
      if (w !== undefined) fail(where, `port "${p}" is already in wire ${w}; a port is in one wire or one bridge`);
      const other = bridged.get(p);
      if (other !== undefined) fail(where, `port "${p}" is already in bridge "${other}"; a port is in one bridge`);
      bridged.set(p, br.name);
    }
  }
  for (const p of Object.keys(bridgePorts)) {
    if (!bridged.has(p))
      fail(`port "${p}"`, 'has bridge options (vlan=, trunk=, mac=, ...) but is in no --bridge: add it to one or drop them');
  }
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

// Our front end paces its transmit thread by time, so a fraction of a packet per second is meaningful.
function parseRate(where: string, text: string): number {
  if (!/^(0|[1-9][0-9]*)(\.[0-9]+)?$/.test(text)) fail(where, `rate must be a non-negative number of packets per second, got "${text}"`);
  return Number(text);
}

/** Without --tx or --rx the peer receives: listening is the harmless default. */
export function buildPeerConfig(flags: PeerFlags): PeerConfig {
  if (flags.connect === undefined) fail('--connect', 'the socket path is required');
  const path = checkSocketPath(flagWhere('--connect', flags.connect), flags.connect);
  const txSize =
    flags.tx === undefined
      ? 0
      : checkRange(
          flagWhere('--tx', flags.tx),
          'size',
          parseUint(flagWhere('--tx', flags.tx), 'size', flags.tx),
          limits.minFrame,
          limits.maxFrame,
        );
  for (const [flag, value] of [
    ['--rate', flags.rate],
    ['--count', flags.count],
  ] as const) {
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
    queues:
      flags.queues === undefined
        ? 1
        : checkRange(
            flagWhere('--queues', flags.queues),
            'queues',
            parseUint(flagWhere('--queues', flags.queues), 'queues', flags.queues),
            1,
            limits.maxQueuePairs,
          ),
    txSize,
    txRate: flags.rate === undefined ? 0 : parseRate(flagWhere('--rate', flags.rate), flags.rate),
    txCount: flags.count === undefined ? 0 : parseUint(flagWhere('--count', flags.count), 'count', flags.count),
    rx: flags.rx === true || txSize === 0,
    duration,
  };
}
