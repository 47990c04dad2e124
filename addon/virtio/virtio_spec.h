// The parts of the virtio 1.x specification (split rings, virtio-net header, feature bits) that the
// backend and our front end share. The kernel's linux/virtio_ring.h and linux/virtio_net.h describe the
// same layout but are not valid C++ (a field named `class`, implicit void* conversions), so the few
// definitions we need are restated here, with the kernel's names.
#pragma once

#include <cstdint>

namespace vw {

// Feature bits (virtio 1.2, 5.1.3 and 6).
constexpr uint32_t VIRTIO_NET_F_CSUM = 0;        // the driver may send partial checksums
constexpr uint32_t VIRTIO_NET_F_GUEST_CSUM = 1;  // the driver takes partial checksums
constexpr uint32_t VIRTIO_NET_F_MTU = 3;
constexpr uint32_t VIRTIO_NET_F_GUEST_TSO4 = 7;  // the driver takes TCPv4 super-frames
constexpr uint32_t VIRTIO_NET_F_GUEST_TSO6 = 8;
constexpr uint32_t VIRTIO_NET_F_GUEST_ECN = 9;   // ... with the ECN bit
constexpr uint32_t VIRTIO_NET_F_HOST_TSO4 = 11;  // the driver may send TCPv4 super-frames
constexpr uint32_t VIRTIO_NET_F_HOST_TSO6 = 12;
constexpr uint32_t VIRTIO_NET_F_HOST_ECN = 13;
constexpr uint32_t VIRTIO_NET_F_MRG_RXBUF = 15;
constexpr uint32_t VIRTIO_NET_F_MQ = 22;
constexpr uint32_t VIRTIO_RING_F_INDIRECT_DESC = 28;
constexpr uint32_t VIRTIO_RING_F_EVENT_IDX = 29;
constexpr uint32_t VIRTIO_F_VERSION_1 = 32;
constexpr uint32_t VIRTIO_F_IN_ORDER = 35;

constexpr uint16_t VRING_DESC_F_NEXT = 1;
constexpr uint16_t VRING_DESC_F_WRITE = 2;
constexpr uint16_t VRING_DESC_F_INDIRECT = 4;
constexpr uint16_t VRING_USED_F_NO_NOTIFY = 1;
constexpr uint16_t VRING_AVAIL_F_NO_INTERRUPT = 1;

constexpr uint32_t kMaxQueueSize = 32768;

struct vring_desc {
  uint64_t addr;
  uint32_t len;
  uint16_t flags;
  uint16_t next;
};
struct vring_avail {
  uint16_t flags;
  uint16_t idx;
  uint16_t ring[];  // then used_event (EVENT_IDX)
};
struct vring_used_elem {
  uint32_t id;
  uint32_t len;
};
struct vring_used {
  uint16_t flags;
  uint16_t idx;
  vring_used_elem ring[];  // then avail_event (EVENT_IDX)
};

// Sizes in bytes of the three parts of a split ring of num entries, including the event index fields.
constexpr uint64_t vring_desc_size(uint32_t num) { return 16ull * num; }
constexpr uint64_t vring_avail_size(uint32_t num) { return 6ull + 2ull * num; }
constexpr uint64_t vring_used_size(uint32_t num) { return 6ull + 8ull * num; }

// Whether an index moving from old_idx to new_idx passed event_idx (virtio 1.2, 2.7.10).
inline bool vring_need_event(uint16_t event_idx, uint16_t new_idx, uint16_t old_idx) {
  return uint16_t(new_idx - event_idx - 1) < uint16_t(new_idx - old_idx);
}

constexpr uint8_t VIRTIO_NET_HDR_F_NEEDS_CSUM = 1;
constexpr uint8_t VIRTIO_NET_HDR_GSO_NONE = 0;
constexpr uint8_t VIRTIO_NET_HDR_GSO_TCPV4 = 1;
constexpr uint8_t VIRTIO_NET_HDR_GSO_TCPV6 = 4;
// UDP segmentation (virtio 1.2, 5.1.6; Linux 6.2): the kernel's packet sockets use it for UDP_SEGMENT
// super-frames. Never offered to guests: HOST_USO/GUEST_USO are not in the headers this builds with.
constexpr uint8_t VIRTIO_NET_HDR_GSO_UDP_L4 = 5;
constexpr uint8_t VIRTIO_NET_HDR_GSO_ECN = 0x80;

struct virtio_net_hdr_mrg_rxbuf {
  uint8_t flags;
  uint8_t gso_type;
  uint16_t hdr_len;
  uint16_t gso_size;
  uint16_t csum_start;
  uint16_t csum_offset;
  uint16_t num_buffers;  // only with VERSION_1 or MRG_RXBUF: the header is 10 bytes without it
};
static_assert(sizeof(virtio_net_hdr_mrg_rxbuf) == 12, "virtio-net header layout");
static_assert(sizeof(vring_desc) == 16, "descriptor layout");

}  // namespace vw
