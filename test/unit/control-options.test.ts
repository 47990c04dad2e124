// The control-plane settings of serve (--api, --api-owner, --api-tcp, --api-token-file, --user) from the
// flags and from the --config file: how they merge, what only the whole configuration can tell, and
// what is refused, each with a one-line message naming the flag or key. No addon, no processes but
// getent, which resolves the users and groups.
import t, { type Test } from 'tap';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { buildServeConfig, UsageError, type ServeFlags } from '../../src/config/options';
import { tempDir } from '../support/helpers';

function rejects(t: Test, flags: ServeFlags, message: string): void {
  t.throws(() => buildServeConfig(flags, 2), new UsageError(message), message);
}

const root = process.geteuid?.() === 0;

t.test('flags and the config file', async (t) => {
  const tmp = tempDir('vhostwire-control-');
  t.teardown(tmp.cleanup);
  const token = 'c2VjcmV0LXRva2VuLW9mLWF0LWxlYXN0LTE2';
  fs.writeFileSync(path.join(tmp.dir, 'token'), `${token}\n`, { mode: 0o600 });
  const file = path.join(tmp.dir, 'serve.json');
  fs.writeFileSync(
    file,
    JSON.stringify({
      metrics: '9470',
      api: '/run/x/api.sock',
      apiOwner: 'nobody',
      apiTcp: true,
      apiTokenFile: path.join(tmp.dir, 'token'),
    }),
  );
  const fromFile = buildServeConfig({ config: file }, 2).control;
  t.same(
    fromFile,
    { api: { path: '/run/x/api.sock', uid: 65534, gid: process.getegid?.() }, apiTcp: true, apiToken: token, user: null },
    'every key of the file, the owner resolved by name',
  );
  const merged = buildServeConfig({ config: file, api: '/run/y.sock', apiOwner: ':nogroup' }, 2).control;
  t.same(
    merged.api,
    { path: '/run/y.sock', uid: process.geteuid?.(), gid: 65534 },
    'a flag overrides its key as a whole; parts of the owner not given are the process',
  );
  t.same(
    buildServeConfig({ api: '/run/y.sock', apiOwner: '65534:65534' }, 2).control.api,
    { path: '/run/y.sock', uid: 65534, gid: 65534 },
    'numbers are taken as they are',
  );

  fs.writeFileSync(file, JSON.stringify({ apiTcp: 'yes' }));
  rejects(t, { config: file }, `--config ${JSON.stringify(file)}: apiTcp: expected true or false, got "yes"`);
  fs.writeFileSync(file, JSON.stringify({ api: 7 }));
  rejects(t, { config: file }, `--config ${JSON.stringify(file)}: api: expected a string, got 7`);
  fs.writeFileSync(file, JSON.stringify({ metrics: '9470', apiTcp: true, apiTokenFile: path.join(tmp.dir, 'none') }));
  rejects(
    t,
    { config: file },
    `--config ${JSON.stringify(file)}: apiTokenFile ${JSON.stringify(path.join(tmp.dir, 'none'))}: cannot read: ENOENT`,
  );
});

t.test('--user', { skip: root ? false : 'changing user needs root' }, async (t) => {
  t.same(buildServeConfig({ user: 'nobody' }, 2).control.user, { name: 'nobody', uid: 65534, gid: 65534, groups: [65534] });
  t.same(
    buildServeConfig({ user: 'nobody:daemon' }, 2).control.user,
    { name: 'nobody', uid: 65534, gid: 1, groups: [1] },
    'GROUP replaces the primary group',
  );
  t.same(
    buildServeConfig({ user: '4242424' }, 2).control.user,
    { name: '4242424', uid: 4242424, gid: 4242424, groups: [4242424] },
    'a uid without an entry is its own group',
  );
  t.same(
    buildServeConfig({ user: 'nobody', api: '/run/x.sock' }, 2).control.api,
    { path: '/run/x.sock', uid: 65534, gid: 65534 },
    'the API socket belongs to the user by default',
  );
  rejects(t, { user: 'nobody:' }, '--user "nobody:": expected USER or USER:GROUP');
  rejects(t, { user: 'a:b:c' }, '--user "a:b:c": expected USER or USER:GROUP');
  rejects(t, { user: '0' }, '--user "0": uid 0 is root: name the unprivileged user serve should become');
});

t.test('--user as a non-root process', { skip: root ? 'runs as root' : false }, async (t) => {
  rejects(
    t,
    { user: 'nobody' },
    `--user "nobody": changing user needs root, and this process runs as uid ${process.geteuid?.()}: start serve as that user instead, with the capabilities docs/security.md lists`,
  );
});
