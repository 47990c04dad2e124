// The one clock the data path reads: CLOCK_MONOTONIC in nanoseconds (rate limits, timeouts, PAUSE
// calibration). Monotonic because wall-clock steps must not stall a gen or fire a timeout early.
#pragma once

#include <time.h>

#include <cstdint>

namespace vw {

inline uint64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

}  // namespace vw
