#include "frontend/guest_ram.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "frontend/errors.h"

namespace vw {

GuestRam::GuestRam() : page_(uint64_t(sysconf(_SC_PAGESIZE))) {}

GuestRam::~GuestRam() {
  for (const Region& r : regions_) munmap(r.host, r.size);
  if (fd_ >= 0) close(fd_);
}

bool GuestRam::create(uint64_t size, uint32_t n, std::string* err) {
  const uint64_t region_size = round_up((size + n - 1) / n, page_);
  fd_ = memfd_create("vhostwire-virtio-user", MFD_CLOEXEC);
  if (fd_ < 0) return fail(err, sys_error("memfd_create"));
  fd_size_ = region_size * n;
  if (ftruncate(fd_, off_t(fd_size_)) < 0) return fail(err, sys_error("sizing guest memory"));
  for (uint32_t i = 0; i < n; i++)
    if (!map(kGuestBase + i * region_size, region_size, i * region_size, err)) return false;
  return true;
}

bool GuestRam::grow(uint64_t len, std::string* err) {
  len = round_up(len, page_);
  const uint64_t offset = fd_size_;
  if (ftruncate(fd_, off_t(offset + len)) < 0) return fail(err, sys_error("growing guest memory"));
  // The file keeps its new size whatever happens next: unused file space costs nothing, and a region
  // is never given an offset twice.
  fd_size_ = offset + len;
  return map(end(), len, offset, err);
}

void GuestRam::shrink() {
  munmap(regions_.back().host, regions_.back().size);
  regions_.pop_back();
}

bool GuestRam::map(uint64_t gpa, uint64_t size, uint64_t offset, std::string* err) {
  void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, off_t(offset));
  if (p == MAP_FAILED) return fail(err, sys_error("mmap of guest memory"));
  regions_.push_back({gpa, size, offset, static_cast<uint8_t*>(p), false});
  return true;
}

VhostUserMemRegion GuestRam::describe(size_t i) const {
  const Region& r = regions_[i];
  return {r.gpa, r.size, uint64_t(reinterpret_cast<uintptr_t>(r.host)), r.offset};
}

const GuestRam::Region* GuestRam::region_of(uint64_t gpa) const {
  for (const Region& r : regions_)
    if (gpa >= r.gpa && gpa - r.gpa < r.size) return &r;
  return nullptr;
}

uint8_t* GuestRam::host(uint64_t gpa, uint64_t len) const {
  const Region* r = region_of(gpa);
  if (!r || len > r->size - (gpa - r->gpa)) return nullptr;
  return r->host + (gpa - r->gpa);
}

uint64_t GuestRam::gpa_of(const void* p) const {
  const uint8_t* h = static_cast<const uint8_t*>(p);
  for (const Region& r : regions_)
    if (h >= r.host && h < r.host + r.size) return r.gpa + uint64_t(h - r.host);
  return 0;
}

// Guest space is contiguous but each region is its own mapping, so a range is visited piecewise:
// f(host, done, n) per piece. The whole range is checked first, so a failed access changes nothing.
template <class F>
bool GuestRam::walk(uint64_t gpa, uint64_t len, F&& f) const {
  if (len > UINT64_MAX - gpa) return false;
  for (int pass = 0; pass < 2; pass++) {
    for (uint64_t done = 0; done < len;) {
      const Region* r = region_of(gpa + done);
      if (!r) return false;
      const uint64_t off = gpa + done - r->gpa, n = std::min(len - done, r->size - off);
      if (pass == 1) f(r->host + off, done, n);
      done += n;
    }
  }
  return true;
}

bool GuestRam::write(uint64_t gpa, const uint8_t* p, uint64_t len) const {
  return walk(gpa, len, [p](uint8_t* h, uint64_t done, uint64_t n) { memcpy(h, p + done, n); });
}

bool GuestRam::read(uint64_t gpa, uint8_t* p, uint64_t len) const {
  return walk(gpa, len, [p](const uint8_t* h, uint64_t done, uint64_t n) { memcpy(p + done, h, n); });
}

uint64_t GuestRam::end() const {
  uint64_t e = kGuestBase;
  for (const Region& r : regions_) e = std::max(e, r.gpa + r.size);
  return e;
}

}  // namespace vw
