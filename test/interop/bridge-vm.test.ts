// A QEMU guest and a host interface on one learning bridge: the guest's vhost-user port and an uplink on
// the host end of a veth pair, whose other end sits in a namespace of its own with an address. Nothing is
// configured statically: ARP requests are broadcasts the bridge floods, the replies teach it both MACs,
// and pings then go both ways as learned unicast. Run in kernel mode and again after switching the
// running backend to bypass mode (AF_XDP), since the uplink is a different socket in each.
import t from 'tap';
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ensureGuest, findQemu, macFor, Vm } from '../../src/harness/vm';
import { Cli, runCli } from '../support/helpers';

t.setTimeout(420_000);
const BOOT_MS = 240_000;

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8' });
}

const qemu = findQemu();
const why =
  process.getuid?.() !== 0
    ? 'needs root: network namespaces, veth pairs, packet sockets'
    : !qemu
      ? 'qemu-system-x86_64 is not installed (Debian: apt-get install qemu-system-x86 linux-image-amd64 busybox-static)'
      : null;

if (why) {
  t.plan(0, why);
} else {
  t.test('a QEMU guest and a veth uplink on one bridge ping each other both ways', async (t) => {
    const guest = ensureGuest();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostwire-bridge-vm-'));
    const ns = `vwbv${process.pid}`;
    const host = `vwbh${process.pid}`;
    const peer = `vwbp${process.pid}`;
    const nsIp = '10.233.0.1';
    const vmIp = '10.233.0.2';
    // Whatever was started by the time a step fails, ended by pid in teardown.
    const started: { serve?: Cli; vm?: Vm } = {};
    t.teardown(async () => {
      await started.vm?.kill('SIGKILL');
      started.serve?.kill('SIGKILL');
      await started.serve?.wait();
      spawnSync('ip', ['link', 'del', host], { stdio: 'ignore' });
      spawnSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
      fs.rmSync(dir, { recursive: true, force: true });
    });

    ip('netns', 'add', ns);
    ip('link', 'add', host, 'type', 'veth', 'peer', 'name', peer, 'netns', ns);
    ip('-n', ns, 'addr', 'add', `${nsIp}/24`, 'dev', peer);
    ip('-n', ns, 'link', 'set', peer, 'up');
    ip('link', 'set', host, 'up');
    const nsMac = (JSON.parse(ip('-n', ns, '-j', 'link', 'show', peer)) as Array<{ address: string }>)[0].address;

    const sock = path.join(dir, 'vm0.sock');
    const api = path.join(dir, 'api.sock');
    const serve = (started.serve = new Cli([
      'serve',
      '--vhost-user',
      `vm0=${sock}`,
      '--uplink',
      `up0=${host}`,
      '--bridge',
      'br0=vm0,up0',
      '--mode',
      'kernel',
      '--api',
      api,
    ]));
    await serve.line(/^ready$/);
    const vm = (started.vm = await Vm.start({ guest, name: 'vm0', socket: sock, ip: `${vmIp}/24`, end: 'stay' }));
    const r = await vm.ready(BOOT_MS);
    t.comment(`guest booted (${vm.accel}) in ${(r.wallMs / 1000).toFixed(1)} s`);

    const fdb = async (): Promise<string> => {
      const f = await runCli(['fdb', 'br0', '--api', api]);
      t.equal(f.code, 0, `fdb exits 0 (${f.stderr})`);
      return f.stdout;
    };
    const nsPing = (count: number): string => {
      const p = spawnSync('ip', ['netns', 'exec', ns, 'busybox', 'ping', '-c', String(count), '-i', '0.2', '-W', '5', vmIp], {
        encoding: 'utf8',
      });
      return p.stdout + p.stderr;
    };

    for (const mode of ['kernel', 'bypass'] as const) {
      if (mode === 'bypass') {
        const m = await runCli(['mode', 'bypass', '--api', api]);
        t.equal(m.code, 0, `mode bypass exits 0 (${m.stderr})`);
      }
      const out = await vm.command(`ping ${nsIp} 10 0.1`, 90_000);
      t.equal(out.loss, '0', `${mode}: guest -> namespace, ${out.received}/${out.sent} replies`);
      t.match(nsPing(10), / 0% packet loss/, `${mode}: namespace -> guest, 0% loss`);
      const table = await fdb();
      t.match(table, new RegExp(`^${macFor('vm0')}\\s+.*\\bvm0\\b`, 'm'), `${mode}: the guest's MAC learned on vm0`);
      t.match(table, new RegExp(`^${nsMac}\\s+.*\\bup0\\b`, 'm'), `${mode}: the namespace's MAC learned on up0`);
    }
  });
}
