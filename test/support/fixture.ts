// An engine with ports and front ends, for tests that drive the addon directly over real sockets.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { native, queueCounter, type Mode, type NativeEngine, type PortEvent, type PortInfo } from '../../src/native';
import { frontend, type NativeVirtioUser, type VirtioUserOptions } from '../../src/harness/frontend-native';
import type { UplinkDetails, VhostUserDetails } from '../../src/ports';

export const VRING_DESC_F_NEXT = 1;
export const VRING_DESC_F_WRITE = 2;
export const VRING_DESC_F_INDIRECT = 4;
export const HDR_LEN = 12;

export async function waitFor(what: string, cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

export class Fixture {
  readonly dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostwire-test-'));
  readonly events: PortEvent[] = [];
  readonly engine: NativeEngine;
  private readonly peers: NativeVirtioUser[] = [];

  constructor(mode: Mode = 'kernel', pmdCores: number[] = [-1]) {
    this.engine = new native.Engine({ pmdCores, mode, onEvent: (e) => this.events.push(e) });
  }

  sock(name: string): string {
    return path.join(this.dir, `${name}.sock`);
  }

  /** A vhost-user port; `extra` adds port options (rejectLimit, idleTimeoutMs...). */
  vhost(name: string, queuePairs = 1, client = false, extra: Record<string, string | number | boolean> = {}): string {
    const p = this.sock(name);
    this.engine.addPort('vhost-user', name, { path: p, client, queues: queuePairs, ...extra });
    return p;
  }

  peer(opts: VirtioUserOptions): NativeVirtioUser {
    const vu = new (frontend().VirtioUser)({ timeoutMs: 5000, ...opts });
    this.peers.push(vu);
    return vu;
  }

  /** A port as the addon describes it, with the fields of the kinds these tests use. */
  port(name: string): PortInfo & Partial<VhostUserDetails & UplinkDetails> {
    const p = this.engine.ports().find((x) => x.name === name);
    if (!p) throw new Error(`no port ${name}`);
    return p;
  }

  /** A queue counter of a port's queue pair, by its C++ id (RX_PACKETS, INVALID_BAD_NEXT...). */
  counter(port: string, id: string, qp = 0): bigint {
    return queueCounter(this.engine, port, id, qp);
  }

  async waitConnected(name: string): Promise<void> {
    await waitFor(`${name} to have all vrings started and enabled`, () => {
      const p = this.port(name);
      return !!p.connected && !!p.vrings && p.vrings.every((v) => v.started && v.enabled);
    });
  }

  close(): void {
    for (const p of this.peers) p.close();
    this.engine.close();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/** An Ethernet/IPv4/UDP frame of len bytes whose payload encodes seq, so reordering or corruption shows. */
export function frame(len: number, seq: number): Buffer {
  const f = Buffer.alloc(len);
  Buffer.from([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00]).copy(f);
  for (let i = 14; i < len; i++) f[i] = (seq * 31 + i) & 0xff;
  f.writeUInt32BE(seq, 14);
  return f;
}

/** Receives until count frames arrived on qp or the deadline passes. */
export async function receiveN(vu: NativeVirtioUser, count: number, qp = 0, timeoutMs = 5000): Promise<Buffer[]> {
  const got: Buffer[] = [];
  const deadline = Date.now() + timeoutMs;
  while (got.length < count && Date.now() < deadline) {
    got.push(...vu.receive(qp, count - got.length));
    if (got.length < count) await new Promise((r) => setTimeout(r, 5));
  }
  return got;
}
