// Guest memory takes bounded address space (issue 15, deliverable 2). Hostile front ends (our own
// virtio_user, raw messages over the real socket) announce regions on sparse memfds: a file of
// terabytes costs the host no memory, and before these bounds it cost the backend its address space
// (a region was mapped from offset 0 of its file, with no cap), until V8 and thread stacks could not
// allocate any more. Checked here against the process's own VmSize and mappings, and the addon's count.
//
// - a region maps only its own pages, however far into the file it starts;
// - a region, or a port's table, beyond the per-port cap is refused, mapping nothing;
// - all ports together are capped per process;
// - only regular files are memory: character devices are refused (gap G7).
import * as fs from 'node:fs';
import t, { type Test } from 'tap';
import { native } from '../../src/native';
import type { NativeVirtioUser } from '../../src/harness/frontend-native';
import { Fixture, frame, receiveN, waitFor } from '../support/fixture';
import { REQ, type Reg, memTable, memReg, ack } from '../support/vhost-user-wire';

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
const TiB = 1024 * GiB;
// Far above the front ends' own memory, in guest physical and in their user addresses.
const G = 1n << 46n;
const U = 0x5000_0000_0000n;
// VmSize moves by a few MiB on its own (V8, malloc arenas, tap); the attacks below are measured in GiB.
const VM_SLACK = 256 * MiB;

function vmSize(): number {
  const m = /^VmSize:\s+(\d+) kB$/m.exec(fs.readFileSync('/proc/self/status', 'utf8'));
  if (!m) throw new Error('no VmSize in /proc/self/status');
  return Number(m[1]) * KiB;
}
function memfdMaps(): number {
  return fs
    .readFileSync('/proc/self/maps', 'utf8')
    .split('\n')
    .filter((l) => l.includes('/memfd:')).length;
}
const mapped = (): number => native.guestMemory().mappedBytes;
const defaults = native.guestMemory();

const f = new Fixture('kernel', [-1]);
t.teardown(() => {
  native.setGuestMemoryLimits({ maxPerPort: defaults.maxPerPort, maxPerProcess: defaults.maxPerProcess });
  f.close();
});
// Each attack below is many refused messages on one connection: the reject limit is lifted.
const vp = f.vhost('v', 1, false, { rejectLimit: 1 << 20 });
const wp = f.vhost('w', 1, false, { rejectLimit: 1 << 20 });
f.engine.wire('v', 'w');

/** A connected front end on a port, with 4 MiB of memory of its own; closed at the end of the test. */
async function frontEnd(tt: Test, port: string, path: string): Promise<NativeVirtioUser> {
  const h = f.peer({ path, memSize: 4 * MiB, timeoutMs: 3000 });
  await f.waitConnected(port);
  tt.teardown(() => h.close());
  return h;
}

/** A sparse memfd of `size` bytes (no page of it is ever touched), closed at the end of the test. */
function sparse(tt: Test, h: NativeVirtioUser, size: number): number {
  const fd = h.makeFd('memfd', 4096);
  fs.ftruncateSync(fd, size);
  tt.teardown(() => fs.closeSync(fd));
  return fd;
}

function errorsOf(port: string, since: number): string[] {
  return f.events
    .slice(since)
    .filter((e) => e.port === port && e.kind === 'error')
    .map((e) => e.reason);
}

/** The pair v<->w still forwards one frame each way (the attacks must not cost the others). */
async function pairWorks(tt: Test, v: NativeVirtioUser, w: NativeVirtioUser, what: string): Promise<void> {
  for (const [a, b, dir, seq] of [
    [v, w, 'v to w', 1],
    [w, v, 'w to v', 2],
  ] as const) {
    const sent = frame(128, seq);
    tt.ok(a.send(0, sent), `${what}: queued ${dir}`);
    const got = await receiveN(b, 1, 0, 3000);
    tt.ok(got[0]?.equals(sent), `${what}: the frame arrived ${dir}, unchanged`);
  }
}

t.test('the defaults: 1 TiB per port, 16 TiB per process, nothing mapped before a front end', async (t) => {
  t.equal(defaults.maxPerPort, 1 * TiB);
  t.equal(defaults.maxPerProcess, 16 * TiB);
  t.equal(defaults.mappedBytes, 0);
});

t.test('a region far into a sparse file maps only its own pages', async (t) => {
  const v = await frontEnd(t, 'v', vp);
  const w = await frontEnd(t, 'w', wp);
  const fd = sparse(t, v, 5 * TiB);
  const vm0 = vmSize();
  const m0 = mapped();
  const maps0 = memfdMaps();
  // 24 regions at the end of one 5 TiB file: mapped from the start of the file, as before, they took
  // 120 TiB of the 128 TiB a process has. A gap between them in the file keeps the kernel from merging
  // their mappings, so that each shows in /proc/self/maps.
  const regs = Array.from({ length: 24 }, (_, i): Reg => ({
    gpa: G + BigInt(i) * BigInt(GiB),
    size: BigInt(MiB),
    uaddr: U + BigInt(i) * BigInt(GiB),
    offset: BigInt(5 * TiB - (i + 1) * 2 * MiB),
  }));
  let accepted = 0;
  for (const r of regs) if (ack(v, REQ.ADD_MEM_REG, memReg(r), [fd]) === 0n) accepted++;
  t.equal(accepted, 24, 'all 24 regions are accepted: they are within the file and small');
  t.equal(mapped() - m0, 24 * MiB, 'the addon maps 24 MiB for them, one MiB each');
  t.equal(memfdMaps() - maps0, 24, 'one mapping per region');
  const grown = vmSize() - vm0;
  t.ok(grown < 24 * MiB + VM_SLACK, `VmSize grew by ${(grown / MiB).toFixed(0)} MiB, not by terabytes`);
  await pairWorks(t, v, w, 'with the 24 regions');
  for (const r of regs) t.equal(ack(v, REQ.REM_MEM_REG, memReg(r)), 0n, 'removed again');
  t.equal(mapped(), m0, 'and unmapped');
  t.equal(memfdMaps(), maps0, 'their mappings are gone');
});

t.test('regions beyond the per-port cap are refused and map nothing', async (t) => {
  const v = await frontEnd(t, 'v', vp);
  const w = await frontEnd(t, 'w', wp);
  const fd = sparse(t, v, 5 * TiB);
  const since = f.events.length;
  const vm0 = vmSize();
  const m0 = mapped();
  const maps0 = memfdMaps();
  const huge: Reg = { gpa: G, size: BigInt(2 * TiB), uaddr: U, offset: 0n };
  t.equal(ack(v, REQ.SET_MEM_TABLE, memTable([huge]), [fd]), 1n, 'SET_MEM_TABLE with a 2 TiB region: refused');
  t.equal(ack(v, REQ.ADD_MEM_REG, memReg(huge), [fd]), 1n, 'ADD_MEM_REG of a 2 TiB region: refused');
  // The issue's attack: one region after another on the same sparse file, each large.
  let accepted = 0;
  for (let i = 0; i < 24; i++) {
    const r: Reg = { gpa: G + BigInt(i) * BigInt(TiB), size: BigInt(256 * GiB), uaddr: U + BigInt(i) * BigInt(TiB), offset: 0n };
    if (ack(v, REQ.ADD_MEM_REG, memReg(r), [fd]) === 0n) accepted++;
  }
  t.equal(accepted, 3, "3 regions of 256 GiB fit beside the front end's own 4 MiB under the 1 TiB cap; the other 21 are refused");
  t.equal(mapped() - m0, 3 * 256 * GiB, 'the addon maps those three, nothing of the refused ones');
  t.equal(memfdMaps() - maps0, 3, 'one mapping each');
  const grown = vmSize() - vm0;
  t.ok(grown <= 768 * GiB + VM_SLACK, `VmSize grew by ${(grown / GiB).toFixed(1)} GiB: at most the cap`);

  await waitFor('the refusals reported', () => errorsOf('v', since).length >= 23);
  const errors = errorsOf('v', since);
  t.equal(errors.length, 23, 'each refusal is one event');
  t.match(
    errors[0],
    /^VHOST_USER_SET_MEM_TABLE was rejected: region 0 is unusable: memory region 0x400000000000\+0x20000000000: mapping it takes 2199023255552 bytes \(2 TiB\), and the other regions of the port's table map 0 bytes, over the limit of 1099511627776 bytes \(1 TiB\) per port; give the guest less memory, or raise the limit/,
    'the new table alone is over the cap: the message names the region, the sizes, the limit and what to do',
  );
  t.match(
    errors[1],
    /^VHOST_USER_ADD_MEM_REG was rejected: .*and the other regions of the port's table map 4194304 bytes \(4 MiB\), over the limit of 1099511627776 bytes \(1 TiB\) per port/,
    'a region added to a table counts the table',
  );
  t.match(
    errors[2],
    `the other regions of the port's table map ${3 * 256 * GiB + 4 * MiB} bytes (768 GiB)`,
    "the fourth large region is refused with the three before it and the front end's own counted",
  );
  await pairWorks(t, v, w, 'after the refusals');
  t.equal(f.port('v').memRegions, 4, "the table holds the front end's own region and the three accepted");
  for (let i = 0; i < 3; i++) {
    const r: Reg = { gpa: G + BigInt(i) * BigInt(TiB), size: BigInt(256 * GiB), uaddr: U + BigInt(i) * BigInt(TiB), offset: 0n };
    t.equal(ack(v, REQ.REM_MEM_REG, memReg(r)), 0n, `region ${i} removed`);
  }
  t.equal(mapped(), m0, 'everything unmapped again');
});

t.test('all ports together are capped per process', async (t) => {
  const v = await frontEnd(t, 'v', vp);
  const w = await frontEnd(t, 'w', wp);
  const fd = sparse(t, v, 4 * GiB);
  const since = f.events.length;
  const m0 = mapped();
  t.equal(m0, 8 * MiB, "both front ends' own 4 MiB are mapped");
  native.setGuestMemoryLimits({ maxPerPort: defaults.maxPerPort, maxPerProcess: m0 + 3 * GiB });
  t.teardown(() => native.setGuestMemoryLimits({ maxPerPort: defaults.maxPerPort, maxPerProcess: defaults.maxPerProcess }));
  const r = (i: number): Reg => ({
    gpa: G + BigInt(i) * BigInt(4 * GiB),
    size: BigInt(2 * GiB),
    uaddr: U + BigInt(i) * BigInt(4 * GiB),
    offset: 0n,
  });
  t.equal(ack(v, REQ.ADD_MEM_REG, memReg(r(0)), [fd]), 0n, 'v: 2 GiB accepted');
  t.equal(ack(w, REQ.ADD_MEM_REG, memReg(r(1)), [fd]), 1n, 'w: 2 GiB more refused, although w alone is far under the per-port cap');
  t.equal(mapped(), m0 + 2 * GiB, "only v's region is mapped");
  await waitFor('the refusal reported', () => errorsOf('w', since).length >= 1);
  t.match(
    errorsOf('w', since)[0],
    /mapping it takes 2147483648 bytes \(2 GiB\), and the process already maps 2155872256 bytes \(2\.008 GiB\) for all its ports, over the limit of 3229614080 bytes \(3\.008 GiB\) per process; disconnect guests/,
    'the message says the process maps too much, and how much',
  );
  t.equal(ack(v, REQ.REM_MEM_REG, memReg(r(0))), 0n, 'v removes its region');
  t.equal(ack(w, REQ.ADD_MEM_REG, memReg(r(1)), [fd]), 0n, "then w's fits");
  t.equal(ack(w, REQ.REM_MEM_REG, memReg(r(1))), 0n, 'and goes again');
  t.equal(mapped(), m0, "back to the front ends' own memory");
  await pairWorks(t, v, w, 'after the per-process refusal');
});

t.test('character devices are not memory (G7): /dev/zero and /dev/null refused', async (t) => {
  const v = await frontEnd(t, 'v', vp);
  const w = await frontEnd(t, 'w', wp);
  const since = f.events.length;
  const m0 = mapped();
  const maps0 = fs
    .readFileSync('/proc/self/maps', 'utf8')
    .split('\n')
    .filter((l) => l.includes('/dev/zero')).length;
  for (const dev of ['/dev/zero', '/dev/null']) {
    const fd = fs.openSync(dev, 'r+');
    try {
      const r: Reg = { gpa: G, size: BigInt(MiB), uaddr: U, offset: 0n };
      t.equal(ack(v, REQ.ADD_MEM_REG, memReg(r), [fd]), 1n, `ADD_MEM_REG on ${dev}: refused`);
      t.equal(ack(v, REQ.SET_MEM_TABLE, memTable([r]), [fd]), 1n, `SET_MEM_TABLE on ${dev}: refused`);
    } finally {
      fs.closeSync(fd);
    }
  }
  t.equal(mapped(), m0, 'nothing mapped');
  t.equal(
    fs
      .readFileSync('/proc/self/maps', 'utf8')
      .split('\n')
      .filter((l) => l.includes('/dev/zero')).length,
    maps0,
    'no mapping of /dev/zero',
  );
  await waitFor('the refusals reported', () => errorsOf('v', since).length >= 4);
  for (const e of errorsOf('v', since))
    t.match(
      e,
      /its file descriptor is a character device; guest memory must be a regular file shared with the guest \(memfd, hugetlbfs or tmpfs/,
      'named as a character device, with what to use instead',
    );
  t.equal(f.port('v').memRegions, 1, 'the old table stays');
  await pairWorks(t, v, w, 'after the character devices');
});
