// The address-space attack of issue 15, then a switch to bypass mode. Before guest memory was bounded,
// a front end that announced region after region on a sparse memfd of terabytes had the backend map
// them all: nothing cost memory, but the address space ran out, and then the next mode switch could not
// map its AF_XDP UMEM, nor V8 grow its heap. Here hostile front ends on 20 ports make that attack: the
// one as found (24 whole-file regions of 5.3 TiB), then ports that take every hole left with ever
// smaller regions. Each port stops at its cap, all of them together at the process's; then the
// uplink switches to AF_XDP and carries frames.
//
// The uplink is one end of a veth pair; the other end is in a namespace created here (and removed),
// whose interface counters show what the uplink sent.
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import t from 'tap';
import { native } from '../../src/native';
import type { NativeVirtioUser } from '../../src/harness/frontend-native';
import { Fixture, waitFor } from '../support/fixture';
import { REQ, type Reg, memTable, memReg, ack } from '../support/vhost-user-wire';

const skip = process.getuid?.() === 0 ? false : 'needs root: network namespaces, veth pairs, AF_XDP sockets';

const MiB = 2 ** 20;
const GiB = 2 ** 30;
const TiB = 2 ** 40;
// 24 of these are the whole 47-bit user address space.
const FILE = Math.floor((5.3 * TiB) / MiB) * MiB;
const VM_SLACK = 256 * MiB;

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8' });
}

function vmSize(): number {
  const m = /^VmSize:\s+(\d+) kB$/m.exec(fs.readFileSync('/proc/self/status', 'utf8'));
  if (!m) throw new Error('no VmSize in /proc/self/status');
  return Number(m[1]) * 1024;
}

const addRegion = (h: NativeVirtioUser, r: Reg, fd: number): boolean => ack(h, REQ.ADD_MEM_REG, memReg(r), [fd]) === 0n;
const setTable = (h: NativeVirtioUser, regs: Reg[], fds: number[]): boolean => ack(h, REQ.SET_MEM_TABLE, memTable(regs), fds) === 0n;

t.test('the address-space attack is refused, and a later switch to bypass mode succeeds', { skip }, async (t) => {
  const ns = `vwas${process.pid}`;
  const host = `vwah${process.pid}`.slice(0, 15);
  const peer = `vwap${process.pid}`.slice(0, 15);
  ip('netns', 'add', ns);
  t.teardown(() => {
    spawnSync('ip', ['link', 'del', host], { stdio: 'ignore' });
    spawnSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
  });
  ip('link', 'add', host, 'type', 'veth', 'peer', 'name', peer, 'netns', ns);
  // Only our frames reach the namespace: no IPv6 chatter from the host end.
  execFileSync('sysctl', ['-qw', `net.ipv6.conf.${host}.disable_ipv6=1`]);
  ip('-n', ns, 'link', 'set', peer, 'up');
  ip('link', 'set', host, 'up');
  const peerRx = (): number =>
    (JSON.parse(ip('-n', ns, '-s', '-j', 'link', 'show', peer)) as Array<{ stats64: { rx: { packets: number } } }>)[0].stats64.rx.packets;

  const f = new Fixture('kernel');
  t.teardown(() => f.close());
  const vm = f.peer({ path: f.vhost('vm') });
  f.engine.addPort('uplink', 'up', { ifname: host });
  f.engine.wire('vm', 'up');
  const PORTS = 20;
  const hostile = Array.from({ length: PORTS }, (_, i) => ({
    name: `h${i}`,
    h: f.peer({ path: f.vhost(`h${i}`, 1, false, { rejectLimit: 1 << 20 }), memSize: 4 * MiB }),
  }));
  await f.waitConnected('vm');
  for (const { name } of hostile) await f.waitConnected(name);

  const vm0 = vmSize();
  const since = f.events.length;
  const { mappedBytes: m0, maxPerPort, maxPerProcess } = native.guestMemory();
  const G = 1n << 46n;
  const U = 0x5000_0000_0000n;
  const fds: number[] = [];
  t.teardown(() => fds.forEach((fd) => fs.closeSync(fd)));
  const file = (h: NativeVirtioUser): number => {
    const fd = h.makeFd('memfd', 4096);
    fds.push(fd);
    fs.ftruncateSync(fd, FILE);
    return fd;
  };
  const at = (i: number, size: number, offset = 0): Reg => ({
    gpa: G + BigInt(i) * BigInt(8 * TiB),
    size: BigInt(size),
    uaddr: U + BigInt(i) * BigInt(8 * TiB),
    offset: BigInt(offset),
  });

  // h0, the attack as found: whole-file regions one after another, and eight of them in one table.
  const h0 = hostile[0].h;
  const fd0 = file(h0);
  let accepted = 0;
  for (let i = 0; i < 24; i++) if (addRegion(h0, at(i, FILE), fd0)) accepted++;
  if (
    setTable(
      h0,
      Array.from({ length: 8 }, (_, i) => at(i, FILE)),
      Array(8).fill(fd0),
    )
  )
    accepted++;
  t.equal(accepted, 0, 'h0: none of 24 whole-file regions, nor a table of 8, is accepted');
  // Regions at the end of the file: harmless now, they map only their own pages (a gap between them
  // in the file keeps the kernel from merging their mappings).
  let small = 0;
  for (let i = 0; i < 8; i++) if (addRegion(h0, at(24 + i, MiB, FILE - (i + 1) * 2 * MiB), fd0)) small++;
  t.equal(small, 8, 'h0: 8 regions of 1 MiB at the end of the file are accepted');
  t.equal(native.guestMemory().mappedBytes - m0, 8 * MiB, 'and map 1 MiB each');

  // The others take what they can, 4 TiB regions down to 1 MiB ones, each size until it is refused,
  // in the 31 slots a port has left: without caps they fill every hole of the address space.
  const took: number[] = [];
  for (const { h } of hostile.slice(1)) {
    const fd = file(h);
    const before = native.guestMemory().mappedBytes;
    let slot = 0;
    for (let size = 4 * TiB; size >= MiB && slot < 31; size /= 2) while (slot < 31 && addRegion(h, at(slot, size), fd)) slot++;
    took.push(native.guestMemory().mappedBytes - before);
  }
  const worst = Math.max(...took);
  t.ok(worst + 4 * MiB <= maxPerPort, `no port maps more than its cap with its own 4 MiB (the most: ${(worst / GiB).toFixed(0)} GiB)`);
  const mapped = native.guestMemory().mappedBytes;
  t.ok(mapped <= maxPerProcess, `all ports together map ${(mapped / TiB).toFixed(2)} TiB: at most the process's cap`);
  t.ok(
    took.at(-1)! < took[0],
    `the last ports got less than the first (${(took[0] / GiB).toFixed(0)} GiB, then ${(took.at(-1)! / GiB).toFixed(0)} GiB): the process cap held them back`,
  );
  const grown = vmSize() - vm0;
  t.ok(grown <= mapped - m0 + VM_SLACK, `VmSize grew by ${(grown / TiB).toFixed(2)} TiB, what the accepted regions map`);
  await waitFor('the refusals reported', () => f.events.slice(since).some((e) => / per process; /.test(e.reason)));
  t.pass('a refusal names the per-process limit');

  f.engine.setMode('bypass');
  t.equal(f.port('up').driver, 'af_xdp', 'the uplink switched to AF_XDP (its UMEM mapped)');
  const N = 100;
  const rx0 = peerRx();
  const tx0 = f.counter('up', 'TX_PACKETS');
  const frame = Buffer.alloc(128);
  Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x76, 0x77, 0, 0, 0x09, 0x88, 0xb5]).copy(frame);
  for (let i = 0; i < N; i++) {
    frame.writeUInt32BE(i, 14);
    await waitFor("room in the front end's transmit ring", () => vm.send(0, frame), 5000);
  }
  await waitFor(`${N} frames out of the AF_XDP uplink`, () => f.counter('up', 'TX_PACKETS') - tx0 >= BigInt(N), 10000);
  await waitFor(`${N} frames at the namespace's end`, () => peerRx() - rx0 >= N, 10000);
  t.equal(f.counter('up', 'TX_PACKETS') - tx0, BigInt(N), `bypass mode: the uplink sent ${N} frames`);
  t.ok(peerRx() - rx0 >= N, `and the namespace's interface received them (${peerRx() - rx0})`);
  f.engine.setMode('kernel');
  t.equal(f.port('up').driver, 'af_packet', 'and back to kernel mode');
});
