// An uplink's interface going down and up, renamed, and deleted under traffic, then made again: the
// uplink sees each change (rtnetlink), says so in an event and its description, keeps its VM connected
// and its PMD running, and carries traffic again once the interface is back (its sockets reopened on the
// new interface). Both modes; a veth pair into a namespace of the test's own.
import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import type { NativeVirtioUser } from '../../src/harness/frontend-native';
import { Fixture, receiveN } from '../support/fixture';
import { waitFor } from '../support/helpers';
import { Net, eth, icmpEcho, ip, ipv4, udp } from '../support/veth-net';

const skip = process.getuid?.() === 0 ? false : 'needs root: network namespaces, veth pairs, AF_PACKET and AF_XDP sockets';

/** An echo request from the front end and the namespace's reply: the path works both ways. */
async function roundTrip(net: Net, fe: NativeVirtioUser, seq: number): Promise<boolean> {
  fe.receive(0, 1024);
  for (let attempt = 0; attempt < 20; attempt++) {
    fe.send(0, eth(net.nsMac, net.feMac, 0x0800, ipv4(net.feIp, net.nsIp, 1, icmpEcho(8, 0x7677, seq, Buffer.from('link')))));
    const [reply] = await receiveN(fe, 1, 0, 250);
    if (reply && reply.readUInt16BE(12) === 0x0800 && reply[34] === 0 && reply.readUInt16BE(40) === seq) return true;
  }
  return false;
}

for (const mode of ['kernel', 'bypass'] as const)
  t.test(`${mode} mode: link down, up, renamed, deleted under traffic and back`, { skip }, async (t: Test) => {
    const net = new Net({ tag: mode === 'kernel' ? 'k' : 'b' });
    t.teardown(() => net.close());
    const f = new Fixture(mode);
    t.teardown(() => f.close());
    const path = f.vhost('vm');
    f.engine.addPort('uplink', 'up', { ifname: net.host });
    f.engine.wire('vm', 'up');
    const fe = f.peer({ path });
    await f.waitConnected('vm');
    t.equal(f.port('up').link, 'up', 'the link is up');
    t.ok(await roundTrip(net, fe, 1), 'a round trip through the uplink');
    const linkEvents = () => f.events.filter((e) => e.kind === 'link' && e.port === 'up').map((e) => e.reason);
    // Events reach JavaScript through a queue, just after the description changes.
    const event = async (what: string, pick: (reason: string) => boolean): Promise<string | undefined> => {
      await waitFor(`a link event: ${what}`, () => linkEvents().some(pick)).catch(() => undefined);
      return linkEvents().find(pick);
    };

    ip('link', 'set', net.host, 'down');
    await waitFor('the uplink to see its link down', () => f.port('up').link === 'down');
    t.equal(await event('down', (r) => r === 'down'), 'down', 'a link event: down');
    t.ok(f.port('vm').connected, 'the VM stays connected');
    ip('link', 'set', net.host, 'up');
    await waitFor('the uplink to see its link up', () => f.port('up').link === 'up');
    t.equal(await event('up', (r) => r === 'up'), 'up', 'a link event: up');
    t.same(linkEvents(), ['down', 'up'], 'those two, in order');
    t.ok(await roundTrip(net, fe, 2), 'traffic flows again');

    // A rename: the uplink follows the interface, not the name.
    const renamed = `vwr${mode[0]}${process.pid}`.slice(0, 15);
    ip('link', 'set', net.host, 'down');
    ip('link', 'set', net.host, 'name', renamed);
    ip('link', 'set', renamed, 'up');
    t.teardown(() => void spawn('ip', ['link', 'del', renamed], { stdio: 'ignore' }));
    await waitFor('the uplink to follow the new name', () => f.port('up').ifname === renamed && f.port('up').link === 'up');
    const rename = `renamed from ${net.host} to ${renamed}`;
    t.equal(await event('renamed', (r) => r === rename), rename, 'a link event names both names');
    t.ok(await roundTrip(net, fe, 3), 'traffic flows under the new name');
    ip('link', 'set', renamed, 'down');
    ip('link', 'set', renamed, 'name', net.host);
    ip('link', 'set', net.host, 'up');
    await waitFor('and back to the old one', () => f.port('up').ifname === net.host && f.port('up').link === 'up');

    // Deleted under traffic both ways: the front end sends as fast as it can, the namespace floods.
    fe.startTraffic({ txSize: 64, rx: true });
    const flood = spawn(
      'ip',
      [
        'netns',
        'exec',
        net.ns,
        'python3',
        '-c',
        'import socket,sys\ns=socket.socket(socket.AF_PACKET,socket.SOCK_RAW)\ns.bind((sys.argv[1],0))\nf=bytes.fromhex(sys.argv[2])\nwhile True: s.send(f)',
        net.peer,
        eth(net.feMac, net.nsMac, 0x0800, ipv4(net.nsIp, net.feIp, 17, udp(5000, 5001, 0, 18))).toString('hex'),
      ],
      { stdio: 'ignore' },
    );
    t.teardown(() => void flood.kill('SIGKILL'));
    const vmRx = () => f.counter('vm', 'RX_PACKETS');
    const upRx = () => f.counter('up', 'RX_PACKETS');
    const rx0 = upRx();
    await waitFor('traffic in both directions', () => upRx() - rx0 > 1000n && fe.stats().txPackets > 1000, 10000);
    ip('link', 'del', net.host);
    await waitFor('the uplink to see its interface deleted', () => f.port('up').link === 'gone');
    t.equal(await event('deleted', (r) => r === 'deleted'), 'deleted', 'a link event: deleted');
    const sent = vmRx();
    await sleep(300);
    t.ok(vmRx() > sent, 'the PMD still serves the VM with the interface gone (its frames dropped and counted)');
    t.ok(f.port('vm').connected, 'the VM stays connected');
    fe.stopTraffic();
    flood.kill('SIGKILL');
    const gone = f.port('up');
    t.equal(gone.link, 'gone', 'the description says gone');

    net.relink();
    await waitFor('the uplink to reopen on the new interface', () => f.port('up').link === 'up', 10000);
    const back = await event('back', (r) => r.startsWith('back as ifindex'));
    // A new veth starts down: the uplink is back as soon as the interface exists, and up when it is.
    t.match(back, /^back as ifindex \d+, sockets reopened, (up|down)$/, `a link event: ${back}`);
    const tx4 = f.counter('up', 'TX_PACKETS');
    const ok4 = await roundTrip(net, fe, 4);
    if (!ok4)
      t.comment(
        `no reply: uplink tx +${f.counter('up', 'TX_PACKETS') - tx4} rx ${f.counter('up', 'RX_PACKETS')} notready ${f.counter('up', 'DROP_TX_NOT_READY')} ` +
          `nobuf ${f.counter('up', 'DROP_TX_NO_BUFFER')} toobig ${f.counter('up', 'DROP_TX_TOO_BIG')} peer ${JSON.stringify(net.peerStats())} ` +
          `vm rx ${f.counter('vm', 'RX_PACKETS')} events ${JSON.stringify(linkEvents())} ${ip('-s', 'link', 'show', net.host)} ${ip('-n', net.ns, 'neigh')}`,
      );
    t.ok(ok4, 'traffic flows through the new interface');
    if (mode === 'bypass') t.ok(net.hostXdpProgram(), 'an XDP program is attached to the new interface');
    t.ok((f.port('up').linkChanges ?? 0) >= 7, `link changes counted (${f.port('up').linkChanges})`);
    t.same(
      f.events.filter((e) => e.kind === 'error'),
      [],
      'no errors',
    );
  });
