// `vhostwire stats`: a table of a running serve's ports, from two /api/ports samples one second
// apart. It talks HTTP only (over --api PATH or --url), so it needs no native addon and can watch a
// backend from anywhere its --metrics listener is reachable.
import type { Argv, CommandModule, InferredOptionTypes } from 'yargs';
import { setTimeout as sleep } from 'node:timers/promises';
import type { PortJson } from '../api/http';
import { answerJson, apiRequest, apiTarget, connectionOptions, type Target } from './api';
import { pps, table } from './format';
import type { UplinkDetails } from '../ports';

const options = connectionOptions;

type StatsArgs = InferredOptionTypes<typeof options>;

export const statsCommand: CommandModule<object, StatsArgs> = {
  command: 'stats',
  describe: 'show the ports of a running `vhostwire serve` (--api PATH or --url URL): state, packet rates, drops',
  builder: (y: Argv) => y.options(options),
  handler: async (argv) => {
    const target = apiTarget(argv);
    const before = await fetchPorts(target);
    const t0 = process.hrtime.bigint();
    await sleep(1000);
    const after = await fetchPorts(target);
    console.log(render(before, after, Number(process.hrtime.bigint() - t0) / 1e9));
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

function render(before: PortJson[], after: PortJson[], seconds: number): string {
  const rows = [['PORT', 'KIND', 'STATE', 'PEER', 'RX', 'TX', 'DROPS']];
  for (const p of after) {
    const old = before.find((b) => b.name === p.name);
    const rate = (id: string): string => pps((total(p, (k) => k === id) - total(old, (k) => k === id)) / seconds);
    rows.push([p.name, p.kind, p.state, p.peer || '-', rate('RX_PACKETS'), rate('TX_PACKETS'), drops(p)]);
  }
  let out = `${table(rows)}\n(RX: what the backend took from the port, TX: what it put into it)`;
  // Uplinks: the interface's own count beside ours. The kernel counts on its side of the socket: what
  // the interface received (which we then take) and transmitted (which we put into it).
  const uplinks = after.filter((p) => p.interfaceStatistics);
  if (uplinks.length) {
    const up = [['UPLINK', 'INTERFACE', 'RX', 'KERNEL RX', 'TX', 'KERNEL TX', 'KERNEL DROPS', 'SOCKET DROPS']];
    for (const p of uplinks) {
      const old = before.find((b) => b.name === p.name);
      const ours = (id: string): string => pps((total(p, (k) => k === id) - total(old, (k) => k === id)) / seconds);
      const kernel = (stat: string): number => (p.interfaceStatistics?.[stat] ?? 0) - (old?.interfaceStatistics?.[stat] ?? 0);
      up.push([
        p.name,
        String(p.ifname ?? '-'),
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
      ]);
    }
    out += `\n\n${table(up)}\n(KERNEL: the interface's own counters, rtnetlink IFLA_STATS64; SOCKET DROPS: what the kernel dropped at our socket, PACKET_STATISTICS and XDP_STATISTICS; /metrics has the driver's ethtool statistics too)`;
  }
  return out;
}
