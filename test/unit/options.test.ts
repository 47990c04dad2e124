// Every way the serve and peer flags (and the --config file) can be wrong, and how the file and the
// flags merge. No processes; the limits come from the addon (native.limits).
import t, { type Test } from 'tap';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  buildPeerConfig,
  buildServeConfig as build,
  parseEndpoint,
  parseMode,
  parsePmdCores,
  parseWire,
  UsageError,
} from '../../src/config/options';
import type { ServeFlags } from '../../src/config/options';
import { gen } from '../../src/ports/gen';
import { sink } from '../../src/ports/sink';
import { uplink } from '../../src/ports/uplink';
import { vhostUser } from '../../src/ports/vhost-user';

const parseVhostUser = (text: string) => vhostUser.parseFlag(text);
const parseUplink = (text: string) => uplink.parseFlag(text);
const parseSink = (text: string) => sink.parseFlag(text);
const parseGen = (text: string) => gen.parseFlag(text);

/** The port flags by kind, as yargs hands them to serve (ServeFlags.ports). */
type Flags = Omit<ServeFlags, 'ports'> & { vhostUser?: string[]; uplink?: string[]; sink?: string[]; gen?: string[] };
function buildServeConfig(f: Flags, cpus?: number) {
  const { vhostUser: v, uplink: u, sink: s, gen: g, ...rest } = f;
  return build({ ...rest, ports: { 'vhost-user': v, uplink: u, sink: s, gen: g } }, cpus);
}
const ofKind = (c: ReturnType<typeof buildServeConfig>, kind: string) => c.ports.filter((p) => p.kind === kind);
import { tempDir } from '../support/helpers';

/** Asserts fn throws a one-line UsageError whose message starts with `prefix` and contains `part`. */
function rejects(tt: Test, fn: () => unknown, prefix: string, part: string | RegExp): void {
  try {
    fn();
  } catch (e) {
    tt.ok(e instanceof UsageError, `UsageError, got ${String(e)}`);
    const msg = (e as Error).message;
    tt.ok(msg.startsWith(prefix), `"${msg}" starts with ${JSON.stringify(prefix)}`);
    tt.match(msg, part);
    tt.notMatch(msg, /\n/, 'one line');
    return;
  }
  tt.fail(`expected a UsageError starting with ${prefix}`);
}

t.test('--vhost-user', async (t) => {
  t.same(parseVhostUser('vm0=/tmp/vm0.sock'), { kind: 'vhost-user', name: 'vm0', path: '/tmp/vm0.sock', client: false, queues: 1 });
  t.same(parseVhostUser('a.b-c_9=/x,client,queues=8'), { kind: 'vhost-user', name: 'a.b-c_9', path: '/x', client: true, queues: 8 });
  t.same(parseVhostUser('vm0=/x,queues=2,client'), { kind: 'vhost-user', name: 'vm0', path: '/x', client: true, queues: 2 });
  const bad: Array<[string, string | RegExp]> = [
    ['vm0', 'expected NAME=PATH[,client][,queues=N]'],
    ['', 'expected NAME=PATH'],
    ['=/tmp/x', 'expected NAME=PATH'],
    ['vm0=', 'expected NAME=PATH'],
    ['vm0=,client', 'socket path is empty'],
    ['vm 0=/x', 'port name "vm 0"'],
    ['vm/0=/x', 'port name "vm/0"'],
    [`${'a'.repeat(33)}=/x`, 'must be 1-32'],
    [`vm0=/${'x'.repeat(107)}`, 'longer than 107 bytes'],
    ['vm0=/x,queues=0', 'queues must be 1..8, got 0'],
    ['vm0=/x,queues=9', 'queues must be 1..8, got 9'],
    ['vm0=/x,queues=two', 'queues must be a non-negative integer, got "two"'],
    ['vm0=/x,queues=', 'queues must be a non-negative integer'],
    ['vm0=/x,queues=02', 'non-negative integer, got "02"'],
    ['vm0=/x,queues=1,queues=2', 'option "queues" given twice'],
    ['vm0=/x,client,client', 'option "client" given twice'],
    ['vm0=/x,client=yes', 'unknown option "client=yes"'],
    ['vm0=/x,server', 'unknown option "server"'],
    ['vm0=/x,queues', 'unknown option "queues"'],
    ['vm0=/x,offloads', 'offloads must be "on" or "off", got ""'],
    ['vm0=/x,offloads=no', 'offloads must be "on" or "off", got "no"'],
    ['vm0=/x,offloads=off,offloads=on', 'option "offloads" given twice'],
  ];
  for (const [text, part] of bad) rejects(t, () => parseVhostUser(text), `--vhost-user ${JSON.stringify(text)}: `, part);
});

t.test('--vhost-user offloads=on|off, and offloads in --config', async (t) => {
  t.equal(parseVhostUser('vm0=/x,offloads=off').offloads, false);
  t.equal(parseVhostUser('vm0=/x,offloads=on').offloads, true);
  t.equal(vhostUser.params(parseVhostUser('vm0=/x,offloads=off')).withholdOffloads, true, 'off withholds them from the guest');
  t.equal(vhostUser.params(parseVhostUser('vm0=/x')).withholdOffloads, false, 'offered by default');
  t.equal(vhostUser.parseConfig('vhostUser[0]', { name: 'vm0', path: '/x', offloads: false }).offloads, false);
  t.throws(() => vhostUser.parseConfig('vhostUser[0]', { name: 'vm0', path: '/x', offloads: 'off' }), /offloads/);
});

t.test('--gen', async (t) => {
  t.same(parseGen('g0'), { kind: 'gen', name: 'g0', size: 64, rate: 0, count: 0 });
  t.same(parseGen('g0,size=1518,rate=1000,count=10'), { kind: 'gen', name: 'g0', size: 1518, rate: 1000, count: 10 });
  t.same(parseGen('g0,size=60'), { kind: 'gen', name: 'g0', size: 60, rate: 0, count: 0 });
  t.same(parseGen('g0,macs=1000'), { kind: 'gen', name: 'g0', size: 64, rate: 0, count: 0, macs: 1000 });
  t.throws(() => parseGen('g0,macs=0'), /macs must be 1\.\./);
  t.same(
    parseGen('g0,size=65535'),
    { kind: 'gen', name: 'g0', size: 65535, rate: 0, count: 0 },
    'up to the largest frame the addon forwards',
  );
  const bad: Array<[string, string]> = [
    ['', 'port name ""'],
    ['g!,size=64', 'port name "g!"'],
    ['g0,size=59', 'size must be 60..65535, got 59'],
    ['g0,size=65536', 'size must be 60..65535, got 65536'],
    ['g0,size=big', 'size must be a non-negative integer, got "big"'],
    ['g0,rate=-1', 'rate must be a non-negative integer, got "-1"'],
    ['g0,rate=1000.5', 'rate must be a non-negative integer, got "1000.5"'],
    ['g0,rate=1e6', 'got "1e6"'],
    ['g0,count=-5', 'count must be a non-negative integer, got "-5"'],
    ['g0,count=1.5', 'count must be a non-negative integer, got "1.5"'],
    ['g0,count=99999999999999999999', 'count is too large'],
    ['g0,size=64,size=128', 'option "size" given twice'],
    ['g0,fast', 'unknown option "fast"'],
    ['g0,burst=32', 'unknown option "burst=32"'],
  ];
  for (const [text, part] of bad) rejects(t, () => parseGen(text), `--gen ${JSON.stringify(text)}: `, part);
});

t.test('--sink', async (t) => {
  t.same(parseSink('s0'), { kind: 'sink', name: 's0' });
  rejects(t, () => parseSink(''), '--sink "": ', 'port name ""');
  rejects(t, () => parseSink('s,0'), '--sink "s,0": ', 'port name "s,0"');
});

t.test('--wire', async (t) => {
  t.same(parseWire('vm0=vm1'), ['vm0', 'vm1']);
  rejects(t, () => parseWire('vm0'), '--wire "vm0": ', 'expected A=B');
  rejects(t, () => parseWire('a=b=c'), '--wire "a=b=c": ', 'expected A=B');
  rejects(t, () => parseWire('=vm1'), '--wire "=vm1": ', 'port name ""');
  rejects(t, () => parseWire('vm0=v m1'), '--wire "vm0=v m1": ', 'port name "v m1"');
});

t.test('--mode', async (t) => {
  t.equal(parseMode('bypass'), 'bypass');
  t.equal(parseMode('kernel'), 'kernel');
  rejects(t, () => parseMode('poll'), '--mode "poll": ', 'expected bypass or kernel');
  rejects(t, () => parseMode(''), '--mode "": ', 'expected bypass or kernel');
});

t.test('--pmd-cores', async (t) => {
  t.same(parsePmdCores('1', 4), [1]);
  t.same(parsePmdCores('0,1', 4), [0, 1]);
  t.same(parsePmdCores('2-3', 4), [2, 3]);
  t.same(parsePmdCores('0,2-3', 4), [0, 2, 3]);
  const bad: Array<[string, string]> = [
    ['', 'expected a CPU list such as 1, 0,1 or 2-3, got ""'],
    ['a', 'got "a"'],
    ['1,', 'got ""'],
    ['-1', 'got "-1"'],
    ['1-', 'got "1-"'],
    ['3-2', 'range 3-2 runs backwards'],
    ['0,0', 'CPU 0 listed twice'],
    ['0-1,1', 'CPU 1 listed twice'],
    ['4', 'CPU 4 does not exist (this machine has CPUs 0-3)'],
    ['2-5', 'CPU 4 does not exist'],
  ];
  for (const [text, part] of bad) rejects(t, () => parsePmdCores(text, 4), `--pmd-cores ${JSON.stringify(text)}: `, part);
  t.doesNotThrow(() => parsePmdCores('0'), 'CPU 0 exists on any machine (default cpu count from os.cpus())');
});

t.test('--metrics', async (t) => {
  t.same(parseEndpoint('9470'), { host: '127.0.0.1', port: 9470 });
  t.same(parseEndpoint('0.0.0.0:80'), { host: '0.0.0.0', port: 80 });
  t.same(parseEndpoint('localhost:9470'), { host: 'localhost', port: 9470 });
  t.same(parseEndpoint('[::1]:9470'), { host: '::1', port: 9470 });
  const bad: Array<[string, string]> = [
    ['', 'expected HOST:PORT or PORT'],
    ['host:', 'expected HOST:PORT or PORT'],
    [':9470', 'expected HOST:PORT or PORT'],
    ['::1:9470', 'expected HOST:PORT or PORT'],
    ['host:http', 'port must be a non-negative integer, got "http"'],
    ['65536', 'port must be 0..65535, got 65536'],
  ];
  for (const [text, part] of bad) rejects(t, () => parseEndpoint(text), `--metrics ${JSON.stringify(text)}: `, part);
});

t.test('--uplink', async (t) => {
  // lo exists on every Linux machine; the missing name is made unique to this run.
  t.strictSame(parseUplink('up0=lo'), { kind: 'uplink', name: 'up0', ifname: 'lo', queue: 0, queues: 1 });
  t.strictSame(parseUplink('up0=lo@0,queues=1,block-size=73728,blocks=2,retire-ms=5'), {
    kind: 'uplink',
    name: 'up0',
    ifname: 'lo',
    queue: 0,
    queues: 1,
    blockSize: 73728,
    blocks: 2,
    retireMs: 5,
  });
  t.strictSame(
    uplink.params(parseUplink('up0=lo,blocks=8')),
    { ifname: 'lo', queue: 0, queues: 1, blocks: 8, withholdOffloads: false },
    'only the ring values given',
  );
  t.equal(uplink.params(parseUplink('up0=lo,offloads=off')).withholdOffloads, true, 'offloads=off withholds them from the kernel');
  t.equal(uplink.params(parseUplink('up0=lo,offloads=on')).withholdOffloads, false, 'offloads=on is the default');
  t.equal(
    uplink.params(uplink.parseConfig('--config: uplink[0]', { name: 'up0', ifname: 'lo', offloads: false })).withholdOffloads,
    true,
    '--config: offloads false',
  );
  t.strictSame(
    uplink.params(parseUplink('up0=lo,frame-size=2048,ring-size=512')),
    { ifname: 'lo', queue: 0, queues: 1, frameSize: 2048, ringSize: 512, withholdOffloads: false },
    'the AF_XDP sizes',
  );
  t.same(
    uplink.parseConfig('--config: uplink[0]', { name: 'up0', ifname: 'lo', queue: 0, queues: 1, blocks: 8, ringSize: 512 }),
    { kind: 'uplink', name: 'up0', ifname: 'lo', queue: 0, queues: 1, blocks: 8, ringSize: 512 },
    '--config takes the same keys',
  );
  rejects(
    t,
    () => uplink.parseConfig('--config: uplink[0]', { name: 'up0', ifname: 'lo', ringSize: 100 }),
    '--config: uplink[0]: ',
    'ring-size must be a power of two',
  );
  const missing = `vwnone${process.pid}`.slice(0, 15);
  const bad: Array<[string, string]> = [
    ['up0', 'expected NAME=IFNAME'],
    ['=lo', 'expected NAME=IFNAME'],
    ['up0=', 'expected NAME=IFNAME'],
    ['u p=lo', 'port name "u p"'],
    ['up0=a/b', '"a/b" is not an interface name'],
    ['up0=a:b', '"a:b" is not an interface name'],
    ['up0=..', '".." is not an interface name'],
    [`up0=${'x'.repeat(16)}`, 'is not an interface name (1-15 bytes'],
    [`up0=${missing}`, `interface "${missing}" does not exist (no /sys/class/net/${missing})`],
    // lo has one receive queue.
    ['up0=lo@1', 'interface "lo" has 1 receive queue (0..0): queues 1..1 do not all exist'],
    ['up0=lo,queues=2', 'interface "lo" has 1 receive queue (0..0): queues 0..1 do not all exist'],
    ['up0=lo@x', 'queue must be a non-negative integer, got "x"'],
    ['up0=lo,queues=0', 'queues must be 1..8, got 0'],
    ['up0=lo,queues=9', 'queues must be 1..8, got 9'],
    ['up0=lo,block-size=65536', 'block-size must be 69632..16777216, got 65536'],
    ['up0=lo,block-size=70000', 'block-size must be a multiple of 4096 (whole pages), got 70000'],
    ['up0=lo,blocks=1', 'blocks must be 2..4096, got 1'],
    ['up0=lo,retire-ms=0', 'retire-ms must be 1..1000, got 0'],
    ['up0=lo,block-size=16777216,blocks=128', 'a receive ring of 2147483648 bytes (block-size times blocks) is over the 1024 MiB'],
    ['up0=lo,frame-size=1024', 'frame-size must be 2048..4096, got 1024'],
    ['up0=lo,frame-size=3072', 'frame-size must be a power of two, got 3072'],
    ['up0=lo,ring-size=32', 'ring-size must be 64..16384, got 32'],
    ['up0=lo,ring-size=1000', 'ring-size must be a power of two, got 1000'],
    [
      'up0=lo,queue=1',
      'unknown option "queue=1" (expected queues=N, tpacket=v3|v2, block-size=BYTES, blocks=N, retire-ms=MS, frames=N, frame-size=BYTES, ring-size=N or offloads=on|off)',
    ],
    ['up0=lo,offloads=maybe', 'offloads must be "on" or "off", got "maybe"'],
  ];
  for (const [text, part] of bad) rejects(t, () => parseUplink(text), `--uplink ${JSON.stringify(text)}: `, part);
  rejects(t, () => buildServeConfig({ uplink: ['a=lo', 'b=lo'] }, 2), '--uplink "b": ', 'interface lo is already used by port "a"');
  rejects(t, () => buildServeConfig({ uplink: ['a=lo'], sink: ['a'] }, 2), '--sink "a": ', 'port name "a" is already used by --uplink');
});

t.test('whole configuration', async (t) => {
  const two: Flags = { vhostUser: ['vm0=/tmp/a.sock', 'vm1=/tmp/b.sock'] };
  t.same(buildServeConfig({ ...two, wire: ['vm0=vm1'] }, 2), {
    ports: [
      { kind: 'vhost-user', name: 'vm0', path: '/tmp/a.sock', client: false, queues: 1 },
      { kind: 'vhost-user', name: 'vm1', path: '/tmp/b.sock', client: false, queues: 1 },
    ],
    wire: [['vm0', 'vm1']],
    bridges: [],
    bridgePorts: {},
    mode: 'bypass',
    pmdCores: [],
    metrics: null,
    control: { api: null, apiTcp: false, apiToken: null, user: null },
  });
  t.same(buildServeConfig({}, 2).ports, [], 'nothing at all is a valid (idle) switch');
  rejects(t, () => buildServeConfig({ ...two, wire: ['vm0=vm9'] }, 2), '--wire vm0=vm9: ', 'no port named "vm9"');
  rejects(t, () => buildServeConfig({ ...two, wire: ['vm0=vm0'] }, 2), '--wire vm0=vm0: ', 'cannot be wired to itself');
  rejects(
    t,
    () => buildServeConfig({ ...two, sink: ['s0'], wire: ['vm0=vm1', 's0=vm1'] }, 2),
    '--wire s0=vm1: ',
    'port "vm1" is already wired (vm0=vm1)',
  );
  rejects(t, () => buildServeConfig({ ...two, sink: ['vm1'] }, 2), '--sink "vm1": ', 'port name "vm1" is already used by --vhost-user');
  rejects(t, () => buildServeConfig({ sink: ['x'], gen: ['x'] }, 2), '--gen "x": ', 'already used by --sink');
  rejects(
    t,
    () => buildServeConfig({ vhostUser: ['vm0=/tmp/a.sock', 'vm1=/tmp/a.sock'] }, 2),
    '--vhost-user "vm1": ',
    'socket path /tmp/a.sock is already used by port "vm0"',
  );
  rejects(t, () => buildServeConfig({ pmdCores: '7' }, 2), '--pmd-cores "7": ', 'CPU 7 does not exist');
});

t.test('--config file', async (t) => {
  const tmp = tempDir('vhostwire-options-');
  t.teardown(tmp.cleanup);
  let n = 0;
  const write = (content: unknown): string => {
    const file = path.join(tmp.dir, `c${n++}.json`);
    fs.writeFileSync(file, typeof content === 'string' ? content : JSON.stringify(content));
    return file;
  };

  t.test('flags add to the lists and override single values', async (t) => {
    const file = write({
      vhostUser: [
        { name: 'vm0', path: '/tmp/a.sock' },
        { name: 'vm1', path: '/tmp/b.sock', client: true, queues: 4 },
      ],
      uplink: [{ name: 'up0', ifname: 'lo' }],
      sink: ['s0'],
      gen: [{ name: 'g0', size: 128, rate: 10, count: 5 }, { name: 'g1' }],
      wire: [['vm0', 'vm1']],
      mode: 'kernel',
      pmdCores: '0-1',
      metrics: '9470',
    });
    t.same(buildServeConfig({ config: file }, 2), {
      ports: [
        { kind: 'vhost-user', name: 'vm0', path: '/tmp/a.sock', client: false, queues: 1 },
        { kind: 'vhost-user', name: 'vm1', path: '/tmp/b.sock', client: true, queues: 4 },
        { kind: 'uplink', name: 'up0', ifname: 'lo', queue: 0, queues: 1 },
        { kind: 'sink', name: 's0' },
        { kind: 'gen', name: 'g0', size: 128, rate: 10, count: 5 },
        { kind: 'gen', name: 'g1', size: 64, rate: 0, count: 0 },
      ],
      wire: [['vm0', 'vm1']],
      bridges: [],
      bridgePorts: {},
      mode: 'kernel',
      pmdCores: [0, 1],
      metrics: { host: '127.0.0.1', port: 9470 },
      control: { api: null, apiTcp: false, apiToken: null, user: null },
    });
    const merged = buildServeConfig(
      {
        config: file,
        vhostUser: ['vm2=/tmp/c.sock'],
        sink: ['s1'],
        gen: ['g2'],
        wire: ['vm2=s0'],
        mode: 'bypass',
        pmdCores: '1',
        metrics: '0.0.0.0:1',
      },
      2,
    );
    t.same(
      ofKind(merged, 'vhost-user').map((v) => v.name),
      ['vm0', 'vm1', 'vm2'],
      'file ports first, then the flags',
    );
    t.same(
      ofKind(merged, 'sink').map((v) => v.name),
      ['s0', 's1'],
    );
    t.same(
      ofKind(merged, 'gen').map((g) => g.name),
      ['g0', 'g1', 'g2'],
    );
    t.same(merged.wire, [
      ['vm0', 'vm1'],
      ['vm2', 's0'],
    ]);
    t.equal(merged.mode, 'bypass');
    t.same(merged.pmdCores, [1]);
    t.same(merged.metrics, { host: '0.0.0.0', port: 1 });
    t.same(buildServeConfig({ config: write({ pmdCores: [1, 0] }) }, 2).pmdCores, [1, 0], 'pmdCores as an array');
    rejects(t, () => buildServeConfig({ config: file, vhostUser: ['vm0=/tmp/z.sock'] }, 2), '--vhost-user "vm0": ', 'already used');
    rejects(
      t,
      () => buildServeConfig({ config: file, sink: ['s9'], wire: ['s9=vm1'] }, 2),
      '--wire s9=vm1: ',
      'port "vm1" is already wired',
    );
  });

  t.test('errors name the file and the key', async (t) => {
    const missing = path.join(tmp.dir, 'missing.json');
    rejects(t, () => buildServeConfig({ config: missing }, 2), `--config ${JSON.stringify(missing)}: `, 'cannot read: ENOENT');
    const cases: Array<[unknown, string]> = [
      ['{"vhostUser": [', 'invalid JSON'],
      ['[]', 'expected an object, got []'],
      [{ vhostuser: [] }, 'unknown key "vhostuser"'],
      [{ vhostUser: {} }, 'vhostUser: expected an array, got {}'],
      [{ vhostUser: ['vm0=/x'] }, 'vhostUser[0]: expected an object, got "vm0=/x"'],
      [{ vhostUser: [{ name: 'vm0' }] }, 'vhostUser[0].path: expected a string, got nothing'],
      [{ vhostUser: [{ path: '/x' }] }, 'vhostUser[0].name: expected a string, got nothing'],
      [{ vhostUser: [{ name: 'vm0', path: '/x', server: true }] }, 'vhostUser[0]: unknown key "server"'],
      [{ vhostUser: [{ name: 'vm0', path: '/x', client: 'yes' }] }, 'vhostUser[0].client: expected true or false, got "yes"'],
      [{ vhostUser: [{ name: 'vm0', path: '/x', queues: 9 }] }, 'vhostUser[0]: queues must be 1..8, got 9'],
      [{ vhostUser: [{ name: 'vm0', path: '/x', queues: 1.5 }] }, 'vhostUser[0].queues: expected a non-negative integer, got 1.5'],
      [{ vhostUser: [{ name: 'v m', path: '/x' }] }, 'vhostUser[0]: port name "v m"'],
      [{ vhostUser: [{ name: 'vm0', path: '' }] }, 'vhostUser[0]: socket path is empty'],
      [{ uplink: ['up0=lo'] }, 'uplink[0]: expected an object, got "up0=lo"'],
      [{ uplink: [{ name: 'up0' }] }, 'uplink[0].ifname: expected a string, got nothing'],
      [{ uplink: [{ name: 'up0', ifname: 'lo', driver: 'xdp' }] }, 'uplink[0]: unknown key "driver"'],
      [{ uplink: [{ name: 'up0', ifname: 'vw/x' }] }, 'uplink[0]: "vw/x" is not an interface name'],
      [{ sink: 's0' }, 'sink: expected an array, got "s0"'],
      [{ sink: [1] }, 'sink[0]: expected a string, got 1'],
      [{ gen: [{ name: 'g0', size: 10 }] }, 'gen[0]: size must be 60..65535, got 10'],
      [{ gen: [{ name: 'g0', rate: -1 }] }, 'gen[0].rate: expected a non-negative integer, got -1'],
      [{ gen: [{ name: 'g0', count: -1 }] }, 'gen[0].count: expected a non-negative integer, got -1'],
      [{ gen: [{ name: 'g0', burst: 1 }] }, 'gen[0]: unknown key "burst"'],
      [{ wire: ['a=b'] }, 'wire[0]: expected an array, got "a=b"'],
      [{ wire: [['a']] }, 'wire[0]: expected ["A", "B"], got ["a"]'],
      [{ wire: [['a', 1]] }, 'wire[0]: expected a string, got 1'],
      [{ mode: 'fast' }, 'mode: expected bypass or kernel'],
      [{ mode: 1 }, 'mode: expected a string, got 1'],
      [{ pmdCores: '9' }, 'pmdCores: CPU 9 does not exist'],
      [{ pmdCores: [-1] }, 'pmdCores[0]: expected a non-negative integer, got -1'],
      [{ metrics: 9470 }, 'metrics: expected a string, got 9470'],
      [{ metrics: 'host:port' }, 'metrics: port must be a non-negative integer'],
    ];
    for (const [content, part] of cases) {
      const file = write(content);
      rejects(t, () => buildServeConfig({ config: file }, 2), `--config ${JSON.stringify(file)}: `, part);
    }
    const wires = write({ sink: ['s0'], wire: [['s0', 'nope']] });
    rejects(t, () => buildServeConfig({ config: wires }, 2), '--config: wire ["s0", "nope"]: ', 'no port named "nope"');
  });
});

t.test('peer flags', async (t) => {
  t.same(
    buildPeerConfig({ connect: '/tmp/vm0.sock' }),
    {
      path: '/tmp/vm0.sock',
      server: false,
      queues: 1,
      txSize: 0,
      txRate: 0,
      txCount: 0,
      rx: true,
      duration: 10,
    },
    'receiving is the default',
  );
  t.same(buildPeerConfig({ connect: '/x', server: true, tx: '64', rate: '1000', count: '5', duration: '0.5', queues: '2' }), {
    path: '/x',
    server: true,
    queues: 2,
    txSize: 64,
    txRate: 1000,
    txCount: 5,
    rx: false,
    duration: 0.5,
  });
  t.equal(buildPeerConfig({ connect: '/x', tx: '64', rx: true }).rx, true);
  rejects(t, () => buildPeerConfig({}), '--connect: ', 'required');
  rejects(t, () => buildPeerConfig({ connect: '' }), '--connect "": ', 'socket path is empty');
  rejects(t, () => buildPeerConfig({ connect: '/x', tx: '59' }), '--tx "59": ', 'size must be 60..65535, got 59');
  rejects(t, () => buildPeerConfig({ connect: '/x', tx: 'big' }), '--tx "big": ', 'non-negative integer');
  rejects(t, () => buildPeerConfig({ connect: '/x', rate: '10' }), '--rate "10": ', 'only meaningful with --tx SIZE');
  rejects(t, () => buildPeerConfig({ connect: '/x', count: '10' }), '--count "10": ', 'only meaningful with --tx SIZE');
  rejects(t, () => buildPeerConfig({ connect: '/x', tx: '64', rate: 'fast' }), '--rate "fast": ', 'non-negative number');
  rejects(t, () => buildPeerConfig({ connect: '/x', tx: '64', count: '-1' }), '--count "-1": ', 'non-negative integer');
  rejects(t, () => buildPeerConfig({ connect: '/x', duration: 'forever' }), '--duration "forever": ', 'expected seconds');
  rejects(t, () => buildPeerConfig({ connect: '/x', queues: '0' }), '--queues "0": ', 'queues must be 1..8, got 0');
});
