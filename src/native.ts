// The whole surface of the native addon, typed. Everything ergonomic (defaults, validation of user
// input, events, formatting) lives in TypeScript on top of this; the addon receives flat, already
// checked values and throws Errors with a `code` when something it owns fails.
import * as path from 'node:path';

export type Mode = 'bypass' | 'kernel';

export interface CounterInfo {
  /** C++ identifier, e.g. RX_PACKETS */
  id: string;
  /** Prometheus family without the vhostwire_ prefix, e.g. port_receive_packets_total */
  family: string;
  /** Extra labels in Prometheus syntax, e.g. direction="transmit",reason="no_buffer" (may be empty) */
  labels: string;
  help: string;
}

export interface CounterLayout {
  /** Counters per queue set; queue set i starts at word i * queueStride. */
  queueStride: number;
  /** Counters per PMD set; PMD set j starts at word pmdBase + j * pmdStride. */
  pmdStride: number;
  pmdBase: number;
}

export interface PortEvent {
  /** error: a message of the front end was rejected, or a front end was refused (Switch: 'refused') */
  kind: 'connected' | 'disconnected' | 'ring-broken' | 'error' | 'link';
  port: string;
  /** vring index for ring events, -1 otherwise */
  queue: number;
  /** ring-broken: the invalid_descriptors reason label; error: one sentence; link (uplinks): down, up, deleted, renamed from A to B, back as ifindex N... */
  reason: string;
}

export interface PortInfo {
  name: string;
  /** The port's kind, as registered (src/ports/index.ts, addon/runtime/port_kinds.cc) */
  kind: string;
  queuePairs: number;
  /** First queue counter set of the port; queue pair q uses set counterSet + q. -1: no counters. */
  counterSet: number;
  /** Name of the forwarder (wire or bridge) it is in, or '' */
  forwarder: string;
  /** PMD thread serving its receive queues (queue pair 0's when they are spread), or -1 */
  pmd: number;
  /** The PMD thread serving each receive queue pair: a wire of vhost-user ports spreads them over the PMDs */
  queuePmds: number[];
  /** "connected" or "disconnected" for ports a peer connects to, "up" otherwise */
  state: string;
  /**
   * Whatever else the port says about itself (Port::describe in the addon): its kind's details, typed by
   * the kind (src/ports/<kind>.ts). Feature bits are bigints.
   */
  [detail: string]: unknown;
}

/** The limits user input is checked against, as the addon states them. */
export interface Limits {
  maxQueuePairs: number;
  /** Ethernet frame bytes without FCS */
  minFrame: number;
  maxFrame: number;
  maxPmdThreads: number;
  /** Largest MAC table of one bridge (maxMacs) */
  maxBridgeMacs: number;
  /** Events waiting for the JS thread beyond this many are dropped and counted (eventsDropped). */
  maxQueuedEvents: number;
  /** An uplink's AF_PACKET receive ring: bytes per block, blocks, block retire timeout (ms) */
  uplinkBlockSize: LimitRange;
  uplinkBlocks: LimitRange;
  uplinkRetireMs: LimitRange;
  /** tpacket=v2's receive slots (frames=), rounded up to whole blocks of uplinkFramesPerBlock */
  uplinkFrames: LimitRange;
  uplinkFramesPerBlock: number;
  /** The most bytes one socket's receive ring (blocks times block size) may take */
  uplinkRingBytes: number;
  /** An uplink's AF_XDP UMEM frame size and ring entries (powers of two) */
  uplinkFrameSize: LimitRange;
  uplinkXdpRingSize: LimitRange;
}

export interface LimitRange {
  min: number;
  max: number;
  default: number;
}

/** Guest memory the process maps, and the caps on it, in bytes (addon/core/guest_memory.h). */
export interface GuestMemoryInfo {
  mappedBytes: number;
  /** A region that would take one port's table beyond this is refused (default 1 TiB). */
  maxPerPort: number;
  /** A region that would take every port's tables together beyond this is refused (default 16 TiB). */
  maxPerProcess: number;
}

/** A forwarder: where the packets a port receives go. */
export interface ForwarderInfo {
  kind: 'wire' | 'bridge';
  /** wires: "A=B"; bridges: the bridge's name */
  name: string;
  /** The PMD thread serving every member's receive queues */
  pmd: number;
  members: string[];
}

/** A port's part in a bridge (addon/forward/bridge.h: BridgePortConfig). At most one of vlan and trunk. */
export interface BridgePortOptions {
  port: string;
  /** Access port: untagged inside, this VLAN (1..4094) on the bridge */
  vlan?: number;
  /** Trunk port: tagged frames of these VLANs (1..4094) */
  trunk?: number[];
  /** Trunk port: untagged frames belong to this VLAN (absent: dropped) */
  native?: number;
  /** Port security: the only source MAC admitted, as a 48-bit number */
  mac?: number;
  /** Learn source MACs from this port (default true) */
  learning?: boolean;
  /** Flood unknown unicast out of this port (default true) */
  flood?: boolean;
  /** Flood broadcast and multicast out of this port (default true) */
  floodMulticast?: boolean;
  /** Isolated ports reach only ports that are not isolated (default false) */
  isolated?: boolean;
}

export interface StaticMac {
  port: string;
  /** 48-bit number */
  mac: number;
  /** 0: the untagged segment of VLAN-unaware ports */
  vlan?: number;
}

export interface BridgeOptions {
  /** Learned entries idle this long are removed (default 300) */
  ageingSeconds?: number;
  /** Entries the table holds (default 8192, at most limits' maxBridgeMacs) */
  maxMacs?: number;
  /** Learned entries one port may hold (default maxMacs) */
  maxMacsPerPort?: number;
  static?: StaticMac[];
}

export interface FdbEntry {
  /** 48-bit number */
  mac: number;
  vlan: number;
  port: string;
  /** Seconds since the last frame from it (0 for static entries) */
  ageSeconds: number;
  static: boolean;
}

/** Frames of one member the bridge dropped, by reason. */
export interface BridgeDrops {
  /** Shorter than an Ethernet (or 802.1Q) header */
  runt: number;
  /** In a VLAN (or untagged) the port does not carry */
  vlan: number;
  /** Source MAC other than the port's mac */
  spoofed: number;
  /** Destination learned on the port the frame came in on */
  local: number;
  /** From an isolated port to an isolated port */
  isolated: number;
  /** Sent to this port, not taken by it (full ring, not connected) */
  noRoom: number;
}

export interface BridgeMemberInfo {
  port: string;
  /** Learned entries it holds */
  macs: number;
  /** Frames the bridge took from it */
  rx: number;
  /** Frames the bridge delivered into it */
  tx: number;
  drops: BridgeDrops;
}

export interface BridgeInfo {
  name: string;
  pmd: number;
  ageingSeconds: number;
  maxMacs: number;
  maxMacsPerPort: number;
  /** Entries in the table now, static ones included */
  macs: number;
  learned: number;
  aged: number;
  moved: number;
  /** Entries taken from the port holding the most, to make room */
  evicted: number;
  refusedTableFull: number;
  refusedPortLimit: number;
  /** Frames flooded (unknown unicast, broadcast, multicast) and the copies that made */
  flooded: number;
  floodCopies: number;
  members: BridgeMemberInfo[];
  /**
   * Frames dropped on the way in (VLAN not carried, spoofed, local destination, isolated) by VLAN: every
   * VLAN a member carries ('0': the VLAN-unaware segment), then 'untagged' and 'other' (a VID nobody carries).
   */
  vlanDrops: Array<{ vlan: string; drops: number }>;
}

export interface EngineOptions {
  /** One entry per PMD thread: the CPU to pin it to, or -1 for no pinning. */
  pmdCores: number[];
  mode: Mode;
  /** Called on the JS thread for rare port events. */
  onEvent: (e: PortEvent) => void;
}

export interface NativeEngine {
  /** A port of a registered kind, from the flat parameters its kind takes (src/ports/<kind>.ts: params). */
  addPort(kind: string, name: string, params: Record<string, string | number | boolean>): void;
  removePort(name: string): void;
  /**
   * Joins a and b in both directions on the PMD thread serving the fewest receive queues, and returns that
   * thread's index. A port is in at most one forwarder.
   */
  wire(a: string, b: string): number;
  /** Removes the wire port a is in. */
  unwire(a: string): void;
  /**
   * A learning bridge over the members (each in no other forwarder), on the PMD thread serving the fewest
   * receive queues; returns that thread's index. A whole bridge runs on one PMD thread.
   */
  addBridge(name: string, options: BridgeOptions, members: BridgePortOptions[]): number;
  removeBridge(name: string): void;
  /** A port joins or leaves a running bridge; the bridge's PMD pauses for it. */
  bridgeAddPort(bridge: string, member: BridgePortOptions): void;
  bridgeRemovePort(bridge: string, port: string): void;
  /** The bridge's MAC table, copied with its PMD paused. */
  fdb(bridge: string): FdbEntry[];
  bridges(): BridgeInfo[];
  /**
   * Switches the PMD threads' wait policy and every port's part of the mode (an uplink's driver). Every
   * port prepares its part before any is switched: if one cannot, this throws and nothing has changed.
   */
  setMode(mode: Mode): void;
  ports(): PortInfo[];
  forwarders(): ForwarderInfo[];
  /** The shared counter block, written by the native threads; read it, never write it. */
  counters(): BigUint64Array;
  counterLayout(): CounterLayout;
  /** Events dropped because maxQueuedEvents were already waiting for the JS thread. */
  eventsDropped(): number;
  /** Stops and joins every thread, closes every port (sockets removed). Idempotent. */
  close(): void;
}

export interface PrivilegeRequest {
  /** Become this user (every thread); absent: keep the current one. Numbers, already resolved. */
  user?: { uid: number; gid: number; groups: number[] };
  /** Capability numbers (capabilities(7)) to keep; every other one is dropped, on every thread. */
  keep: number[];
}

export interface PrivilegeReport {
  /** The capabilities kept: those asked for that the process had. */
  kept: number[];
  /** The bounding set was cut to `kept` (possible only with CAP_SETPCAP). */
  boundingDropped: boolean;
  /** Threads that made the change themselves, the calling one included. */
  threads: number;
  /** Threads that block every signal (Node's SIGUSR1 watchdog): only the user change and no_new_privs reach them. */
  unreachable: number[];
}

/** The kernel's counters for one interface (addon/core/netdev_stats.h); never rejects. */
export interface NetdevStats {
  /** False: no interface by that name in this network namespace (every other field says so). */
  exists: boolean;
  /** IFLA_STATS64 under the names /sys/class/net/IF/statistics uses; null when unreadable (see linkError). */
  link: Record<string, number> | null;
  linkError: string;
  /** The driver's `ethtool -S` statistics, kernel names; null with the reason in ethtoolError. */
  ethtool: Record<string, number> | null;
  ethtoolError: string;
}

export interface Native {
  Engine: new (options: EngineOptions) => NativeEngine;
  queueCounters: CounterInfo[];
  pmdCounters: CounterInfo[];
  limits: Limits;
  /**
   * After setup: becomes request.user (if given) and keeps only request.keep, on every thread, with
   * no_new_privs set; every thread's /proc status is checked afterwards. Throws (code ERR_PRIVILEGES)
   * when any of it fails, possibly half way: the process must then exit.
   */
  dropPrivileges(request: PrivilegeRequest): PrivilegeReport;
  guestMemory(): GuestMemoryInfo;
  /** Changes the caps for regions mapped from now on; what is mapped stays. Process-wide. */
  setGuestMemoryLimits(limits: { maxPerPort: number; maxPerProcess: number }): void;
  /** Read off the JS thread: rtnetlink IFLA_STATS64 and SIOCETHTOOL, no subprocess, no sysfs. */
  netdevStats(ifname: string): Promise<NetdevStats>;
}

// dist/src/native.js -> <package root>/build/Release/vhostwire.node
// eslint-disable-next-line @typescript-eslint/no-require-imports
export const native: Native = require(path.join(__dirname, '..', '..', 'build', 'Release', 'vhostwire.node'));

/**
 * Queue counter `id` (its C++ name: RX_PACKETS, INVALID_BAD_NEXT...) of queue pair qp of port `name`,
 * from a fresh snapshot of the engine's counter block. Throws for an unknown counter or port.
 */
export function queueCounter(engine: NativeEngine, name: string, id: string, qp = 0): bigint {
  const idx = native.queueCounters.findIndex((c) => c.id === id);
  if (idx < 0) throw new Error(`no queue counter ${id}`);
  const p = engine.ports().find((x) => x.name === name);
  if (!p) throw new Error(`no port ${name}`);
  return engine.counters()[(p.counterSet + qp) * engine.counterLayout().queueStride + idx];
}
