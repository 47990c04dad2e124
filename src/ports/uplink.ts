// Host uplinks: a host interface as a port, AF_PACKET in kernel mode and AF_XDP in bypass mode
// (addon/ports/uplink/).
import * as fs from 'node:fs';
import {
  checkName,
  checkRange,
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
} from '../config/parse';
import type { Capability } from '../config/privileges';
import type { PortKind } from './kind';

export interface UplinkSpec {
  kind: 'uplink';
  name: string;
  /** The host interface, e.g. eth0 */
  ifname: string;
  /** Bypass mode: the interface's receive queue of queue pair 0; queue pair q is queue + q */
  queue: number;
  /** Queue pairs: AF_XDP sockets on queues queue..queue+queues-1, or AF_PACKET sockets in one hash fanout group */
  queues: number;
  /**
   * Kernel mode: the receive ring's TPACKET version (absent: 3). 3 packs frames into blocks, each handed over
   * when full or after retireMs; 2 hands each frame over as soon as it is written, in a slot of its own.
   */
  tpacket?: 2 | 3;
  /** Kernel mode, TPACKET_V3: each socket's receive ring (absent: the addon's defaults, limits.uplinkBlockSize...) */
  blockSize?: number;
  blocks?: number;
  retireMs?: number;
  /** Kernel mode, TPACKET_V2: receive slots per socket (absent: limits.uplinkFrames.default) */
  frames?: number;
  /** Bypass mode: each socket's UMEM frame size and ring entries (absent: limits.uplinkFrameSize.default...) */
  frameSize?: number;
  ringSize?: number;
  /**
   * Kernel mode: hand the kernel super-frames and partial checksums as they are, in a virtio_net_hdr (absent:
   * true). offloads=off sends it plain frames only, completed and segmented in software first. Bypass mode
   * (AF_XDP) always does the latter.
   */
  offloads?: boolean;
}

/** What an uplink says about itself (addon/ports/uplink/uplink.cc: describe). */
export interface UplinkDetails {
  ifname: string;
  /** The driver the mode picked: af_packet (kernel) or af_xdp (bypass) */
  driver: 'af_packet' | 'af_xdp';
  /** The interface's receive queue of queue pair 0 (bypass mode) */
  firstQueue: number;
  /** The interface as last seen (rtnetlink): up with carrier, down, or deleted (its sockets reopen when one of its name returns) */
  link: 'up' | 'down' | 'gone';
  /** Link changes seen: down, up, renamed, deleted, back */
  linkChanges: number;
  /** Kernel mode only: the receive ring's TPACKET version */
  tpacket?: 'v2' | 'v3';
  /** Bypass mode only: how the kernel took the AF_XDP sockets (zerocopy when the driver has it) */
  xdpBind?: 'zerocopy' | 'copy';
  /** Bypass mode only: where the XDP program runs: in the driver (native) or on socket buffers (generic) */
  xdpAttach?: 'native' | 'generic';
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
    why: 'bypass mode: the AF_XDP UMEM (16 MiB per uplink queue) is pinned, beyond the default RLIMIT_MEMLOCK (8 MiB)',
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

/** The receive queues the interface has now (its rx-N entries in sysfs). */
export function receiveQueues(ifname: string): number {
  return fs.readdirSync(`/sys/class/net/${ifname}/queues`).filter((q) => q.startsWith('rx-')).length;
}

// Both modes' queues must exist: the mode can switch at run time, and bypass mode binds one AF_XDP socket
// to each interface queue (kernel mode's fanout sockets see every queue).
function checkQueues(where: string, spec: UplinkSpec): UplinkSpec {
  checkRange(where, 'queues', spec.queues, 1, limits.maxQueuePairs);
  const have = receiveQueues(spec.ifname);
  if (spec.queue + spec.queues > have)
    fail(
      where,
      `interface "${spec.ifname}" has ${have} receive queue${have === 1 ? '' : 's'} (0..${have - 1}): ` +
        `queues ${spec.queue}..${spec.queue + spec.queues - 1} do not all exist (bypass mode binds an AF_XDP socket to each; see ethtool -l ${spec.ifname})`,
    );
  return spec;
}

// The rings: each value in its range, receive blocks of whole pages and the whole ring under the cap,
// AF_XDP frame and ring sizes powers of two.
const PAGE = 4096;
function checkRing(where: string, spec: UplinkSpec): UplinkSpec {
  const { uplinkBlockSize: bs, uplinkBlocks: bn, uplinkRetireMs: rt, uplinkRingBytes } = limits;
  if (spec.blockSize !== undefined) {
    checkRange(where, 'block-size', spec.blockSize, bs.min, bs.max);
    if (spec.blockSize % PAGE) fail(where, `block-size must be a multiple of ${PAGE} (whole pages), got ${spec.blockSize}`);
  }
  if (spec.blocks !== undefined) checkRange(where, 'blocks', spec.blocks, bn.min, bn.max);
  if (spec.retireMs !== undefined) checkRange(where, 'retire-ms', spec.retireMs, rt.min, rt.max);
  if (spec.frames !== undefined) checkRange(where, 'frames', spec.frames, limits.uplinkFrames.min, limits.uplinkFrames.max);
  // Each ring has its own knobs: one given for the other is a mistake, not something to ignore.
  const v3only = [
    ['block-size', spec.blockSize],
    ['blocks', spec.blocks],
    ['retire-ms', spec.retireMs],
  ].filter(([, v]) => v !== undefined);
  if (spec.tpacket === 2 && v3only.length)
    fail(where, `${v3only.map(([k]) => k).join(', ')} only apply to tpacket=v3's blocks; tpacket=v2 takes frames=N`);
  if (spec.tpacket !== 2 && spec.frames !== undefined)
    fail(where, 'frames only applies to tpacket=v2 (v3 packs frames into blocks: block-size, blocks)');
  const pow2 = (what: string, n: number | undefined, r: { min: number; max: number }): void => {
    if (n === undefined) return;
    checkRange(where, what, n, r.min, r.max);
    if ((n & (n - 1)) !== 0) fail(where, `${what} must be a power of two, got ${n}`);
  };
  pow2('frame-size', spec.frameSize, limits.uplinkFrameSize);
  pow2('ring-size', spec.ringSize, limits.uplinkXdpRingSize);
  const bytes = (spec.blockSize ?? bs.default) * (spec.blocks ?? bn.default);
  if (bytes > uplinkRingBytes)
    fail(
      where,
      `a receive ring of ${bytes} bytes (block-size times blocks) is over the ${uplinkRingBytes / 2 ** 20} MiB one socket may map`,
    );
  return spec;
}

function tpacketOf(where: string, v: unknown): 2 | 3 | undefined {
  if (v === undefined) return undefined;
  if (v === 'v2' || v === 'v3') return v === 'v2' ? 2 : 3;
  return fail(where, `must be "v3" or "v2", got ${JSON.stringify(v)}`);
}

const SYNTAX =
  'NAME=IFNAME[@QUEUE][,queues=N][,tpacket=v3|v2][,block-size=BYTES][,blocks=N][,retire-ms=MS][,frames=N][,frame-size=BYTES][,ring-size=N][,offloads=on|off]';
const OPTIONS =
  'queues=N, tpacket=v3|v2, block-size=BYTES, blocks=N, retire-ms=MS, frames=N, frame-size=BYTES, ring-size=N or offloads=on|off';

export const uplink: PortKind<UplinkSpec> = {
  kind: 'uplink',
  flag: 'uplink',
  configKey: 'uplink',
  syntax: SYNTAX,
  help:
    `a host uplink on an existing interface: ${SYNTAX} (kernel mode: AF_PACKET sockets, N of them in a hash fanout group; ` +
    `bypass mode: AF_XDP sockets on the interface's receive queues QUEUE..QUEUE+N-1; QUEUE defaults to 0, N to 1, at most ${limits.maxQueuePairs}; ` +
    `kernel mode's receive ring per socket: block-size (bytes, ${limits.uplinkBlockSize.min}..${limits.uplinkBlockSize.max}, default ${limits.uplinkBlockSize.default}), ` +
    `blocks (${limits.uplinkBlocks.min}..${limits.uplinkBlocks.max}, default ${limits.uplinkBlocks.default}), ` +
    `retire-ms (how long a part-filled block waits, ${limits.uplinkRetireMs.min}..${limits.uplinkRetireMs.max}, default ${limits.uplinkRetireMs.default}); ` +
    `tpacket=v2 instead: each frame handed over as soon as the kernel wrote it (no retire wait), in one of frames= slots of 64 KiB ` +
    `(${limits.uplinkFrames.min}..${limits.uplinkFrames.max}, default ${limits.uplinkFrames.default}, rounded up to a multiple of ${limits.uplinkFramesPerBlock}); ` +
    `bypass mode's UMEM per socket: frame-size (${limits.uplinkFrameSize.min} or ${limits.uplinkFrameSize.max}, default ${limits.uplinkFrameSize.default}), ` +
    `ring-size (entries of each ring and frames each way, a power of two ${limits.uplinkXdpRingSize.min}..${limits.uplinkXdpRingSize.max}, default ${limits.uplinkXdpRingSize.default}); ` +
    `offloads=on|off (kernel mode: super-frames and partial checksums to the kernel as they are, default on; off: segmented and completed in software first, as bypass mode always does))`,
  // The interface and its queues must exist now.
  parseFlag(text) {
    const where = flagWhere('--uplink', text);
    const [name, rest] = splitNamed(where, text, SYNTAX);
    const [place, ...opts] = rest.split(',');
    const at = place.lastIndexOf('@');
    const ifname = checkInterface(where, at < 0 ? place : place.slice(0, at));
    const spec: UplinkSpec = {
      kind: 'uplink',
      name,
      ifname,
      queue: at < 0 ? 0 : parseUint(where, 'queue', place.slice(at + 1)),
      queues: 1,
    };
    for (const [key, value] of parseOptions(where, opts)) {
      if (key === 'queues' && value !== undefined) spec.queues = parseUint(where, 'queues', value);
      else if (key === 'block-size' && value !== undefined) spec.blockSize = parseUint(where, key, value);
      else if (key === 'blocks' && value !== undefined) spec.blocks = parseUint(where, key, value);
      else if (key === 'retire-ms' && value !== undefined) spec.retireMs = parseUint(where, key, value);
      else if (key === 'frames' && value !== undefined) spec.frames = parseUint(where, key, value);
      else if (key === 'tpacket' && (value === 'v2' || value === 'v3')) spec.tpacket = value === 'v2' ? 2 : 3;
      else if (key === 'tpacket') fail(where, `tpacket must be "v3" or "v2", got "${value ?? ''}"`);
      else if (key === 'frame-size' && value !== undefined) spec.frameSize = parseUint(where, key, value);
      else if (key === 'ring-size' && value !== undefined) spec.ringSize = parseUint(where, key, value);
      else if (key === 'offloads' && (value === 'on' || value === 'off')) spec.offloads = value === 'on';
      else if (key === 'offloads') fail(where, `offloads must be "on" or "off", got "${value ?? ''}"`);
      else fail(where, `unknown option "${value === undefined ? key : `${key}=${value}`}" (expected ${OPTIONS})`);
    }
    return checkRing(where, checkQueues(where, spec));
  },
  parseConfig(where, item) {
    const o = configObject(where, item, [
      'name',
      'ifname',
      'queue',
      'queues',
      'blockSize',
      'blocks',
      'retireMs',
      'tpacket',
      'frames',
      'frameSize',
      'ringSize',
      'offloads',
    ]);
    const opt = (key: string): number | undefined => (o[key] === undefined ? undefined : configUint(`${where}.${key}`, o[key]));
    const spec = checkQueues(where, {
      kind: 'uplink',
      name: checkName(where, configString(`${where}.name`, o.name)),
      ifname: checkInterface(where, configString(`${where}.ifname`, o.ifname)),
      queue: o.queue === undefined ? 0 : configUint(`${where}.queue`, o.queue),
      queues: o.queues === undefined ? 1 : configUint(`${where}.queues`, o.queues),
    });
    return checkRing(where, {
      ...spec,
      blockSize: opt('blockSize'),
      blocks: opt('blocks'),
      retireMs: opt('retireMs'),
      tpacket: tpacketOf(`${where}.tpacket`, o.tpacket),
      frames: opt('frames'),
      frameSize: opt('frameSize'),
      ringSize: opt('ringSize'),
      offloads: o.offloads === undefined ? undefined : configBool(`${where}.offloads`, o.offloads),
    });
  },
  params: (s) => ({
    ifname: s.ifname,
    queue: s.queue,
    queues: s.queues,
    ...(s.blockSize === undefined ? {} : { blockSize: s.blockSize }),
    ...(s.blocks === undefined ? {} : { blocks: s.blocks }),
    ...(s.retireMs === undefined ? {} : { retireMs: s.retireMs }),
    ...(s.tpacket === undefined ? {} : { tpacket: s.tpacket }),
    ...(s.frames === undefined ? {} : { frames: s.frames }),
    ...(s.frameSize === undefined ? {} : { frameSize: s.frameSize }),
    ...(s.ringSize === undefined ? {} : { ringSize: s.ringSize }),
    withholdOffloads: s.offloads === false,
  }),
  summary: (s) =>
    `uplink on ${s.ifname}` +
    (s.queues === 1 && s.queue === 0 ? '' : `, ${s.queues} queue${s.queues === 1 ? '' : 's'} from queue ${s.queue}`),
  exclusive: (s) => ({ what: 'interface', value: s.ifname }),
  capabilities: CAPABILITIES,
};
