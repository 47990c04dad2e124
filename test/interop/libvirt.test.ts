// The libvirt domain in qemu/ is documentation users copy: it must stay valid for libvirt itself.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

const xml = path.join(__dirname, '..', '..', '..', 'qemu', 'libvirt-vm0.xml');
const have = spawnSync('sh', ['-c', 'command -v virt-xml-validate && command -v xmllint'], { encoding: 'utf8' }).status === 0;

t.test(
  "qemu/libvirt-vm0.xml validates against libvirt's domain schema",
  { skip: have ? false : 'virt-xml-validate or xmllint is not installed (Debian: libvirt-clients libxml2-utils)' },
  async (t) => {
    const r = spawnSync('virt-xml-validate', [xml, 'domain'], { encoding: 'utf8' });
    t.equal(r.status, 0, `virt-xml-validate: ${(r.stdout + r.stderr).trim()}`);
  },
);

t.test('the domain uses a vhost-user interface with shared guest memory', async (t) => {
  const d = fs.readFileSync(xml, 'utf8');
  t.match(d, /<interface type=['"]vhostuser['"]>/, 'interface type vhostuser');
  t.match(d, /<source type=['"]unix['"][^>]*path=['"][^'"]+\.sock['"]/, 'a unix socket source');
  t.match(d, /<access mode=['"]shared['"]\s*\/>|memAccess=['"]shared['"]/, 'guest memory shared with the backend');
});
