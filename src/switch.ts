// The control plane's one object: the ports that exist, the wires between them, which PMD thread runs
// each wire, and the events the data plane reports. It owns the native Engine; packets never pass
// through here.
import { EventEmitter } from 'node:events';
import { native } from './native';
import { portKind, type AnyPortSpec } from './ports';
import type {
  BridgeInfo,
  BridgeOptions,
  BridgePortOptions,
  CounterLayout,
  FdbEntry,
  ForwarderInfo,
  Mode,
  NativeEngine,
  PortEvent,
  PortInfo,
} from './native';

export interface SwitchOptions {
  mode?: Mode;
  /** One PMD thread per entry, pinned to that CPU. Empty or absent: one unpinned PMD thread. */
  pmdCores?: number[];
}

/** Counter id (RX_PACKETS, DROP_TX_NO_BUFFER, ...) to value. */
export type CounterValues = Record<string, bigint>;

export interface SwitchPortInfo extends PortInfo {
  /** In a wire: the port at its other end; otherwise '' */
  peer: string;
  /** One entry per queue pair. */
  counters: CounterValues[];
}

/** Where a port's counters live in the shared block. */
export interface PortCounterSets {
  name: string;
  /** First queue counter set; queue pair q uses set counterSet + q. */
  counterSet: number;
  queuePairs: number;
}

export interface Wire {
  a: string;
  b: string;
  pmd: number;
}

export type SwitchEvents = {
  connected: [PortEvent];
  disconnected: [PortEvent];
  'ring-broken': [PortEvent];
  /** An uplink saw its interface change: reason says how (down, up, deleted, renamed..., back...). */
  link: [PortEvent];
  /**
   * A front end's message was rejected, or a front end was refused (the native kind 'error'). Guests and
   * front ends cause these at will, so they are never emitted as 'error', which an EventEmitter throws when
   * nobody listens: one bad message would take the process down.
   */
  refused: [PortEvent];
  /** The mode changed at run time (setMode). */
  mode: [{ mode: Mode; was: Mode }];
};

/** A native failure, said in terms of the port it concerns; `code` is the addon's (errno-style). */
export class SwitchError extends Error {
  override name = 'SwitchError';
  constructor(
    message: string,
    readonly code: string,
    readonly port?: string,
  ) {
    super(message);
  }
}

export class Switch extends EventEmitter<SwitchEvents> {
  readonly pmdCount: number;
  readonly #engine: NativeEngine;
  #closed = false;
  #closing: Promise<void> | undefined;
  #mode: Mode;
  // Cached once: the block is allocated with the engine and never moves.
  readonly #block: BigUint64Array;
  readonly #layout: CounterLayout;
  #sets: PortCounterSets[] = [];
  // What each port was added with: a name or a resource (socket path, interface) that is taken is refused
  // here, with the port holding it named, before the addon is asked.
  readonly #specs = new Map<string, AnyPortSpec>();

  constructor(options: SwitchOptions = {}) {
    super();
    const cores = options.pmdCores && options.pmdCores.length > 0 ? options.pmdCores : [-1];
    this.#mode = options.mode ?? 'bypass';
    this.pmdCount = cores.length;
    this.#engine = this.#native(
      'create engine',
      undefined,
      () =>
        new native.Engine({
          pmdCores: cores,
          mode: this.#mode,
          onEvent: (e) => {
            if (!this.#closed) this.emit(e.kind === 'error' ? 'refused' : e.kind, e);
          },
        }),
    );
    this.#block = this.#engine.counters();
    this.#layout = this.#engine.counterLayout();
  }

  get mode(): Mode {
    return this.#mode;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Events the addon dropped because the JS thread had not taken the ones before them yet (a flood of
   * refusals). A dropped ring-broken event still shows in the port's counters; a dropped refusal only here.
   */
  get eventsDropped(): number {
    return this.#engine.eventsDropped();
  }

  /** Adds a port of any registered kind, as the configuration describes it (src/ports/). */
  addPort(spec: AnyPortSpec): void {
    const kind = portKind(spec.kind);
    const held = kind.exclusive?.(spec);
    const what = `add ${spec.kind} port "${spec.name}"${held ? ` (${held.value})` : ''}`;
    if (this.#specs.has(spec.name))
      throw new SwitchError(`${what}: a port named "${spec.name}" already exists; choose another name`, 'EEXIST', spec.name);
    if (held) {
      const holder = [...this.#specs.values()].find((s) => portKind(s.kind).exclusive?.(s)?.value === held.value);
      if (holder) throw new SwitchError(`${what}: ${held.what} ${held.value} is already used by port "${holder.name}"`, 'EBUSY', spec.name);
    }
    this.#native(what, spec.name, () => this.#open().addPort(spec.kind, spec.name, kind.params(spec)));
    this.#specs.set(spec.name, spec);
    this.#refreshSets();
  }

  /** Whether a port of that name exists. */
  hasPort(name: string): boolean {
    return this.#specs.has(name);
  }

  /** Removes a port, taking it out of its wire first; a connected front end is disconnected. */
  removePort(name: string): void {
    if (!this.#specs.has(name)) throw new SwitchError(`remove port "${name}": there is no port named "${name}"`, 'ENOENT', name);
    this.#native(`remove port "${name}"`, name, () => this.#open().removePort(name));
    this.#specs.delete(name);
    this.#refreshSets();
  }

  /** Joins a and b in both directions on the PMD thread that serves the fewest receive queues. */
  wire(a: string, b: string): Wire {
    const pmd = this.#native(`wire "${a}" to "${b}"`, a, () => this.#open().wire(a, b));
    return { a, b, pmd };
  }

  /** Removes the wire port `name` is in. */
  unwire(name: string): void {
    this.#native(`unwire "${name}"`, name, () => this.#open().unwire(name));
  }

  /**
   * A learning bridge over existing ports, each in no wire or other bridge; returns the PMD thread that
   * runs it (all of it: a bridge is not spread over PMD threads yet).
   */
  addBridge(name: string, options: BridgeOptions, members: BridgePortOptions[]): { name: string; pmd: number } {
    const pmd = this.#native(`add bridge "${name}"`, undefined, () => this.#open().addBridge(name, options, members));
    return { name, pmd };
  }

  removeBridge(name: string): void {
    this.#native(`remove bridge "${name}"`, undefined, () => this.#open().removeBridge(name));
  }

  /** An existing port joins a running bridge; the other members keep their traffic and counters. */
  bridgeAddPort(bridge: string, member: BridgePortOptions): void {
    this.#native(`add port "${member.port}" to bridge "${bridge}"`, member.port, () => this.#open().bridgeAddPort(bridge, member));
  }

  bridgeRemovePort(bridge: string, port: string): void {
    this.#native(`remove port "${port}" from bridge "${bridge}"`, port, () => this.#open().bridgeRemovePort(bridge, port));
  }

  /** The bridge's MAC table: MAC, VLAN, port, age, static flag. */
  fdb(bridge: string): FdbEntry[] {
    return this.#native(`read the MAC table of bridge "${bridge}"`, undefined, () => this.#open().fdb(bridge));
  }

  /** Every bridge with its table counters and its members' drops by reason. */
  bridges(): BridgeInfo[] {
    return this.#native('list bridges', undefined, () => this.#open().bridges());
  }

  /** The wires as the addon holds them (the topology lives there, once). */
  wires(): Wire[] {
    return this.forwarders()
      .filter((f) => f.kind === 'wire')
      .map((f) => ({ a: f.members[0], b: f.members[1], pmd: f.pmd }));
  }

  forwarders(): ForwarderInfo[] {
    return this.#native('list forwarders', undefined, () => this.#open().forwarders());
  }

  /** Switches every PMD thread (and port) at run time; traffic pauses for one loop boundary. */
  setMode(mode: Mode): void {
    const was = this.#mode;
    this.#native(`set mode ${mode}`, undefined, () => this.#open().setMode(mode));
    this.#mode = mode;
    if (was !== mode) this.emit('mode', { mode, was });
  }

  /** Ports as the addon describes them, without counters. */
  portInfo(): PortInfo[] {
    return this.#native('list ports', undefined, () => this.#open().ports());
  }

  /** Ports with their counters, one CounterValues per queue pair. */
  ports(): SwitchPortInfo[] {
    const peers = new Map<string, string>();
    for (const w of this.wires()) {
      peers.set(w.a, w.b);
      peers.set(w.b, w.a);
    }
    return this.portInfo().map((p) => ({
      ...p,
      peer: peers.get(p.name) ?? '',
      counters: Array.from({ length: p.counterSet < 0 ? 0 : p.queuePairs }, (_, q) =>
        this.#read(native.queueCounters, (p.counterSet + q) * this.#layout.queueStride),
      ),
    }));
  }

  /** One CounterValues per PMD thread. */
  pmdCounters(): CounterValues[] {
    this.#open();
    return Array.from({ length: this.pmdCount }, (_, j) =>
      this.#read(native.pmdCounters, this.#layout.pmdBase + j * this.#layout.pmdStride),
    );
  }

  /**
   * The shared counter block and its layout, for readers that must not copy (metrics). Valid until
   * close(): check `closed` before reading.
   */
  counterBlock(): { block: BigUint64Array; layout: CounterLayout; ports: readonly PortCounterSets[] } {
    return { block: this.#block, layout: this.#layout, ports: this.#sets };
  }

  /** Stops and joins the native threads and closes every port (sockets removed). Idempotent. */
  close(): Promise<void> {
    this.#closing ??= new Promise<void>((resolve, reject) => {
      this.#closed = true;
      try {
        this.#engine.close();
        resolve();
      } catch (e) {
        reject(wrap('close', undefined, e));
      }
    });
    return this.#closing;
  }

  #open(): NativeEngine {
    if (this.#closed) throw new SwitchError('the switch is closed', 'ECLOSED');
    return this.#engine;
  }

  #native<T>(what: string, port: string | undefined, fn: () => T): T {
    try {
      return fn();
    } catch (e) {
      throw wrap(what, port, e);
    }
  }

  #read(infos: typeof native.queueCounters, base: number): CounterValues {
    const values: CounterValues = {};
    infos.forEach((c, i) => {
      values[c.id] = this.#block[base + i];
    });
    return values;
  }

  // Port add/remove are the only changes to where counters live, so metrics read this cached list
  // instead of asking the addon on every scrape.
  #refreshSets(): void {
    this.#sets = this.portInfo()
      .filter((p) => p.counterSet >= 0)
      .map((p) => ({ name: p.name, counterSet: p.counterSet, queuePairs: p.queuePairs }));
  }
}

function wrap(what: string, port: string | undefined, e: unknown): SwitchError {
  if (e instanceof SwitchError) return e;
  const err = e as { message?: string; code?: string };
  return new SwitchError(`${what}: ${err.message ?? String(e)}`, err.code ?? 'EUNKNOWN', port);
}
