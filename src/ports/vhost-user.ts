// vhost-user ports: a VM's (or DPDK virtio-user's) virtio-net device over a unix socket
// (addon/ports/vhost_user/).
import { checkName, checkRange, checkSocketPath, configBool, configObject, configString, configUint, fail, flagWhere, limits, parseOptions, parseUint, splitNamed } from '../config/parse';
import type { PortKind } from './kind';

export interface VhostUserSpec {
  kind: 'vhost-user';
  name: string;
  path: string;
  /** Connect to a front end that listens (QEMU server=on) instead of listening ourselves. */
  client: boolean;
  queues: number;
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
  mtu: number;
  memRegions: number;
  /** 2 * queue pairs entries: the guest's receive vring 2q and transmit vring 2q+1 */
  vrings: VringInfo[];
}

const SYNTAX = 'NAME=PATH[,client][,queues=N]';

export const vhostUser: PortKind<VhostUserSpec> = {
  kind: 'vhost-user',
  flag: 'vhost-user',
  configKey: 'vhostUser',
  syntax: SYNTAX,
  help: `a vhost-user port: ${SYNTAX} (client: connect to a listening front end; queues 1..${limits.maxQueuePairs})`,
  parseFlag(text) {
    const where = flagWhere('--vhost-user', text);
    const [name, rest] = splitNamed(where, text, SYNTAX);
    const [path, ...opts] = rest.split(',');
    const spec: VhostUserSpec = { kind: 'vhost-user', name, path: checkSocketPath(where, path), client: false, queues: 1 };
    for (const [key, value] of parseOptions(where, opts)) {
      if (key === 'client' && value === undefined) spec.client = true;
      else if (key === 'queues' && value !== undefined)
        spec.queues = checkRange(where, 'queues', parseUint(where, 'queues', value), 1, limits.maxQueuePairs);
      else fail(where, `unknown option "${value === undefined ? key : `${key}=${value}`}" (expected client or queues=N)`);
    }
    return spec;
  },
  parseConfig(where, item) {
    const o = configObject(where, item, ['name', 'path', 'client', 'queues']);
    return {
      kind: 'vhost-user',
      name: checkName(where, configString(`${where}.name`, o.name)),
      path: checkSocketPath(where, configString(`${where}.path`, o.path)),
      client: o.client === undefined ? false : configBool(`${where}.client`, o.client),
      queues: o.queues === undefined ? 1 : checkRange(where, 'queues', configUint(`${where}.queues`, o.queues), 1, limits.maxQueuePairs),
    };
  },
  params: (s) => ({ path: s.path, client: s.client, queues: s.queues }),
  summary: (s) => `vhost-user ${s.path} (${s.client ? 'client' : 'server'}, ${s.queues} queue pair${s.queues === 1 ? '' : 's'})`,
  exclusive: (s) => ({ what: 'socket path', value: s.path }),
  // A server socket is ours; in client mode the front end's.
  createdFiles: (s) => (s.client ? [] : [s.path]),
};
