#include "virtio/split_ring.h"

#include <algorithm>
#include <cstring>

namespace vw {

namespace {

inline uint16_t load16(const uint16_t* p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
inline void store16(uint16_t* p, uint16_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }

constexpr uint32_t kDescSize = sizeof(vring_desc);
// Ring alignment the virtio spec requires (2.7: desc 16, avail 2, used 4).
constexpr uintptr_t kDescAlign = 16, kAvailAlign = 2, kUsedAlign = 4;

}  // namespace

bool SplitRing::attach(uint16_t size, void* desc, void* avail, void* used, bool device_writes, const char** why) {
  if (size == 0 || (size & (size - 1)) != 0) {
    *why = "queue size is not a power of two between 1 and 32768";
    return false;
  }
  if (reinterpret_cast<uintptr_t>(desc) % kDescAlign) {
    *why = "descriptor table is not 16-byte aligned";
    return false;
  }
  if (reinterpret_cast<uintptr_t>(avail) % kAvailAlign) {
    *why = "avail ring is not 2-byte aligned";
    return false;
  }
  if (reinterpret_cast<uintptr_t>(used) % kUsedAlign) {
    *why = "used ring is not 4-byte aligned";
    return false;
  }
  desc_ = static_cast<vring_desc*>(desc);
  avail_ = static_cast<vring_avail*>(avail);
  used_ = static_cast<vring_used*>(used);
  // A running queue moved to a new memory table keeps its heads in flight.
  if (size != size_ || !inflight_) inflight_.reset(new uint64_t[(size + 63) / 64]());
  size_ = size;
  mask_ = uint16_t(size - 1);
  device_writes_ = device_writes;
  wrong_dir_ = device_writes ? 0 : VRING_DESC_F_WRITE;
  return true;
}

void SplitRing::start(uint16_t base) {
  used_idx_ = used_shadow_ = load16(&used_->idx);
  nshadow_ = 0;
  // A previous back end may have died with chains taken but not returned. Restarting from the used index
  // hands them to us again instead of losing them for good (DPDK does the same); the guest sees a few
  // packets again at worst.
  last_avail_ = used_idx_ == base ? base : used_idx_;
  avail_idx_ = start_idx_ = last_avail_;
  primed_ = false;
  std::fill_n(inflight_.get(), (size_ + 63) / 64, 0);
  npopped_ = 0;
  disable_notify();
}

int SplitRing::pop_chain(const GuestMemory& mem, uint16_t head, vring_desc d, Span* spans, uint32_t max_spans, Chain* c,
                         QueueCounter* why) {
  const uint8_t* table = reinterpret_cast<const uint8_t*>(desc_);
  uint32_t table_len = size_;
  bool in_indirect = false;
  uint32_t count = 0;
  uint32_t n = 0;
  uint64_t len = 0;
  bool truncated = false, over_budget = false;
  // A chain loops if it runs past the queue size; it costs too much if it runs past the budget. Within a
  // queue no larger than the budget, the first check always comes first, so a loop still breaks the ring.
  for (;;) {
    if (d.flags & VRING_DESC_F_INDIRECT) {
      if (!indirect_) return fail(why, INVALID_INDIRECT_NOT_NEGOTIATED);
      if (in_indirect) return fail(why, INVALID_INDIRECT_NESTED);
      if (d.flags & VRING_DESC_F_NEXT) return fail(why, INVALID_INDIRECT_WITH_NEXT);
      if (d.len == 0 || d.len % kDescSize) return fail(why, INVALID_INDIRECT_LENGTH);
      table = mem.translate_contiguous(d.addr, d.len);
      if (!table) return fail(why, INVALID_BAD_ADDRESS);
      // The table walk continues under the same descriptor count, so the pointer descriptor itself does
      // not count and a table of queue-size entries fits.
      table_len = d.len / kDescSize;
      in_indirect = true;
      d = read_desc(table);
      continue;
    }
    if (++count > size_) return fail(why, INVALID_CHAIN_TOO_LONG);
    if (count > kChainBudget) {
      truncated = over_budget = true;
      break;
    }
    if ((d.flags & VRING_DESC_F_WRITE) == wrong_dir_) return fail(why, wrong_dir_reason());
    if (d.len) {
      const int k = mem.translate(d.addr, d.len, spans + n, int(max_spans - n));
      if (k < 0) {
        // Either outside guest memory or out of room: only the first is the guest's fault. Out of room,
        // the chain is cut here.
        if (!mem.contains_range(d.addr, d.len)) return fail(why, INVALID_BAD_ADDRESS);
        truncated = true;
        break;
      }
      n += uint32_t(k);
      len += d.len;
    }
    if (!(d.flags & VRING_DESC_F_NEXT)) break;
    if (d.next >= table_len) return fail(why, INVALID_BAD_NEXT);
    d = read_desc(table + size_t(d.next) * kDescSize);
  }
  take(head);
  *c = Chain{head, uint16_t(std::min<uint32_t>(count, kChainBudget)), n, len, truncated, over_budget};
  return 1;
}

uint16_t SplitRing::pop_simple(const GuestMemory& mem, uint16_t max, uint32_t min_len, uint32_t max_len,
                               SimpleChain* out) {
  const uint16_t last = last_avail_;
  uint16_t avail = avail_idx_;
  if (uint16_t(avail - last) < max) {
    avail = __atomic_load_n(&avail_->idx, __ATOMIC_ACQUIRE);
    // pop() reads the index again and breaks the ring.
    if (uint16_t(avail - last) > size_) return 0;
    avail_idx_ = avail;
  }
  const uint32_t n = std::min<uint32_t>(max, uint16_t(avail - last));
  // Each descriptor is read as two 8-byte words (attach() checked the table's alignment): the address,
  // then length, flags and next. may_alias, since the same memory is read as vring_desc elsewhere.
  typedef uint64_t __attribute__((may_alias)) word;
  const vring_desc* table = desc_;
  const uint16_t* ring = avail_->ring;
  uint64_t* inflight = inflight_.get();
  // size_ is a power of two: head < size_ is head <= mask.
  const uint32_t mask = mask_;
  // The flags must be exactly this ring's direction bit (no NEXT, no INDIRECT) and the length within
  // [min_len, max_len]; next is not looked at. Both in one unsigned compare: flags and length as one
  // 48-bit number, less the lowest acceptable one, are at most max_len - min_len exactly when both hold
  // (other flags put it at least 2^32 away). A zero-length buffer is never one span.
  min_len = std::max<uint32_t>(min_len, 1);
  const uint64_t lowest = uint64_t(device_writes_ ? VRING_DESC_F_WRITE : 0) << 32 | min_len;
  const uint64_t range = max_len >= min_len ? max_len - min_len : 0;
  GuestMemory::Window w = mem.window();
  uint32_t k = 0;
  for (; k < n; k++) {
    const uint32_t head = __atomic_load_n(&ring[(last + k) & mask], __ATOMIC_RELAXED);
    if (head > mask) break;
    const uint64_t bit = uint64_t(1) << (head & 63);
    uint64_t& inflight_word = inflight[head >> 6];
    if (inflight_word & bit) break;
    // Each word loaded once: the guest may rewrite the descriptor meanwhile, and what is checked here is
    // what is used.
    const vring_desc* d = table + head;
    const uint64_t addr = __atomic_load_n(reinterpret_cast<const word*>(&d->addr), __ATOMIC_RELAXED);
    const uint64_t rest = __atomic_load_n(reinterpret_cast<const word*>(&d->len), __ATOMIC_RELAXED);
    const uint32_t len = uint32_t(rest);
    if ((rest & 0xffffffffffffull) - lowest > range) break;
    uint64_t off = addr - w.gpa;
    if (__builtin_expect(!(off < w.size && len <= w.size - off), 0)) {
      // Outside the window: the region it lies in, if it lies in one, becomes the window.
      w = mem.window_of(addr, len);
      off = addr - w.gpa;
      if (!(off < w.size && len <= w.size - off)) break;
    }
    inflight_word |= bit;
    out[k] = SimpleChain{w.host + off, addr, len, uint16_t(head)};
  }
  // Remembered for unpop(), in a pass of its own: the loop above has enough to keep in registers.
  for (uint32_t j = 0; j < k; j++) popped_[uint16_t(npopped_ + j) % kMaxUnpop] = out[j].head;
  last_avail_ = uint16_t(last + k);
  npopped_ = uint16_t(npopped_ + k);
  return uint16_t(k);
}

void SplitRing::unpop(uint16_t n) {
  for (uint16_t k = 0; k < n; k++) land(popped_[--npopped_ % kMaxUnpop]);
  last_avail_ = uint16_t(last_avail_ - n);
}

// *saved: entries were published and EVENT_IDX's used_event said the guest needed no notification.
bool SplitRing::flush(bool* saved) {
  write_shadow();
  if (used_shadow_ == used_idx_) return false;
  const uint16_t old = used_idx_;
  used_idx_ = used_shadow_;
  // Release: the guest that sees the new index also sees the entries written before it.
  __atomic_store_n(&used_->idx, used_idx_, __ATOMIC_RELEASE);
  // The guest's suppression state must be read after our index store is visible; otherwise a guest that
  // re-enables interrupts just then would be missed and sleep forever (store-load needs a full fence).
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  if (event_idx_) {
    const bool need = vring_need_event(load16(used_event()), used_idx_, old);
    if (saved) *saved = !need;
    return need;
  }
  return !(load16(&avail_->flags) & VRING_AVAIL_F_NO_INTERRUPT);
}

bool SplitRing::enable_notify() {
  if (event_idx_)
    store16(avail_event(), last_avail_);
  else
    store16(&used_->flags, 0);
  // Same store-load race as flush(), from the other side: a chain made available just before the guest
  // saw our request would otherwise never be kicked.
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  return __atomic_load_n(&avail_->idx, __ATOMIC_ACQUIRE) != last_avail_;
}

void SplitRing::disable_notify() {
  // With EVENT_IDX, leaving avail_event behind is enough: the guest kicks only when it passes it again.
  if (!event_idx_) store16(&used_->flags, VRING_USED_F_NO_NOTIFY);
}

}  // namespace vw
