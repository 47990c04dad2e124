#include "core/guest_memory.h"

#include "core/guest_fault.h"
#include "core/hex.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace vw {

struct Mapping {
  uint8_t* base;
  size_t len;
  int fd;
  Mapping(uint8_t* b, size_t l, int f) : base(b), len(l), fd(f) {}
  ~Mapping() {
    unregister_guest_mapping(base);
    munmap(base, len);
    close(fd);
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
};

namespace {

// Half-open ranges [a, a + alen) and [b, b + blen); neither wraps (checked before).
bool overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen) { return a < b + blen && b < a + alen; }

}  // namespace

std::shared_ptr<const GuestMemory> GuestMemory::with_region(int fd, uint64_t gpa, uint64_t size, uint64_t uaddr,
                                                            uint64_t mmap_offset, std::string* err) const {
  auto fail = [&](std::string why) -> std::shared_ptr<const GuestMemory> {
    close(fd);
    if (err) *err = std::move(why);
    return nullptr;
  };
  const std::string what = "memory region " + hex(gpa) + "+" + hex(size);
  uint64_t end;
  if (size == 0) return fail(what + ": size is zero");
  if (__builtin_add_overflow(gpa, size, &end) || __builtin_add_overflow(uaddr, size, &end) ||
      __builtin_add_overflow(mmap_offset, size, &end))
    return fail(what + ": guest address, user address or file offset wraps around");
  if (regions_.size() >= kMaxMemRegions)
    return fail(what + ": already " + std::to_string(kMaxMemRegions) + " regions");
  for (const MemRegion& r : regions_) {
    if (overlaps(gpa, size, r.gpa, r.size))
      return fail(what + ": overlaps the region at guest address " + hex(r.gpa));
    if (overlaps(uaddr, size, r.uaddr, r.size))
      return fail(what + ": user address " + hex(uaddr) + " overlaps the region at user address " + hex(r.uaddr));
  }

  struct stat st;
  if (fstat(fd, &st) != 0) return fail(what + ": fstat: " + strerror(errno));
  const uint64_t file_end = mmap_offset + size;
  // Touching a page past the end of a file raises SIGBUS in whichever thread does it: a guest must not
  // be able to kill the process by announcing a region larger than its file.
  if (S_ISREG(st.st_mode) && file_end > static_cast<uint64_t>(st.st_size))
    return fail(what + ": offset " + hex(mmap_offset) + " + size is beyond the end of the file (" +
                hex(static_cast<uint64_t>(st.st_size)) + " bytes)");

  // hugetlbfs only maps whole huge pages, and its st_blksize is the huge page size (DPDK rounds the same
  // way); for ordinary files st_blksize is the page size.
  const uint64_t blk = st.st_blksize > 0 ? static_cast<uint64_t>(st.st_blksize) : uint64_t(sysconf(_SC_PAGESIZE));
  uint64_t map_len;
  if (__builtin_add_overflow(file_end, blk - 1, &map_len) || map_len > SIZE_MAX)
    return fail(what + ": mapping length overflows");
  map_len -= map_len % blk;

  void* p = mmap(nullptr, size_t(map_len), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
  if (p == MAP_FAILED) return fail(what + ": mmap of " + hex(map_len) + " bytes: " + strerror(errno));
  if (!register_guest_mapping(p, size_t(map_len))) {
    munmap(p, size_t(map_len));
    return fail(what + ": the process already maps " + std::to_string(kMaxGuestMappings) +
                " guest memory regions; disconnect guests or remove ports first");
  }
  auto map = std::make_shared<Mapping>(static_cast<uint8_t*>(p), size_t(map_len), fd);

  auto next = std::make_shared<GuestMemory>(*this);
  MemRegion r{gpa, size, uaddr, mmap_offset, map->base + mmap_offset, std::move(map)};
  auto pos = std::upper_bound(next->regions_.begin(), next->regions_.end(), gpa,
                              [](uint64_t g, const MemRegion& x) { return g < x.gpa; });
  next->regions_.insert(pos, std::move(r));
  return next;
}

std::shared_ptr<const GuestMemory> GuestMemory::without_region(uint64_t gpa, uint64_t size, uint64_t uaddr,
                                                               std::string* err) const {
  for (size_t i = 0; i < regions_.size(); i++) {
    const MemRegion& r = regions_[i];
    if (r.gpa == gpa && r.size == size && r.uaddr == uaddr) {
      auto next = std::make_shared<GuestMemory>(*this);
      next->regions_.erase(next->regions_.begin() + long(i));
      return next;
    }
  }
  if (err) *err = "no memory region at guest address " + hex(gpa) + " with size " + hex(size) + " and user address " + hex(uaddr);
  return nullptr;
}

int GuestMemory::translate_slow(uint64_t gpa, uint64_t len, Span* out, int max_spans) const {
  uint64_t end;
  if (__builtin_add_overflow(gpa, len, &end)) return -1;
  int n = 0;
  size_t i = 0;
  const size_t nr = regions_.size();
  while (len) {
    // Regions are sorted, so a range that continues past a region's end continues in a later one.
    while (i < nr && gpa - regions_[i].gpa >= regions_[i].size) i++;
    if (i == nr || n == max_spans) return -1;
    const MemRegion& r = regions_[i];
    if (n == 0) last_.store(uint32_t(i), std::memory_order_relaxed);
    const uint64_t off = gpa - r.gpa;
    const uint64_t take = std::min(std::min(len, r.size - off), kMaxSpanBytes);
    out[n++] = Span{r.host + off, uint32_t(take), gpa};
    gpa += take;
    len -= take;
  }
  return n;
}

bool GuestMemory::contains_range(uint64_t gpa, uint64_t len) const {
  uint64_t end;
  if (__builtin_add_overflow(gpa, len, &end)) return false;
  for (size_t i = 0; len && i < regions_.size(); i++) {
    const MemRegion& r = regions_[i];
    const uint64_t off = gpa - r.gpa;
    if (off >= r.size) continue;
    const uint64_t take = std::min(len, r.size - off);
    gpa += take;
    len -= take;
  }
  return len == 0;
}

uint8_t* GuestMemory::translate_contiguous(uint64_t gpa, uint64_t len) const {
  for (const MemRegion& r : regions_) {
    const uint64_t off = gpa - r.gpa;
    if (off < r.size && len <= r.size - off) return r.host + off;
  }
  return nullptr;
}

bool GuestMemory::contains(const void* p) const {
  const uint8_t* a = static_cast<const uint8_t*>(p);
  for (const MemRegion& r : regions_)
    if (a >= r.map->base && a - r.map->base < ptrdiff_t(r.map->len)) return true;
  return false;
}

uint8_t* GuestMemory::uva_to_host(uint64_t uaddr, uint64_t len) const {
  for (const MemRegion& r : regions_) {
    const uint64_t off = uaddr - r.uaddr;
    if (off < r.size && len <= r.size - off) return r.host + off;
  }
  return nullptr;
}

}  // namespace vw
