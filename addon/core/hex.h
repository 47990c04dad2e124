// Addresses, sizes and feature bits in error messages, as the specifications write them: 0x-prefixed hex.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

namespace vw {

inline std::string hex(uint64_t v) {
  char buf[24];
  snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

}  // namespace vw
