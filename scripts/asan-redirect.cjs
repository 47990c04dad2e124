// Preloaded (NODE_OPTIONS=--require) into every process of the sanitizer test run: loads the ASan/UBSan
// builds of the addons (from VHOSTWIRE_ADDON_DIR) wherever code asks for build/Release/vhostwire.node or
// build/Release/vhostwire_frontend.node, so that src/ needs no change and the normal build stays where it is.
'use strict';
const path = require('node:path');

const dir = process.env.VHOSTWIRE_ADDON_DIR;
const addons = new Set(['vhostwire.node', 'vhostwire_frontend.node']);
if (dir) {
  const dlopen = process.dlopen;
  process.dlopen = function (module, filename, ...rest) {
    const name = path.basename(filename);
    if (addons.has(name)) {
      filename = path.join(dir, name);
      // Lets the test script prove that the sanitized addons are what the tests ran against.
      if (process.env.VHOSTWIRE_ADDON_LOG) require('node:fs').appendFileSync(process.env.VHOSTWIRE_ADDON_LOG, `${process.pid} ${filename}\n`);
    }
    return dlopen.call(this, module, filename, ...rest);
  };
}
