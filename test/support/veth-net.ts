// A network namespace holding one end of a veth pair, the other end left in ours for an uplink, and the
// frames the uplink tests send through it, built byte by byte. The namespace's kernel answers pings and
// counts what reaches its interface; a raw socket inside it sends frames the other way.
import { execFileSync, spawnSync } from 'node:child_process';

export function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8' });
}

// ---- frames, built here byte by byte ----

export function macBytes(mac: string): Buffer {
  return Buffer.from(mac.split(':').map((x) => parseInt(x, 16)));
}

export function ipBytes(addr: string): Buffer {
  return Buffer.from(addr.split('.').map(Number));
}

export function checksum(b: Buffer): number {
  let sum = 0;
  for (let i = 0; i + 1 < b.length; i += 2) sum += b.readUInt16BE(i);
  if (b.length % 2) sum += b[b.length - 1] << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** Ethernet header (with an 802.1Q tag when vid is given) followed by payload. */
export function eth(dst: string, src: string, type: number, payload: Buffer, vid?: number): Buffer {
  const tag = vid === undefined ? Buffer.alloc(0) : Buffer.from([0x81, 0x00, vid >> 8, vid & 0xff]);
  const t = Buffer.alloc(2);
  t.writeUInt16BE(type);
  return Buffer.concat([macBytes(dst), macBytes(src), tag, t, payload]);
}

export function ipv4(src: string, dst: string, proto: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(20);
  h[0] = 0x45;
  h.writeUInt16BE(20 + payload.length, 2);
  h[8] = 64;
  h[9] = proto;
  ipBytes(src).copy(h, 12);
  ipBytes(dst).copy(h, 16);
  h.writeUInt16BE(checksum(h), 10);
  return Buffer.concat([h, payload]);
}

export function icmpEcho(type: number, id: number, seq: number, data: Buffer): Buffer {
  const m = Buffer.concat([Buffer.from([type, 0, 0, 0, id >> 8, id & 0xff, seq >> 8, seq & 0xff]), data]);
  m.writeUInt16BE(checksum(m), 2);
  return m;
}

/** UDP without a checksum (allowed over IPv4); the payload's first 4 bytes are seq. */
export function udp(srcPort: number, dstPort: number, seq: number, size: number): Buffer {
  const m = Buffer.alloc(8 + size);
  m.writeUInt16BE(srcPort, 0);
  m.writeUInt16BE(dstPort, 2);
  m.writeUInt16BE(8 + size, 4);
  for (let i = 8; i < m.length; i++) m[i] = (i * 7 + seq) & 0xff;
  m.writeUInt32BE(seq, 8);
  return m;
}

// ---- the network ----

/**
 * A namespace with one end of a veth pair; the other end stays here for the uplink. queues: receive and
 * transmit queues of each end (the sender's transmit queue, picked by flow hash, is the receiver's
 * receive queue). tag tells the names of two pairs made by one process apart.
 */
export class Net {
  readonly ns: string;
  readonly host: string;
  readonly peer: string;
  readonly nsIp = '10.231.0.1';
  readonly feIp = '10.231.0.2';
  readonly broadcast = '10.231.0.255';
  readonly vid = 10;
  readonly feMac = '02:76:77:00:00:02';

  /** The namespace end's MAC (a new one after relink) */
  nsMac = '';
  private readonly queues: string;

  constructor(opts: { queues?: number; tag?: string } = {}) {
    const tag = opts.tag ?? '';
    this.ns = `vwu${tag}${process.pid}`;
    this.host = `vwh${tag}${process.pid}`;
    this.peer = `vwp${tag}${process.pid}`;
    this.queues = String(opts.queues ?? 1);
    ip('netns', 'add', this.ns);
    try {
      this.nsMac = this.link();
    } catch (e) {
      this.close();
      throw e;
    }
  }

  /** Makes the pair again after it was deleted, the same way; returns the namespace end's new MAC. */
  relink(): string {
    this.nsMac = this.link();
    return this.nsMac;
  }

  private link(): string {
    const q = this.queues;
    ip(
      'link',
      'add',
      this.host,
      'numtxqueues',
      q,
      'numrxqueues',
      q,
      'type',
      'veth',
      'peer',
      'name',
      this.peer,
      'numtxqueues',
      q,
      'numrxqueues',
      q,
      'netns',
      this.ns,
    );
    // Only the test's frames on the wire: no IPv6 (router solicitations, DAD, MLD) on any end.
    this.sysctl(undefined, `net.ipv6.conf.${this.host}.disable_ipv6`);
    this.sysctl(this.ns, `net.ipv6.conf.${this.peer}.disable_ipv6`);
    ip('-n', this.ns, 'addr', 'add', `${this.nsIp}/24`, 'dev', this.peer);
    ip('-n', this.ns, 'link', 'set', this.peer, 'up');
    ip('link', 'set', this.host, 'up');
    // The front end answers no ARP: the namespace knows its address statically.
    ip('-n', this.ns, 'neigh', 'add', this.feIp, 'lladdr', this.feMac, 'dev', this.peer, 'nud', 'permanent');
    return (JSON.parse(ip('-n', this.ns, '-j', 'link', 'show', this.peer)) as Array<{ address: string }>)[0].address;
  }

  private sysctl(ns: string | undefined, key: string): void {
    const args = ['sysctl', '-qw', `${key}=1`];
    execFileSync(ns === undefined ? args[0] : 'ip', ns === undefined ? args.slice(1) : ['netns', 'exec', ns, ...args]);
  }

  /** The namespace end's interface counters, as the kernel keeps them. */
  peerStats(): { rxPackets: number; rxBytes: number; txPackets: number } {
    const [l] = JSON.parse(ip('-n', this.ns, '-s', '-j', 'link', 'show', this.peer)) as Array<{
      stats64: { rx: { packets: number; bytes: number }; tx: { packets: number } };
    }>;
    return { rxPackets: l.stats64.rx.packets, rxBytes: l.stats64.rx.bytes, txPackets: l.stats64.tx.packets };
  }

  private hostLink(): { promiscuity: number; xdp?: { prog?: { id: number } } } {
    return (JSON.parse(ip('-d', '-j', 'link', 'show', this.host)) as Array<{ promiscuity: number; xdp?: { prog?: { id: number } } }>)[0];
  }

  /** The id of the XDP program attached to the host end, if any. */
  hostXdpProgram(): number | undefined {
    return this.hostLink().xdp?.prog?.id;
  }

  /** How many holders keep the uplink's interface promiscuous (packet sockets do not show in its flags). */
  hostPromiscuity(): number {
    return this.hostLink().promiscuity;
  }

  /** Sends frames out of the namespace end through a raw socket inside the namespace, paced by bursts. */
  sendFromNamespace(frames: Buffer[]): void {
    const py = [
      'import socket, sys, time',
      's = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)',
      's.bind((sys.argv[1], 0))',
      'for i, line in enumerate(sys.stdin):',
      '    s.send(bytes.fromhex(line.strip()))',
      '    if i % 32 == 31: time.sleep(0.002)',
    ].join('\n');
    const r = spawnSync('ip', ['netns', 'exec', this.ns, 'python3', '-c', py, this.peer], {
      input: frames.map((f) => f.toString('hex')).join('\n') + '\n',
      encoding: 'utf8',
    });
    if (r.status !== 0) throw new Error(`python3 in ${this.ns} failed (${r.status}): ${r.stderr || r.error}`);
  }

  /** Drops either end of the pair counted (the host end's backlog or XDP ring full, the peer's transmit). */
  linkDrops(): { hostRx: number; peerTx: number } {
    const dropped = (args: string[], dev: string): { rx: number; tx: number } => {
      const [l] = JSON.parse(ip(...args, '-s', '-j', 'link', 'show', dev)) as Array<{
        stats64: { rx: { dropped: number }; tx: { dropped: number } };
      }>;
      return { rx: l.stats64.rx.dropped, tx: l.stats64.tx.dropped };
    };
    return { hostRx: dropped([], this.host).rx, peerTx: dropped(['-n', this.ns], this.peer).tx };
  }

  /** Sends one frame n times out of the namespace end as fast as a raw socket goes; returns how many sent. */
  floodFromNamespace(frame: Buffer, n: number): number {
    const py = [
      'import socket, sys',
      's = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)',
      's.bind((sys.argv[1], 0))',
      'f = bytes.fromhex(sys.argv[2])',
      'sent = 0',
      'for i in range(int(sys.argv[3])):',
      '    sent += s.send(f) == len(f)',
      'print(sent)',
    ].join('\n');
    const r = spawnSync('ip', ['netns', 'exec', this.ns, 'python3', '-c', py, this.peer, frame.toString('hex'), String(n)], {
      encoding: 'utf8',
    });
    if (r.status !== 0) throw new Error(`python3 in ${this.ns} failed (${r.status}): ${r.stderr || r.error}`);
    return Number(r.stdout.trim());
  }

  close(): void {
    spawnSync('ip', ['link', 'del', this.host], { stdio: 'ignore' });
    spawnSync('ip', ['netns', 'del', this.ns], { stdio: 'ignore' });
  }
}
