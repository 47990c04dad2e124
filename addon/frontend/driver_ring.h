// One split virtqueue as the driver side keeps it. Descriptor i always describes buffer slot i, so
// descriptors are written once and a packet costs only a length and an avail entry.
//
// The backend runs concurrently in another process: ring indices it reads or writes go through atomics
// so that the descriptor and element contents are ordered around them.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "frontend/guest_ram.h"
#include "virtio/virtio_spec.h"

namespace vw {

// VERSION_1 is required, and with it the header always has num_buffers, merged buffers or not.
constexpr uint32_t kNetHdrSize = sizeof(virtio_net_hdr_mrg_rxbuf);
constexpr uint32_t kIndirectTable = 2 * sizeof(vring_desc);

inline uint16_t load_acquire(const uint16_t* p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
inline uint16_t load_relaxed(const uint16_t* p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
inline void store_release(uint16_t* p, uint16_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
inline void store_relaxed(uint16_t* p, uint16_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }

// What the front end counts; read from any thread while the traffic thread or the caller counts.
struct DriverStats {
  std::atomic<uint64_t> tx_packets{0}, tx_bytes{0}, tx_ring_full{0};
  std::atomic<uint64_t> rx_packets{0}, rx_bytes{0};
  std::atomic<uint64_t> kicks{0}, calls{0};
};

inline void add(std::atomic<uint64_t>& c, uint64_t n) { c.fetch_add(n, std::memory_order_relaxed); }

struct DriverRing {
  // How the ring was negotiated; set before set_up.
  bool rx = false;
  bool event_idx = false;
  bool want_calls = false;  // interrupts with EVENT_IDX: used_event follows what we consumed
  bool mrg_rxbuf = false;
  bool indirect = false;  // TX: every frame behind a two-entry indirect table
  uint32_t buf_size = 0;  // RX: bytes per posted buffer
  DriverStats* stats = nullptr;

  uint16_t num = 0, mask = 0;
  vring_desc* desc = nullptr;
  vring_avail* avail = nullptr;
  vring_used* used = nullptr;
  uint16_t* used_event = nullptr;   // avail->ring[num]: where we want a call (EVENT_IDX)
  uint16_t* avail_event = nullptr;  // used->ring[num]: where the backend wants a kick (EVENT_IDX)
  uint16_t avail_idx = 0;           // the next avail index we publish
  uint16_t checked_idx = 0;         // avail index when we last decided whether to kick (vring_need_event's old)
  uint16_t used_seen = 0;           // the next used index we consume
  int kick_fd = -1, call_fd = -1;
  int err_fd = -1;        // SET_VRING_ERR, only when set_vring_err asked for it
  uint64_t slot_gpa = 0;  // buffer slot i at slot_gpa + i * stride
  uint32_t stride = 0;
  uint64_t indirect_gpa = 0;                // TX with indirect: slot i's table at indirect_gpa + 32 * i
  std::vector<uint8_t*> hdr;                // host address of slot i's virtio-net header
  std::vector<vring_desc*> indirect_table;  // TX with indirect: slot i's two-entry table
  std::vector<uint8_t> outstanding;         // 1 while the backend owns descriptor i
  std::vector<uint16_t> free_ids;           // TX: descriptors we may post
  std::vector<uint16_t> seg_id;             // RX: the buffers of the packet being reaped
  std::vector<uint32_t> seg_len;

  DriverRing() = default;
  DriverRing(const DriverRing&) = delete;
  DriverRing& operator=(const DriverRing&) = delete;
  ~DriverRing();  // closes the eventfds

  // Points the ring at its three parts (guest addresses in ram) and writes every slot's descriptor; a
  // receive ring is then full, every buffer posted (the backend is told by the first notify).
  void set_up(const GuestRam& ram, uint16_t n, uint64_t desc_gpa, uint64_t avail_gpa, uint64_t used_gpa);

  uint64_t slot(uint16_t id) const { return slot_gpa + uint64_t(id) * stride; }
  void kick();
  // Publishes everything posted since the last call and kicks if the backend asked to be told.
  void publish();
  // Kicks if the backend asked to be told of what avail_idx now says.
  void notify();
  // Takes completed transmit descriptors back; returns how many are free.
  uint32_t tx_reclaim();
  // Posts a free descriptor whose slot already holds the frame; the caller publishes.
  void tx_post(uint32_t frame_len);
  // Reaps up to max received packets: deliver(ids, lens, nsegs) sees each packet's buffers (header
  // included, lengths capped at the buffer size), then the buffers are posted again.
  template <class Deliver>
  size_t rx_reap(size_t max, Deliver&& deliver);
  // Frame bytes in a received packet's buffers: all but the header at the start of the first.
  static uint64_t frame_bytes(const uint32_t* lens, uint32_t n);

 private:
  void consumed_used();
};

template <class Deliver>
size_t DriverRing::rx_reap(size_t max, Deliver&& deliver) {
  const uint16_t used_idx = load_acquire(&used->idx);
  const uint16_t start = used_seen;
  size_t packets = 0;
  while (packets < max && used_seen != used_idx) {
    const uint16_t ready = uint16_t(used_idx - used_seen);
    const vring_used_elem& first = used->ring[used_seen & mask];
    uint32_t nbufs = 1;
    if (mrg_rxbuf && first.id < num && outstanding[first.id]) {
      uint16_t nb;
      memcpy(&nb, hdr[first.id] + offsetof(virtio_net_hdr_mrg_rxbuf, num_buffers), sizeof(nb));
      if (nb > 1 && nb <= num) nbufs = nb;
    }
    // The backend publishes a packet's buffers together; the rest of this one has not arrived.
    if (nbufs > ready) break;
    bool valid = true;
    uint32_t nsegs = 0;
    for (uint32_t k = 0; k < nbufs; k++) {
      const vring_used_elem& e = used->ring[uint16_t(used_seen + k) & mask];
      if (e.id >= num || !outstanding[e.id]) {
        valid = false;
        continue;
      }
      outstanding[e.id] = 0;
      seg_id[nsegs] = uint16_t(e.id);
      seg_len[nsegs++] = std::min(e.len, buf_size);
    }
    used_seen = uint16_t(used_seen + nbufs);
    if (valid) {
      deliver(seg_id.data(), seg_len.data(), nsegs);
      packets++;
    }
    for (uint32_t k = 0; k < nsegs; k++) {
      outstanding[seg_id[k]] = 1;
      avail->ring[avail_idx++ & mask] = seg_id[k];
    }
  }
  if (used_seen != start) {
    consumed_used();
    publish();
  }
  return packets;
}

}  // namespace vw
