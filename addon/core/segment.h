// Software segmentation: a TCP super-frame (virtio-net GSO_TCPV4/TCPV6) or a UDP one (GSO_UDP_L4, as
// Linux's UDP_SEGMENT makes) cut into frames of gso_size payload bytes each, for a destination that does
// not take super-frames, as a NIC's TSO or Linux's GSO would cut it. Every segment gets its own copy of
// the headers (IPv4 total length, identification and header checksum, IPv6 payload length, TCP sequence
// number, flags and checksum, or UDP length and checksum, rewritten); its payload stays where it is, as
// spans into the source packet, so nothing is copied twice.
//
// TCP flags (RFC 793, RFC 3168 6.1.2): FIN and PSH only on the last segment, CWR only on the first;
// everything else as the super-frame had it. The headers are parsed from a private copy of the frame's
// first bytes, each length checked against the frame before use; what cannot be parsed (IPv6 extension
// headers, IPv4 fragments, a protocol other than the gso_type says) is refused.
#pragma once

#include <cstdint>

#include "core/packet.h"

namespace vw {

class Segmenter {
 public:
  // Ethernet with two VLAN tags, IPv4 with options and TCP with options fit: 22 + 60 + 60.
  static constexpr uint32_t kMaxHeaders = 160;

  // Prepares to segment packet p of burst b (both must outlive the segmenting). false when its headers
  // cannot be parsed.
  bool start(const Burst& b, const PacketView& p);
  bool done() const { return k_ >= count_; }
  uint32_t count() const { return count_; }
  // Appends segments to out while it has room for one more packet and its spans; segment j's headers go
  // into hdrs[out.n] as it is appended (the caller's storage, kBurst rows). Returns how many it appended.
  uint16_t next(Burst& out, uint8_t (*hdrs)[kMaxHeaders]);

 private:
  const Burst* b_ = nullptr;
  const PacketView* p_ = nullptr;
  uint8_t h_[kMaxHeaders];
  uint32_t l3_ = 0, l4_ = 0, hlen_ = 0;  // offsets of the IP and TCP headers, and where the payload starts
  bool v6_ = false, udp_ = false;
  uint32_t mss_ = 0, count_ = 0, k_ = 0;  // payload bytes per segment, segments, the next one
  uint32_t seq_ = 0;
  uint16_t ip_id_ = 0;
};

}  // namespace vw
