// Prints a binding.gyp for the sanitizer build of both addons (build-asan/): the project's own
// binding.gyp with source paths pointing one directory up and ASan/UBSan compile and link flags.
// Used by scripts/test-asan.sh; the normal build in build/Release is never touched.
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const root = path.join(__dirname, '..');
const gyp = JSON.parse(fs.readFileSync(path.join(root, 'binding.gyp'), 'utf8'));
const san = ['-fsanitize=address,undefined', '-fno-sanitize=vptr', '-fno-sanitize-recover=undefined',
  '-fno-omit-frame-pointer', '-g', '-O1'];
for (const t of gyp.targets) t.sources = t.sources.map((s) => path.join('..', s));
// Flags and include directories are set once for every target (target_defaults) or in each target.
for (const t of gyp.target_defaults ? [gyp.target_defaults] : gyp.targets) {
  // Project include directories are relative to the project root too; command expansions stay as they are.
  t.include_dirs = (t.include_dirs || []).map((d) => (d.startsWith('<') ? d : path.join('..', d)));
  // Appended after the target's own -O2, so -O1 wins; vptr checks need RTTI, which node-gyp turns off.
  t.cflags = [...(t.cflags || []), ...san];
  t.cflags_cc = [...(t.cflags_cc || []), ...san];
  t.ldflags = [...(t.ldflags || []), '-fsanitize=address,undefined'];
}
process.stdout.write(JSON.stringify(gyp, null, 2) + '\n');
