// vhost-user ports: a VM's (or DPDK virtio-user's) virtio-net device over a unix socket
// (addon/ports/vhost_user/).
import { lookupAccount, lookupGroup } from '../config/account';
import {
  checkName,
  checkRange,
  checkSocketPath,
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
  splitNamed,
  type Json,
} from '../config/parse';
import type { PortKind } from './kind';

export interface VhostUserSpec {
  kind: 'vhost-user';
  name: string;
  path: string;
  /** Connect to a front end that listens (QEMU server=on) instead of listening ourselves. */
  client: boolean;
  queues: number;
  /** Server socket: its permission bits whatever the umask (default 0660), its owner and group (absent: ours). */
  socketMode?: number;
  socketOwner?: number;
  socketGroup?: number;
  /**
   * Front ends (by SO_PEERCRED and SO_PEERGROUPS) allowed besides our own uid, root, socketOwner and
   * members of the socket file's group; in client mode, who else may own the listener we connect to.
   */
  allowUids?: number[];
  allowGids?: number[];
  /** A front end is disconnected after this many rejected messages (default 16). */
  rejectLimit?: number;
  /**
   * A front end must send its first message within this many ms of connecting and finish each message
   * within this many ms of its first byte (default 10000).
   */
  idleTimeoutMs?: number;
  /**
   * Offer the checksum and TCP segmentation offloads (CSUM, GUEST_CSUM, HOST/GUEST_TSO4/TSO6, HOST/GUEST_ECN;
   * absent: true). offloads=off withholds them: the guest then sends plain frames, and what reaches it is
   * completed and segmented in software.
   */
  offloads?: boolean;
}

export interface VringInfo {
  size: number;
  started: boolean;
  enabled: boolean;
  broken: boolean;
}

/** What a vhost-user port says about itself (addon/ports/vhost_user/vhost_user.cc: describe). */
export interface VhostUserDetails {
  path: string;
  client: boolean;
  connected: boolean;
  features: bigint;
  protocolFeatures: bigint;
  /** Whether the checksum and segmentation offloads are offered (false with offloads=off); features says which were taken. */
  offloads: boolean;
  mtu: number;
  memRegions: number;
  /** 2 * queue pairs entries: the guest's receive vring 2q and transmit vring 2q+1 */
  vrings: VringInfo[];
  /**
   * Connections refused or closed, by reason: busy, peer_credentials, listener_owner, accept_backoff,
   * handshake_timeout, message_timeout, too_many_rejected, replies_unread. Only reasons seen are listed.
   */
  refusals: Array<{ reason: string; count: number }>;
}

const DEFAULT_SOCKET_MODE = 0o660;
const DEFAULT_REJECT_LIMIT = 16;
const DEFAULT_IDLE_TIMEOUT_MS = 10000;
const REJECT_LIMIT_MAX = 1 << 20;
const IDLE_TIMEOUT_MIN = 100;
const IDLE_TIMEOUT_MAX = 3600000;

const SYNTAX = 'NAME=PATH[,client][,queues=N]';
const OPTIONS =
  'client, queues=N, socket-mode=MODE, socket-owner=USER, socket-group=GROUP, allow-uid=LIST, allow-gid=LIST, reject-limit=N, idle-timeout=MS or offloads=on|off';

// Octal, as chmod spells it: 660 or 0660. Only permission bits: a socket has no use for setuid and the like.
function parseMode(where: string, text: string): number {
  if (!/^0?[0-7]{3}$/.test(text)) fail(where, `socket mode must be octal permission bits such as 0660, got "${text}"`);
  return parseInt(text, 8);
}

function resolve<T>(where: string, lookup: () => T): T {
  try {
    return lookup();
  } catch (e) {
    return fail(where, (e as Error).message);
  }
}

// One user: lookupAccount would also take USER:GROUP, and drop the group here without a word.
const uidOf = (where: string, text: string): number => {
  if (text.includes(':'))
    fail(where, `"${text}" is not one user (a socket's group is socket-group, a list of users is separated by ":" in allow-uid only)`);
  return resolve(where, () => lookupAccount(text).uid);
};
const gidOf = (where: string, text: string): number => resolve(where, () => lookupGroup(text));

/** What only the whole spec can tell. */
function checkSpec(where: string, spec: VhostUserSpec): VhostUserSpec {
  if (spec.client && (spec.socketMode !== undefined || spec.socketOwner !== undefined || spec.socketGroup !== undefined))
    fail(where, 'socket mode, owner and group are for server sockets: in client mode the front end creates the socket');
  return spec;
}

const idList = (where: string, what: string, text: string, lookup: (w: string, t: string) => number): number[] => {
  if (text === '') fail(where, `${what} needs at least one user or group`);
  return text.split(':').map((item) => lookup(where, item));
};

function configIds(where: string, v: Json, lookup: (w: string, t: string) => number): number[] {
  return configArray(where, v).map((item, i) =>
    typeof item === 'number' ? configUint(`${where}[${i}]`, item) : lookup(`${where}[${i}]`, configString(`${where}[${i}]`, item)),
  );
}

export const vhostUser: PortKind<VhostUserSpec> = {
  kind: 'vhost-user',
  flag: 'vhost-user',
  configKey: 'vhostUser',
  syntax: SYNTAX,
  help:
    `a vhost-user port: ${SYNTAX} (client: connect to a listening front end; queues 1..${limits.maxQueuePairs}; ` +
    'options socket-mode=MODE (default 0660), socket-owner=USER, socket-group=GROUP, allow-uid=U[:U...], allow-gid=G[:G...], ' +
    'reject-limit=N (default 16), idle-timeout=MS (default 10000), offloads=on|off (checksum and TCP segmentation offloads, default on))',
  parseFlag(text) {
    const where = flagWhere('--vhost-user', text);
    const [name, rest] = splitNamed(where, text, SYNTAX);
    const [path, ...opts] = rest.split(',');
    const spec: VhostUserSpec = {
      kind: 'vhost-user',
      name,
      path: checkSocketPath(where, path),
      client: false,
      queues: 1,
    };
    for (const [key, value] of parseOptions(where, opts)) {
      if (key === 'client' && value === undefined) spec.client = true;
      else if (key === 'queues' && value !== undefined)
        spec.queues = checkRange(where, 'queues', parseUint(where, 'queues', value), 1, limits.maxQueuePairs);
      else if (key === 'socket-mode' && value !== undefined) spec.socketMode = parseMode(where, value);
      else if (key === 'socket-owner' && value !== undefined) spec.socketOwner = uidOf(where, value);
      else if (key === 'socket-group' && value !== undefined) spec.socketGroup = gidOf(where, value);
      else if (key === 'allow-uid' && value !== undefined) spec.allowUids = idList(where, key, value, uidOf);
      else if (key === 'allow-gid' && value !== undefined) spec.allowGids = idList(where, key, value, gidOf);
      else if (key === 'reject-limit' && value !== undefined)
        spec.rejectLimit = checkRange(where, key, parseUint(where, key, value), 1, REJECT_LIMIT_MAX);
      else if (key === 'idle-timeout' && value !== undefined)
        spec.idleTimeoutMs = checkRange(where, key, parseUint(where, key, value), IDLE_TIMEOUT_MIN, IDLE_TIMEOUT_MAX);
      else if (key === 'offloads' && (value === 'on' || value === 'off')) spec.offloads = value === 'on';
      else if (key === 'offloads') fail(where, `offloads must be "on" or "off", got "${value ?? ''}"`);
      else fail(where, `unknown option "${value === undefined ? key : `${key}=${value}`}" (expected ${OPTIONS})`);
    }
    return checkSpec(where, spec);
  },
  parseConfig(where, item) {
    const o = configObject(where, item, [
      'name',
      'path',
      'client',
      'queues',
      'socketMode',
      'socketOwner',
      'socketGroup',
      'allowUid',
      'allowGid',
      'rejectLimit',
      'idleTimeoutMs',
      'offloads',
    ]);
    const id = (key: string, lookup: (w: string, t: string) => number): number | undefined => {
      const v = o[key];
      if (v === undefined) return undefined;
      return typeof v === 'number' ? configUint(`${where}.${key}`, v) : lookup(`${where}.${key}`, configString(`${where}.${key}`, v));
    };
    return checkSpec(where, {
      kind: 'vhost-user',
      name: checkName(where, configString(`${where}.name`, o.name)),
      path: checkSocketPath(where, configString(`${where}.path`, o.path)),
      client: o.client === undefined ? false : configBool(`${where}.client`, o.client),
      queues: o.queues === undefined ? 1 : checkRange(where, 'queues', configUint(`${where}.queues`, o.queues), 1, limits.maxQueuePairs),
      // A string, "0660": JSON has no octal numbers, and 660 in decimal is not what anyone means.
      socketMode:
        o.socketMode === undefined ? undefined : parseMode(`${where}.socketMode`, configString(`${where}.socketMode`, o.socketMode)),
      socketOwner: id('socketOwner', uidOf),
      socketGroup: id('socketGroup', gidOf),
      allowUids: o.allowUid === undefined ? undefined : configIds(`${where}.allowUid`, o.allowUid, uidOf),
      allowGids: o.allowGid === undefined ? undefined : configIds(`${where}.allowGid`, o.allowGid, gidOf),
      rejectLimit:
        o.rejectLimit === undefined
          ? undefined
          : checkRange(where, 'rejectLimit', configUint(`${where}.rejectLimit`, o.rejectLimit), 1, REJECT_LIMIT_MAX),
      idleTimeoutMs:
        o.idleTimeoutMs === undefined
          ? undefined
          : checkRange(where, 'idleTimeoutMs', configUint(`${where}.idleTimeoutMs`, o.idleTimeoutMs), IDLE_TIMEOUT_MIN, IDLE_TIMEOUT_MAX),
      offloads: o.offloads === undefined ? undefined : configBool(`${where}.offloads`, o.offloads),
    });
  },
  params: (s) => ({
    path: s.path,
    client: s.client,
    queues: s.queues,
    socketMode: s.socketMode ?? DEFAULT_SOCKET_MODE,
    ...(s.socketOwner === undefined ? {} : { socketOwner: s.socketOwner }),
    ...(s.socketGroup === undefined ? {} : { socketGroup: s.socketGroup }),
    ...(s.allowUids?.length ? { allowUids: s.allowUids.join(',') } : {}),
    ...(s.allowGids?.length ? { allowGids: s.allowGids.join(',') } : {}),
    rejectLimit: s.rejectLimit ?? DEFAULT_REJECT_LIMIT,
    idleTimeoutMs: s.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS,
    withholdOffloads: s.offloads === false,
  }),
  summary: (s) => `vhost-user ${s.path} (${s.client ? 'client' : 'server'}, ${s.queues} queue pair${s.queues === 1 ? '' : 's'})`,
  exclusive: (s) => ({ what: 'socket path', value: s.path }),
  // A server socket is ours; in client mode the front end's. One given an owner or group keeps them.
  createdFiles: (s) => (s.client || s.socketOwner !== undefined || s.socketGroup !== undefined ? [] : [s.path]),
};
