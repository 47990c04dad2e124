#include "core/segment.h"

#include <algorithm>
#include <cstring>

#include "core/checksum.h"
#include "virtio/virtio_spec.h"

namespace vw {

namespace {
constexpr uint16_t kEthIpv4 = 0x0800, kEthIpv6 = 0x86dd, kEth8021Q = 0x8100, kEth8021AD = 0x88a8;
constexpr uint8_t kProtoTcp = 6, kProtoUdp = 17;
constexpr uint8_t kTcpFin = 0x01, kTcpPsh = 0x08, kTcpCwr = 0x80;

uint16_t be16(const uint8_t* p) { return uint16_t(p[0] << 8 | p[1]); }
uint32_t be32(const uint8_t* p) { return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3]; }
void put16(uint8_t* p, uint16_t v) {
  p[0] = uint8_t(v >> 8);
  p[1] = uint8_t(v);
}
void put32(uint8_t* p, uint32_t v) {
  put16(p, uint16_t(v >> 16));
  put16(p + 2, uint16_t(v));
}

}  // namespace

bool Segmenter::start(const Burst& b, const PacketView& p) {
  b_ = &b;
  p_ = &p;
  k_ = count_ = 0;
  const uint32_t got = peek_packet(b, p, h_, kMaxHeaders);
  uint32_t at = 12;
  if (got < at + 2) return false;
  uint16_t type = be16(h_ + at);
  for (int tags = 0; tags < 2 && (type == kEth8021Q || type == kEth8021AD); tags++) {
    at += 4;
    if (got < at + 2) return false;
    type = be16(h_ + at);
  }
  l3_ = at + 2;
  const uint8_t gso = uint8_t(p.meta.gso_type & ~VIRTIO_NET_HDR_GSO_ECN);
  udp_ = gso == VIRTIO_NET_HDR_GSO_UDP_L4;
  const uint8_t proto = udp_ ? kProtoUdp : kProtoTcp;
  // UDP's gso_type names no IP version: the EtherType does.
  if (gso == VIRTIO_NET_HDR_GSO_TCPV4 || (udp_ && type == kEthIpv4)) {
    if (type != kEthIpv4 || got < l3_ + 20) return false;
    const uint8_t* ip = h_ + l3_;
    const uint32_t ihl = (ip[0] & 0xf) * 4u;
    // Fragments (MF set or an offset) are not segments to cut.
    if (ip[0] >> 4 != 4 || ihl < 20 || got < l3_ + ihl || (be16(ip + 6) & 0x3fff) || ip[9] != proto) return false;
    v6_ = false;
    l4_ = l3_ + ihl;
    ip_id_ = be16(ip + 4);
  } else if (gso == VIRTIO_NET_HDR_GSO_TCPV6 || (udp_ && type == kEthIpv6)) {
    if (type != kEthIpv6 || got < l3_ + 40) return false;
    const uint8_t* ip = h_ + l3_;
    if (ip[0] >> 4 != 6 || ip[6] != proto) return false;
    v6_ = true;
    l4_ = l3_ + 40;
  } else {
    return false;
  }
  if (udp_) {
    if (got < l4_ + 8) return false;
    hlen_ = l4_ + 8;
  } else {
    if (got < l4_ + 20) return false;
    const uint32_t doff = (h_[l4_ + 12] >> 4) * 4u;
    if (doff < 20 || got < l4_ + doff) return false;
    hlen_ = l4_ + doff;
    seq_ = be32(h_ + l4_ + 4);
  }
  mss_ = p.meta.gso_size;
  if (!mss_) return false;
  const uint32_t payload = p.len - hlen_;
  count_ = payload ? (payload + mss_ - 1) / mss_ : 1;
  return true;
}

uint16_t Segmenter::next(Burst& out, uint8_t (*hdrs)[kMaxHeaders]) {
  const PacketView& p = *p_;
  uint16_t made = 0;
  while (k_ < count_ && out.n < kBurst && uint32_t(out.nspans) + 1 + p.nseg <= kBurstSpans) {
    const uint32_t from = hlen_ + k_ * mss_;
    const uint32_t len = std::min(mss_, p.len - from);
    const bool first = k_ == 0, last = k_ + 1 == count_;
    uint8_t* h = hdrs[out.n];
    memcpy(h, h_, hlen_);
    uint8_t* ip = h + l3_;
    uint8_t* l4 = h + l4_;
    const uint32_t l4_len = hlen_ - l4_ + len;
    Csum c;
    if (v6_) {
      put16(ip + 4, uint16_t(l4_len));
      c.add(ip + 8, 32);
      c.add32(l4_len);
    } else {
      put16(ip + 2, uint16_t(hlen_ - l3_ + len));
      put16(ip + 4, uint16_t(ip_id_ + k_));
      put16(ip + 10, 0);
      Csum ipc;
      ipc.add(ip, l4_ - l3_);
      put16(ip + 10, ipc.finish());
      c.add(ip + 12, 8);
      c.add16(uint16_t(l4_len));
    }
    uint32_t sum_at;
    if (udp_) {
      // Each segment a datagram of its own (RFC 768): its length, its checksum.
      c.add16(kProtoUdp);
      put16(l4 + 4, uint16_t(l4_len));
      sum_at = 6;
    } else {
      c.add16(kProtoTcp);
      put32(l4 + 4, seq_ + k_ * mss_);
      if (!last) l4[13] &= uint8_t(~(kTcpFin | kTcpPsh));
      if (!first) l4[13] &= uint8_t(~kTcpCwr);
      sum_at = 16;
    }
    put16(l4 + sum_at, 0);
    c.add(l4, hlen_ - l4_);
    csum_packet(*b_, p, from, from + len, c);
    // A UDP checksum of 0 means "none" (over IPv6, not allowed): the same number is sent as 0xffff.
    const uint16_t sum = c.finish();
    put16(l4 + sum_at, udp_ && sum == 0 ? 0xffff : sum);

    PacketView& q = out.pkt[out.n++];
    q.len = hlen_ + len;
    q.first = out.nspans;
    q.cookie = p.cookie;
    q.meta = PacketMeta{};
    q.meta.flags = uint8_t(p.meta.flags & PacketMeta::kVlan);
    q.meta.vlan_tci = p.meta.vlan_tci;
    out.span[out.nspans++] = Span{h, hlen_, 0};
    emit_spans(*b_, p, from, from + len, out);
    q.nseg = uint16_t(out.nspans - q.first);
    k_++;
    made++;
  }
  return made;
}

}  // namespace vw
