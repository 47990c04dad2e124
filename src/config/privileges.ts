// The capabilities a running serve still needs once its ports are set up, and why: serve keeps these
// and drops every other one (docs/security.md, "Least privilege"). Found by trying each step with and
// without each capability; test/interop/privileges.test.ts checks that the set is enough (a mode switch
// both ways with only these) and that each one is needed (the switch fails without it).
//
// Needing none: vhost-user ports (unix sockets in a directory the user can write; the guest memory,
// memfd or hugetlbfs, arrives as file descriptors from the front end, so no hugepage directory is
// opened), sinks, gens, PMD threads pinned to CPUs, the API listeners (bound during setup).
import type { ServeConfig } from './options';

export interface Capability {
  /** as capabilities(7) and setpriv name it, without the cap_ prefix */
  name: string;
  /** its number in linux/capability.h */
  number: number;
  why: string;
}

export const UPLINK_CAPABILITIES: readonly Capability[] = [
  { name: 'net_raw', number: 13, why: 'the AF_PACKET socket of kernel mode and the AF_XDP socket of bypass mode, opened at start and at every mode switch' },
  { name: 'net_admin', number: 12, why: 'bypass mode: the XSKMAP and the XDP program are of kinds only CAP_NET_ADMIN may create, and attaching the program to the interface needs it' },
  { name: 'bpf', number: 39, why: 'bypass mode: bpf() to create the XSKMAP and load the XDP program (unprivileged bpf() is off: kernel.unprivileged_bpf_disabled)' },
  { name: 'ipc_lock', number: 14, why: 'bypass mode: the AF_XDP UMEM (16 MiB per uplink) is pinned, beyond the default RLIMIT_MEMLOCK (8 MiB)' },
];

/** What `config`'s ports need after setup, mode switches included. */
export function neededCapabilities(config: ServeConfig): readonly Capability[] {
  return config.uplink.length > 0 ? UPLINK_CAPABILITIES : [];
}

export function capabilityName(n: number): string {
  return `cap_${UPLINK_CAPABILITIES.find((c) => c.number === n)?.name ?? String(n)}`;
}
