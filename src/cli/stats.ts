// `vhostwire stats`: a running serve's ports from /api/ports samples: per port and queue the rates over
// the interval and the totals, and for uplinks the interface's own counts beside ours. One sample pair by
// default; --watch repeats every SECONDS, redrawing in place on a terminal; --json prints one object per
// sample instead of tables. It talks HTTP only (over --api PATH or --url), so it needs no native addon
// and can watch a backend from anywhere its --metrics listener is reachable.
import type { Argv, CommandModule, InferredOptionTypes } from 'yargs';
import { setTimeout as sleep } from 'node:timers/promises';
import type { PortJson } from '../api/http';
import { UsageError } from '../config/options';
import { answerJson, apiRequest, apiTarget, connectionOptions, type Target } from './api';
import { pps, table } from './format';
import { formatDifference, uplinkDifference } from './uplink-difference';
import type { UplinkDetails } from '../ports';

const options = {
  ...connectionOptions,
  watch: {
    type: 'string',
    describe: 'sample every SECONDS (default 1) until interrupted, redrawing in place',
  },
  json: { type: 'boolean', describe: 'print one JSON object per sample (rates and totals) instead of tables' },
  port: { type: 'string', requiresArg: true, describe: 'show this port only' },
} as const;

type StatsArgs = InferredOptionTypes<typeof options>;

/** --watch [SECONDS]: undefined without it, 1 s when given bare. */
function watchSeconds(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  if (text === '') return 1;
  const n = Number(text);
  if (!/^[0-9]+(\.[0-9]+)?$/.test(text) || n < 0.1 || n > 3600)
    throw new UsageError(`--watch ${JSON.stringify(text)}: expected seconds between samples, 0.1..3600`);
  return n;
}

export const statsCommand: CommandModule<object, StatsArgs> = {
  command: 'stats',
  describe:
    "show the ports of a running `vhostwire serve` (--api PATH or --url URL): per port and queue the rates and totals, drops, and for uplinks the kernel's counts beside ours",
  builder: (y: Argv) => y.options(options),
  handler: async (argv) => {
    const target = apiTarget(argv);
    const every = watchSeconds(argv.watch);
    const only = argv.port;
    const pick = async (): Promise<PortJson[]> => {
      const ports = await fetchPorts(target);
      if (only === undefined) return ports;
      const one = ports.filter((p) => p.name === only);
      if (!one.length)
        throw new UsageError(`--port ${JSON.stringify(only)}: no such port (ports: ${ports.map((p) => p.name).join(', ') || 'none'})`);
      return one;
    };
    let before = await pick();
    let t0 = process.hrtime.bigint();
    // Redraw in place only on a terminal; piped output gets each sample after the last.
    const redraw = every !== undefined && !argv.json && process.stdout.isTTY;
    for (;;) {
      await sleep((every ?? 1) * 1000);
      const after = await pick();
      const t1 = process.hrtime.bigint();
      const seconds = Number(t1 - t0) / 1e9;
      if (argv.json) console.log(JSON.stringify(sampleJson(before, after, seconds)));
      else console.log(`${redraw ? '\x1b[H\x1b[2J' : ''}${render(before, after, seconds)}${every !== undefined && !redraw ? '\n' : ''}`);
      if (every === undefined) return;
      before = after;
      t0 = t1;
    }
  },
};

async function fetchPorts(target: Target): Promise<PortJson[]> {
  return answerJson<PortJson[]>(await apiRequest(target, 'GET', '/api/ports'));
}

function total(p: PortJson | undefined, pick: (id: string) => boolean): number {
  let n = 0;
  for (const set of p?.counters ?? []) for (const [id, v] of Object.entries(set)) if (pick(id)) n += v;
  return n;
}

// Counter ids name the reason: DROP_TX_NO_BUFFER -> tx_no_buffer.
function drops(p: PortJson): string {
  const byReason = new Map<string, number>();
  for (const set of p.counters) {
    for (const [id, v] of Object.entries(set)) {
      if (!id.startsWith('DROP_') || v === 0) continue;
      const reason = id.slice('DROP_'.length).toLowerCase();
      byReason.set(reason, (byReason.get(reason) ?? 0) + v);
    }
  }
  return [...byReason].map(([reason, n]) => `${reason}=${n}`).join(' ') || '-';
}

/** Counter id -> its change over the interval and its total, for one queue set. */
function queueSample(now: Record<string, number>, old: Record<string, number> | undefined, seconds: number) {
  const side = (packets: string, bytes: string) => ({
    packets: now[packets] ?? 0,
    bytes: now[bytes] ?? 0,
    pps: ((now[packets] ?? 0) - (old?.[packets] ?? 0)) / seconds,
    bps: (((now[bytes] ?? 0) - (old?.[bytes] ?? 0)) * 8) / seconds,
  });
  const drops: Record<string, number> = {};
  for (const [id, v] of Object.entries(now)) if (id.startsWith('DROP_') && v) drops[id.slice('DROP_'.length).toLowerCase()] = v;
  return { rx: side('RX_PACKETS', 'RX_BYTES'), tx: side('TX_PACKETS', 'TX_BYTES'), drops };
}

/** One --json sample: every port, its queues' rates and totals, an uplink's kernel counts beside ours. */
function sampleJson(before: PortJson[], after: PortJson[], seconds: number) {
  return {
    time: new Date().toISOString(),
    seconds,
    ports: after.map((p) => {
      const old = before.find((b) => b.name === p.name);
      const k = p.interfaceStatistics;
      const ko = old?.interfaceStatistics;
      return {
        name: p.name,
        kind: p.kind,
        state: p.state,
        peer: p.peer,
        queues: p.counters.map((set, q) => ({ queue: q, ...queueSample(set, old?.counters[q], seconds) })),
        ...(k && {
          kernel: {
            interface: p.ifname,
            rx: { packets: k.rx_packets ?? 0, pps: ((k.rx_packets ?? 0) - (ko?.rx_packets ?? 0)) / seconds, dropped: k.rx_dropped ?? 0 },
            tx: { packets: k.tx_packets ?? 0, pps: ((k.tx_packets ?? 0) - (ko?.tx_packets ?? 0)) / seconds, dropped: k.tx_dropped ?? 0 },
            socketDrops: Object.fromEntries(
              ((p.kernelDrops as UplinkDetails['kernelDrops'] | undefined) ?? []).map((d) => [d.reason, d.frames]),
            ),
            difference: uplinkDifference(old, p),
          },
        }),
      };
    }),
  };
}

function render(before: PortJson[], after: PortJson[], seconds: number): string {
  const rows = [['PORT', 'KIND', 'STATE', 'PEER', 'RX', 'TX', 'DROPS']];
  for (const p of after) {
    const old = before.find((b) => b.name === p.name);
    const rate = (id: string): string => pps((total(p, (k) => k === id) - total(old, (k) => k === id)) / seconds);
    rows.push([p.name, p.kind, p.state, p.peer || '-', rate('RX_PACKETS'), rate('TX_PACKETS'), drops(p)]);
  }
  let out = `${table(rows)}\n(RX: what the backend took from the port, TX: what it put into it)`;
  // Per queue: the rate over the interval and the total since the port was added.
  const queues = [['PORT', 'QUEUE', 'RX', 'RX TOTAL', 'TX', 'TX TOTAL', 'DROPS TOTAL']];
  for (const p of after) {
    const old = before.find((b) => b.name === p.name);
    p.counters.forEach((set, q) => {
      const x = queueSample(set, old?.counters[q], seconds);
      const drops = Object.entries(x.drops).map(([reason, n]) => `${reason}=${n}`);
      queues.push([p.name, String(q), pps(x.rx.pps), String(x.rx.packets), pps(x.tx.pps), String(x.tx.packets), drops.join(' ') || '-']);
    });
  }
  out += `\n\n${table(queues)}`;
  // Uplinks: the interface's own count beside ours. The kernel counts on its side of the socket: what
  // the interface received (which we then take) and transmitted (which we put into it).
  const uplinks = after.filter((p) => p.interfaceStatistics);
  if (uplinks.length) {
    const up = [
      ['UPLINK', 'INTERFACE', 'LINK', 'DRIVER', 'RX', 'KERNEL RX', 'TX', 'KERNEL TX', 'KERNEL DROPS', 'SOCKET DROPS', 'DIFFERENCE'],
    ];
    for (const p of uplinks) {
      const old = before.find((b) => b.name === p.name);
      const ours = (id: string): string => pps((total(p, (k) => k === id) - total(old, (k) => k === id)) / seconds);
      const kernel = (stat: string): number => (p.interfaceStatistics?.[stat] ?? 0) - (old?.interfaceStatistics?.[stat] ?? 0);
      up.push([
        p.name,
        String(p.ifname ?? '-'),
        String(p.link ?? '-'),
        typeof p.xdpBind === 'string' ? `af_xdp/${p.xdpBind}/${String(p.xdpAttach)}` : String(p.driver ?? '-'),
        ours('RX_PACKETS'),
        pps(kernel('rx_packets') / seconds),
        ours('TX_PACKETS'),
        pps(kernel('tx_packets') / seconds),
        `rx=${p.interfaceStatistics?.rx_dropped ?? 0} tx=${p.interfaceStatistics?.tx_dropped ?? 0}`,
        // What the kernel dropped at our socket (its ring full, a bad descriptor): frames the interface
        // counted as received that we never saw.
        ((p.kernelDrops as UplinkDetails['kernelDrops'] | undefined) ?? [])
          .filter((d) => d.frames > 0)
          .map((d) => `${d.reason}=${d.frames}`)
          .join(' ') || '0',
        formatDifference(uplinkDifference(old, p)!),
      ]);
    }
    out += `\n\n${table(up)}\n(LINK: up, down or gone, as the uplink last saw it; DRIVER: af_packet, or af_xdp with its bind (zerocopy, copy) and XDP attach mode (native, generic); KERNEL: the interface's own counters, rtnetlink IFLA_STATS64; SOCKET DROPS: what the kernel dropped at our socket, PACKET_STATISTICS and XDP_STATISTICS; DIFFERENCE: over the interval, frames the kernel received minus ours and ours transmitted minus the kernel's, with the counters that explain them (docs/metrics.md); /metrics has the driver's ethtool statistics too)`;
  }
  return out;
}
