// The kernel's view of an interface (src/ethtool.ts) read off a real veth pair whose far end lives in a
// namespace of this test: UDP datagrams from the host to the namespace move the counters both views
// report, and `ethtool -S` names the peer by its ifindex.
import { execFileSync } from 'node:child_process';
import * as dgram from 'node:dgram';
import t from 'tap';
import { ethtoolS, parseEthtoolStats, sysfsStatistics } from '../../src/api/ethtool';

t.test('parseEthtoolStats', async (t) => {
  t.same(
    parseEthtoolStats('NIC statistics:\n     peer_ifindex: 11\n     rx_queue_0_xdp_packets: 0\n     tx_queue_0_xdp_xmit: 12345678901\n'),
    {
      peer_ifindex: 11,
      rx_queue_0_xdp_packets: 0,
      tx_queue_0_xdp_xmit: 12345678901,
    },
  );
  t.same(parseEthtoolStats('no stats available\n'), {});
});

t.test('a missing interface is refused by name', async (t) => {
  await t.rejects(sysfsStatistics('vwnosuch0'), /interface vwnosuch0 does not exist/);
});

t.test(
  'counters of a veth pair move with the traffic sent over it',
  { skip: process.getuid?.() !== 0 && 'needs root for a network namespace' },
  async (t) => {
    const id = process.pid % 100000;
    const ns = `vwe-${process.pid}`;
    const host = `vwe${id}h`,
      peer = `vwe${id}p`;
    const ip = (...args: string[]) => execFileSync('ip', args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
    t.teardown(() => {
      for (const args of [
        ['link', 'del', host],
        ['netns', 'del', ns],
      ]) {
        try {
          ip(...args);
        } catch {
          // already gone
        }
      }
    });
    ip('netns', 'add', ns);
    ip('link', 'add', host, 'type', 'veth', 'peer', 'name', peer);
    ip('link', 'set', peer, 'netns', ns);
    ip('addr', 'add', '10.231.0.1/30', 'dev', host);
    ip('link', 'set', host, 'up');
    ip('-n', ns, 'addr', 'add', '10.231.0.2/30', 'dev', peer);
    ip('-n', ns, 'link', 'set', peer, 'up');

    const before = await sysfsStatistics(host);
    const e = await ethtoolS(host);
    t.ok(e.stats, `ethtool -S readable (${e.error ?? 'ok'})`);
    const peerIndex = JSON.parse(ip('-n', ns, '-j', 'link', 'show', peer))[0].ifindex;
    t.equal(e.stats?.peer_ifindex, peerIndex, `ethtool -S names the peer's ifindex (${peerIndex})`);

    const N = 20;
    const sock = dgram.createSocket('udp4');
    for (let i = 0; i < N; i++) await new Promise<void>((r, j) => sock.send(Buffer.alloc(100), 9, '10.231.0.2', (e) => (e ? j(e) : r())));
    sock.close();
    const after = await sysfsStatistics(host);
    const sent = after.tx_packets - before.tx_packets;
    // N datagrams, plus the ARP exchange and any IPv6 chatter of a link coming up.
    t.ok(sent >= N && sent < N + 20, `tx_packets moved by ${sent} for ${N} datagrams`);
    t.ok(after.tx_bytes - before.tx_bytes >= N * 128, 'tx_bytes moved with them');
  },
);
