// TCP frames as a guest with checksum offload sends them, built byte by byte for the offload tests.

/** The 16-bit one's-complement sum of b (RFC 1071), folded, starting from init; not inverted. */
export function sum16(b: Buffer, init = 0): number {
  let s = init;
  for (let i = 0; i + 1 < b.length; i += 2) s += b.readUInt16BE(i);
  if (b.length & 1) s += b[b.length - 1] << 8;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}

export interface Tcp {
  v6?: boolean;
  payload: Buffer;
  /** TCP flags (default ACK) */
  flags?: number;
  seq?: number;
  ack?: number;
  /** IPv4 identification */
  id?: number;
  /** TCP options (a multiple of 4 bytes) */
  options?: Buffer;
  proto?: number;
  dstMac?: Buffer;
  srcMac?: Buffer;
  /** IPv4 source and destination, 4 bytes each (IPv6 uses fixed fd00::/8 addresses) */
  srcIp?: Buffer;
  dstIp?: Buffer;
}

/** Ethernet/IPv4 or IPv6/TCP, its TCP checksum field holding the pseudo-header sum (a partial checksum). */
export function tcpFrame(o: Tcp): { frame: Buffer; l3: number; l4: number; hlen: number } {
  const opts = o.options ?? Buffer.alloc(0);
  const l3 = 14,
    l4 = l3 + (o.v6 ? 40 : 20),
    hlen = l4 + 20 + opts.length;
  const f = Buffer.alloc(hlen + o.payload.length);
  (o.dstMac ?? Buffer.from([2, 0, 0, 0, 0, 2])).copy(f, 0);
  (o.srcMac ?? Buffer.from([2, 0, 0, 0, 0, 1])).copy(f, 6);
  f.writeUInt16BE(o.v6 ? 0x86dd : 0x0800, 12);
  const tcpLen = f.length - l4;
  const proto = o.proto ?? 6;
  let pseudo: number;
  if (o.v6) {
    f[l3] = 0x60;
    f.writeUInt16BE(tcpLen, l3 + 4);
    f[l3 + 6] = proto;
    f[l3 + 7] = 64;
    for (let i = 0; i < 16; i++) {
      f[l3 + 8 + i] = 0xfd;
      f[l3 + 24 + i] = i === 15 ? 2 : 0xfd;
    }
    pseudo = sum16(f.subarray(l3 + 8, l3 + 40), tcpLen + proto);
  } else {
    f[l3] = 0x45;
    f.writeUInt16BE(f.length - l3, l3 + 2);
    f.writeUInt16BE(o.id ?? 0x1234, l3 + 4);
    f.writeUInt16BE(0x4000, l3 + 6); // DF
    f[l3 + 8] = 64;
    f[l3 + 9] = proto;
    (o.srcIp ?? Buffer.from([10, 9, 0, 1])).copy(f, l3 + 12);
    (o.dstIp ?? Buffer.from([10, 9, 0, 2])).copy(f, l3 + 16);
    f.writeUInt16BE(~sum16(f.subarray(l3, l4)) & 0xffff, l3 + 10);
    pseudo = sum16(f.subarray(l3 + 12, l3 + 20), tcpLen + proto);
  }
  f.writeUInt16BE(40000, l4);
  f.writeUInt16BE(5201, l4 + 2);
  f.writeUInt32BE(o.seq ?? 1000, l4 + 4);
  f.writeUInt32BE(o.ack ?? 77, l4 + 8);
  f[l4 + 12] = ((20 + opts.length) / 4) << 4;
  f[l4 + 13] = o.flags ?? 0x10;
  f.writeUInt16BE(1024, l4 + 14);
  f.writeUInt16BE(pseudo, l4 + 16);
  opts.copy(f, l4 + 20);
  o.payload.copy(f, hlen);
  return { frame: f, l3, l4, hlen };
}
