// The front end's guest memory: one memfd, mapped region by region and shared with the backend.
//
// Guest physical addresses are made up (regions start at kGuestBase and follow each other without gaps),
// user addresses are our real mapping addresses, so a backend that confuses the two fails loudly.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ports/vhost_user/vhost_user_wire.h"

namespace vw {

inline uint64_t round_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

class GuestRam {
 public:
  static constexpr uint64_t kGuestBase = 0x100000000ull;

  struct Region {
    uint64_t gpa, size, offset;  // offset: in the memfd, also the mmap_offset the backend is told
    uint8_t* host;
    bool removed;  // gone from the backend's table; our mapping stays until we are destroyed
  };

  GuestRam();
  GuestRam(const GuestRam&) = delete;
  GuestRam& operator=(const GuestRam&) = delete;
  ~GuestRam();  // unmaps every region, closes the memfd

  // n regions of equal size, together at least size bytes, from kGuestBase on.
  bool create(uint64_t size, uint32_t n, std::string* err);
  // A new region of len bytes (rounded up to a page) after the last one, at a fresh offset in the memfd.
  bool grow(uint64_t len, std::string* err);
  // Takes back the region grow added last, when the backend would not have it.
  void shrink();

  uint64_t page() const { return page_; }
  int fd() const { return fd_; }
  std::vector<Region>& regions() { return regions_; }
  const std::vector<Region>& regions() const { return regions_; }
  // Region i as SET_MEM_TABLE, ADD_MEM_REG and REM_MEM_REG describe it.
  VhostUserMemRegion describe(size_t i) const;

  // Our address of [gpa, gpa + len) when it lies inside one mapping, else null.
  uint8_t* host(uint64_t gpa, uint64_t len) const;
  // Guest address of a pointer into one of our mappings, 0 if it is in none.
  uint64_t gpa_of(const void* p) const;
  // Copies across region boundaries; a range not wholly inside guest memory is refused untouched.
  bool write(uint64_t gpa, const uint8_t* p, uint64_t len) const;
  bool read(uint64_t gpa, uint8_t* p, uint64_t len) const;
  // The end of the last region, removed or not.
  uint64_t end() const;

 private:
  const Region* region_of(uint64_t gpa) const;
  bool map(uint64_t gpa, uint64_t size, uint64_t offset, std::string* err);
  template <class F>
  bool walk(uint64_t gpa, uint64_t len, F&& f) const;

  uint64_t page_ = 4096;
  int fd_ = -1;
  uint64_t fd_size_ = 0;
  std::vector<Region> regions_;
};

}  // namespace vw
