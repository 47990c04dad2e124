#include "core/offload.h"

namespace vw {

namespace {
constexpr uint64_t bit(uint32_t b) { return uint64_t(1) << b; }

uint32_t mask(uint64_t f, uint32_t csum, uint32_t tso4, uint32_t tso6, uint32_t ecn) {
  if (!(f & bit(csum))) return 0;
  uint32_t m = kOffloadCsum;
  if (f & bit(tso4)) m |= kOffloadTso4;
  if (f & bit(tso6)) m |= kOffloadTso6;
  if ((m & (kOffloadTso4 | kOffloadTso6)) && (f & bit(ecn))) m |= kOffloadEcn;
  return m;
}
}  // namespace

uint32_t offloads_from_guest(uint64_t f) {
  return mask(f, VIRTIO_NET_F_CSUM, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_HOST_ECN);
}

uint32_t offloads_to_guest(uint64_t f) {
  return mask(f, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_GUEST_ECN);
}

QueueCounter read_offloads(const virtio_net_hdr_mrg_rxbuf& h, uint32_t frame_len, uint32_t allowed, PacketMeta* m) {
  *m = PacketMeta{};
  if (h.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) {
    if (!(allowed & kOffloadCsum)) return DROP_RX_BAD_HEADER;
    // In 32 bits: two 16-bit fields and 2 cannot wrap (CVE-2024-11614 in DPDK's vhost was this check
    // missing).
    if (uint32_t(h.csum_start) + h.csum_offset + 2 > frame_len) return DROP_RX_BAD_CSUM_OFFSET;
    m->flags |= PacketMeta::kCsumPartial;
    m->csum_start = h.csum_start;
    m->csum_offset = h.csum_offset;
  }
  if (h.gso_type == VIRTIO_NET_HDR_GSO_NONE) return kQueueCounterCount;
  const uint8_t type = uint8_t(h.gso_type & ~VIRTIO_NET_HDR_GSO_ECN);
  // The ECN bit belongs to TCP: with UDP, as with no segmentation, it asks for nothing we could do.
  if (type == VIRTIO_NET_HDR_GSO_NONE || (type == VIRTIO_NET_HDR_GSO_UDP_L4 && h.gso_type != type))
    return DROP_RX_ECN_WITHOUT_TSO;
  uint32_t need;
  if (type == VIRTIO_NET_HDR_GSO_TCPV4)
    need = kOffloadTso4;
  else if (type == VIRTIO_NET_HDR_GSO_TCPV6)
    need = kOffloadTso6;
  else if (type == VIRTIO_NET_HDR_GSO_UDP_L4)
    need = kOffloadUso;
  else
    return DROP_RX_BAD_GSO_TYPE;
  if (!(allowed & need)) return DROP_RX_BAD_HEADER;
  if ((h.gso_type & VIRTIO_NET_HDR_GSO_ECN) && !(allowed & kOffloadEcn)) return DROP_RX_BAD_HEADER;
  if (!(h.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM)) return DROP_RX_GSO_WITHOUT_CSUM;
  if (h.gso_size == 0 || frame_len / h.gso_size > kMaxGsoSegments) return DROP_RX_BAD_GSO_SIZE;
  // Linux sends the length of its linear part, which may hold payload too: a hint, never more than the
  // frame. Segmentation finds the headers' real length itself.
  if (h.hdr_len > frame_len) return DROP_RX_BAD_HDR_LEN;
  m->gso_type = h.gso_type;
  m->gso_size = h.gso_size;
  m->hdr_len = h.hdr_len;
  return kQueueCounterCount;
}

}  // namespace vw
