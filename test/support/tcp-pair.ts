// Two network namespaces whose only link to each other is two veth pairs and whatever joins the host ends
// (vhostwire's uplinks on a wire or bridge, a Linux bridge, OVS): ns A -veth- hostA ... hostB -veth- ns B.
// Every veth keeps the kernel's offload defaults (TSO, GSO, checksum offload on) and has GRO turned on
// too (veth's default is off; a NIC's is on), so the two TCP stacks hand each other 64 KB super-frames
// with partial checksums. The TCP tests and the tcp benchmark both build it.
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8' });
}

/** One namespace with its end of a veth pair; the host end stays in ours. */
export interface End {
  ns: string;
  host: string;
  peer: string;
  addr: string;
}

export class TcpPair {
  readonly a: End;
  readonly b: End;

  /** tag keeps the names of two pairs made by one process apart (interface names are at most 15 bytes). */
  constructor(tag = '') {
    const id = `${tag}${process.pid}`;
    this.a = { ns: `vwta${id}`, host: `vwtha${id}`, peer: `vwtpa${id}`, addr: '10.234.0.1' };
    this.b = { ns: `vwtb${id}`, host: `vwthb${id}`, peer: `vwtpb${id}`, addr: '10.234.0.2' };
    try {
      for (const e of [this.a, this.b]) {
        ip('netns', 'add', e.ns);
        ip('link', 'add', e.host, 'type', 'veth', 'peer', 'name', e.peer, 'netns', e.ns);
        // Only the test's frames: no IPv6 (router solicitations, DAD, MLD) on any end.
        execFileSync('sysctl', ['-qw', `net.ipv6.conf.${e.host}.disable_ipv6=1`]);
        ip('netns', 'exec', e.ns, 'sysctl', '-qw', `net.ipv6.conf.${e.peer}.disable_ipv6=1`);
        ip('-n', e.ns, 'addr', 'add', `${e.addr}/24`, 'dev', e.peer);
        ip('-n', e.ns, 'link', 'set', 'lo', 'up');
        ip('-n', e.ns, 'link', 'set', e.peer, 'up');
        ip('link', 'set', e.host, 'up');
        execFileSync('ethtool', ['-K', e.host, 'gro', 'on']);
        ip('netns', 'exec', e.ns, 'ethtool', '-K', e.peer, 'gro', 'on');
      }
    } catch (e) {
      this.close();
      throw e;
    }
  }

  /** The offload features ethtool reports on an end's interfaces (namespace end, host end) that are on. */
  offloadsOn(e: End, host = false): string[] {
    const out = host
      ? execFileSync('ethtool', ['-k', e.host], { encoding: 'utf8' })
      : execFileSync('ip', ['netns', 'exec', e.ns, 'ethtool', '-k', e.peer], { encoding: 'utf8' });
    const want = ['tcp-segmentation-offload', 'generic-segmentation-offload', 'generic-receive-offload', 'tx-checksumming'];
    return want.filter((f) => new RegExp(`^${f}: on`, 'm').test(out));
  }

  /**
   * Turns the namespaces' transmit checksum offload off or on again: bypass mode's AF_XDP sockets see a
   * local sender's frames before their checksums are filled in, and cannot tell (no virtio_net_hdr).
   */
  txChecksums(on: boolean): void {
    for (const e of [this.a, this.b]) ip('netns', 'exec', e.ns, 'ethtool', '-K', e.peer, 'tx', on ? 'on' : 'off');
  }

  /** Frames and bytes an interface in our namespace has received and sent (the kernel's counters). */
  static hostStats(ifname: string): { rxPackets: number; txPackets: number; rxBytes: number; txBytes: number } {
    const [l] = JSON.parse(ip('-s', '-j', 'link', 'show', ifname)) as Array<{
      stats64: { rx: { packets: number; bytes: number }; tx: { packets: number; bytes: number } };
    }>;
    return { rxPackets: l.stats64.rx.packets, txPackets: l.stats64.tx.packets, rxBytes: l.stats64.rx.bytes, txBytes: l.stats64.tx.bytes };
  }

  close(): void {
    for (const e of [this.a, this.b]) {
      try {
        ip('link', 'del', e.host);
      } catch {
        // not made, or gone with its namespace
      }
      try {
        ip('netns', 'del', e.ns);
      } catch {
        // not made
      }
    }
  }
}

/** The bytes a transfer of n bytes carries, seeded: cheap to make again on either side, never periodic in a frame. */
export function transferBytes(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i + 4 <= n; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b.writeUInt32LE(x >>> 0, i);
  }
  return b;
}

export function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

// A TCP server in one namespace and a client in the other, both the kernel's TCP (python3's sockets): the
// client sends its bytes and half-closes, the server hashes what it got and sends its own bytes back,
// the client hashes those. Each prints its hash; stdin carries the bytes to send, hex, one line.
const SERVER = [
  'import socket, sys, hashlib',
  'data = bytes.fromhex(sys.stdin.readline().strip())',
  's = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)',
  's.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1)',
  'print("ready", flush=True)',
  'c, _ = s.accept(); c.settimeout(30); h = hashlib.sha256()',
  'while True:',
  '    d = c.recv(1 << 20)',
  '    if not d: break',
  '    h.update(d)',
  'c.sendall(data); c.close()',
  'print(h.hexdigest(), flush=True)',
].join('\n');
const CLIENT = [
  'import socket, sys, hashlib',
  'data = bytes.fromhex(sys.stdin.readline().strip())',
  'c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)',
  'c.sendall(data); c.shutdown(socket.SHUT_WR); h = hashlib.sha256()',
  'while True:',
  '    d = c.recv(1 << 20)',
  '    if not d: break',
  '    h.update(d)',
  'print(h.hexdigest(), flush=True)',
].join('\n');

function run(ns: string, script: string, args: string[], input: Buffer, onLine?: (l: string) => void): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const p = spawn('ip', ['netns', 'exec', ns, 'python3', '-c', script, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '',
      err = '';
    p.stdout.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      if (onLine) for (const l of d.split('\n').filter((x) => x)) onLine(l);
    });
    p.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    p.once('error', reject);
    p.once('exit', (code) =>
      code === 0 ? resolve(out.split('\n').filter((l) => l)) : reject(new Error(`python3 in ${ns} exited ${code}: ${err.trim()}`)),
    );
    p.stdin.end(input.toString('hex') + '\n');
  });
}

/** Moves up bytes from A to B and down bytes from B to A over one TCP connection; the hashes each side saw. */
export async function tcpTransfer(pair: TcpPair, up: Buffer, down: Buffer, port = 5301): Promise<{ atB: string; atA: string }> {
  let ready!: () => void;
  const listening = new Promise<void>((r) => (ready = r));
  const server = run(pair.b.ns, SERVER, [pair.b.addr, String(port)], down, (l) => l === 'ready' && ready());
  await Promise.race([listening, server]);
  // A client that fails leaves the server waiting for it until its own timeout: both are awaited.
  const [client, served] = await Promise.allSettled([run(pair.a.ns, CLIENT, [pair.b.addr, String(port)], up), server]);
  if (client.status === 'rejected') throw client.reason;
  if (served.status === 'rejected') throw served.reason;
  return { atB: served.value[served.value.length - 1], atA: client.value[0] };
}
