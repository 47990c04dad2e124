// The device side of one split virtqueue (virtio 1.x, 2.7), written for a guest we do not trust (the
// rules follow rust-vmm vm-virtio chain.rs/queue.rs). Every descriptor is copied once into private memory
// before it is looked at, every chain is bounded by the queue size and by kChainBudget descriptors,
// indirect tables may not nest, and an avail index that claims more than a queue's worth is refused. A
// broken rule is reported as the INVALID_* counter that names it; the caller then stops using the queue.
// Implements the ring interface of ring.h.
//
// Used entries are written into the used ring as they are pushed and made visible to the guest once per
// burst by flush(), which also says whether the guest asked to be notified.
//
// Rings are little-endian (virtio 1.0, and legacy guests on the little-endian hosts we run on).
#pragma once

#include "virtio/virtio_spec.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>

#include "core/counters.h"
#include "core/guest_memory.h"
#include "core/packet.h"
#include "virtio/ring.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the split ring assumes a little-endian host");

namespace vw {

class SplitRing {
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
  // Chains made available and not yet taken, by the avail index as last read (no guest memory access):
  // the ring's fill level for the counters. Bounded by the queue size whatever the guest wrote.
  uint16_t waiting() const { return std::min<uint16_t>(uint16_t(avail_idx_ - last_avail_), size_); }
  // Whether the guest has made any buffer available since start() (sticky): a ring can be enabled
  // before its driver posts the first receive buffers.
  bool primed() {
    if (!primed_) primed_ = __atomic_load_n(&avail_->idx, __ATOMIC_RELAXED) != start_idx_ || last_avail_ != start_idx_;
    return primed_;
  }

  // Takes the next available chain, storing up to max_spans spans of its buffers. Returns 1 with *c
  // filled, 0 when the ring is empty, -1 when the guest broke a rule (*why names it). A chain whose spans
  // do not fit, or that runs past kChainBudget descriptors, is cut there (c->truncated): the rest of it is
  // neither stored nor read.
  [[gnu::always_inline]] int pop(const GuestMemory& mem, Span* spans, uint32_t max_spans, Chain* c, QueueCounter* why) {
    if (avail_idx_ == last_avail_) {
      // Acquire: the ring entries and descriptors the guest wrote before publishing this index are visible.
      avail_idx_ = __atomic_load_n(&avail_->idx, __ATOMIC_ACQUIRE);
      if (uint16_t(avail_idx_ - last_avail_) > size_) return fail(why, INVALID_AVAIL_AHEAD);
      if (avail_idx_ == last_avail_) return 0;
    }
    const uint16_t head = __atomic_load_n(&avail_->ring[last_avail_ & mask_], __ATOMIC_RELAXED);
    last_avail_++;
    if (head >= size_) return fail(why, INVALID_BAD_HEAD);
    if (in_flight(head)) return fail(why, INVALID_HEAD_IN_FLIGHT);
    const vring_desc d = read_desc(reinterpret_cast<const uint8_t*>(desc_ + head));
    // One descriptor, the chain every driver posts for a receive buffer and DPDK's for a frame with its
    // header pushed in front: checked here without the general walk.
    if (!(d.flags & (VRING_DESC_F_NEXT | VRING_DESC_F_INDIRECT))) {
      if ((d.flags & VRING_DESC_F_WRITE) == wrong_dir_) return fail(why, wrong_dir_reason());
      int n = 0;
      if (d.len) {
        n = mem.translate(d.addr, d.len, spans, int(max_spans));
        if (n < 0) {
          if (!mem.contains_range(d.addr, d.len)) return fail(why, INVALID_BAD_ADDRESS);
          *c = Chain{head, 1, 0, 0, true, false};
          take(head);
          return 1;
        }
      }
      *c = Chain{head, 1, uint32_t(n), n ? d.len : 0, false, false};
      take(head);
      return 1;
    }
    return pop_chain(mem, head, d, spans, max_spans, c, why);
  }
  // Takes up to max chains in a row that are each what drivers nearly always post: one descriptor (no
  // NEXT, no INDIRECT, no other flag) of this ring's direction, min_len to max_len bytes long, inside one
  // guest memory region. Each is checked by every rule pop() applies to such a chain (the avail index no
  // more than a queue ahead, head < queue size, head not in flight, direction, address and length inside
  // guest memory), but in one loop with the ring's state and the memory window in registers, and with the
  // descriptor read by two 8-byte loads the compiler cannot repeat instead of a copy through the stack.
  // It stops at the first chain that is anything else, taking nothing of it: pop() reads that one again
  // and either takes it or says which rule it broke. Returns the number taken, stored in out[0..n).
  // (DPDK's vhost checks a batch of packed descriptors the same way before it copies, and leaves
  // whatever fails to its one-at-a-time path.) Out of line: one call per burst, and the loop gets the
  // registers to itself.
  uint16_t pop_simple(const GuestMemory& mem, uint16_t max, uint32_t min_len, uint32_t max_len, SimpleChain* out);
  // Asks for the descriptors of up to n chains the guest has made available, before pop() reads them one by
  // one. The guest's core wrote them last (it refills the ring), so each line costs a transfer; pop() after
  // pop() those transfers come one after another, asked for together they overlap. Only a hint: nothing
  // read here is trusted or kept, pop() reads and checks it all again.
  void prefetch(uint16_t n) const {
    const uint16_t avail = __atomic_load_n(&avail_->idx, __ATOMIC_ACQUIRE);
    const uint16_t k = std::min<uint16_t>({n, uint16_t(avail - last_avail_), size_});
    for (uint16_t i = 0; i < k; i++) {
      const uint16_t head = __atomic_load_n(&avail_->ring[uint16_t(last_avail_ + i) & mask_], __ATOMIC_RELAXED);
      __builtin_prefetch(desc_ + (head & mask_));
    }
  }
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
  // Returns n chains at once, entry(i) giving the i-th used entry: written straight into the used ring
  // after whatever push() collected, in one pass, which is all the shadow is for. For a caller that has
  // them all at hand (release). Visible to the guest after flush().
  template <class Entry>
  void push_n(uint16_t n, Entry entry) {
    write_shadow();
    write_used(n, entry);
  }
  // Publishes the pushed entries. Returns true when the guest wants to be notified of them.
  bool flush(bool* saved = nullptr);

  // Asks the guest to kick us when it makes chains available. Returns true when some already are, so a
  // caller about to sleep must not.
  bool enable_notify();
  void disable_notify();

 private:
  static constexpr uint16_t kShadowEntries = 64;

  static int fail(QueueCounter* why, QueueCounter reason) {
    *why = reason;
    return -1;
  }
  // The guest may rewrite a descriptor while we check it. The copy is made once, and the empty asm that
  // claims to rewrite it keeps the compiler from reading guest memory again in place of the copy (it no
  // longer knows the copy equals the source), so what we checked is what we use. Clobbering only the
  // copy, not all memory, leaves everything else in registers. Indirect tables need not be aligned,
  // hence bytes.
  static vring_desc read_desc(const uint8_t* p) {
    vring_desc d;
    memcpy(&d, p, sizeof d);
    asm volatile("" : "+m"(d));
    return d;
  }
  QueueCounter wrong_dir_reason() const { return device_writes_ ? INVALID_READONLY_ON_RX : INVALID_WRITABLE_ON_TX; }
  // The general walk: several descriptors, an indirect table, or both. first is the head's descriptor.
  int pop_chain(const GuestMemory& mem, uint16_t head, vring_desc first, Span* spans, uint32_t max_spans, Chain* c,
                QueueCounter* why);
  // Marks head as lent and remembers it for unpop().
  void take(uint16_t head) {
    inflight_[head >> 6] |= uint64_t(1) << (head & 63);
    popped_[npopped_++ % kMaxUnpop] = head;
  }
  // Copies the collected entries into the used ring, unpublished. Their heads are no longer in flight.
  void write_shadow() {
    write_used(nshadow_, [this](uint32_t i) { return shadow_[i]; });
    nshadow_ = 0;
  }
  // Writes n used entries after the unpublished ones; their heads are no longer in flight. The ring's
  // state is copied into locals first: the used ring holds the same type as the shadow, so the compiler
  // would otherwise reload every member after every store into guest memory.
  template <class Entry>
  void write_used(uint32_t n, Entry entry) {
    const uint32_t pos = used_shadow_, mask = mask_;
    vring_used_elem* ring = used_->ring;
    uint64_t* inflight = inflight_.get();
    for (uint32_t i = 0; i < n; i++) {
      const vring_used_elem e = entry(i);
      ring[(pos + i) & mask] = e;
      inflight[uint16_t(e.id) >> 6] &= ~(uint64_t(1) << (e.id & 63));
    }
    used_shadow_ = uint16_t(pos + n);
  }
  // Heads taken by pop() and not yet returned, one bit each: a guest that names a head again before we
  // gave it back would have us hand out the same buffers twice.
  bool in_flight(uint16_t head) const { return inflight_[head >> 6] & (uint64_t(1) << (head & 63)); }
  void land(uint16_t head) { inflight_[head >> 6] &= ~(uint64_t(1) << (head & 63)); }
  uint16_t* used_event() const { return &avail_->ring[size_]; }
  uint16_t* avail_event() const { return reinterpret_cast<uint16_t*>(&used_->ring[size_]); }

  vring_desc* desc_ = nullptr;
  vring_avail* avail_ = nullptr;
  vring_used* used_ = nullptr;
  uint16_t size_ = 0, mask_ = 0;
  bool device_writes_ = false, event_idx_ = false, indirect_ = false;
  uint16_t wrong_dir_ = VRING_DESC_F_WRITE;  // the WRITE flag value this ring's buffers must not have
  uint16_t last_avail_ = 0;                  // next avail entry to read
  uint16_t start_idx_ = 0;                   // last_avail_ at start()
  bool primed_ = false;
  uint16_t avail_idx_ = 0;    // the guest's avail index as last read
  uint16_t used_shadow_ = 0;  // used index including entries written to the ring but unpublished
  uint16_t nshadow_ = 0;      // entries pushed but not yet written to the ring
  vring_used_elem shadow_[kShadowEntries];
  std::unique_ptr<uint64_t[]> inflight_;  // size_ bits
  // The last heads pop() handed out, so unpop() can land them again.
  uint16_t popped_[kMaxUnpop];
  uint16_t npopped_ = 0;
  uint16_t used_idx_ = 0;  // used index the guest sees
};

}  // namespace vw
