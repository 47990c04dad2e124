// The device side of one split virtqueue, written for a guest we do not trust (the rules follow rust-vmm
// vm-virtio chain.rs/queue.rs). Every descriptor is copied once into private memory before it is looked
// at, every chain is bounded by the queue size, indirect tables may not nest, and an avail index that
// claims more than a queue's worth is refused. A broken rule is reported as the INVALID_* counter that
// names it; the caller then stops using the queue.
//
// Used entries are written into the used ring as they are pushed and made visible to the guest once per
// burst by flush(), which also says whether the guest asked to be notified.
//
// Rings are little-endian (virtio 1.0, and legacy guests on the little-endian hosts we run on).
#pragma once

#include "virtio/virtio_spec.h"

#include <cstdint>
#include <memory>

#include "core/counters.h"
#include "core/guest_memory.h"
#include "core/port.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "virtqueue assumes a little-endian host");

namespace vw {

// What pop() found: the chain's head and its buffers, translated to host spans.
struct Chain {
  uint16_t head;
  uint32_t nspans;  // spans stored
  uint64_t len;     // bytes in the stored spans
  bool truncated;   // the chain needs more spans than the caller had room for (nothing past room is stored)
};

class Virtqueue {
 public:
  // Points the queue at its rings: host addresses covering the whole descriptor table (16 * size bytes),
  // avail ring (6 + 2 * size) and used ring (6 + 8 * size). device_writes: the device writes the buffers
  // (the guest's receive queue) rather than reads them. Indices are kept, so this also moves a running
  // queue to a new memory table. false and a static reason in *why when the size is not a power of two
  // up to 32768 or a ring is misaligned.
  bool attach(uint16_t size, void* desc, void* avail, void* used, bool device_writes, const char** why);
  void set_features(bool event_idx, bool indirect) {
    event_idx_ = event_idx;
    indirect_ = indirect;
  }
  // Takes over the ring at SET_VRING_BASE's index and suppresses guest kicks (we poll).
  void start(uint16_t base);
  // The avail index the next pop() reads (GET_VRING_BASE's answer).
  uint16_t last_avail() const { return last_avail_; }
  // Whether the guest has made any buffer available since start() (sticky): a ring can be enabled
  // before its driver posts the first receive buffers.
  bool primed() {
    if (!primed_) primed_ = __atomic_load_n(&avail_->idx, __ATOMIC_RELAXED) != start_idx_ || last_avail_ != start_idx_;
    return primed_;
  }

  // Takes the next available chain, storing up to max_spans spans of its buffers. Returns 1 with *c
  // filled, 0 when the ring is empty, -1 when the guest broke a rule (*why names it). The whole chain is
  // validated even when its spans do not fit.
  int pop(const GuestMemory& mem, Span* spans, uint32_t max_spans, Chain* c, QueueCounter* why);
  // Gives back the last n popped chains (n <= kMaxUnpop): the next pops read them again from the ring.
  static constexpr uint16_t kMaxUnpop = 256;
  void unpop(uint16_t n);
  // Returns a chain to the guest with len bytes written into it. Visible to the guest after flush().
  // Entries are collected privately and written to the ring in one pass (a shadow used ring, as DPDK's
  // vhost keeps): the guest polls used->idx, which shares a cache line with the first entries, and
  // writing entry by entry between packet copies would pull that line back and forth for each packet.
  void push(uint16_t head, uint32_t len) {
    if (nshadow_ == kShadowEntries) write_shadow();
    shadow_[nshadow_++] = vring_used_elem{head, len};
  }
  // Publishes the pushed entries. Returns true when the guest wants to be notified of them.
  bool flush();

  // Asks the guest to kick us when it makes chains available. Returns true when some already are, so a
  // caller about to sleep must not.
  bool enable_notify();
  void disable_notify();

 private:
  static constexpr uint16_t kShadowEntries = 64;
  // Copies the collected entries into the used ring, unpublished. Their heads are no longer in flight.
  void write_shadow() {
    for (uint16_t i = 0; i < nshadow_; i++) {
      used_->ring[uint16_t(used_shadow_ + i) & mask_] = shadow_[i];
      land(uint16_t(shadow_[i].id));
    }
    used_shadow_ = uint16_t(used_shadow_ + nshadow_);
    nshadow_ = 0;
  }
  // Heads taken by pop() and not yet returned, one bit each: a guest that names a head again before we
  // gave it back would have us hand out the same buffers twice.
  bool in_flight(uint16_t head) const { return inflight_[head >> 6] & (uint64_t(1) << (head & 63)); }
  void take_off(uint16_t head) { inflight_[head >> 6] |= uint64_t(1) << (head & 63); }
  void land(uint16_t head) { inflight_[head >> 6] &= ~(uint64_t(1) << (head & 63)); }
  uint16_t* used_event() const { return &avail_->ring[size_]; }
  uint16_t* avail_event() const { return reinterpret_cast<uint16_t*>(&used_->ring[size_]); }

  vring_desc* desc_ = nullptr;
  vring_avail* avail_ = nullptr;
  vring_used* used_ = nullptr;
  uint16_t size_ = 0, mask_ = 0;
  bool device_writes_ = false, event_idx_ = false, indirect_ = false;
  uint16_t last_avail_ = 0;   // next avail entry to read
  uint16_t start_idx_ = 0;    // last_avail_ at start()
  bool primed_ = false;
  uint16_t avail_idx_ = 0;    // the guest's avail index as last read
  uint16_t used_shadow_ = 0;  // used index including entries written to the ring but unpublished
  uint16_t nshadow_ = 0;      // entries pushed but not yet written to the ring
  vring_used_elem shadow_[kShadowEntries];
  std::unique_ptr<uint64_t[]> inflight_;  // size_ bits
  // The last heads pop() handed out, so unpop() can land them again.
  uint16_t popped_[kMaxUnpop];
  uint16_t npopped_ = 0;
  uint16_t used_idx_ = 0;     // used index the guest sees
};

}  // namespace vw
