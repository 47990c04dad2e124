// Checksum and segmentation offloads: which a port takes, and the virtio-net header's offload fields
// read into PacketMeta with every rule checked. Every field comes from a guest, which may rewrite the
// header while we look: the caller hands over a private copy, read once, and nothing here reads guest
// memory.
#pragma once

#include <cstdint>

#include "core/counters.h"
#include "core/packet.h"
#include "virtio/virtio_spec.h"

namespace vw {

// Offloads as a mask, in the direction they are used: what a port lets us send it (Port::tx_offloads)
// or what it may send us.
constexpr uint32_t kOffloadCsum = 1 << 0;  // partial checksums (NEEDS_CSUM)
constexpr uint32_t kOffloadTso4 = 1 << 1;  // TCP over IPv4 super-frames
constexpr uint32_t kOffloadTso6 = 1 << 2;  // TCP over IPv6 super-frames
constexpr uint32_t kOffloadEcn = 1 << 3;   // TCP super-frames with the ECN bit (CWR on the first segment only)
constexpr uint32_t kOffloadUso = 1 << 4;   // UDP super-frames (GSO_UDP_L4), over IPv4 and IPv6
constexpr uint32_t kOffloadAll = kOffloadCsum | kOffloadTso4 | kOffloadTso6 | kOffloadEcn | kOffloadUso;

// A super-frame may make at most this many segments: a guest cannot make one 64 KB frame cost the
// backend 65535 one-byte segments.
constexpr uint32_t kMaxGsoSegments = 1024;

// The offloads negotiated virtio features let a guest send us (CSUM, HOST_TSO4/6, HOST_ECN) and take
// from us (GUEST_CSUM, GUEST_TSO4/6, GUEST_ECN). A feature accepted without the one it depends on
// (virtio 1.2, 5.1.3.1: TSO needs CSUM, ECN needs TSO) is not used. Neither ever includes kOffloadUso.
uint32_t offloads_from_guest(uint64_t features);
uint32_t offloads_to_guest(uint64_t features);

// Reads the offload fields of h (the guest's header, already copied) for a frame of frame_len bytes from
// a guest allowed `allowed` offloads into *m. Returns kQueueCounterCount when the header is acceptable,
// otherwise the drop reason: DROP_RX_BAD_HEADER (an offload that was not negotiated) or one of the
// DROP_RX_* offload reasons.
QueueCounter read_offloads(const virtio_net_hdr_mrg_rxbuf& h, uint32_t frame_len, uint32_t allowed, PacketMeta* m);

// What a packet needs from its destination: 0 for a plain frame.
inline uint32_t offloads_needed(const PacketMeta& m) {
  uint32_t need = (m.flags & PacketMeta::kCsumPartial) ? kOffloadCsum : 0;
  if (m.gso_type) {
    need |= kOffloadCsum;
    const uint8_t type = uint8_t(m.gso_type & ~VIRTIO_NET_HDR_GSO_ECN);
    need |= type == VIRTIO_NET_HDR_GSO_UDP_L4  ? kOffloadUso
            : type == VIRTIO_NET_HDR_GSO_TCPV6 ? kOffloadTso6
                                               : kOffloadTso4;
    if (m.gso_type & VIRTIO_NET_HDR_GSO_ECN) need |= kOffloadEcn;
  }
  return need;
}

}  // namespace vw
