// `vhostwire port add|del|list` against a real `vhostwire serve --api PATH`: ports added, wired, listed
// and removed while it runs, each refusal with its status and the port it names, the API socket's mode
// and group, and the same commands over --url, where changes are refused unless serve allows them.
import t from 'tap';
import * as fs from 'node:fs';
import { Cli, freePort, runCli, tempDir } from '../support/helpers';

interface Listed {
  name: string;
  kind: string;
  peer: string;
  queuePairs: number;
}

async function listed(base: string): Promise<Listed[]> {
  return ((await (await fetch(`${base}/api/ports`)).json()) as Listed[]).map(({ name, kind, peer, queuePairs }) => ({
    name,
    kind,
    peer,
    queuePairs,
  }));
}

t.test('ports added, wired, listed and removed over the unix socket; every refusal names the port', async (t) => {
  const tmp = tempDir();
  t.teardown(tmp.cleanup);
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const api = tmp.sock('api');
  const serve = new Cli([
    'serve',
    ...['--vhost-user', `vm0=${tmp.sock('vm0')}`, '--sink', 's0', '--wire', 'vm0=s0', '--mode', 'kernel'],
    ...['--metrics', `127.0.0.1:${port}`, '--api', api, '--api-group', 'daemon'],
  ]);
  t.teardown(() => serve.kill('SIGKILL'));
  await serve.line(/^ready$/);
  const st = fs.statSync(api);
  t.equal(st.mode & 0o7777, 0o660, 'the API socket is mode 0660');
  t.equal(st.gid, 1, 'and belongs to the group --api-group named (daemon, gid 1)');

  const run = (...args: string[]): ReturnType<typeof runCli> => runCli(['port', ...args, '--api', api]);
  t.match(await run('add', `vm3=${tmp.sock('vm3')},queues=2`), { code: 0, stdout: 'vm3: added (vhost-user)\n' });
  t.ok(fs.statSync(tmp.sock('vm3')).isSocket(), "the new port's socket exists");
  t.match(await run('add', `vm4=${tmp.sock('vm4')}`, '--wire', 'vm3'), {
    code: 0,
    stdout: /^vm4: added \(vhost-user\), wired to vm3 on PMD 0\n$/,
  });
  // The addon lists ports by name.
  t.same(await listed(base), [
    { name: 's0', kind: 'sink', peer: 'vm0', queuePairs: 1 },
    { name: 'vm0', kind: 'vhost-user', peer: 's0', queuePairs: 1 },
    { name: 'vm3', kind: 'vhost-user', peer: 'vm4', queuePairs: 2 },
    { name: 'vm4', kind: 'vhost-user', peer: 'vm3', queuePairs: 1 },
  ]);
  const list = await run('list');
  t.equal(list.code, 0);
  t.match(list.stdout, /^PORT +KIND +STATE +QUEUES +PEER +WHERE$/m);
  t.match(list.stdout, new RegExp(`^vm3 +vhost-user +disconnected +2 +vm4 +${tmp.sock('vm3')}$`, 'm'));

  const where = `vhostwire port: ${api} /api/ports`;
  const refusals: Array<[string[], string]> = [
    [
      ['add', `vm3=${tmp.sock('other')}`],
      `${where}: HTTP 409: add vhost-user port "vm3" (${tmp.sock('other')}): a port named "vm3" already exists; choose another name`,
    ],
    [
      ['add', `vm5=${tmp.sock('vm3')}`],
      `${where}: HTTP 409: add vhost-user port "vm5" (${tmp.sock('vm3')}): socket path ${tmp.sock('vm3')} is already used by port "vm3"`,
    ],
    [['add', `vm5=${api}`], `${where}: HTTP 409: port "vm5": socket path ${api} is the switch's own API socket`],
    [
      ['add', `vm5=${tmp.sock('vm5')},queues=9`],
      `${where}: HTTP 400: --vhost-user "vm5=${tmp.sock('vm5')},queues=9": queues must be 1..8, got 9`,
    ],
    [['add', `vm5=${tmp.sock('vm5')}`, '--wire', 'nope'], `${where}: HTTP 404: port "vm5": wire: there is no port named "nope"`],
    [
      ['add', `vm5=${tmp.sock('vm5')}`, '--wire', 'vm0'],
      `${where}: HTTP 409: port "vm5" was not added: wire "vm5" to "vm0": port "vm0" is already in wire "vm0=s0"`,
    ],
    [
      ['add', `vm5=${tmp.sock('vm5')}`, '--bridge', 'br0', '--vlan', '10'],
      `${where}: HTTP 404: port "vm5": bridge: there is no bridge named "br0"`,
    ],
    [['del', 'nope'], `${where}/nope: HTTP 404: remove port "nope": there is no port named "nope"`],
  ];
  for (const [args, stderr] of refusals) t.match(await run(...args), { code: 1, stderr: `${stderr}\n` }, args.join(' '));
  t.notOk(fs.existsSync(tmp.sock('vm5')), 'no refused port left a socket behind');
  t.same(
    (await listed(base)).map((p) => p.name),
    ['s0', 'vm0', 'vm3', 'vm4'],
    'and none of them left a port behind',
  );

  t.match(await run('del', 'vm3'), { code: 0, stdout: 'vm3: removed\n' });
  t.notOk(fs.existsSync(tmp.sock('vm3')), "the removed port's socket is gone");
  t.same(await listed(base), [
    { name: 's0', kind: 'sink', peer: 'vm0', queuePairs: 1 },
    { name: 'vm0', kind: 'vhost-user', peer: 's0', queuePairs: 1 },
    { name: 'vm4', kind: 'vhost-user', peer: '', queuePairs: 1 },
  ]);
  t.match(await run('add', `vm3=${tmp.sock('vm3')}`, '--wire', 'vm4'), { code: 0 }, 'the name and path can be used again');

  // Over TCP: reads as before; changes refused, since serve was not started with --api-tcp.
  const tcpList = await runCli(['port', 'list', '--url', base]);
  t.equal(tcpList.code, 0);
  t.match(tcpList.stdout, /^vm3 +vhost-user +disconnected +1 +vm4 /m);
  t.match(await runCli(['port', 'del', 'vm3', '--url', base]), {
    code: 1,
    stderr: /^vhostwire port: http:\/\/127\.0\.0\.1:\d+\/api\/ports\/vm3: HTTP 403: changes are not accepted over TCP/,
  });

  serve.kill('SIGTERM');
  t.same(await serve.wait(), { code: 0, signal: null });
  t.notOk(fs.existsSync(api), 'the API socket is removed on exit');
  t.notOk(fs.existsSync(tmp.sock('vm3')), 'and so are the sockets of ports added at run time');
});

t.test('--api-group needs --api, and one group', async (t) => {
  t.match(await runCli(['serve', '--sink', 's0', '--api-group', 'daemon']), {
    code: 2,
    stderr: 'vhostwire serve: --api-group: only meaningful with --api PATH\n',
  });
  t.match(await runCli(['serve', '--sink', 's0', '--api', '/tmp/x.sock', '--api-owner', 'root:root', '--api-group', 'daemon']), {
    code: 2,
    stderr: 'vhostwire serve: --api-group: the group is given twice: once here and once in --api-owner USER:GROUP; give one\n',
  });
  t.match(await runCli(['serve', '--sink', 's0', '--api', '/tmp/x.sock', '--api-group', 'no-such-group-here']), {
    code: 2,
    stderr:
      'vhostwire serve: --api-group "no-such-group-here": no group named "no-such-group-here" (getent group no-such-group-here found nothing)\n',
  });
});
