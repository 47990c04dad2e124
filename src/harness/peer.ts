// Our own vhost-user front end (the driver side, as DPDK's virtio-user) with friendly defaults: the
// test peer, the `vhostwire peer` command and the demo's traffic source and sink.
import { frontend } from './frontend-native';
import type { NativeVirtioUser, TrafficOptions, VirtioUserOptions, VirtioUserStats } from './frontend-native';

export type PeerOptions = VirtioUserOptions;

export interface PeerRate {
  txPps: number;
  rxPps: number;
  /** the interval actually measured */
  seconds: number;
}

export class PeerError extends Error {
  override name = 'PeerError';
  constructor(
    message: string,
    readonly code: string,
  ) {
    super(message);
  }
}

export class Peer {
  readonly path: string;
  #vu: NativeVirtioUser;
  #closed = false;

  /** Connects (or with `server`, waits to be connected to) and negotiates; blocks up to timeoutMs (5 s). */
  constructor(options: PeerOptions) {
    this.path = options.path;
    this.#vu = this.#call(
      options.server ? `wait for a backend on ${options.path}` : `connect to ${options.path}`,
      () => new (frontend().VirtioUser)({ queuePairs: 1, timeoutMs: 5000, ...options }),
    );
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** false once the backend hung up */
  connected(): boolean {
    return !this.#closed && this.#vu.connected();
  }

  features(): bigint {
    return this.#open().features();
  }

  /** Queues one frame on queue pair qp; false if the ring is full. Not while traffic runs. */
  send(frame: Buffer, qp = 0): boolean {
    return this.#open().send(qp, frame);
  }

  /** Frames received on queue pair qp (at most max). Not while traffic runs. */
  receive(max = 256, qp = 0): Buffer[] {
    return this.#open().receive(qp, max);
  }

  /** Starts the native traffic thread: transmit frames of txSize bytes and/or receive. */
  startTraffic(t: TrafficOptions): void {
    this.#call('start traffic', () => this.#open().startTraffic(t));
  }

  stopTraffic(): void {
    this.#open().stopTraffic();
  }

  stats(): VirtioUserStats {
    return this.#open().stats();
  }

  /** Packets per second sent and received over the next durationMs, from two stats() samples. */
  async rate(durationMs: number): Promise<PeerRate> {
    const s0 = this.stats();
    const t0 = process.hrtime.bigint();
    await new Promise((resolve) => setTimeout(resolve, durationMs));
    const s1 = this.stats();
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    return {
      txPps: (s1.txPackets - s0.txPackets) / seconds,
      rxPps: (s1.rxPackets - s0.rxPackets) / seconds,
      seconds,
    };
  }

  /** Stops traffic, closes the socket and unmaps the shared memory. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#vu.close();
  }

  #open(): NativeVirtioUser {
    if (this.#closed) throw new PeerError(`peer ${this.path} is closed`, 'ECLOSED');
    return this.#vu;
  }

  #call<T>(what: string, fn: () => T): T {
    try {
      return fn();
    } catch (e) {
      const err = e as { message?: string; code?: string };
      throw new PeerError(`${what}: ${err.message ?? String(e)}`, err.code ?? 'EUNKNOWN');
    }
  }
}
