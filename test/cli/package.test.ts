// `npx vhostwire ...` is what users type once the package is installed: the tarball must carry the CLI,
// the compiled TypeScript and everything node-gyp needs to build the addon on their machine.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';

t.test(
  "npm pack ships the CLI, the compiled library and the sources of both addons (the front end's for `peer`), and no tests",
  async (t) => {
    const root = path.join(__dirname, '..', '..', '..');
    const r = spawnSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: root, encoding: 'utf8' });
    t.equal(r.status, 0, `npm pack --dry-run: ${r.stderr.trim().split('\n').pop() ?? ''}`);
    const files: string[] = JSON.parse(r.stdout)[0].files.map((f: { path: string }) => f.path);
    for (const want of [
      'bin/vhostwire.js',
      'dist/src/cli/main.js',
      'dist/src/native.js',
      'binding.gyp',
      'addon/napi/binding.cc',
      'addon/virtio/split_ring.cc',
      'addon/napi/frontend.cc',
      'addon/frontend/virtio_user.cc',
      'dist/src/harness/frontend-native.js',
      'dist/src/cli/peer.js',
      'qemu/build-guest.sh',
      'package.json',
    ]) {
      t.ok(files.includes(want), `${want} is in the package`);
    }
    t.notOk(
      files.some((f) => f.startsWith('test/') || f.startsWith('dist/test/') || f.startsWith('fuzz/')),
      'no tests or fuzzers',
    );
    t.notOk(
      files.some((f) => f.startsWith('build/')),
      'no build output: the addon is built on install',
    );
  },
);

t.test('the production addon carries no test front end; the front end is an addon of its own', async (t) => {
  // Required here, not at the top: the first test needs neither addon built.
  const { native } = await import('../../src/native');
  const { frontend } = await import('../../src/harness/frontend-native');
  t.notOk('VirtioUser' in native, 'vhostwire.node exports no VirtioUser');
  t.notOk('guestBase' in native, "nor the front end's guest base");
  t.equal(typeof frontend().VirtioUser, 'function', 'vhostwire_frontend.node exports VirtioUser');
  t.equal(frontend().requests.SET_MEM_TABLE, 5, 'and the vhost-user requests by name');
});
