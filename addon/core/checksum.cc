#include "core/checksum.h"

#include <algorithm>

namespace vw {

void Csum::add(const uint8_t* p, uint32_t n) {
  if (!n) return;
  if (odd_) {
    sum_ += p[0];
    p++;
    n--;
    odd_ = false;
  }
  // Two bytes at a time into a 64-bit sum: no carry is lost before fold() for any frame we forward.
  for (; n >= 2; p += 2, n -= 2) sum_ += uint32_t(p[0]) << 8 | p[1];
  if (n) {
    sum_ += uint32_t(p[0]) << 8;
    odd_ = true;
  }
}

uint16_t Csum::fold() const {
  uint64_t s = sum_;
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  return uint16_t(s);
}

void csum_packet(const Burst& b, const PacketView& p, uint32_t from, uint32_t to, Csum& c) {
  to = std::min(to, p.len);
  uint32_t off = 0;
  for (uint16_t s = 0; s < p.nseg && off < to; s++) {
    const Span& sp = b.span[p.first + s];
    const uint32_t lo = std::max(from, off), hi = std::min(to, off + sp.len);
    if (lo < hi) c.add(sp.p + (lo - off), hi - lo);
    off += sp.len;
  }
}

uint16_t complete_partial(const Burst& b, const PacketView& p) {
  Csum c;
  csum_packet(b, p, p.meta.csum_start, p.len, c);
  const uint16_t v = c.finish();
  return v ? v : 0xffff;
}

}  // namespace vw
