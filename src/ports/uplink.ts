// Host uplinks: a host interface as a port, AF_PACKET in kernel mode and AF_XDP in bypass mode
// (addon/ports/uplink/).
import * as fs from 'node:fs';
import { checkName, configObject, configString, fail, flagWhere, splitNamed } from '../config/parse';
import type { Capability } from '../config/privileges';
import type { PortKind } from './kind';

export interface UplinkSpec {
  kind: 'uplink';
  name: string;
  /** The host interface, e.g. eth0 */
  ifname: string;
}

/** What an uplink says about itself (addon/ports/uplink/uplink.cc: describe). */
export interface UplinkDetails {
  ifname: string;
  /** The driver the mode picked: af_packet (kernel) or af_xdp (bypass) */
  driver: 'af_packet' | 'af_xdp';
  /** Frames the kernel dropped at the socket, by reason (PACKET_STATISTICS, XDP_STATISTICS), as last published */
  kernelDrops: Array<{ reason: 'packet_drops' | 'xdp_rx_dropped' | 'xdp_rx_ring_full' | 'xdp_tx_invalid_descs'; frames: number }>;
}

// What an uplink needs after setup, and why (tried one by one: test/interop/privileges.test.ts).
const CAPABILITIES: readonly Capability[] = [
  {
    name: 'net_raw',
    number: 13,
    why: 'the AF_PACKET socket of kernel mode and the AF_XDP socket of bypass mode, opened at start and at every mode switch',
  },
  {
    name: 'net_admin',
    number: 12,
    why: 'bypass mode: the XSKMAP and the XDP program are of kinds only CAP_NET_ADMIN may create, and attaching the program to the interface needs it',
  },
  {
    name: 'bpf',
    number: 39,
    why: 'bypass mode: bpf() to create the XSKMAP and load the XDP program (unprivileged bpf() is off: kernel.unprivileged_bpf_disabled)',
  },
  {
    name: 'ipc_lock',
    number: 14,
    why: 'bypass mode: the AF_XDP UMEM (16 MiB per uplink) is pinned, beyond the default RLIMIT_MEMLOCK (8 MiB)',
  },
];

// What Linux accepts as an interface name: 1-15 bytes, no '/', ':' or whitespace, not "." or "..".
const IFNAME_RE = /^[^/:\s]{1,15}$/;
const MAX_IFNAME = 15;

export function interfaceExists(ifname: string): boolean {
  return fs.existsSync(`/sys/class/net/${ifname}`);
}

function checkInterface(where: string, ifname: string): string {
  if (!IFNAME_RE.test(ifname) || ifname === '.' || ifname === '..' || Buffer.byteLength(ifname) > MAX_IFNAME)
    fail(where, `"${ifname}" is not an interface name (1-${MAX_IFNAME} bytes, no '/', ':' or spaces)`);
  if (!interfaceExists(ifname)) fail(where, `interface "${ifname}" does not exist (no /sys/class/net/${ifname})`);
  return ifname;
}

export const uplink: PortKind<UplinkSpec> = {
  kind: 'uplink',
  flag: 'uplink',
  configKey: 'uplink',
  syntax: 'NAME=IFNAME',
  help: 'a host uplink on an existing interface: NAME=IFNAME (kernel mode: an AF_PACKET socket, bypass mode: AF_XDP)',
  // The interface must exist now.
  parseFlag(text) {
    const where = flagWhere('--uplink', text);
    const [name, ifname] = splitNamed(where, text, 'NAME=IFNAME');
    return { kind: 'uplink', name, ifname: checkInterface(where, ifname) };
  },
  parseConfig(where, item) {
    const o = configObject(where, item, ['name', 'ifname']);
    return {
      kind: 'uplink',
      name: checkName(where, configString(`${where}.name`, o.name)),
      ifname: checkInterface(where, configString(`${where}.ifname`, o.ifname)),
    };
  },
  params: (s) => ({ ifname: s.ifname }),
  summary: (s) => `uplink on ${s.ifname}`,
  exclusive: (s) => ({ what: 'interface', value: s.ifname }),
  capabilities: CAPABILITIES,
};
