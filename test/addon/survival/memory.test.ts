// Survival (stage.ts): memory tables and regions that are bad in every way we could think of, and a front
// end that truncates the file behind its memory under the backend.
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import t from 'tap';
import { REQ, type Reg, memTable, memReg, ack, ask, withFds } from '../../support/vhost-user-wire';
import { VICTIM_MEM, fdCount, memfdMaps, f, victim, rxWorks, txWorks, closeVictim, survives, baseline } from './stage';

baseline();

t.test('bad memory regions are refused, mapped nothing, and leaked nothing', async (t) => {
  const v = await victim();
  const h = v.h;
  const G = 0x40_0000_0000n; // far above the victim's own memory
  const U = 0x5000_0000_0000n; // user addresses the backend never dereferences
  const M = 1n << 20n;
  const top = 1n << 64n;
  await withFds([['memfd', 1 << 20], ['memfd', 4096], 'eventfd'], h, async ([big, small, efd]) => {
    const r0 = h.regions()[0];
    const real: Reg = { gpa: r0.gpa, size: r0.size, uaddr: r0.uaddr, offset: r0.offset };
    const tables: [string, Reg[], number[], number?][] = [
      ['a region of size 0', [{ gpa: G, size: 0n, uaddr: U, offset: 0n }], [big]],
      [
        'regions overlapping in guest addresses',
        [
          { gpa: G, size: M, uaddr: U, offset: 0n },
          { gpa: G + M / 2n, size: M, uaddr: U + 2n * M, offset: 0n },
        ],
        [big, big],
      ],
      [
        'regions overlapping in user addresses',
        [
          { gpa: G, size: M, uaddr: U, offset: 0n },
          { gpa: G + 2n * M, size: M, uaddr: U + M / 2n, offset: 0n },
        ],
        [big, big],
      ],
      ['a region whose guest address wraps 2^64', [{ gpa: top - 4096n, size: M, uaddr: U, offset: 0n }], [big]],
      ['a region whose user address wraps 2^64', [{ gpa: G, size: M, uaddr: top - 4096n, offset: 0n }], [big]],
      ['a region whose file offset wraps 2^64', [{ gpa: G, size: M, uaddr: U, offset: top - 4096n }], [big]],
      ['a region larger than its 4 KiB memfd', [{ gpa: G, size: M, uaddr: U, offset: 0n }], [small]],
      ['a region at an offset beyond the end of its 4 KiB memfd', [{ gpa: G, size: 4096n, uaddr: U, offset: 4096n }], [small]],
      ['a region backed by an eventfd', [{ gpa: G, size: 4096n, uaddr: U, offset: 0n }], [efd]],
      ['no region at all', [], []],
      [
        '9 regions claimed with 8 fds',
        Array.from({ length: 8 }, (_, i) => ({ gpa: G + BigInt(i) * M, size: 4096n, uaddr: U + BigInt(i) * M, offset: 0n })),
        Array(8).fill(small),
        9,
      ],
      [
        '7 good regions and a bad eighth',
        Array.from({ length: 8 }, (_, i) => ({ gpa: G + BigInt(i) * M, size: i === 7 ? 0n : 4096n, uaddr: U + BigInt(i) * M, offset: 0n })),
        Array(8).fill(small),
      ],
      ['the real region plus one overlapping it', [real, { gpa: real.gpa + 4096n, size: 4096n, uaddr: U, offset: 0n }], [h.memFd(), small]],
    ];
    for (const [what, regs, fds, n] of tables) {
      const before = fdCount();
      const maps = memfdMaps();
      t.equal(ack(h, REQ.SET_MEM_TABLE, memTable(regs, n ?? regs.length), fds), 1n, `SET_MEM_TABLE with ${what}: refused`);
      t.equal(fdCount(), before, `${what}: no fd kept`);
      t.equal(memfdMaps(), maps, `${what}: no mapping kept`);
      t.equal(f.port('v').memRegions, 1, `${what}: the old table stays`);
    }
    const adds: [string, Reg, number[]][] = [
      ['of size 0', { gpa: G, size: 0n, uaddr: U, offset: 0n }, [small]],
      ["overlapping the victim's memory", { gpa: real.gpa + 4096n, size: 4096n, uaddr: U, offset: 0n }, [small]],
      ["overlapping the victim's user addresses", { gpa: G, size: 4096n, uaddr: real.uaddr + 4096n, offset: 0n }, [small]],
      ['beyond the end of its memfd', { gpa: G, size: 8192n, uaddr: U, offset: 0n }, [small]],
      ['whose guest address wraps', { gpa: top - 4096n, size: 8192n, uaddr: U, offset: 0n }, [small]],
      ['backed by an eventfd', { gpa: G, size: 4096n, uaddr: U, offset: 0n }, [efd]],
    ];
    for (const [what, r, fds] of adds) {
      const before = fdCount();
      const maps = memfdMaps();
      t.equal(ack(h, REQ.ADD_MEM_REG, memReg(r), fds), 1n, `ADD_MEM_REG of a region ${what}: refused`);
      t.equal(fdCount(), before, `ADD_MEM_REG ${what}: no fd kept`);
      t.equal(memfdMaps(), maps, `ADD_MEM_REG ${what}: no mapping kept`);
    }

    // More regions than slots: fill the table, one more is refused, then empty it again.
    const slots = Number(ask(h, REQ.GET_MAX_MEM_SLOTS, Buffer.alloc(0)).readBigUInt64LE(0));
    const maps = memfdMaps();
    const fds0 = fdCount();
    const extra = Array.from({ length: slots - 1 }, (_, i) => ({
      gpa: G + BigInt(i) * M,
      size: 4096n,
      uaddr: U + BigInt(i) * M,
      offset: 0n,
    }));
    let accepted = 0;
    for (const r of extra) if (ack(h, REQ.ADD_MEM_REG, memReg(r), [small]) === 0n) accepted++;
    t.equal(accepted, slots - 1, `${slots - 1} more regions fill the ${slots} slots`);
    t.equal(f.port('v').memRegions, slots, `the table holds ${slots} regions`);
    t.equal(
      ack(h, REQ.ADD_MEM_REG, memReg({ gpa: G + 100n * M, size: 4096n, uaddr: U + 100n * M, offset: 0n }), [small]),
      1n,
      `region ${slots + 1} is refused`,
    );
    t.equal(memfdMaps(), maps + slots - 1, 'exactly one mapping per accepted region');
    let removed = 0;
    for (const r of extra) if (ack(h, REQ.REM_MEM_REG, memReg(r)) === 0n) removed++;
    t.equal(removed, slots - 1, 'all removed again');
    t.equal(memfdMaps(), maps, 'their mappings are gone');
    t.equal(fdCount(), fds0, 'and their fds');
  });
  t.equal(f.port('v').memRegions, 1, "the victim's own table is what remains");
  t.ok(h.connected() && f.port('v').connected, 'the victim is still connected');
  await rxWorks(t, h, 'bad regions');
  await txWorks(t, h, 'bad regions');
  v.check(t);
  await closeVictim(v);
  await survives(t, 'bad memory regions');
});

// A front end may truncate the file behind its memory after SET_MEM_TABLE; the next access to a lost
// page raises SIGBUS. Three places touch guest memory, each attacked here: the PMD reading a ring, the
// PMD copying a packet out of the victim into a good guest (the one-copy path, so the fault hits in the
// good port's tx_burst), and the control thread starting a vring. Run in a child process: should the
// fault handling regress, the SIGBUS kills the child, not the suite.
t.test('a front end that truncates its memory file after SET_MEM_TABLE breaks only its own rings', async (t) => {
  const dist = path.resolve(__dirname, '..', '..', '..');
  const script = `
    const fs = require('fs');
    const { Fixture, frame, receiveN, waitFor } = require(${JSON.stringify(path.join(dist, 'test', 'support', 'fixture.js'))});
    const out = {};
    (async () => {
      const f = new Fixture('kernel', [-1]);
      const broken = (port) => f.events.filter((e) => e.port === port && e.kind === 'ring-broken').map((e) => [e.queue, e.reason]);
      const PAGE = 4096n;

      // 1. The payload of a transmitted frame lies in a page the victim then cuts off; its header does not.
      const vp = f.vhost('v'), gp = f.vhost('g');
      f.engine.wire('v', 'g');
      const hv = f.peer({ path: vp, memSize: ${VICTIM_MEM} });
      const hg = f.peer({ path: gp });
      await f.waitConnected('v');
      await f.waitConnected('g');
      const r0 = hv.regions()[0];
      const hdr = hv.alloc(64);
      const area = hv.alloc(3 * 4096);
      const cut = ((area - r0.gpa + r0.offset + PAGE - 1n) / PAGE) * PAGE;  // a page boundary in area, as a file offset
      const payload = cut - r0.offset + r0.gpa;
      hv.memWrite(hdr, Buffer.alloc(12));
      hv.memWrite(payload, frame(64, 1));
      hv.rawDesc(1, 0, { addr: hdr, len: 12, flags: 1, next: 1 });
      hv.rawDesc(1, 1, { addr: payload, len: 64, flags: 0, next: 0 });
      fs.ftruncateSync(hv.memFd(), Number(cut));
      hv.rawAvailPush(1, 0);
      hv.kick(1);
      await waitFor('v broken', () => broken('v').length === 2);
      out.copy = {
        v: broken('v').sort(), g: broken('g'),
        memoryGone: Number(f.counter('v', 'INVALID_MEMORY_GONE')), gTx: Number(f.counter('g', 'TX_PACKETS')),
      };
      // Nothing of g's receive ring stays taken: the chain popped for the aborted copy went back.
      const base = hg.restartVring(0);
      out.copy.gHeld = (base - hg.rawUsedIdx(0) + 65536) % 65536;
      hv.close();
      // A new front end on v, and g, exchange frames both ways.
      const hv2 = f.peer({ path: vp });
      await waitFor('v again', () => f.port('v').connected && f.port('v').vrings.every((r) => r.started && r.enabled && !r.broken));
      hv2.send(0, frame(100, 2));
      hg.send(0, frame(200, 3));
      out.copy.after = [(await receiveN(hg, 1))[0].length, (await receiveN(hv2, 1))[0].length];
      f.engine.unwire('v');

      // 2. A gen feeds w; w's front end truncates its memory to nothing: the PMD faults on the rings.
      const wp = f.vhost('w');
      f.engine.addPort('gen', 'gen', { size: 64, rate: 5000, count: 0 });
      f.engine.wire('w', 'gen');
      const hw = f.peer({ path: wp, memSize: ${VICTIM_MEM} });
      await f.waitConnected('w');
      await waitFor('gen traffic into w', () => f.counter('w', 'TX_PACKETS') > 0n);
      fs.ftruncateSync(hw.memFd(), 0);
      await waitFor('w broken', () => broken('w').length === 2);
      out.rings = { w: broken('w').sort() };

      // 3. The control thread: restarting a vring reads its used ring, which is gone too.
      const errors = f.events.length;
      try { hw.restartVring(0); out.rings.restart = 'accepted'; } catch (e) { out.rings.restart = String(e.message); }
      const werr = () => f.events.slice(errors).filter((e) => e.port === 'w' && e.kind === 'error');
      await waitFor('an error event for w', () => werr().length > 0).catch(() => {});
      out.rings.errors = f.events.slice(errors).filter((e) => e.port === 'w' && e.kind === 'error').map((e) => e.reason);
      out.rings.connected = f.port('w').connected;
      f.close();
      out.alive = true;
      console.log(JSON.stringify(out));
      process.exit(0);
    })().catch((e) => { console.log(JSON.stringify({ error: String(e && e.stack || e) })); process.exit(1); });`;
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 30000 });
  t.same({ status: r.status, signal: r.signal }, { status: 0, signal: null }, 'the backend process survives every truncation');
  const line = r.stdout.trim().split('\n').pop() ?? '';
  // What the child prints: each half reports what it saw, or an error if it died on the way.
  let out: {
    error?: string;
    copy?: { v: unknown; memoryGone: number; g: unknown; gTx: number; gHeld: number; after: unknown };
    rings?: { w: unknown; restart: string; errors: string[]; connected: boolean };
  } = {};
  try {
    out = JSON.parse(line);
  } catch {
    t.fail(`the child printed no result: ${r.stdout.slice(-500)} ${r.stderr.slice(-500)}`);
    return;
  }
  t.notOk(out.error, 'the child ran to the end');
  t.same(
    out.copy?.v,
    [
      [0, 'memory_gone'],
      [1, 'memory_gone'],
    ],
    "payload cut off: both of the victim's vrings broken, memory_gone",
  );
  t.equal(out.copy?.memoryGone, 2, 'INVALID_MEMORY_GONE counted once per broken vring');
  t.same(out.copy?.g, [], 'the good port the copy was going to has no broken ring');
  t.equal(out.copy?.gTx, 0, 'the aborted frame was not counted as transmitted into g');
  t.equal(out.copy?.gHeld, 0, "g's receive chain taken for the aborted copy went back to its ring");
  t.same(out.copy?.after, [100, 200], 'a new front end on the victim port and the good port exchange frames both ways');
  t.same(
    out.rings?.w,
    [
      [0, 'memory_gone'],
      [1, 'memory_gone'],
    ],
    'rings cut off under the PMD: both vrings broken, memory_gone',
  );
  t.match(out.rings?.restart, /refused SET_VRING_KICK/, `restarting a vring in lost memory is refused (${out.rings?.restart})`);
  t.ok(
    out.rings?.errors?.some((e: string) => /truncated/.test(e)),
    `and reported as an error event naming the cause (${out.rings?.errors})`,
  );
  t.equal(out.rings?.connected, true, 'the victim stays connected');
});
