// The Internet checksum (RFC 1071) over packet bytes that lie in spans, and completing a partial checksum
// the way a NIC does for a frame whose sender left it to the device (virtio-net NEEDS_CSUM,
// CHECKSUM_PARTIAL in Linux): the field at csum_start + csum_offset holds the pseudo-header sum, and
// the one's complement of the sum from csum_start to the end of the frame replaces it.
#pragma once

#include <cstdint>

#include "core/packet.h"

namespace vw {

// A running one's-complement sum, fed bytes in order; pieces of odd length are fine (RFC 1071 4.1: a
// byte at an odd offset of the whole is the low byte of its 16-bit word).
class Csum {
 public:
  void add(const uint8_t* p, uint32_t n);
  // A 16-bit value in network order, at an even offset of the whole.
  void add16(uint16_t v) { sum_ += v; }
  void add32(uint32_t v) { sum_ += (v >> 16) + (v & 0xffff); }
  // The folded sum, not complemented.
  uint16_t fold() const;
  // The checksum to store: the complement of the folded sum.
  uint16_t finish() const { return uint16_t(~fold()); }

 private:
  uint64_t sum_ = 0;
  bool odd_ = false;  // the bytes so far are odd in number: the next byte is a low byte
};

// Adds bytes [from, to) of packet p (whose spans are b.span[p.first ..]) to c.
void csum_packet(const Burst& b, const PacketView& p, uint32_t from, uint32_t to, Csum& c);

// The completed checksum of a partial-checksum packet p (meta.csum_start and csum_offset already checked
// against p.len), in network byte order as it goes into the frame. A result of 0 is sent as 0xffff, as
// Linux's skb_checksum_help does: for UDP 0 would mean "no checksum", for TCP both are the same number.
uint16_t complete_partial(const Burst& b, const PacketView& p);

}  // namespace vw
