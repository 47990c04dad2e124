// Preloaded (NODE_OPTIONS=--require) into every process of the sanitizer test run: loads the ASan/UBSan
// build of the addon (VHOSTWIRE_ADDON) wherever code asks for build/Release/vhostwire.node, so that
// src/native.ts needs no change and the normal build stays where it is.
'use strict';
const path = require('node:path');

const target = process.env.VHOSTWIRE_ADDON;
if (target) {
  const dlopen = process.dlopen;
  process.dlopen = function (module, filename, ...rest) {
    if (path.basename(filename) === 'vhostwire.node') {
      filename = target;
      // Lets the test script prove that the sanitized addon is what the tests ran against.
      if (process.env.VHOSTWIRE_ADDON_LOG) require('node:fs').appendFileSync(process.env.VHOSTWIRE_ADDON_LOG, `${process.pid} ${target}\n`);
    }
    return dlopen.call(this, module, filename, ...rest);
  };
}
