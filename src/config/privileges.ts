// The capabilities a running serve still needs once its ports are set up, and why: serve keeps these
// and drops every other one (docs/security.md, "Least privilege"). Found by trying each step with and
// without each capability; test/interop/privileges.test.ts checks that the set is enough (a mode switch
// both ways with only these) and that each one is needed (the switch fails without it).
//
// Each port kind lists what it needs (src/ports/<kind>.ts: capabilities); needing none: vhost-user ports
// (unix sockets in a directory the user can write; the guest memory, memfd or hugetlbfs, arrives as file
// descriptors from the front end, so no hugepage directory is opened), sinks, gens, PMD threads pinned to
// CPUs, the API listeners (bound during setup).
import { portKind, portKinds } from '../ports';
import type { ServeConfig } from './options';

export interface Capability {
  /** as capabilities(7) and setpriv name it, without the cap_ prefix */
  name: string;
  /** its number in linux/capability.h */
  number: number;
  why: string;
}

/** What the configured ports need after setup, mode switches included: each kind says (src/ports/<kind>.ts). */
export function neededCapabilities(config: ServeConfig): readonly Capability[] {
  const out = new Map<number, Capability>();
  for (const p of config.ports) for (const c of portKind(p.kind).capabilities ?? []) out.set(c.number, c);
  return [...out.values()].sort((a, b) => a.number - b.number);
}

export function capabilityName(n: number): string {
  const known = portKinds.flatMap((k) => k.capabilities ?? []).find((c) => c.number === n);
  return `cap_${known?.name ?? String(n)}`;
}
