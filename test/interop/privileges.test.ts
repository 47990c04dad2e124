// Least privilege, checked on real processes: `serve --user` (set up as root, then become the user) and
// serve started as an unprivileged user with only the documented capabilities (setpriv, the mechanism
// systemd's AmbientCapabilities= uses). Every thread's /proc/PID/task/TID/status is read; an uplink
// carries traffic in both modes and switches mode both ways with the dropped set; each documented
// capability is shown to be needed; the API socket is tried by a second, unprivileged user; the
// README's vhost-user examples run as a user with no capability at all; DPDK's virtio-user, whose guest
// memory is on hugepages, connects to a serve that has given everything up.
import t, { type Test } from 'tap';
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { findTestpmd, freeHugepages } from '../../bench/testpmd';
import { startVirtioUser } from '../support/testpmd-fixture';
import { Cli, freePort, runCli, waitFor, type Launch } from '../support/helpers';
import {
  createUser,
  runtimeCopy,
  WITHOUT_TEST_HOOKS,
  setprivArgs,
  unreachableByOthers,
  type RunAs,
  type TestUser,
} from '../support/unprivileged';

const skip = process.getuid?.() === 0 ? false : 'needs root: test users, setpriv, network namespaces';

/** The documented set for uplinks (src/config/privileges.ts, docs/security.md), as /proc shows it. */
const UPLINK_CAPS = ['net_admin', 'net_raw', 'ipc_lock', 'bpf'];
const CAP_BITS: Record<string, number> = { net_admin: 12, net_raw: 13, ipc_lock: 14, bpf: 39 };
const mask = (caps: string[]): bigint => caps.reduce((m, c) => m | (1n << BigInt(CAP_BITS[c])), 0n);

interface ThreadStatus {
  tid: string;
  name: string;
  uid: number[];
  gid: number[];
  groups: number[];
  prm: bigint;
  eff: bigint;
  bnd: bigint;
  amb: bigint;
  nnp: number;
  sigblk: bigint;
}

function threads(pid: number): ThreadStatus[] {
  return fs.readdirSync(`/proc/${pid}/task`).map((tid) => {
    const s = fs.readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8');
    const f = (k: string): string => new RegExp(`^${k}:\\s*(.*)$`, 'm').exec(s)?.[1].trim() ?? '';
    const nums = (k: string): number[] => f(k).split(/\s+/).filter(Boolean).map(Number);
    const hex = (k: string): bigint => BigInt(`0x${f(k)}`);
    return {
      tid,
      name: f('Name'),
      uid: nums('Uid'),
      gid: nums('Gid'),
      groups: nums('Groups'),
      prm: hex('CapPrm'),
      eff: hex('CapEff'),
      bnd: hex('CapBnd'),
      amb: hex('CapAmb'),
      nnp: Number(f('NoNewPrivs')),
      sigblk: hex('SigBlk'),
    };
  });
}

/** Blocks every real-time signal (34..64): the threads the drop reaches only through the kernel. */
const blocksRtSignals = (s: ThreadStatus): boolean => s.sigblk >> 33n === (1n << 31n) - 1n;

/** Every thread: the user, no_new_privs, nothing beyond `kept`; the bounding set cut where it can be. */
function checkThreads(t: Test, pid: number, user: TestUser, kept: bigint, groups: number[]): void {
  const all = threads(pid);
  t.ok(all.length >= 8, `${all.length} threads: Node's, V8's, the PMD and the engine's control thread`);
  for (const s of all) {
    const who = `thread ${s.tid} (${s.name})`;
    t.same(s.uid, [user.uid, user.uid, user.uid, user.uid], `${who}: real, effective, saved and fs uid are the user's`);
    t.same(s.gid, [user.gid, user.gid, user.gid, user.gid], `${who}: and so are the gids`);
    t.same(s.groups, groups, `${who}: supplementary groups`);
    t.equal(s.nnp, 1, `${who}: no_new_privs`);
    t.equal((s.prm | s.eff | s.amb) & ~kept, 0n, `${who}: no capability beyond the kept set`);
    if (!blocksRtSignals(s)) {
      t.equal(s.prm, kept, `${who}: permitted = the kept set`);
      t.equal(s.eff, kept, `${who}: effective = the kept set`);
      t.equal(s.amb, 0n, `${who}: no ambient capability`);
    }
  }
  const cut = all.filter((s) => s.bnd === kept);
  const unreachable = all.filter(blocksRtSignals);
  t.ok(unreachable.length <= 1, `at most one thread blocks every signal (Node's SIGUSR1 watchdog): ${unreachable.map((s) => s.tid)}`);
  t.equal(
    cut.length + all.filter((s) => s.bnd !== kept && blocksRtSignals(s)).length,
    all.length,
    'the bounding set is cut on every thread but one that blocks every signal',
  );
}

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8' });
}

/** A veth pair: one end here for the uplink, the other in a namespace of its own, IPv6 off on both. */
class Veth {
  readonly ns = `vwpr${process.pid}`;
  readonly host = `vwph${process.pid}`;
  readonly peer = `vwpp${process.pid}`;

  constructor() {
    ip('netns', 'add', this.ns);
    try {
      ip('link', 'add', this.host, 'type', 'veth', 'peer', 'name', this.peer, 'netns', this.ns);
      execFileSync('sysctl', ['-qw', `net.ipv6.conf.${this.host}.disable_ipv6=1`]);
      ip('netns', 'exec', this.ns, 'sysctl', '-qw', `net.ipv6.conf.${this.peer}.disable_ipv6=1`);
      ip('-n', this.ns, 'link', 'set', this.peer, 'up');
      ip('link', 'set', this.host, 'up');
    } catch (e) {
      this.close();
      throw e;
    }
  }

  /** Frames the namespace end has received. */
  peerRx(): number {
    return (JSON.parse(ip('-n', this.ns, '-s', '-j', 'link', 'show', this.peer)) as Array<{ stats64: { rx: { packets: number } } }>)[0]
      .stats64.rx.packets;
  }

  /** Frames the host end has received. */
  hostRx(): number {
    return (JSON.parse(ip('-s', '-j', 'link', 'show', this.host)) as Array<{ stats64: { rx: { packets: number } } }>)[0].stats64.rx.packets;
  }

  /**
   * n broadcast frames of an experimental ethertype, sent out of the namespace end in bursts of 32, 2 ms
   * apart. Not one a millisecond: in kernel mode each such frame gets a receive block of its own (the
   * block retires after 1 ms), so the 32 blocks of the ring last 32 ms, and a PMD kept off the CPU that
   * long on a loaded 2-core machine had the kernel drop the rest (counted: KERNEL_DROP_PACKET_DROPS).
   */
  sendFromNamespace(n: number): void {
    const py = [
      'import socket, sys, time',
      's = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)',
      's.bind((sys.argv[1], 0))',
      "f = b'\\xff' * 6 + bytes.fromhex('027677000001') + b'\\x88\\xb5' + bytes(50)",
      'for i in range(int(sys.argv[2])):',
      '    s.send(f)',
      '    if i % 32 == 31: time.sleep(0.002)',
    ].join('\n');
    execFileSync('ip', ['netns', 'exec', this.ns, 'python3', '-c', py, this.peer, String(n)]);
  }

  close(): void {
    spawnSync('ip', ['link', 'del', this.host], { stdio: 'ignore' });
    spawnSync('ip', ['netns', 'del', this.ns], { stdio: 'ignore' });
  }
}

type Ports = Array<{ name: string; counters: Array<Record<string, number>> }>;

/**
 * GET /api/ports over a unix socket (as root, who may connect to any), on a connection of its own as the
 * CLI does: Node's default agent keeps the last one alive, and a test blocked in execFileSync past serve's
 * keep-alive timeout would write on a connection serve had closed meanwhile (EPIPE, ECONNRESET).
 */
function portsOver(socketPath: string): Promise<Ports> {
  return new Promise((resolve, reject) => {
    http
      .get({ socketPath, path: '/api/ports', agent: false }, (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (c: string) => (body += c));
        res.on('end', () => resolve(JSON.parse(body) as Ports));
      })
      .on('error', reject);
  });
}

t.test('least privilege', { skip }, async (t) => {
  const node = unreachableByOthers(process.execPath);
  if (node) throw new Error(`${process.execPath} cannot be run by other users (${node}): these tests run it as test users`);
  const svc = createUser('s');
  t.teardown(svc.remove);
  const other = createUser('o');
  t.teardown(other.remove);
  const runtime = runtimeCopy();
  t.teardown(runtime.cleanup);
  /** A directory the service user owns (as systemd's RuntimeDirectory= would give it), others may enter. */
  const ownDir = (): string => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostwire-priv-'));
    fs.chownSync(dir, svc.uid, svc.gid);
    fs.chmodSync(dir, 0o755);
    t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
    return dir;
  };
  const as = (who: RunAs): Launch => ({ prefix: [...WITHOUT_TEST_HOOKS, 'setpriv', ...setprivArgs(who)], bin: runtime.bin });
  /** As root, for serve --user: from the copy too, since the process becomes the user. */
  const asRoot: Launch = { prefix: WITHOUT_TEST_HOOKS, bin: runtime.bin };
  const asSvc = (caps: string[] = []): Launch => as({ uid: svc.uid, gid: svc.gid, groups: [svc.gid], caps });

  t.test('serve --user: after setup every thread is the user, with no capability left for vhost-user ports', async (t) => {
    const dir = ownDir();
    const [vm0, api] = [path.join(dir, 'vm0.sock'), path.join(dir, 'api.sock')];
    const serve = new Cli(
      ['serve', '--vhost-user', `vm0=${vm0}`, '--sink', 's0', '--wire', 'vm0=s0', '--mode', 'kernel', '--api', api, '--user', svc.name],
      asRoot,
    );
    t.teardown(() => serve.kill('SIGKILL'));
    await serve.line(/^ready$/);
    t.match(
      serve.stdout,
      `privileges: user ${svc.name} (uid ${svc.uid}, gid ${svc.gid}); kept no capability, dropped every other one (bounding set too); no_new_privs\n`,
    );
    checkThreads(t, serve.pid, svc, 0n, [svc.gid]);
    t.equal(fs.statSync(vm0).uid, svc.uid, 'the vhost-user socket belongs to the user, who can remove it at exit');

    // A front end running as the same user, as QEMU under a service account would.
    const peer = await runCli(
      ['peer', '--connect', vm0, '--tx', '64', '--count', '1000', '--rate', '20000', '--duration', '1'],
      20000,
      asSvc(),
    );
    t.equal(peer.code, 0, `a front end as ${svc.name} sends through it (${peer.stderr})`);
    await waitFor(
      'the sink to count 1000',
      async () => (await portsOver(api)).find((p) => p.name === 's0')?.counters[0].TX_PACKETS === 1000,
    );
    t.match(
      await runCli(['mode', 'bypass', '--api', api], 20000, asSvc()),
      { code: 0, stdout: 'mode bypass (was kernel)\n' },
      'the owner switches the mode',
    );
    checkThreads(t, serve.pid, svc, 0n, [svc.gid]);
    serve.kill('SIGTERM');
    t.same(await serve.wait(), { code: 0, signal: null }, `exit 0 (stderr: ${serve.stderr})`);
    t.same(fs.readdirSync(dir), [], 'both sockets removed by the dropped process');
  });
  t.test('the API socket against a second, unprivileged user', async (t) => {
    const dir = ownDir();
    const api = path.join(dir, 'api.sock');
    const port = await freePort();
    const serve = new Cli(
      ['serve', '--sink', 's0', '--mode', 'kernel', '--api', api, '--metrics', `127.0.0.1:${port}`, '--user', svc.name],
      asRoot,
    );
    t.teardown(() => serve.kill('SIGKILL'));
    await serve.line(/^ready$/);
    const st = fs.statSync(api);
    t.same([st.mode & 0o7777, st.uid, st.gid], [0o660, svc.uid, svc.gid], 'mode 0660, owned by the user serve runs as');
    const outsider = as({ uid: other.uid, gid: other.gid, groups: [other.gid] });
    const denied = `cannot reach ${api}: EACCES (permission denied: the socket is mode 0660, for its owner and group (serve --api-owner))`;
    t.match(
      await runCli(['mode', 'bypass', '--api', api], 20000, outsider),
      { code: 1, stderr: `vhostwire mode [mode]: ${denied}\n` },
      `${other.name} cannot switch the mode`,
    );
    t.match(
      await runCli(['stats', '--api', api], 20000, outsider),
      { code: 1, stderr: `vhostwire stats: ${denied}\n` },
      'nor read through the socket',
    );
    t.match(
      await runCli(['mode', 'bypass', '--url', `http://127.0.0.1:${port}`], 20000, outsider),
      { code: 1, stderr: /HTTP 403: changes are not accepted over TCP/ },
      'nor switch it over TCP',
    );
    t.match(
      await runCli(['mode', '--url', `http://127.0.0.1:${port}`], 20000, outsider),
      { code: 0, stdout: 'mode kernel\n' },
      'but may read the mode over TCP, like a scraper',
    );
    const member = as({ uid: other.uid, gid: other.gid, groups: [other.gid, svc.gid] });
    t.match(
      await runCli(['mode', 'bypass', '--api', api], 20000, member),
      { code: 0, stdout: 'mode bypass (was kernel)\n' },
      `in ${svc.name}'s group, ${other.name} can`,
    );
    serve.kill('SIGTERM');
    t.same(await serve.wait(), { code: 0, signal: null });

    // --api-owner hands the socket to another group: that group's members, and no one else, may use it.
    const serve2 = new Cli(
      ['serve', '--sink', 's0', '--mode', 'kernel', '--api', api, '--api-owner', `:${other.name}`, '--user', svc.name],
      asRoot,
    );
    t.teardown(() => serve2.kill('SIGKILL'));
    await serve2.line(/^ready$/);
    t.same([fs.statSync(api).uid, fs.statSync(api).gid], [svc.uid, other.gid], '--api-owner :GROUP sets the group');
    t.match(
      await runCli(['mode', 'bypass', '--api', api], 20000, as({ uid: other.uid, gid: other.gid, groups: [other.gid] })),
      { code: 0 },
      `${other.name}, of that group, can`,
    );
    serve2.kill('SIGTERM');
    t.same(await serve2.wait(), { code: 0, signal: null });
  });

  // Both ways of running an uplink without root: set up as root and become the user, or start as the
  // user with the documented capabilities (setpriv here, AmbientCapabilities= under systemd).
  const starts: Array<[string, () => { args: string[]; launch: Launch; groups: number[] }]> = [
    ['serve --user, started as root', () => ({ args: ['--user', svc.name], launch: asRoot, groups: [svc.gid] })],
    [`started as the user with ${UPLINK_CAPS.join(', ')}`, () => ({ args: [], launch: asSvc(UPLINK_CAPS), groups: [svc.gid] })],
  ];
  for (const [how, start] of starts)
    t.test(`an uplink, ${how}: traffic both ways in both modes, switched both ways with the dropped set`, async (t) => {
      const net = new Veth();
      t.teardown(() => net.close());
      const dir = ownDir();
      const api = path.join(dir, 'api.sock');
      const port = await freePort();
      const { args, launch, groups } = start();
      const serve = new Cli(
        [
          'serve',
          '--uplink',
          `up0=${net.host}`,
          '--gen',
          'g0,rate=500',
          '--wire',
          'g0=up0',
          '--mode',
          'kernel',
          '--api',
          api,
          '--metrics',
          `127.0.0.1:${port}`,
          ...args,
        ],
        launch,
      );
      t.teardown(() => serve.kill('SIGKILL'));
      await serve.line(/^ready$/);
      t.match(serve.stdout, /^privileges: .*; kept cap_net_admin,cap_net_raw,cap_ipc_lock,cap_bpf, dropped every other one/m);
      checkThreads(t, serve.pid, svc, mask(UPLINK_CAPS), groups);

      const traffic = async (mode: string): Promise<void> => {
        const rx0 = net.peerRx();
        await waitFor(`${mode}: gen frames reaching the namespace`, () => net.peerRx() - rx0 >= 50, 10000);
        const up0 = (await portsOver(api)).find((p) => p.name === 'up0')!.counters[0];
        const host0 = net.hostRx();
        net.sendFromNamespace(100);
        let got: Record<string, number> = up0;
        await waitFor(
          `${mode}: 100 frames from the namespace`,
          async () => (got = (await portsOver(api)).find((p) => p.name === 'up0')!.counters[0]).RX_PACKETS - up0.RX_PACKETS === 100,
          10000,
        ).catch((e: Error) => {
          // What moved on up0 meanwhile (the kernel's drops at the socket among it) and what the host end saw.
          const moved = Object.entries(got).flatMap(([k, v]) => (v !== up0[k] ? [`${k} +${v - (up0[k] ?? 0)}`] : []));
          throw new Error(`${e.message}: up0 ${moved.join(', ')}; the host end received +${net.hostRx() - host0}`);
        });
        t.pass(`${mode}: frames cross the uplink both ways`);
      };
      await traffic('kernel');
      const switchTo = async (mode: string, was: string): Promise<void> => {
        t.match(
          await runCli(['mode', mode, '--api', api], 20000, asSvc()),
          { code: 0, stdout: `mode ${mode} (was ${was})\n` },
          `switched to ${mode}: the driver reopened with the dropped set`,
        );
      };
      await switchTo('bypass', 'kernel');
      await traffic('bypass (AF_XDP)');
      await switchTo('kernel', 'bypass');
      await traffic('kernel again (AF_PACKET)');
      checkThreads(t, serve.pid, svc, mask(UPLINK_CAPS), groups);
      const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      t.match(
        metrics,
        new RegExp(`^vhostwire_uplink_ethtool_statistic\\{port="up0",interface="${net.host}",stat="peer_ifindex"\\} \\d+$`, 'm'),
        'the ethtool statistics ioctl, made by the dropped process, needs nothing more',
      );
      serve.kill('SIGTERM');
      t.same(await serve.wait(), { code: 0, signal: null }, `exit 0 (stderr: ${serve.stderr})`);
    });

  t.test('each documented capability is needed: without it the uplink cannot start or switch', async (t) => {
    const net = new Veth();
    t.teardown(() => net.close());
    const why: Record<string, RegExp> = {
      net_raw: /cannot open an AF_PACKET socket for interface ".*": Operation not permitted/,
      net_admin: /creating the XSKMAP: Operation not permitted/,
      bpf: /creating the XSKMAP: Operation not permitted/,
      ipc_lock: /registering the UMEM: No buffer space available \(its 16 MiB are pinned: needs CAP_IPC_LOCK/,
    };
    for (const missing of UPLINK_CAPS) {
      const dir = ownDir();
      const api = path.join(dir, 'api.sock');
      const caps = UPLINK_CAPS.filter((c) => c !== missing);
      const serve = new Cli(
        ['serve', '--uplink', `up0=${net.host}`, '--sink', 's0', '--wire', 'up0=s0', '--mode', 'kernel', '--api', api],
        asSvc(caps),
      );
      t.teardown(() => serve.kill('SIGKILL'));
      if (missing === 'net_raw') {
        const exit = await serve.wait(20000);
        t.equal(exit.code, 1, 'without cap_net_raw serve cannot open the uplink at all');
        t.match(serve.stderr, why.net_raw);
        continue;
      }
      await serve.line(/^ready$/);
      const r = await runCli(['mode', 'bypass', '--api', api], 20000, asSvc());
      t.equal(r.code, 1, `without cap_${missing} the switch to bypass fails`);
      t.match(r.stderr, /HTTP 500: set mode bypass: port "up0": cannot switch to bypass mode: /);
      t.match(r.stderr, why[missing], `and says which step (cap_${missing})`);
      t.match(await runCli(['mode', '--api', api], 20000, asSvc()), { stdout: 'mode kernel\n' }, 'the mode stays kernel');
      serve.kill('SIGTERM');
      t.same(await serve.wait(), { code: 0, signal: null });
    }
  });

  t.test("the README's vhost-user examples as an unprivileged user with no capability at all", async (t) => {
    const dir = ownDir();
    const [vm0, vm1, api] = ['vm0', 'vm1', 'api'].map((n) => path.join(dir, `${n}.sock`));
    const port = await freePort();
    const serve = new Cli(
      [
        'serve',
        '--vhost-user',
        `vm0=${vm0}`,
        '--vhost-user',
        `vm1=${vm1}`,
        '--wire',
        'vm0=vm1',
        '--mode',
        'kernel',
        '--api',
        api,
        '--metrics',
        `127.0.0.1:${port}`,
      ],
      asSvc(),
    );
    t.teardown(() => serve.kill('SIGKILL'));
    await serve.line(/^ready$/);
    t.match(serve.stdout, `privileges: uid ${svc.uid}; kept no capability, dropped every other one; no_new_privs\n`);
    checkThreads(t, serve.pid, svc, 0n, [svc.gid]);
    const rx = new Cli(['peer', '--connect', vm1, '--rx', '--duration', '4'], asSvc());
    t.teardown(() => rx.kill('SIGKILL'));
    await serve.line(/^vm1: connected$/);
    const tx = await runCli(
      ['peer', '--connect', vm0, '--tx', '64', '--count', '2000', '--rate', '20000', '--duration', '1'],
      20000,
      asSvc(),
    );
    t.equal(tx.code, 0, `peer --tx (${tx.stderr})`);
    const rxExit = await rx.wait(20000);
    t.equal(rxExit.code, 0, `peer --rx (${rx.stderr})`);
    // What the receiving guest has no buffer for is dropped and counted (kernel mode, a busy machine).
    const received = Number(/rx (\d+) packets/.exec(rx.stdout)?.[1]);
    const ports = await portsOver(api);
    const counter = (port: string, id: string): number => ports.find((p) => p.name === port)!.counters[0][id];
    t.equal(counter('vm0', 'RX_PACKETS'), 2000, 'the backend took all 2000 frames from vm0');
    t.ok(received > 0, `vm1 received ${received} of them`);
    t.equal(counter('vm1', 'TX_PACKETS'), received, 'exactly what the backend put into vm1');
    t.equal(counter('vm1', 'TX_PACKETS') + counter('vm1', 'DROP_TX_NO_BUFFER'), 2000, 'the rest counted as no_buffer drops');
    t.match(await runCli(['stats', '--api', api], 20000, asSvc()), { code: 0, stdout: /^vm0\s+vhost-user/m }, 'stats --api');
    t.match(
      await runCli(['mode', 'bypass', '--api', api], 20000, asSvc()),
      { code: 0, stdout: 'mode bypass (was kernel)\n' },
      'mode --api',
    );
    serve.kill('SIGTERM');
    t.same(await serve.wait(), { code: 0, signal: null });
  });

  const testpmd = findTestpmd();
  const pages = freeHugepages();
  t.test(
    'DPDK virtio-user, its memory on hugepages, into a serve that gave up every capability',
    {
      skip:
        testpmd === null
          ? 'dpdk-testpmd is not installed (Debian 12: apt-get install dpdk-dev)'
          : pages < 128
            ? `${pages} free 2 MiB hugepages, 128 needed`
            : false,
      timeout: 90000,
    },
    async (t) => {
      const dir = ownDir();
      const [vm0, api] = [path.join(dir, 'vm0.sock'), path.join(dir, 'api.sock')];
      const serve = new Cli(
        ['serve', '--vhost-user', `vm0=${vm0}`, '--sink', 's0', '--wire', 'vm0=s0', '--mode', 'kernel', '--api', api, '--user', svc.name],
        asRoot,
      );
      t.teardown(() => serve.kill('SIGKILL'));
      await serve.line(/^ready$/);
      const front = await startVirtioUser(t, { path: vm0, forwardMode: 'txonly' });
      await serve.line(/^vm0: connected$/, 30000);
      await front.startForwarding();
      await waitFor(
        'frames from DPDK counted on vm0',
        async () => ((await portsOver(api)).find((p) => p.name === 'vm0')?.counters[0].RX_PACKETS ?? 0) > 1000,
        30000,
      );
      t.pass('the hugetlbfs memory DPDK sent as fds was mapped and read without any capability');
      checkThreads(t, serve.pid, svc, 0n, [svc.gid]);
    },
  );
});
