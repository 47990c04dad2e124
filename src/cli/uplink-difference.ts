// For an uplink: what the kernel counted on its interface against what we counted on the port, over one
// interval between two samples of /api/ports, and how much of the difference a counter explains
// (docs/metrics.md, "Ours and the kernel's"). Received: the interface's rx_packets count every frame it
// took in, ours only those we received, so the difference is what the kernel dropped at our socket
// (PACKET_STATISTICS, XDP_STATISTICS) plus what we dropped on receive ourselves. Transmitted: ours count
// every frame we handed the kernel, the interface's tx_packets those it sent, so the difference is what
// the kernel discarded from our TX ring. What no counter explains is left as unexplained: frames in
// flight at either end of the interval, or, transmitted, other senders on the interface (negative).
import type { PortJson } from '../api/http';

export interface DirectionDifference {
  /** received: the kernel's count minus ours; transmitted: ours minus the kernel's */
  frames: number;
  /** the counters that explain it, by reason (socket drops by their /metrics reason, ours as rx_<reason>) */
  causes: Record<string, number>;
  /** frames minus every cause */
  unexplained: number;
}

export interface UplinkDifference {
  rx: DirectionDifference;
  tx: DirectionDifference;
}

// The kernel's drops at our socket, counted on our side (addon/core/counters.h), by the direction of the
// frames they lost.
const SOCKET_RX: Record<string, string> = {
  KERNEL_DROP_PACKET_DROPS: 'packet_drops',
  KERNEL_DROP_XDP_RX_DROPPED: 'xdp_rx_dropped',
  KERNEL_DROP_XDP_RX_RING_FULL: 'xdp_rx_ring_full',
};
const SOCKET_TX: Record<string, string> = { KERNEL_DROP_XDP_TX_INVALID_DESCS: 'xdp_tx_invalid_descs' };

/** A counter's change over the interval, summed over the port's queues. */
function delta(after: PortJson, before: PortJson | undefined, id: string): number {
  const sum = (p: PortJson | undefined): number => (p?.counters ?? []).reduce((n, set) => n + (set[id] ?? 0), 0);
  return sum(after) - sum(before);
}

function direction(frames: number, causes: Record<string, number>): DirectionDifference {
  const shown = Object.fromEntries(Object.entries(causes).filter(([, n]) => n !== 0));
  return { frames, causes: shown, unexplained: frames - Object.values(shown).reduce((a, b) => a + b, 0) };
}

/** The difference over the interval, or undefined for a port without the interface's counters. */
export function uplinkDifference(before: PortJson | undefined, after: PortJson): UplinkDifference | undefined {
  const k = after.interfaceStatistics;
  if (!k) return undefined;
  const ko = before?.interfaceStatistics;
  const kernel = (stat: string): number => (k[stat] ?? 0) - (ko?.[stat] ?? 0);
  const ids = Object.keys(after.counters[0] ?? {});
  const rxCauses: Record<string, number> = {};
  for (const [id, reason] of Object.entries(SOCKET_RX)) rxCauses[reason] = delta(after, before, id);
  for (const id of ids.filter((i) => i.startsWith('DROP_RX_'))) rxCauses[id.slice('DROP_'.length).toLowerCase()] = delta(after, before, id);
  const txCauses: Record<string, number> = {};
  for (const [id, reason] of Object.entries(SOCKET_TX)) txCauses[reason] = delta(after, before, id);
  return {
    rx: direction(kernel('rx_packets') - delta(after, before, 'RX_PACKETS'), rxCauses),
    tx: direction(delta(after, before, 'TX_PACKETS') - kernel('tx_packets'), txCauses),
  };
}

/** `rx 31835 (packet_drops=31835) tx 0`, with `unexplained=N` where the counters fall short. */
export function formatDifference(d: UplinkDifference): string {
  const side = (name: string, x: DirectionDifference): string => {
    const why = Object.entries(x.causes).map(([r, n]) => `${r}=${n}`);
    if (x.unexplained !== 0) why.push(`unexplained=${x.unexplained}`);
    return `${name} ${x.frames}${why.length ? ` (${why.join(' ')})` : ''}`;
  };
  return `${side('rx', d.rx)} ${side('tx', d.tx)}`;
}
