// Every port kind the control plane knows, one line each (the addon's list is addon/runtime/port_kinds.cc).
import type { PortInfo } from '../native';
import type { PortKind, PortSpec } from './kind';
import { gen, type GenSpec } from './gen';
import { sink, type SinkSpec } from './sink';
import { uplink, type UplinkSpec } from './uplink';
import { vhostUser, type VhostUserSpec } from './vhost-user';

export const portKinds: readonly PortKind[] = [vhostUser, uplink, sink, gen] as PortKind[];

/** A port as the configuration describes it, of any registered kind. */
export type AnyPortSpec = VhostUserSpec | UplinkSpec | SinkSpec | GenSpec;

export function portKind(kind: string): PortKind {
  const k = portKinds.find((p) => p.kind === kind);
  if (!k) throw new Error(`no port kind "${kind}"`);
  return k;
}

/** The host interface a port sits on (an uplink's), if any: its kernel counters are shown beside ours. */
export function hostInterface(p: PortInfo): string | undefined {
  return typeof p.ifname === 'string' ? p.ifname : undefined;
}

export type { PortKind, PortSpec };
export type { GenSpec, SinkSpec, UplinkSpec, VhostUserSpec };
export type { UplinkDetails } from './uplink';
export type { VhostUserDetails, VringInfo } from './vhost-user';
