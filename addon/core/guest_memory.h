// Guest memory as the front end described it (SET_MEM_TABLE, ADD_MEM_REG, REM_MEM_REG): a table of
// regions, each an mmap of a file descriptor the front end passed. A GuestMemory is immutable once
// built; the control thread builds a new one and swaps it in whole while the data path is paused, so a
// PMD never sees a table being edited. Mappings are shared between successive tables, so adding one
// region does not remap the others.
//
// This file owns the only translation functions from guest addresses to host memory. Every access a
// guest asks for goes through them, as [addr, addr + len), with overflow checks.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/port.h"

namespace vw {

constexpr uint32_t kMaxMemRegions = 32;  // GET_MAX_MEM_SLOTS

// Caps on the address space guest memory may take. Mappings are MAP_NORESERVE, so a front end can hand
// us a sparse file of any size and cost the host no memory, only address space: without a cap, a few
// terabyte-sized regions exhaust the 128 TiB a process has and V8, thread stacks and AF_XDP UMEMs fail
// to allocate. The per-port default covers the largest guests we expect (1 TiB over up to
// kMaxMemRegions regions); the per-process default, 16 ports at that size, is an eighth of the user
// address space, which leaves the rest of the process more than 100 TiB.
constexpr uint64_t kDefaultMaxMappedPerPort = uint64_t(1) << 40;
constexpr uint64_t kDefaultMaxMappedPerProcess = uint64_t(1) << 44;
struct GuestMemoryLimits {
  uint64_t per_port;     // bytes mapped by one table (one port's guest memory)
  uint64_t per_process;  // bytes mapped by every table of the process together
};
GuestMemoryLimits guest_memory_limits();
// Applies to regions mapped from now on; what is mapped already stays.
void set_guest_memory_limits(const GuestMemoryLimits& l);
// Bytes of guest memory the process maps right now, every port together.
uint64_t guest_memory_mapped_bytes();

struct Mapping;  // one mmap of one fd; unmapped and closed when the last table using it goes

struct MemRegion {
  uint64_t gpa;          // guest physical address of the first byte
  uint64_t size;         // bytes
  uint64_t uaddr;        // the front end's own virtual address of the first byte (SET_VRING_ADDR uses it)
  uint64_t mmap_offset;  // offset of the first byte in the fd
  uint8_t* host;         // our address of the first byte
  std::shared_ptr<Mapping> map;
};

class GuestMemory {
 public:
  GuestMemory() = default;
  // A copy is the start of a new table: it has its own translation hint.
  GuestMemory(const GuestMemory& o) : regions_(o.regions_) {}
  GuestMemory& operator=(const GuestMemory&) = delete;

  // Returns a copy of this table with one more region mapped from fd. Takes ownership of fd: it is
  // closed on every path (kept open only inside the mapping on success). On failure returns null and
  // says why in *err (overlap, zero size, wrap, not a regular file, offset + size beyond the file, too many
  // regions, over a limit of guest_memory_limits(), mmap failure). Maps only the pages the region lies
  // in, not the file before it.
  std::shared_ptr<const GuestMemory> with_region(int fd, uint64_t gpa, uint64_t size, uint64_t uaddr,
                                                 uint64_t mmap_offset, std::string* err) const;
  // Returns a copy without the region that matches gpa, size and uaddr exactly; null if none does.
  std::shared_ptr<const GuestMemory> without_region(uint64_t gpa, uint64_t size, uint64_t uaddr,
                                                    std::string* err) const;

  // Translates the guest physical range [gpa, gpa + len) to host spans, splitting it where it crosses
  // regions. Returns the number of spans written, or -1 when any byte is outside guest memory, the range
  // wraps, or it needs more than max_spans spans. len 0 gives 0 spans.
  int translate(uint64_t gpa, uint64_t len, Span* out, int max_spans) const {
    // Most buffers lie inside the region the previous one did: one compare, no loop, no call.
    const uint32_t i = last_.load(std::memory_order_relaxed);
    if (i < regions_.size() && len && len <= kMaxSpanBytes && max_spans > 0) {
      const MemRegion& r = regions_[i];
      const uint64_t off = gpa - r.gpa;
      if (off < r.size && len <= r.size - off) {
        out[0] = Span{r.host + off, uint32_t(len), gpa};
        return 1;
      }
    }
    return translate_slow(gpa, len, out, max_spans);
  }
  // The bounds of the region the last translation started in, copied so that a burst of translations
  // (SplitRing::pop_simple) keeps them in registers: [gpa, gpa + size) is at host. size 0 when there is
  // none. A buffer inside it needs no other check; for one outside, window_of() finds its region.
  struct Window {
    uint64_t gpa, size;
    uint8_t* host;
  };
  Window window() const {
    const uint32_t i = last_.load(std::memory_order_relaxed);
    if (i >= regions_.size()) return Window{0, 0, nullptr};
    const MemRegion& r = regions_[i];
    return Window{r.gpa, r.size, r.host};
  }
  // The window of the region that holds all of [gpa, gpa + len), which becomes the hint; size 0 when no
  // one region does.
  [[gnu::noinline]] Window window_of(uint64_t gpa, uint64_t len) const;
  // Whether every byte of [gpa, gpa + len) lies in guest memory, across regions or not.
  bool contains_range(uint64_t gpa, uint64_t len) const;
  // Translates a range that must lie inside one region (descriptor tables, indirect tables). Null if not.
  uint8_t* translate_contiguous(uint64_t gpa, uint64_t len) const;
  // Translates a range of the front end's user addresses (SET_VRING_ADDR) inside one region. Null if not.
  uint8_t* uva_to_host(uint64_t uaddr, uint64_t len) const;

  // Whether p lies inside one of this table's mappings.
  bool contains(const void* p) const;

  const std::vector<MemRegion>& regions() const { return regions_; }
  // Bytes this table maps (whole pages, so at least the sum of its region sizes).
  uint64_t mapped_bytes() const;

 private:
  // A translated span holds at most this much; longer pieces of one region are split (Span::len is 32 bits).
  static constexpr uint64_t kMaxSpanBytes = UINT32_MAX;

  int translate_slow(uint64_t gpa, uint64_t len, Span* out, int max_spans) const;

  std::vector<MemRegion> regions_;  // sorted by gpa, non-overlapping
  // Index of the region the last translation started in. Only a hint, checked before each use; relaxed
  // because PMDs translating for the same guest at once (one reads its transmit ring, another fills its
  // receive ring) may overwrite each other's hint, which costs a slower lookup, nothing more.
  mutable std::atomic<uint32_t> last_{0};
};

}  // namespace vw
