#include "core/guest_memory.h"

#include "core/guest_fault.h"
#include "core/hex.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>

namespace vw {

namespace {

std::atomic<uint64_t> g_max_per_port{kDefaultMaxMappedPerPort};
std::atomic<uint64_t> g_max_per_process{kDefaultMaxMappedPerProcess};
std::atomic<uint64_t> g_mapped{0};  // every live Mapping's len, reserved before its mmap

// Claims len bytes of the process budget; false (and *now, what is mapped already) when they do not fit.
bool reserve_mapped(uint64_t len, uint64_t cap, uint64_t* now) {
  uint64_t cur = g_mapped.load(std::memory_order_relaxed);
  do {
    if (len > cap || cur > cap - len) {
      *now = cur;
      return false;
    }
  } while (!g_mapped.compare_exchange_weak(cur, cur + len, std::memory_order_relaxed));
  return true;
}

void release_mapped(uint64_t len) { g_mapped.fetch_sub(len, std::memory_order_relaxed); }

}  // namespace

GuestMemoryLimits guest_memory_limits() {
  return {g_max_per_port.load(std::memory_order_relaxed), g_max_per_process.load(std::memory_order_relaxed)};
}

void set_guest_memory_limits(const GuestMemoryLimits& l) {
  g_max_per_port.store(l.per_port, std::memory_order_relaxed);
  g_max_per_process.store(l.per_process, std::memory_order_relaxed);
}

uint64_t guest_memory_mapped_bytes() { return g_mapped.load(std::memory_order_relaxed); }

// One mmap of one fd, covering the whole pages its region lies in. Its len is counted in the process
// budget from before the mmap until after the munmap.
struct Mapping {
  uint8_t* base;
  size_t len;
  int fd;
  Mapping(uint8_t* b, size_t l, int f) : base(b), len(l), fd(f) {}
  ~Mapping() {
    unregister_guest_mapping(base);
    munmap(base, len);
    close(fd);
    release_mapped(len);
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
};

namespace {

// Half-open ranges [a, a + alen) and [b, b + blen); neither wraps (checked before).
bool overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen) { return a < b + blen && b < a + alen; }

// "1099511627776 bytes (1 TiB)": exact for comparisons, readable for people.
std::string bytes(uint64_t v) {
  static const char* const units[] = {"bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double d = double(v);
  int u = 0;
  while (d >= 1024 && u < 6) {
    d /= 1024;
    u++;
  }
  char buf[64];
  if (u == 0)
    snprintf(buf, sizeof buf, "%llu bytes", static_cast<unsigned long long>(v));
  else
    snprintf(buf, sizeof buf, "%llu bytes (%.4g %s)", static_cast<unsigned long long>(v), d, units[u]);
  return buf;
}

const char* file_type(mode_t m) {
  if (S_ISCHR(m)) return "a character device";
  if (S_ISBLK(m)) return "a block device";
  if (S_ISFIFO(m)) return "a pipe";
  if (S_ISSOCK(m)) return "a socket";
  if (S_ISDIR(m)) return "a directory";
  return "not a regular file";  // eventfd, timerfd and the like: anonymous inodes
}

}  // namespace

uint64_t GuestMemory::mapped_bytes() const {
  uint64_t n = 0;
  for (const MemRegion& r : regions_) n += r.map->len;
  return n;
}

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
  if (regions_.size() >= kMaxMemRegions) return fail(what + ": already " + std::to_string(kMaxMemRegions) + " regions");
  for (const MemRegion& r : regions_) {
    if (overlaps(gpa, size, r.gpa, r.size)) return fail(what + ": overlaps the region at guest address " + hex(r.gpa));
    if (overlaps(uaddr, size, r.uaddr, r.size))
      return fail(what + ": user address " + hex(uaddr) + " overlaps the region at user address " + hex(r.uaddr));
  }

  struct stat st;
  if (fstat(fd, &st) != 0) return fail(what + ": fstat: " + strerror(errno));
  // Only a file is memory the guest shares with us, and only a file has a size to check the region
  // against. A character device such as /dev/zero can be mapped shared too, but gives memory the guest
  // never sees, and a driver's mapping may have no end we could check.
  if (!S_ISREG(st.st_mode))
    return fail(what + ": its file descriptor is " + file_type(st.st_mode) +
                "; guest memory must be a regular file shared with the guest (memfd, hugetlbfs or tmpfs; "
                "QEMU: memory-backend-memfd or memory-backend-file with share=on)");
  const uint64_t file_end = mmap_offset + size;
  // Touching a page past the end of a file raises SIGBUS in whichever thread does it: a guest must not
  // be able to kill the process by announcing a region larger than its file.
  if (file_end > static_cast<uint64_t>(st.st_size))
    return fail(what + ": offset " + hex(mmap_offset) + " + size is beyond the end of the file (" +
                hex(static_cast<uint64_t>(st.st_size)) + " bytes)");

  // The mapping covers only the pages the region lies in: the file before mmap_offset may be as large
  // as the front end likes and costs no address space. hugetlbfs maps only whole huge pages, at offsets
  // that are multiples of them, and its st_blksize is the huge page size (DPDK rounds the same way); for
  // ordinary files st_blksize is the page size, or a multiple of it that is just as valid.
  const uint64_t page = uint64_t(sysconf(_SC_PAGESIZE));
  const uint64_t blk = st.st_blksize > 0 && uint64_t(st.st_blksize) % page == 0 ? uint64_t(st.st_blksize) : page;
  const uint64_t map_start = mmap_offset - mmap_offset % blk;
  uint64_t map_end;
  if (__builtin_add_overflow(file_end, blk - 1, &map_end)) return fail(what + ": mapping length overflows");
  map_end -= map_end % blk;
  const uint64_t map_len = map_end - map_start;
  if (map_len > SIZE_MAX) return fail(what + ": mapping length overflows");

  const GuestMemoryLimits lim = guest_memory_limits();
  const uint64_t table = mapped_bytes();
  if (map_len > lim.per_port || table > lim.per_port - map_len)
    return fail(what + ": mapping it takes " + bytes(map_len) + ", and the other regions of the port's table map " +
                bytes(table) + ", over the limit of " + bytes(lim.per_port) +
                " per port; give the guest less memory, or raise the limit (docs/security.md, guest memory)");
  uint64_t process;
  if (!reserve_mapped(map_len, lim.per_process, &process))
    return fail(what + ": mapping it takes " + bytes(map_len) + ", and the process already maps " + bytes(process) +
                " for all its ports, over the limit of " + bytes(lim.per_process) +
                " per process; disconnect guests, spread them over more processes, or raise the limit "
                "(docs/security.md, guest memory)");

  void* p = mmap(nullptr, size_t(map_len), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, off_t(map_start));
  if (p == MAP_FAILED) {
    const int e = errno;
    release_mapped(map_len);
    return fail(what + ": mmap of " + bytes(map_len) + " at file offset " + hex(map_start) + ": " + strerror(e));
  }
  if (!register_guest_mapping(p, size_t(map_len))) {
    munmap(p, size_t(map_len));
    release_mapped(map_len);
    return fail(what + ": the process already maps " + std::to_string(kMaxGuestMappings) +
                " guest memory regions; disconnect guests or remove ports first");
  }
  auto map = std::make_shared<Mapping>(static_cast<uint8_t*>(p), size_t(map_len), fd);

  auto next = std::make_shared<GuestMemory>(*this);
  MemRegion r{gpa, size, uaddr, mmap_offset, map->base + (mmap_offset - map_start), std::move(map)};
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
  if (err)
    *err =
        "no memory region at guest address " + hex(gpa) + " with size " + hex(size) + " and user address " + hex(uaddr);
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

GuestMemory::Window GuestMemory::window_of(uint64_t gpa, uint64_t len) const {
  for (uint32_t i = 0; i < regions_.size(); i++) {
    const MemRegion& r = regions_[i];
    const uint64_t off = gpa - r.gpa;
    if (off < r.size && len <= r.size - off) {
      last_.store(i, std::memory_order_relaxed);
      return Window{r.gpa, r.size, r.host};
    }
  }
  return Window{0, 0, nullptr};
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
