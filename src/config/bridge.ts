// The learning bridge as a user spells it: `--bridge NAME=PORT,PORT,...[,ageing=S][,max-macs=N][,max-macs-per-port=N]`
// and, on any port's own flag, the options that say how that port sits in its bridge (vlan=, trunk=,
// native=, mac=, learning=, flood=, flood-multicast=, isolated=). Port kinds never see the latter: they are
// taken out of the port's flag here, before its kind parses the rest.
import type { BridgeOptions, BridgePortOptions, StaticMac } from '../native';
import {
  checkName,
  checkRange,
  configArray,
  configBool,
  configObject,
  configString,
  configUint,
  fail,
  flagWhere,
  limits,
  parseOptions,
  parseUint,
  type Json,
} from './parse';

export const BRIDGE_SYNTAX = 'NAME=PORT,PORT,...[,ageing=SECONDS][,max-macs=N][,max-macs-per-port=N][,static=MAC@PORT[/VLAN]]...';
export const BRIDGE_PORT_OPTIONS = 'vlan=N, trunk=LIST, native=N, mac=ADDR, learning=, flood=, flood-multicast=, isolated= (on|off)';
const PORT_KEYS = new Set(['vlan', 'trunk', 'native', 'mac', 'learning', 'flood', 'flood-multicast', 'isolated']);
const DEFAULT_MAX_MACS = 8192;

export interface BridgeSpec {
  name: string;
  members: string[];
  options: BridgeOptions;
}

/** A port's bridge options, without the port's name (its flag names it). */
export type BridgePortFields = Omit<BridgePortOptions, 'port'>;

const vlanId = (where: string, what: string, text: string): number => checkRange(where, what, parseUint(where, what, text), 1, 4094);

/** `10:20:100-199`: VLANs and ranges, colon-separated, each 1..4094, none twice. */
export function parseTrunk(where: string, text: string): number[] {
  const out = new Set<number>();
  for (const item of text.split(':')) {
    const m = /^([0-9]+)(?:-([0-9]+))?$/.exec(item);
    if (!m) fail(where, `trunk expects VLANs and ranges separated by ":" such as 10:20:100-199, got "${item}"`);
    const first = vlanId(where, 'trunk VLAN', m[1]);
    const last = m[2] === undefined ? first : vlanId(where, 'trunk VLAN', m[2]);
    if (last < first) fail(where, `trunk range ${item} runs backwards`);
    for (let v = first; v <= last; v++) {
      if (out.has(v)) fail(where, `trunk VLAN ${v} listed twice`);
      out.add(v);
    }
  }
  return [...out];
}

/** `02:00:00:00:00:01` (or with dashes): a unicast address, as a 48-bit number. */
export function parseMac(where: string, text: string): number {
  if (!/^[0-9A-Fa-f]{2}([:-][0-9A-Fa-f]{2}){5}$/.test(text)) fail(where, `mac expects an address such as 02:00:00:00:00:01, got "${text}"`);
  const n = parseInt(text.replace(/[:-]/g, ''), 16);
  if (Math.floor(n / 2 ** 40) & 1) fail(where, `mac ${text} is a multicast address: no port sends from one`);
  return n;
}

/** Formats a 48-bit number as 02:00:00:00:00:01. */
export function formatMac(n: number): string {
  return n
    .toString(16)
    .padStart(12, '0')
    .replace(/(..)(?!$)/g, '$1:');
}

function onOff(where: string, key: string, value: string | undefined): boolean {
  if (value === 'on') return true;
  if (value === 'off') return false;
  return fail(where, `${key} expects on or off, got ${value === undefined ? 'nothing' : `"${value}"`}`);
}

/**
 * Takes the bridge options out of a port flag's value: returns the value left for the port's kind and the
 * options, or null when it has none.
 */
export function splitBridgePortOptions(flag: string, text: string): [string, BridgePortFields | null] {
  const where = flagWhere(flag, text);
  const [first, ...rest] = text.split(',');
  const mine = rest.filter((item) => PORT_KEYS.has(item.split('=')[0]));
  if (mine.length === 0) return [text, null];
  const kept = [first, ...rest.filter((item) => !PORT_KEYS.has(item.split('=')[0]))].join(',');
  return [kept, portFields(where, mine)];
}

/** `vlan=10`, `trunk=10:20`, ...: one port's bridge options, checked against each other. */
function portFields(where: string, items: string[]): BridgePortFields {
  const out: BridgePortFields = {};
  for (const [key, value] of parseOptions(where, items)) {
    if (key === 'learning' || key === 'flood' || key === 'isolated') out[key] = onOff(where, key, value);
    else if (key === 'flood-multicast') out.floodMulticast = onOff(where, key, value);
    else if (value === undefined) fail(where, `${key} needs a value (${key}=...)`);
    else if (key === 'vlan') out.vlan = vlanId(where, 'vlan', value);
    else if (key === 'native') out.native = vlanId(where, 'native', value);
    else if (key === 'trunk') out.trunk = parseTrunk(where, value);
    else out.mac = parseMac(where, value);
  }
  if (out.vlan !== undefined && out.trunk !== undefined)
    fail(where, 'vlan= makes an access port and trunk= a trunk port: give one of them');
  if (out.native !== undefined && out.trunk === undefined) fail(where, 'native= is for trunk ports: give trunk=LIST too');
  if (out.native !== undefined && out.trunk!.includes(out.native))
    fail(where, `native VLAN ${out.native} is also in the trunk list: it is carried untagged, list it once`);
  return out;
}

/**
 * `02:00:00:00:00:01@vm0` or `02:00:00:00:00:01@up0/10`: a static entry, on VLAN 0 (the untagged segment of
 * VLAN-unaware ports) unless one is given. Whether the port is a member is checked against the bridge.
 */
export function parseStatic(where: string, text: string): StaticMac {
  const m = /^([^@]+)@([^/]+)(?:\/([0-9]+))?$/.exec(text);
  if (!m) fail(where, `static expects MAC@PORT or MAC@PORT/VLAN such as 02:00:00:00:00:01@vm0/10, got "${text}"`);
  const entry: StaticMac = { mac: parseMac(where, m[1]), port: checkName(where, m[2]) };
  if (m[3] !== undefined) entry.vlan = vlanId(where, 'static entry VLAN', m[3]);
  return entry;
}

/** Checks what needs the whole bridge: limits against each other, static entries on member ports, once each. */
function finishBridge(where: string, spec: BridgeSpec): BridgeSpec {
  const { options, members } = spec;
  const max = options.maxMacs ?? DEFAULT_MAX_MACS;
  if (options.maxMacsPerPort !== undefined && options.maxMacsPerPort > max)
    fail(where, `max-macs-per-port ${options.maxMacsPerPort} is more than the bridge's max-macs ${max}`);
  options.maxMacs = max;
  const seen = new Set<string>();
  for (const st of options.static ?? []) {
    const text = `${formatMac(st.mac)}${st.vlan ? ` on VLAN ${st.vlan}` : ''}`;
    if (!members.includes(st.port)) fail(where, `static entry ${text} names port "${st.port}", which is not in the bridge`);
    const key = `${st.mac}/${st.vlan ?? 0}`;
    if (seen.has(key)) fail(where, `static entry ${text} given twice`);
    seen.add(key);
  }
  if ((options.static?.length ?? 0) > max) fail(where, `${options.static!.length} static entries do not fit max-macs ${max}`);
  return spec;
}

/** `--bridge br0=vm0,vm1,up0,ageing=300`: whether the ports exist is checked against the whole configuration. */
export function parseBridge(text: string): BridgeSpec {
  const where = flagWhere('--bridge', text);
  const eq = text.indexOf('=');
  if (eq <= 0 || eq === text.length - 1) fail(where, `expected ${BRIDGE_SYNTAX}`);
  const name = checkName(where, text.slice(0, eq));
  const items = text.slice(eq + 1).split(',');
  const members: string[] = [];
  const isStatic = (i: string) => i.startsWith('static=');
  const opts = parseOptions(
    where,
    items.filter((i) => i.includes('=') && !isStatic(i)),
  );
  for (const item of items.filter((i) => !i.includes('='))) {
    if (members.includes(item)) fail(where, `port "${item}" listed twice`);
    members.push(checkName(where, item));
  }
  const options: BridgeOptions = {};
  for (const [key, value] of opts) {
    const n = (min: number, max: number) => checkRange(where, key, parseUint(where, key, value!), min, max);
    if (key === 'ageing') options.ageingSeconds = n(1, 1_000_000);
    else if (key === 'max-macs') options.maxMacs = n(1, limits.maxBridgeMacs);
    else if (key === 'max-macs-per-port') options.maxMacsPerPort = n(1, limits.maxBridgeMacs);
    else fail(where, `unknown option "${key}=${value}" (expected ageing=SECONDS, max-macs=N, max-macs-per-port=N, static=MAC@PORT[/VLAN])`);
  }
  const statics = items.filter(isStatic).map((i) => parseStatic(where, i.slice('static='.length)));
  if (statics.length > 0) options.static = statics;
  return finishBridge(where, { name, members, options });
}

// ---- the --config file's "bridge" entries ----

const CONFIG_BRIDGE_KEYS = ['name', 'ports', 'ageing', 'maxMacs', 'maxMacsPerPort', 'static'];
const CONFIG_PORT_KEYS = ['port', 'vlan', 'trunk', 'native', 'mac', 'learning', 'flood', 'floodMulticast', 'isolated'];

function configPort(where: string, v: Json): [string, BridgePortFields | null] {
  if (typeof v === 'string') return [checkName(where, v), null];
  const o = configObject(where, v, CONFIG_PORT_KEYS);
  const name = checkName(where, configString(`${where}: port`, o.port));
  // The flag's own syntax, so the two sources are checked by one rule.
  const opts: string[] = [];
  const at = (key: string) => `${where}: ${key}`;
  for (const key of ['vlan', 'native'] as const) if (o[key] !== undefined) opts.push(`${key}=${configUint(at(key), o[key])}`);
  if (o.trunk !== undefined) {
    const t = o.trunk;
    const list = Array.isArray(t) ? t.map((x, i) => String(configUint(`${at('trunk')}[${i}]`, x))).join(':') : configString(at('trunk'), t);
    opts.push(`trunk=${list}`);
  }
  if (o.mac !== undefined) opts.push(`mac=${configString(at('mac'), o.mac)}`);
  for (const [key, flag] of [
    ['learning', 'learning'],
    ['flood', 'flood'],
    ['floodMulticast', 'flood-multicast'],
    ['isolated', 'isolated'],
  ] as const)
    if (o[key] !== undefined) opts.push(`${flag}=${configBool(at(key), o[key]) ? 'on' : 'off'}`);
  return [name, opts.length === 0 ? null : portFields(where, opts)];
}

/**
 * `{"name": "br0", "ports": ["vm0", {"port": "up0", "trunk": [10, 20]}], "ageing": 300, "maxMacs": 8192,
 * "maxMacsPerPort": 1024, "static": [{"mac": "02:00:00:00:00:01", "port": "vm0", "vlan": 10}]}`
 */
export function parseBridgeConfig(where: string, v: Json): { spec: BridgeSpec; ports: Record<string, BridgePortFields> } {
  const o = configObject(where, v, CONFIG_BRIDGE_KEYS);
  const name = checkName(`${where}: name`, configString(`${where}: name`, o.name));
  const members: string[] = [];
  const ports: Record<string, BridgePortFields> = {};
  configArray(`${where}: ports`, o.ports).forEach((item, i) => {
    const [port, fields] = configPort(`${where}: ports[${i}]`, item);
    if (members.includes(port)) fail(`${where}: ports[${i}]`, `port "${port}" listed twice`);
    members.push(port);
    if (fields) ports[port] = fields;
  });
  const options: BridgeOptions = {};
  const n = (key: string, min: number, max: number) =>
    checkRange(`${where}: ${key}`, key, configUint(`${where}: ${key}`, o[key]), min, max);
  if (o.ageing !== undefined) options.ageingSeconds = n('ageing', 1, 1_000_000);
  if (o.maxMacs !== undefined) options.maxMacs = n('maxMacs', 1, limits.maxBridgeMacs);
  if (o.maxMacsPerPort !== undefined) options.maxMacsPerPort = n('maxMacsPerPort', 1, limits.maxBridgeMacs);
  if (o.static !== undefined) {
    options.static = configArray(`${where}: static`, o.static).map((item, i) => {
      const at = `${where}: static[${i}]`;
      const e = configObject(at, item, ['mac', 'port', 'vlan']);
      const entry: StaticMac = {
        mac: parseMac(at, configString(`${at}: mac`, e.mac)),
        port: checkName(at, configString(`${at}: port`, e.port)),
      };
      if (e.vlan !== undefined) entry.vlan = vlanId(at, 'vlan', String(configUint(`${at}: vlan`, e.vlan)));
      return entry;
    });
  }
  return { spec: finishBridge(where, { name, members, options }), ports };
}
