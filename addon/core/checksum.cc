#include "core/checksum.h"

#include <algorithm>
#include <cstring>

namespace vw {

void Csum::add(const uint8_t* p, uint32_t n) {
  if (!n) return;
  if (odd_) {
    sum_ += p[0];
    p++;
    n--;
    odd_ = false;
  }
  // Eight bytes at a time in the machine's byte order: the one's-complement sum does not depend on the
  // order the bytes of each word are taken in, as long as it is swapped back at the end (RFC 1071 2(B)).
  // Two 32-bit halves a step into 64 bits: no carry is lost before fold() for any frame we forward.
  uint64_t native = 0;
  for (; n >= 8; p += 8, n -= 8) {
    uint64_t w;
    memcpy(&w, p, 8);
    native += (w & 0xffffffff) + (w >> 32);
  }
  for (; n >= 2; p += 2, n -= 2) {
    uint16_t w;
    memcpy(&w, p, 2);
    native += w;
  }
  while (native >> 16) native = (native & 0xffff) + (native >> 16);
  sum_ += __builtin_bswap16(uint16_t(native));
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
