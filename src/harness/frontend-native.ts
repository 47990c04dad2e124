// The whole surface of the test front end's addon (build/Release/vhostwire_frontend.node, built from
// addon/frontend and addon/napi/frontend.cc), typed. It is a separate addon so that the production one
// (src/native.ts) carries no hostile-guest surface; only the tests and the `peer` command load it, on
// first use.
import * as path from 'node:path';

export interface VirtioUserOptions {
  path: string;
  server?: boolean;
  queuePairs?: number;
  queueSize?: number;
  mrgRxbuf?: boolean;
  indirect?: boolean;
  eventIdx?: boolean;
  txIndirect?: boolean;
  interrupts?: boolean;
  memRegions?: number;
  memSize?: number;
  rxBufSize?: number;
  mtu?: number;
  /** Accept the checksum and TCP segmentation offloads the backend offers. */
  offloads?: boolean;
  timeoutMs?: number;
}

export interface TrafficOptions {
  txSize?: number;
  txCount?: number;
  txRate?: number;
  rx?: boolean;
}

export interface VirtioUserStats {
  txPackets: number;
  txBytes: number;
  txRingFull: number;
  rxPackets: number;
  rxBytes: number;
  kicks: number;
  calls: number;
}

export interface RawDesc {
  addr: bigint;
  len: number;
  flags: number;
  next: number;
}

export interface NativeVirtioUser {
  features(): bigint;
  protocolFeatures(): bigint;
  connected(): boolean;
  /** header: the virtio-net header to send the frame with (its first 10 bytes; default all zero). */
  send(qp: number, frame: Buffer, header?: Buffer): boolean;
  /** withHeader: each frame keeps the 12-byte virtio-net header it arrived with in front. */
  receive(qp: number, max: number, withHeader?: boolean): Buffer[];
  startTraffic(t: TrafficOptions): void;
  stopTraffic(): void;
  stats(): VirtioUserStats;
  alloc(len: number): bigint;
  memWrite(gpa: bigint, data: Buffer): boolean;
  memRead(gpa: bigint, len: number): Buffer | null;
  memSize(): number;
  rawDesc(vring: number, idx: number, d: RawDesc): void;
  rawAvailPush(vring: number, head: number): void;
  rawSetAvailIdx(vring: number, idx: number): void;
  rawUsedIdx(vring: number): number;
  rawUsedElem(vring: number, pos: number): { id: number; len: number };
  kick(vring: number): void;
  waitCall(vring: number, timeoutMs: number): boolean;
  rawMessage(request: number, flags: number, payload: Buffer, fds: number[], wantReply: boolean): Buffer | null;
  addRegion(len: number): void;
  removeRegion(i: number): void;
  // ---- hostile front end (test/addon/survival/) ----
  /** Regions as the backend was told them; uaddr is our mapping address. */
  regions(): { gpa: bigint; size: bigint; uaddr: bigint; offset: bigint; removed: boolean }[];
  /** The memfd behind every region (ours: never close it). */
  memFd(): number;
  /** Guest physical addresses of a vring's descriptor table, avail ring and used ring. */
  ringAddrs(vring: number): { desc: bigint; avail: bigint; used: bigint };
  /** Our ends of a vring's eventfds (ours: never close them); err is -1 until setVringErr. */
  vringFds(vring: number): { kick: number; call: number; err: number };
  /** Registers a fresh VHOST_USER_SET_VRING_ERR eventfd for vring, replacing the previous one. */
  setVringErr(vring: number): void;
  /** Reads and resets vring's err eventfd: signals since the last read, 0 if none, -1 if no err fd. */
  readErr(vring: number): number;
  /** GET_VRING_BASE, then SET_VRING_BASE/KICK/ENABLE at the returned base: restarts a (broken) vring. */
  restartVring(vring: number): number;
  /** Sends arbitrary bytes (e.g. a header claiming more payload than follows) with up to 253 fds. */
  rawBytes(data: Buffer, fds?: number[]): void;
  /**
   * A new fd for hostile messages, owned by the caller (close it with fs.closeSync). blocking-eventfd:
   * no O_NONBLOCK and its counter at the maximum, so a write blocks until someone reads it.
   */
  makeFd(kind: 'memfd' | 'eventfd' | 'blocking-eventfd', size?: number): number;
  /**
   * Starts a thread that keeps storing randomly chosen values into guest memory (descriptors, indirect
   * entries, headers) and posting heads on vring while the backend reads them. 8-byte multiples at
   * 8-byte aligned addresses are stored as atomic 8-byte words, anything else byte by byte. With
   * restart, the racer restarts the vring itself whenever its err eventfd (setVringErr) is signalled,
   * and owns the socket until stopRacer: no raw messages meanwhile.
   */
  startRacer(o: { vring: number; heads: number[]; targets: { gpa: bigint; values: Buffer[] }[]; restart?: boolean }): void;
  stopRacer(): { rounds: number; posted: number; restarts: number; failedRestarts: number };
  close(): void;
}

export interface NativeFrontend {
  VirtioUser: new (options: VirtioUserOptions) => NativeVirtioUser;
  /** Guest physical address where our front end's memory starts. */
  guestBase: bigint;
  /** Every vhost-user request the front end knows, by name without the VHOST_USER_ prefix. */
  requests: Record<string, number>;
  /** The vhost-user wire format's flags and sizes (addon/ports/vhost_user/vhost_user_wire.h). */
  wire: {
    /** header flags: the protocol version */
    version: number;
    /** header flags: NEED_REPLY */
    needReply: number;
    /** KICK/CALL/ERR payload: no fd comes with it */
    vringNoFd: number;
    headerSize: number;
    /** the largest payload the backend reads (the memory table with every region) */
    maxPayload: number;
    /** the most fds one message may carry */
    maxFds: number;
  };
}

let loaded: NativeFrontend | undefined;

/** The front end's addon, loaded on the first call. */
export function frontend(): NativeFrontend {
  // dist/src/harness/frontend-native.js -> <package root>/build/Release/vhostwire_frontend.node
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  loaded ??= require(path.join(__dirname, '..', '..', '..', 'build', 'Release', 'vhostwire_frontend.node')) as NativeFrontend;
  return loaded;
}
