// Prometheus families of the learning bridges: the MAC table (size, learned, aged, moved, evicted,
// refused), flooding, and each member's frames and drops by reason. Labels are bounded by configuration
// (bridges, their ports, the VLANs they carry, a fixed set of reasons), never by traffic: no per-MAC
// series, and a VLAN nobody carries is "other".
import { Counter, Gauge, type Registry } from 'prom-client';
import type { BridgeDrops, BridgeInfo } from '../native';
import type { Switch } from '../switch';

const PREFIX = 'vhostwire_bridge_';

// The metric names say drops the way port_drops_total does.
const DROP_REASONS: Array<[keyof BridgeDrops, string]> = [
  ['runt', 'runt'],
  ['vlan', 'vlan_not_carried'],
  ['spoofed', 'spoofed_source'],
  ['local', 'local_destination'],
  ['isolated', 'isolated'],
  ['noRoom', 'no_room'],
];

// Reading the bridges pauses each bridge's PMD for a copy: one read serves every family of one scrape.
const SNAPSHOT_MS = 200;

export function registerBridgeMetrics(registry: Registry, sw: Switch): void {
  let snap: { at: number; bridges: BridgeInfo[] } | undefined;
  const bridges = (): BridgeInfo[] => {
    if (sw.closed) return [];
    const now = Date.now();
    if (!snap || now - snap.at > SNAPSHOT_MS) snap = { at: now, bridges: sw.bridges() };
    return snap.bridges;
  };
  const family = <L extends string>(
    kind: 'counter' | 'gauge',
    name: string,
    help: string,
    labelNames: L[],
    each: (b: BridgeInfo, put: (labels: Record<L, string>, v: number) => void) => void,
  ): void => {
    const common = { name: PREFIX + name, help, labelNames, registers: [registry] };
    if (kind === 'counter')
      new Counter<L>({
        ...common,
        collect() {
          this.reset();
          for (const b of bridges()) each(b, (l, v) => this.inc(l, v));
        },
      });
    else
      new Gauge<L>({
        ...common,
        collect() {
          this.reset();
          for (const b of bridges()) each(b, (l, v) => this.set(l, v));
        },
      });
  };

  family('gauge', 'macs', 'Entries in the MAC table, static ones included', ['bridge'], (b, put) => put({ bridge: b.name }, b.macs));
  family('gauge', 'max_macs', 'Entries the MAC table holds (max-macs)', ['bridge'], (b, put) => put({ bridge: b.name }, b.maxMacs));
  family(
    'counter',
    'fdb_events_total',
    'MAC table changes: learned (a new entry), aged (idle past the ageing time), moved (a MAC seen on another port), evicted (the oldest entry of the port holding the most, taken to make room)',
    ['bridge', 'event'],
    (b, put) => {
      put({ bridge: b.name, event: 'learned' }, b.learned);
      put({ bridge: b.name, event: 'aged' }, b.aged);
      put({ bridge: b.name, event: 'moved' }, b.moved);
      put({ bridge: b.name, event: 'evicted' }, b.evicted);
    },
  );
  family(
    'counter',
    'fdb_refused_total',
    'Source MACs not learned: port_limit (the port holds max-macs-per-port), table_full (full of static entries, nothing to evict)',
    ['bridge', 'reason'],
    (b, put) => {
      put({ bridge: b.name, reason: 'port_limit' }, b.refusedPortLimit);
      put({ bridge: b.name, reason: 'table_full' }, b.refusedTableFull);
    },
  );
  family('counter', 'flooded_frames_total', 'Frames flooded: unknown unicast, broadcast and multicast', ['bridge'], (b, put) =>
    put({ bridge: b.name }, b.flooded),
  );
  family('counter', 'flood_copies_total', 'Copies flooding made, one per destination port of each flooded frame', ['bridge'], (b, put) =>
    put({ bridge: b.name }, b.floodCopies),
  );
  family(
    'counter',
    'vlan_drops_total',
    'Frames dropped on the way in (vlan_not_carried, spoofed_source, local_destination, isolated), by the VLAN they were in: each VLAN a member carries (0: the VLAN-unaware segment), untagged, or other (a VLAN no member carries)',
    ['bridge', 'vlan'],
    (b, put) => {
      for (const v of b.vlanDrops) put({ bridge: b.name, vlan: v.vlan }, v.drops);
    },
  );
  family(
    'counter',
    'port_frames_total',
    'Frames the bridge took from a member (receive) and delivered into it (transmit), backend side',
    ['bridge', 'port', 'direction'],
    (b, put) => {
      for (const m of b.members) {
        put({ bridge: b.name, port: m.port, direction: 'receive' }, m.rx);
        put({ bridge: b.name, port: m.port, direction: 'transmit' }, m.tx);
      }
    },
  );
  family(
    'counter',
    'port_drops_total',
    "Frames the bridge dropped, by member and reason: runt (shorter than its Ethernet or 802.1Q header), vlan_not_carried (a VLAN, or untagged, that the port does not carry), spoofed_source (not the port's mac=), local_destination (learned on the port it came from), isolated (isolated to isolated), no_room (sent to the port, not taken: full or not connected)",
    ['bridge', 'port', 'reason'],
    (b, put) => {
      for (const m of b.members) for (const [key, reason] of DROP_REASONS) put({ bridge: b.name, port: m.port, reason }, m.drops[key]);
    },
  );
  family('gauge', 'port_macs', 'Learned MAC table entries a member holds', ['bridge', 'port'], (b, put) => {
    for (const m of b.members) put({ bridge: b.name, port: m.port }, m.macs);
  });
}
