// The bridge flags: --bridge and the per-port bridge options on a port's own flag, and every way they can
// be wrong. No processes.
import t, { type Test } from 'tap';
import { buildServeConfig, UsageError } from '../../src/config/options';
import { formatMac, parseBridge, parseBridgeConfig, parseMac, parseTrunk, splitBridgePortOptions } from '../../src/config/bridge';

function rejects(tt: Test, fn: () => unknown, part: string): void {
  try {
    fn();
    tt.fail(`expected a UsageError containing ${JSON.stringify(part)}`);
  } catch (e) {
    tt.ok(e instanceof UsageError, `UsageError, got ${String(e)}`);
    tt.match((e as Error).message, part, `"${(e as Error).message}" says ${JSON.stringify(part)}`);
  }
}

const serve = (vhost: string[], bridge: string[], wire: string[] = []) =>
  buildServeConfig({ ports: { 'vhost-user': vhost }, bridge, wire }, 2);

t.test('trunk lists, MACs', async (t) => {
  t.same(parseTrunk('w', '10:20:100-103'), [10, 20, 100, 101, 102, 103]);
  rejects(t, () => parseTrunk('w', '10:x'), 'got "x"');
  rejects(t, () => parseTrunk('w', '0'), 'trunk VLAN must be 1..4094, got 0');
  rejects(t, () => parseTrunk('w', '4095'), 'trunk VLAN must be 1..4094, got 4095');
  rejects(t, () => parseTrunk('w', '20-10'), 'runs backwards');
  rejects(t, () => parseTrunk('w', '10:5-12'), 'VLAN 10 listed twice');
  rejects(t, () => parseTrunk('w', '10::20'), 'got ""');
  t.equal(parseMac('w', '02:00:00:00:00:01'), 0x020000000001);
  t.equal(formatMac(0x020000000001), '02:00:00:00:00:01');
  rejects(t, () => parseMac('w', '01:00:5e:00:00:01'), 'multicast');
  rejects(t, () => parseMac('w', '02:00:00:00:01'), 'expects an address');
});

t.test('per-port options come off the port flag before its kind parses it', async (t) => {
  t.same(splitBridgePortOptions('--vhost-user', 'vm0=/tmp/a.sock,queues=2'), ['vm0=/tmp/a.sock,queues=2', null]);
  t.same(splitBridgePortOptions('--vhost-user', 'vm0=/tmp/a.sock,vlan=10,queues=2,isolated=on,mac=02:00:00:00:00:01'), [
    'vm0=/tmp/a.sock,queues=2',
    { vlan: 10, isolated: true, mac: 0x020000000001 },
  ]);
  t.same(splitBridgePortOptions('--uplink', 'up0=eth1,trunk=10:20,native=30,learning=off,flood=off,flood-multicast=off')[1], {
    trunk: [10, 20],
    native: 30,
    learning: false,
    flood: false,
    floodMulticast: false,
  });
  rejects(t, () => splitBridgePortOptions('--vhost-user', 'vm0=/x,vlan=0'), 'vlan must be 1..4094, got 0');
  rejects(t, () => splitBridgePortOptions('--vhost-user', 'vm0=/x,vlan=4095'), 'vlan must be 1..4094');
  rejects(t, () => splitBridgePortOptions('--vhost-user', 'vm0=/x,vlan=10,trunk=20'), 'give one of them');
  rejects(t, () => splitBridgePortOptions('--vhost-user', 'vm0=/x,native=10'), 'give trunk=LIST too');
  rejects(t, () => splitBridgePortOptions('--vhost-user', 'vm0=/x,trunk=10:20,native=10'), 'list it once');
  rejects(t, () => splitBridgePortOptions('--vhost-user', 'vm0=/x,learning=yes'), 'learning expects on or off');
  rejects(t, () => splitBridgePortOptions('--vhost-user', 'vm0=/x,vlan=10,vlan=20'), 'option "vlan" given twice');
  rejects(t, () => splitBridgePortOptions('--vhost-user', 'vm0=/x,vlan'), 'vlan needs a value');
});

t.test('--bridge', async (t) => {
  t.same(parseBridge('br0=a,b,c'), { name: 'br0', members: ['a', 'b', 'c'], options: { maxMacs: 8192 } });
  t.same(parseBridge('br0=a,b,ageing=30,max-macs=100,max-macs-per-port=10').options, {
    ageingSeconds: 30,
    maxMacs: 100,
    maxMacsPerPort: 10,
  });
  rejects(t, () => parseBridge('br0'), 'expected NAME=PORT');
  rejects(t, () => parseBridge('br0=a,a'), 'port "a" listed twice');
  rejects(t, () => parseBridge('br0=a,ageing=0'), 'ageing must be 1..');
  rejects(t, () => parseBridge('br0=a,max-macs=10,max-macs-per-port=20'), 'more than the bridge');
  rejects(t, () => parseBridge('br0=a,colour=red'), 'unknown option "colour=red"');
});

t.test('--bridge static=MAC@PORT[/VLAN]', async (t) => {
  t.same(parseBridge('br0=a,b,static=02:00:00:00:00:01@a,static=02:00:00:00:00:02@b/10').options.static, [
    { mac: 0x020000000001, port: 'a' },
    { mac: 0x020000000002, port: 'b', vlan: 10 },
  ]);
  rejects(t, () => parseBridge('br0=a,static=02:00:00:00:00:01'), 'static expects MAC@PORT');
  rejects(t, () => parseBridge('br0=a,static=02:00:00:00:00:01@z'), 'names port "z", which is not in the bridge');
  rejects(t, () => parseBridge('br0=a,static=03:00:00:00:00:01@a'), 'is a multicast address');
  rejects(t, () => parseBridge('br0=a,static=02:00:00:00:00:01@a/0'), 'static entry VLAN must be 1..4094');
  rejects(t, () => parseBridge('br0=a,static=02:00:00:00:00:01@a,static=02:00:00:00:00:01@a'), 'given twice');
  rejects(t, () => parseBridge('br0=a,max-macs=1,static=02:00:00:00:00:01@a,static=02:00:00:00:00:02@a'), 'do not fit max-macs 1');
});

t.test('--config bridge entries', async (t) => {
  const { spec, ports } = parseBridgeConfig('bridge[0]', {
    name: 'br0',
    ports: ['a', { port: 'b', trunk: [10, 20], native: 5 }, { port: 'c', vlan: 10, mac: '02:00:00:00:00:03', isolated: true }],
    ageing: 60,
    maxMacsPerPort: 100,
    static: [{ mac: '02:00:00:00:00:03', port: 'c', vlan: 10 }],
  });
  t.same(spec, {
    name: 'br0',
    members: ['a', 'b', 'c'],
    options: { ageingSeconds: 60, maxMacsPerPort: 100, maxMacs: 8192, static: [{ mac: 0x020000000003, port: 'c', vlan: 10 }] },
  });
  t.same(ports, { b: { trunk: [10, 20], native: 5 }, c: { vlan: 10, mac: 0x020000000003, isolated: true } });
  t.same(parseBridgeConfig('x', { name: 'br1', ports: [{ port: 'a', trunk: '10:20-21' }] }).ports, { a: { trunk: [10, 20, 21] } });
  rejects(t, () => parseBridgeConfig('x', { name: 'br0', ports: ['a'], colour: 1 }), 'unknown key "colour"');
  rejects(t, () => parseBridgeConfig('x', { name: 'br0', ports: [{ port: 'a', vlan: 10, trunk: [10] }] }), 'give one of them');
  rejects(t, () => parseBridgeConfig('x', { name: 'br0', ports: [{ port: 'a', flood: 'yes' }] }), 'expected true or false');
  rejects(t, () => parseBridgeConfig('x', { name: 'br0', ports: ['a', 'a'] }), 'port "a" listed twice');
  rejects(
    t,
    () => parseBridgeConfig('x', { name: 'br0', ports: ['a'], static: [{ mac: '02:00:00:00:00:01', port: 'b' }] }),
    'not in the bridge',
  );
});

t.test('the whole configuration: members exist, one forwarder per port, options only on members', async (t) => {
  const c = serve(['a=/tmp/a.sock,vlan=10', 'b=/tmp/b.sock,trunk=10:20', 'c=/tmp/c.sock'], ['br0=a,b,c']);
  t.same(c.bridges, [{ name: 'br0', members: ['a', 'b', 'c'], options: { maxMacs: 8192 } }]);
  t.same(c.bridgePorts, { a: { vlan: 10 }, b: { trunk: [10, 20] } });
  t.same(c.ports[0], { kind: 'vhost-user', name: 'a', path: '/tmp/a.sock', client: false, queues: 1 }, 'the port spec is unchanged');
  rejects(t, () => serve(['a=/tmp/a.sock'], ['br0=a,z']), 'no port named "z"');
  rejects(t, () => serve(['a=/tmp/a.sock', 'b=/tmp/b.sock'], ['br0=a,b'], ['a=b']), 'port "a" is already in wire a=b');
  rejects(t, () => serve(['a=/tmp/a.sock', 'b=/tmp/b.sock'], ['br0=a', 'br1=a,b']), 'port "a" is already in bridge "br0"');
  rejects(t, () => serve(['a=/tmp/a.sock'], ['br0=a', 'br0=a']), 'bridge name "br0" given twice');
  rejects(t, () => serve(['a=/tmp/a.sock,vlan=10', 'b=/tmp/b.sock'], ['br0=b']), 'port "a": has bridge options');
});
