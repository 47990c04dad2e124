// Prometheus view of the shared counter block. Nothing is copied while packets flow: the collectors
// read the native threads' BigUint64Array only when someone scrapes. One family per counter-table
// family; entries that share a family (drops by direction and reason) become label sets of it.
// /metrics writes those families' text itself, as bytes (src/api/exposition.ts); their prom-client
// metrics stay registered for the JSON view (getMetricsAsJSON) and anyone reading the registry.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Counter, Gauge, type Registry } from 'prom-client';
import { CounterBlockRegistry, FamilyWriter, labelText, type SampleLine } from './exposition';
import { registerBridgeMetrics } from './bridge-metrics';
import { native } from '../native';
import type { CounterInfo, NetdevStats, PortInfo } from '../native';
import { hostInterface } from '../ports';
import type { Switch } from '../switch';

type CounterBlockView = ReturnType<Switch['counterBlock']>;
/** Where one set of counters starts in the block, and the labels that name it. */
interface CounterSet {
  base: number;
  labels: Record<string, string>;
  /** the set is an uplink's: families named uplink_* (the kernel's counts on its socket) apply to it */
  uplink?: boolean;
}

const PREFIX = 'vhostwire_';

interface Entry {
  /** word offset inside a counter set */
  index: number;
  labels: Record<string, string>;
  /** the block keeps nanoseconds (id *_NS) and the family is in seconds */
  scale: number;
}

interface Family {
  name: string;
  help: string;
  labelNames: string[];
  entries: Entry[];
}

/** `direction="transmit",reason="no_buffer"` -> { direction: 'transmit', reason: 'no_buffer' } */
export function parseLabels(text: string): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const m of text.matchAll(/([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
    labels[m[1]] = m[2].replace(/\\(.)/g, '$1');
  }
  return labels;
}

function families(infos: CounterInfo[], baseLabels: string[]): Family[] {
  const byName = new Map<string, Family>();
  infos.forEach((c, index) => {
    const labels = parseLabels(c.labels);
    let f = byName.get(c.family);
    if (!f) {
      f = { name: PREFIX + c.family, help: '', labelNames: [...baseLabels], entries: [] };
      byName.set(c.family, f);
    }
    for (const l of Object.keys(labels)) if (!f.labelNames.includes(l)) f.labelNames.push(l);
    const seconds = c.id.endsWith('_NS') && /_seconds(_total)?$/.test(c.family);
    f.entries.push({ index, labels, scale: seconds ? 1e-9 : 1 });
  });
  // A shared family's HELP lists what each label set counts, since the table describes entries.
  for (const f of byName.values()) {
    const own = infos.filter((c) => PREFIX + c.family === f.name);
    f.help = own.length === 1 ? own[0].help : own.map((c) => `${c.labels}: ${c.help}`).join('; ');
  }
  return [...byName.values()];
}

/** The package's version, for vhostwire_build_info (package.json sits two levels above dist/src/api). */
function packageVersion(): string {
  for (const up of ['../../..', '../..']) {
    try {
      const pkg = JSON.parse(fs.readFileSync(path.join(__dirname, up, 'package.json'), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'vhostwire' && pkg.version) return pkg.version;
    } catch {
      // not this level
    }
  }
  return 'unknown';
}

/** A registry of its own (not prom-client's global one), so several switches never collide. */
export function createRegistry(sw: Switch): Registry {
  const registry = new CounterBlockRegistry();

  // One copy of the counter block per scrape, taken by the first family collected, so every family of
  // one scrape reads the same instant (a port's packets and its size bins agree). prom-client starts
  // every family's collect() in one synchronous pass (and so does CounterBlockRegistry), so the copy is
  // dropped once that pass is over, in the first microtask after it: the next scrape, even one started
  // from a promise callback, takes its own. The port list is asked of the addon once per scrape too (it
  // describes every queue: 10 ms at 256 ports x 8 queues).
  type SetsOf = (block: CounterBlockView, uplinks: Set<string>) => CounterSet[];
  interface Snapshot {
    view: CounterBlockView;
    ports: PortInfo[];
    uplinks: Set<string>;
    /** the same object while no port was added or removed and the same ports are uplinks */
    layout: object;
    /** each group's counter sets (queues, PMDs) with their labels as text, worked out once per scrape */
    sets: Map<SetsOf, Array<CounterSet & { text: string }>>;
  }
  let snapshot: Snapshot | null = null;
  let layout = { sets: undefined as unknown, uplinks: '' };
  const snap = (): Snapshot => {
    if (!snapshot) {
      const view = sw.counterBlock();
      const ports = sw.portInfo();
      const uplinks = new Set(ports.filter((p) => p.kind === 'uplink').map((p) => p.name));
      const names = [...uplinks].join();
      if (layout.sets !== view.ports || layout.uplinks !== names) layout = { sets: view.ports, uplinks: names };
      snapshot = { view: { ...view, block: view.block.slice() }, ports, uplinks, layout, sets: new Map() };
      queueMicrotask(() => (snapshot = null));
    }
    return snapshot;
  };
  const setsIn = (s: Snapshot, of: SetsOf): Array<CounterSet & { text: string }> => {
    let sets = s.sets.get(of);
    if (!sets) s.sets.set(of, (sets = of(s.view, s.uplinks).map((x) => ({ ...x, text: labelText(x.labels) }))));
    return sets;
  };

  // One metric per family; each scrape reads every counter set the family applies to from the block.
  // Families named without _total (high-water marks) are gauges; the rest count.
  const register = (infos: CounterInfo[], baseLabels: string[], sets: SetsOf): void => {
    for (const f of families(infos, baseLabels)) {
      const uplinkOnly = f.name.startsWith(`${PREFIX}uplink_`);
      const read = (put: (labels: Record<string, string>, v: number) => void): void => {
        if (sw.closed) return;
        const s = snap();
        for (const set of setsIn(s, sets)) {
          if (uplinkOnly && !set.uplink) continue;
          for (const e of f.entries) put({ ...set.labels, ...e.labels }, Number(s.view.block[set.base + e.index]) * e.scale);
        }
      };
      // The same samples as read() puts, as text: a set's labels, then each entry's own (the table's
      // labels never repeat a set's, so the merged object's order is the set's then the entry's).
      const entryText = f.entries.map((e) => `${Object.keys(e.labels).length ? `,${labelText(e.labels)}` : ''}} `);
      const writer = new FamilyWriter(f.name, f.help, f.name.endsWith('_total') ? 'counter' : 'gauge');
      registry.writeFamily(f.name, () => {
        if (sw.closed) return writer.write(null, () => [], new BigUint64Array(0));
        const s = snap();
        const lines = (): SampleLine[] =>
          setsIn(s, sets)
            .filter((set) => !uplinkOnly || set.uplink)
            .flatMap((set) =>
              f.entries.map((e, i) => ({ prefix: `${f.name}{${set.text}${entryText[i]}`, index: set.base + e.index, scale: e.scale })),
            );
        return writer.write(s.layout, lines, s.view.block);
      });
      const common = { name: f.name, help: f.help, labelNames: f.labelNames, registers: [registry] };
      if (f.name.endsWith('_total')) {
        new Counter({
          ...common,
          collect() {
            this.reset();
            read((labels, v) => this.inc(labels, v));
          },
        });
      } else {
        new Gauge({
          ...common,
          collect() {
            this.reset();
            read((labels, v) => this.set(labels, v));
          },
        });
      }
    }
  };
  register(native.queueCounters, ['port', 'queue'], ({ layout, ports }, uplinks) =>
    ports.flatMap((p) =>
      Array.from({ length: p.queuePairs }, (_, q) => ({
        base: (p.counterSet + q) * layout.queueStride,
        labels: { port: p.name, queue: String(q) },
        uplink: uplinks.has(p.name),
      })),
    ),
  );
  register(native.pmdCounters, ['pmd'], ({ layout }) =>
    Array.from({ length: sw.pmdCount }, (_, j) => ({ base: layout.pmdBase + j * layout.pmdStride, labels: { pmd: String(j) } })),
  );

  new Gauge({
    name: `${PREFIX}port_up`,
    help: 'Whether the port can pass packets: 1 when it is up or its front end is connected, 0 otherwise',
    labelNames: ['port'],
    registers: [registry],
    collect() {
      this.reset();
      if (sw.closed) return;
      for (const p of snap().ports) this.set({ port: p.name }, p.state === 'disconnected' ? 0 : 1);
    },
  });
  new Gauge({
    name: `${PREFIX}port_connected`,
    help: 'For ports a front end connects to (vhost-user): 1 while one is connected, 0 while the port waits for one',
    labelNames: ['port'],
    registers: [registry],
    collect() {
      this.reset();
      if (sw.closed) return;
      for (const p of snap().ports)
        if (p.state === 'connected' || p.state === 'disconnected') this.set({ port: p.name }, p.state === 'connected' ? 1 : 0);
    },
  });
  new Gauge({
    name: `${PREFIX}mode`,
    help: "The backend's mode: 1 for the current one (bypass: busy-polling PMDs and AF_XDP uplinks; kernel: AF_PACKET uplinks and PMDs that sleep when idle), 0 for the other",
    labelNames: ['mode'],
    registers: [registry],
    collect() {
      this.reset();
      if (sw.closed) return;
      for (const mode of ['bypass', 'kernel']) this.set({ mode }, sw.mode === mode ? 1 : 0);
    },
  });
  const version = packageVersion();
  new Gauge({
    name: `${PREFIX}build_info`,
    help: 'Always 1; the labels say which vhostwire (package version) runs on which Node.js and N-API version',
    labelNames: ['version', 'node', 'napi'],
    registers: [registry],
    collect() {
      this.reset();
      this.set({ version, node: process.version, napi: process.versions.napi ?? 'unknown' }, 1);
    },
  });

  new Counter({
    name: `${PREFIX}events_dropped_total`,
    help: 'Port events (connected, disconnected, ring-broken, refused) dropped before they reached JS because 1024 were already waiting; a dropped ring-broken event still shows in rings_broken and invalid_descriptors, a dropped refusal only here',
    registers: [registry],
    collect() {
      this.reset();
      if (!sw.closed) this.inc(sw.eventsDropped);
    },
  });
  new Gauge({
    name: `${PREFIX}guest_memory_mapped_bytes`,
    help: 'Guest memory the process maps for every port together (capped per port and per process, docs/security.md)',
    registers: [registry],
    collect() {
      this.set(native.guestMemory().mappedBytes);
    },
  });

  // The kernel's own counters for each uplink's interface, beside ours: what the interface itself saw
  // (IFLA_STATS64) and its driver's private counters (the `ethtool -S` set), asked of the kernel by the
  // addon off the JS thread. The three families below share one read per interface per scrape: prom-client
  // collects them concurrently, so the first to ask starts the read and the others await it. An interface
  // that vanished under its uplink has nothing to show.
  let reading: Promise<{ port: string; ifname: string; stats: NetdevStats }[]> | null = null;
  const readInterfaces = () =>
    (reading ??= Promise.all(
      (sw.closed ? [] : snap().ports).flatMap((p) => {
        const ifname = hostInterface(p);
        return ifname ? [native.netdevStats(ifname).then((stats) => ({ port: p.name, ifname, stats }))] : [];
      }),
    ).finally(() => setImmediate(() => (reading = null))));
  const interfaceGauge = (name: string, help: string, pick: (s: NetdevStats) => Record<string, number> | null) =>
    new Gauge({
      name: `${PREFIX}${name}`,
      help,
      labelNames: ['port', 'interface', 'stat'],
      registers: [registry],
      async collect() {
        this.reset();
        for (const { port, ifname, stats } of await readInterfaces())
          for (const [stat, v] of Object.entries(pick(stats) ?? {})) this.set({ port, interface: ifname, stat }, v);
      },
    });
  interfaceGauge(
    'uplink_interface_statistic',
    "The uplink interface's own counters (rtnetlink IFLA_STATS64, the names of /sys/class/net/IF/statistics): the kernel's count, beside ours",
    (s) => s.link,
  );
  interfaceGauge(
    'uplink_ethtool_statistic',
    "The uplink interface driver's counters, the set `ethtool -S IF` shows, under the driver's names (SIOCETHTOOL)",
    (s) => s.ethtool,
  );
  new Gauge({
    name: `${PREFIX}uplink_ethtool_statistics_available`,
    help: "1 when the uplink interface's driver has ethtool statistics and they were read; 0 when it keeps none or the read failed",
    labelNames: ['port', 'interface'],
    registers: [registry],
    async collect() {
      this.reset();
      for (const { port, ifname, stats } of await readInterfaces()) this.set({ port, interface: ifname }, stats.ethtool ? 1 : 0);
    },
  });

  // What each uplink last saw of its interface's link (rtnetlink, addon/ports/uplink/link_monitor.h).
  const uplinkLinks = () => (sw.closed ? [] : snap().ports).flatMap((p) => (typeof p.link === 'string' ? [p] : []));
  new Gauge({
    name: `${PREFIX}uplink_link_up`,
    help: 'Whether the uplink interface is up with carrier (1), down or without carrier (0, and state="down"), or deleted (0, state="gone") as the uplink last saw it',
    labelNames: ['port', 'interface', 'state'],
    registers: [registry],
    collect() {
      this.reset();
      for (const p of uplinkLinks())
        this.set({ port: p.name, interface: String(p.ifname), state: String(p.link) }, p.link === 'up' ? 1 : 0);
    },
  });
  new Counter({
    name: `${PREFIX}uplink_link_changes_total`,
    help: 'Times the uplink saw its interface go down, come up, be renamed, be deleted or come back',
    labelNames: ['port'],
    registers: [registry],
    collect() {
      this.reset();
      for (const p of uplinkLinks()) this.inc({ port: p.name }, Number(p.linkChanges));
    },
  });

  new Gauge({
    name: `${PREFIX}uplink_xdp_mode`,
    help: "Bypass mode: 1 for the way the kernel took the uplink's AF_XDP sockets (bind: zerocopy when the driver has it, else copy) and where its XDP program runs (attach: native or generic); absent in kernel mode",
    labelNames: ['port', 'bind', 'attach'],
    registers: [registry],
    collect() {
      this.reset();
      for (const p of uplinkLinks())
        if (typeof p.xdpBind === 'string') this.set({ port: p.name, bind: p.xdpBind, attach: String(p.xdpAttach) }, 1);
    },
  });

  registerBridgeMetrics(registry, sw);
  return registry;
}
