// serve's vhost-user socket options end to end (docs/security.md, "vhost-user sockets and sessions"):
// serve started under umask 000 still makes its sockets 0660, or the mode the flag or the config file
// asks for; a bad mode and a directory anyone may write without the sticky bit stop serve at start with
// a message naming the flag, the port or the directory.
import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { Cli, runCli, tempDir } from '../support/helpers';

/** Starts a Cli with umask 000, which the child inherits. */
function underUmask000<T>(fn: () => T): T {
  const old = process.umask(0);
  try {
    return fn();
  } finally {
    process.umask(old);
  }
}

t.test('serve under umask 000: socket modes from the default, the flag and the config file', async (t) => {
  const tmp = tempDir();
  t.teardown(tmp.cleanup);
  const config = path.join(tmp.dir, 'config.json');
  fs.writeFileSync(config, JSON.stringify({ vhostUser: [{ name: 'vm2', path: tmp.sock('vm2'), socketMode: '0640' }] }));
  const serve = underUmask000(
    () =>
      new Cli([
        'serve',
        '--config',
        config,
        '--vhost-user',
        `vm0=${tmp.sock('vm0')}`,
        '--vhost-user',
        `vm1=${tmp.sock('vm1')},socket-mode=0600`,
        '--mode',
        'kernel',
      ]),
  );
  t.teardown(() => serve.kill('SIGKILL'));
  await serve.line(/^ready$/);
  const mode = (name: string): number => fs.statSync(tmp.sock(name)).mode & 0o7777;
  t.equal(mode('vm0').toString(8), '660', 'the default: 0660, not 0777');
  t.equal(mode('vm1').toString(8), '600', 'socket-mode=0600');
  t.equal(mode('vm2').toString(8), '640', 'socketMode "0640" from the config file');
  serve.kill('SIGTERM');
  t.equal((await serve.wait()).code, 0, 'serve exits cleanly');
});

t.test('serve refuses a bad socket mode and a world-writable directory without the sticky bit', async (t) => {
  const tmp = tempDir();
  t.teardown(tmp.cleanup);
  const bad = await runCli(['serve', '--vhost-user', `vm0=${tmp.sock('vm0')},socket-mode=rw`]);
  t.equal(bad.code, 2, 'a usage error');
  t.match(
    bad.stderr,
    /--vhost-user "vm0=.*vm0\.sock,socket-mode=rw": socket mode must be octal permission bits such as 0660, got "rw"/,
    'naming the flag and the value',
  );
  const open = path.join(tmp.dir, 'open');
  fs.mkdirSync(open);
  fs.chmodSync(open, 0o777);
  const refused = await runCli(['serve', '--vhost-user', `vm0=${path.join(open, 'vm0.sock')}`, '--mode', 'kernel']);
  t.not(refused.code, 0, 'serve does not start');
  t.match(
    refused.stderr,
    /port "vm0": the socket's directory .*\/open is writable by every user and has no sticky bit/,
    'naming the port and the directory',
  );
  t.notOk(fs.existsSync(path.join(open, 'vm0.sock')), 'and leaves no socket behind');
});
