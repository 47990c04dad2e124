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
  kind: 'connected' | 'disconnected' | 'ring-broken' | 'error';
  port: string;
  /** vring index for ring events, -1 otherwise */
  queue: number;
  /** ring-broken: the invalid_descriptors reason label; error: one sentence */
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
  /** PMD thread serving its receive queues, or -1 */
  pmd: number;
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
  /** Events waiting for the JS thread beyond this many are dropped and counted (eventsDropped). */
  maxQueuedEvents: number;
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
  kind: 'wire';
  /** wires: "A=B" */
  name: string;
  /** The PMD thread serving every member's receive queues */
  pmd: number;
  members: string[];
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
