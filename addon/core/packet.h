// What moves between ports: bursts of packets, each a view into memory the receiving port owns (a guest's
// buffers, a kernel ring, a UMEM frame) plus the metadata that travels with it. A port translates its own
// wire metadata (virtio-net header, PACKET_VNET_HDR, a VLAN tag the kernel took out) to and from PacketMeta,
// so forwarders and other ports never parse a header format that is not theirs.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace vw {

constexpr uint16_t kBurst = 32;         // packets per burst
constexpr uint16_t kBurstSpans = 1024;  // memory segments one burst may borrow
constexpr uint32_t kMaxFrame = 65535;   // largest frame (without virtio-net header) we forward
constexpr uint32_t kMinFrame = 60;      // shortest Ethernet frame without FCS

// A contiguous piece of a packet. gpa is the guest physical address of p when the memory is a guest's
// (for dirty-page logging while a guest migrates), 0 otherwise.
struct Span {
  uint8_t* p;
  uint32_t len;
  uint64_t gpa;
};

// Offload and tag state of one packet, in the virtio-net header's terms (virtio 1.x 5.1.6), which every
// port kind can express: a frame whose checksum is left to finish, or a super-frame to be segmented.
struct PacketMeta {
  enum : uint8_t {
    kVlan = 1 << 0,         // vlan_tci holds an 802.1Q tag that is not in the frame bytes
    kCsumPartial = 1 << 1,  // the checksum at csum_start + csum_offset is to be completed (NEEDS_CSUM)
    kCsumValid = 1 << 2,    // the sender vouches for the checksums (DATA_VALID)
  };
  uint8_t flags;
  uint8_t gso_type;  // VIRTIO_NET_HDR_GSO_* including the ECN bit; 0: not a super-frame
  uint16_t vlan_tci;
  uint16_t gso_size;
  uint16_t hdr_len;
  uint16_t csum_start;
  uint16_t csum_offset;
};

struct PacketView {
  uint32_t len;     // frame bytes, without any virtio-net header
  uint16_t first;   // index of the first span in Burst::span
  uint16_t nseg;    // number of spans
  uint32_t cookie;  // private to the port that filled the burst (a descriptor head, a frame index...)
  PacketMeta meta;
};

struct Burst {
  uint16_t n = 0;
  uint16_t nspans = 0;
  PacketView pkt[kBurst];
  Span span[kBurstSpans];
  void clear() {
    n = 0;
    nspans = 0;
  }
};

// Copies up to n leading bytes of packet p of b to dst (headers to parse in one place); returns how many
// the packet had.
inline uint32_t peek_packet(const Burst& b, const PacketView& p, uint8_t* dst, uint32_t n) {
  uint32_t got = 0;
  n = std::min(n, p.len);
  for (uint16_t s = 0; s < p.nseg && got < n; s++) {
    const Span& sp = b.span[p.first + s];
    const uint32_t c = std::min(n - got, sp.len);
    memcpy(dst + got, sp.p, c);
    got += c;
  }
  return got;
}

// Appends to out the spans covering bytes [from, to) of packet p of b (to is cut at the packet's end):
// a packet rewritten by splicing bytes of its own around new ones, never copied.
inline void emit_spans(const Burst& b, const PacketView& p, uint32_t from, uint32_t to, Burst& out) {
  to = std::min(to, p.len);
  uint32_t off = 0;
  for (uint16_t s = 0; s < p.nseg && off < to; s++) {
    const Span& sp = b.span[p.first + s];
    const uint32_t lo = std::max(from, off), hi = std::min(to, off + sp.len);
    if (lo < hi) out.span[out.nspans++] = Span{sp.p + (lo - off), hi - lo, sp.gpa ? sp.gpa + (lo - off) : 0};
    off += sp.len;
  }
}

}  // namespace vw
