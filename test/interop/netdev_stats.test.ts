// The kernel's view of an interface as the addon reads it (addon/core/netdev_stats.cc: rtnetlink
// IFLA_STATS64 and SIOCETHTOOL), off a real veth pair whose far end lives in a namespace of this test.
// UDP datagrams from the host to the namespace move the counters; `ethtool -S` and sysfs, run and read
// here only, are the reference the addon's values are compared with.
import { execFileSync } from 'node:child_process';
import * as dgram from 'node:dgram';
import * as fs from 'node:fs';
import t from 'tap';
import { native } from '../../src/native';

/** `ethtool -S` output ("NIC statistics:" then "name: value" lines) to a record. */
function parseEthtoolStats(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    const m = /^\s+([^:]+):\s+(-?\d+)\s*$/.exec(line);
    if (m) out[m[1].trim()] = Number(m[2]);
  }
  return out;
}

const haveEthtool = (() => {
  try {
    execFileSync('ethtool', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

t.test('a missing interface is said to be missing, by name', async (t) => {
  for (const name of ['vwnosuch0', 'x'.repeat(40), '']) {
    const s = await native.netdevStats(name);
    t.equal(s.exists, false, `${JSON.stringify(name)} does not exist`);
    t.equal(s.link, null);
    t.equal(s.ethtool, null);
    t.match(s.linkError, `no interface ${name} in this network namespace`);
  }
});

t.test('an interface without ethtool statistics says so and still has its link counters', async (t) => {
  const s = await native.netdevStats('lo');
  t.equal(s.exists, true);
  t.equal(s.ethtool, null);
  t.match(s.ethtoolError, /no ethtool statistics on this interface/);
  t.equal(s.linkError, '');
  t.type(s.link?.rx_packets, 'number', 'IFLA_STATS64 read for lo');
});

t.test(
  "a veth pair's counters: the ioctl's equal ethtool -S, IFLA_STATS64's equal sysfs, both move with traffic",
  {
    skip:
      (process.getuid?.() !== 0 && 'needs root for a network namespace') ||
      (!haveEthtool && 'ethtool is not installed (apt-get install ethtool)'),
  },
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
    // No IPv6 on the pair: router solicitations of a link coming up would move the counters between the
    // reads compared below.
    fs.writeFileSync(`/proc/sys/net/ipv6/conf/${host}/disable_ipv6`, '1');
    execFileSync('ip', ['netns', 'exec', ns, 'sysctl', '-qw', `net.ipv6.conf.${peer}.disable_ipv6=1`]);
    ip('addr', 'add', '10.231.0.1/30', 'dev', host);
    ip('link', 'set', host, 'up');
    ip('-n', ns, 'addr', 'add', '10.231.0.2/30', 'dev', peer);
    ip('-n', ns, 'link', 'set', peer, 'up');

    const before = await native.netdevStats(host);
    t.equal(before.ethtoolError, '', 'veth has ethtool statistics');
    const reference = parseEthtoolStats(execFileSync('ethtool', ['-S', host]).toString());
    t.same(Object.keys(before.ethtool ?? {}), Object.keys(reference), 'the same names, in the same order, as ethtool -S');
    const peerIndex = JSON.parse(ip('-n', ns, '-j', 'link', 'show', peer))[0].ifindex;
    t.equal(before.ethtool?.peer_ifindex, peerIndex, `peer_ifindex names the peer (${peerIndex})`);

    const N = 20;
    const sock = dgram.createSocket('udp4');
    for (let i = 0; i < N; i++) await new Promise<void>((r, j) => sock.send(Buffer.alloc(100), 9, '10.231.0.2', (e) => (e ? j(e) : r())));
    sock.close();
    // Nothing else sends on the host end now (the datagrams and ARP are done, the link is ours): both
    // reads see the same counts.
    const after = await native.netdevStats(host);
    const sysfs = (stat: string) => Number(fs.readFileSync(`/sys/class/net/${host}/statistics/${stat}`, 'utf8'));
    for (const stat of ['tx_packets', 'tx_bytes', 'rx_packets', 'rx_bytes', 'tx_dropped'])
      t.equal(after.link?.[stat], sysfs(stat), `IFLA_STATS64 ${stat} equals /sys/class/net/${host}/statistics/${stat}`);
    const sent = (after.link?.tx_packets ?? 0) - (before.link?.tx_packets ?? 0);
    // N datagrams, plus the ARP exchange.
    t.ok(sent >= N && sent < N + 20, `tx_packets moved by ${sent} for ${N} datagrams`);
    t.ok((after.link?.tx_bytes ?? 0) - (before.link?.tx_bytes ?? 0) >= N * 128, 'tx_bytes moved with them');
    const ethtoolNow = parseEthtoolStats(execFileSync('ethtool', ['-S', host]).toString());
    t.same(after.ethtool, ethtoolNow, 'every ethtool statistic equals what ethtool -S printed');
  },
);
