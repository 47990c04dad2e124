// `npx vhostwire ...` is what users type once the package is installed: the tarball must carry the CLI,
// the compiled TypeScript and everything node-gyp needs to build the addon on their machine.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';

t.test('npm pack ships the CLI, the compiled library and the addon sources, and no tests', async (t) => {
  const root = path.join(__dirname, '..', '..', '..');
  const r = spawnSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: root, encoding: 'utf8' });
  t.equal(r.status, 0, `npm pack --dry-run: ${r.stderr.trim().split('\n').pop() ?? ''}`);
  const files: string[] = JSON.parse(r.stdout)[0].files.map((f: { path: string }) => f.path);
  for (const want of ['bin/vhostwire.js', 'dist/src/cli/main.js', 'dist/src/native.js', 'binding.gyp', 'addon/napi/binding.cc', 'addon/virtio/split_ring.cc', 'qemu/build-guest.sh', 'package.json']) {
    t.ok(files.includes(want), `${want} is in the package`);
  }
  t.notOk(files.some((f) => f.startsWith('test/') || f.startsWith('dist/test/') || f.startsWith('fuzz/')), 'no tests or fuzzers');
  t.notOk(files.some((f) => f.startsWith('build/')), 'no build output: the addon is built on install');
});
