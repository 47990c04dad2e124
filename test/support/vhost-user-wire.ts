// The vhost-user wire format for tests that speak it byte by byte (the survival suite): payload
// encoders, message headers, requests sent through our front end's raw methods with their replies
// decoded, and fds made for one attack. Request numbers, flags and sizes come from the front end's
// addon (addon/ports/vhost_user/vhost_user_wire.h), never restated here.
import * as fs from 'node:fs';
import { frontend, type NativeVirtioUser, type RawDesc } from '../../src/harness/frontend-native';

const fe = frontend();

/** Request numbers by name without the VHOST_USER_ prefix: REQ.SET_MEM_TABLE. */
export const REQ = fe.requests;
export const V1 = fe.wire.version;
export const NEED_REPLY = fe.wire.needReply;
export const NOFD = BigInt(fe.wire.vringNoFd);
export const MAX_PAYLOAD = fe.wire.maxPayload;

export const u64 = (v: bigint | number): Buffer => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt.asUintN(64, BigInt(v)));
  return b;
};

/** VhostUserVringState */
export const state = (index: number, num: number): Buffer => {
  const b = Buffer.alloc(8);
  b.writeUInt32LE(index >>> 0, 0);
  b.writeUInt32LE(num >>> 0, 4);
  return b;
};

/** VhostUserVringAddr (user addresses) */
export function vringAddr(index: number, flags: number, a: { desc: bigint; used: bigint; avail: bigint }): Buffer {
  const b = Buffer.alloc(40);
  b.writeUInt32LE(index >>> 0, 0);
  b.writeUInt32LE(flags >>> 0, 4);
  b.writeBigUInt64LE(BigInt.asUintN(64, a.desc), 8);
  b.writeBigUInt64LE(BigInt.asUintN(64, a.used), 16);
  b.writeBigUInt64LE(BigInt.asUintN(64, a.avail), 24);
  return b;
}

/** VhostUserMemRegion */
export interface Reg {
  gpa: bigint;
  size: bigint;
  uaddr: bigint;
  offset: bigint;
}

function putReg(b: Buffer, at: number, r: Reg): void {
  [r.gpa, r.size, r.uaddr, r.offset].forEach((v, k) => b.writeBigUInt64LE(BigInt.asUintN(64, v), at + 8 * k));
}

/** VhostUserMemory: SET_MEM_TABLE's payload; nregions may lie about how many follow. */
export function memTable(regs: Reg[], nregions = regs.length): Buffer {
  const b = Buffer.alloc(8 + 32 * regs.length);
  b.writeUInt32LE(nregions >>> 0, 0);
  regs.forEach((r, i) => putReg(b, 8 + 32 * i, r));
  return b;
}

/** VhostUserMemRegMsg: ADD_MEM_REG's and REM_MEM_REG's payload. */
export function memReg(r: Reg): Buffer {
  const b = Buffer.alloc(40);
  putReg(b, 8, r);
  return b;
}

/** VhostUserHeader; size may lie about the payload that follows. */
export function header(request: number, flags: number, size: number): Buffer {
  const b = Buffer.alloc(fe.wire.headerSize);
  b.writeUInt32LE(request >>> 0, 0);
  b.writeUInt32LE(flags >>> 0, 4);
  b.writeUInt32LE(size >>> 0, 8);
  return b;
}

/** A split ring descriptor as it lies in guest memory (an indirect table's entry). */
export function desc(d: RawDesc): Buffer {
  const b = Buffer.alloc(16);
  b.writeBigUInt64LE(BigInt.asUintN(64, d.addr), 0);
  b.writeUInt32LE(d.len >>> 0, 8);
  b.writeUInt16LE(d.flags, 12);
  b.writeUInt16LE(d.next, 14);
  return b;
}

/** A request with NEED_REPLY: the backend's REPLY_ACK status (0 accepted, non-zero refused). */
export function ack(h: NativeVirtioUser, req: number, payload: Buffer, fds: number[] = [], flags = V1 | NEED_REPLY): bigint {
  const r = h.rawMessage(req, flags, payload, fds, true)!;
  if (r.length !== 8) throw new Error(`request ${req}: a reply of ${r.length} bytes instead of an 8-byte ack`);
  return r.readBigUInt64LE(0);
}

/** A request with a reply of its own: its payload (empty when refused). */
export function ask(h: NativeVirtioUser, req: number, payload: Buffer, fds: number[] = []): Buffer {
  return h.rawMessage(req, V1 | NEED_REPLY, payload, fds, true)!;
}

/** Fds made for one attack, closed afterwards whatever happens. */
export function withFds<T>(kinds: ('eventfd' | ['memfd', number])[], h: NativeVirtioUser, fn: (fds: number[]) => Promise<T>): Promise<T> {
  const fds = kinds.map((k) => (k === 'eventfd' ? h.makeFd('eventfd') : h.makeFd('memfd', k[1])));
  return fn(fds).finally(() => fds.forEach((fd) => fs.closeSync(fd)));
}
