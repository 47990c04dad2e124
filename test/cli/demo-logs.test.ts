// `vhostwire demo` keeps the guest consoles of a failed VM run in a directory of its own (issue 15,
// deliverable 5). It used to write them to /tmp/vhostwire-demo-vm0.log and -vm1.log: names anyone can
// predict, so another user could plant a symlink there for a demo run as root to write through.
//
// The VMs are made to fail by a qemu-system-x86_64 of our own first in PATH, which prints a line and
// exits; TMPDIR points the demo at a directory of the test's, where symlinks wait at the old names.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';
import { guestCacheDir } from '../../src/harness/vm';
import { BIN, ROOT } from '../support/helpers';

t.test('a failed VM run leaves its consoles in a fresh private directory, not at fixed names', async (t) => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostwire-test-demo-'));
  t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));

  // The real guest, copied so that the fake QEMU's accelerator probe lands in our cache, not the user's.
  const cache = path.join(tmp, 'cache');
  fs.mkdirSync(cache);
  for (const f of ['vmlinuz', 'initramfs.cpio.gz', 'stamp']) {
    const from = path.join(guestCacheDir(), f);
    if (fs.existsSync(from)) fs.copyFileSync(from, path.join(cache, f));
  }
  const bin = path.join(tmp, 'bin');
  fs.mkdirSync(bin);
  // It lingers a second after its line, so that the line is read before the demo kills the other VM
  // (the harness takes a console as it stands when the process exits).
  fs.writeFileSync(path.join(bin, 'qemu-system-x86_64'), '#!/bin/sh\necho "fake qemu for the demo-logs test"\nsleep 1\nexit 1\n', {
    mode: 0o755,
  });
  const runTmp = path.join(tmp, 'run');
  fs.mkdirSync(runTmp);
  const victim = path.join(tmp, 'victim');
  fs.writeFileSync(victim, 'untouched\n');
  for (const vm of ['vm0', 'vm1']) fs.symlinkSync(victim, path.join(runTmp, `vhostwire-demo-${vm}.log`));

  const r = spawnSync(process.execPath, [BIN, 'demo', '--seconds', '1'], {
    cwd: ROOT,
    encoding: 'utf8',
    timeout: 120_000,
    env: { ...process.env, PATH: `${bin}:${process.env.PATH}`, TMPDIR: runTmp, VHOSTWIRE_GUEST_CACHE: cache },
  });
  if (/no VMs: the guest could not be built/.test(r.stdout)) {
    t.comment(`skipped: no guest to boot (${r.stdout.split('\n')[0]})`);
    return;
  }
  t.equal(r.status, 1, 'the demo fails: the VMs did not come up');
  const m = /\(guest consoles: ([^,]+), ([^)]+)\)/.exec(r.stderr);
  t.ok(m, `it says where the consoles are (stderr: ${r.stderr.trim()})`);
  if (!m) return;
  const logs = [m[1], m[2]];
  const dir = path.dirname(logs[0]);
  t.equal(path.dirname(logs[1]), dir, 'both in one directory');
  t.match(path.basename(dir), /^vhostwire-demo-logs-[A-Za-z0-9]{6}$/, 'a mkdtemp directory');
  t.equal(path.dirname(dir), runTmp, 'under TMPDIR');
  t.equal(fs.statSync(dir).mode & 0o777, 0o700, 'that only its owner can enter');
  for (const [i, log] of logs.entries()) {
    t.equal(path.basename(log), `vm${i}.log`);
    const st = fs.lstatSync(log);
    t.ok(st.isFile(), `${path.basename(log)} is a plain file`);
    t.equal(st.mode & 0o777, 0o600, `${path.basename(log)} is mode 0600`);
    t.match(fs.readFileSync(log, 'utf8'), /fake qemu for the demo-logs test/, `${path.basename(log)} holds the console`);
  }
  t.equal(fs.readFileSync(victim, 'utf8'), 'untouched\n', 'the file the planted symlinks point to is untouched');
});
