// The kernel's own drops on an uplink's socket: frames it had for us and threw away before they reached a
// ring we read (the ring was full, the fill ring empty), with the ring events around them. No frame we
// read says so, and the interface's counters do not see them either (XDP redirects before the stack
// counts), so the drivers ask the socket: PACKET_STATISTICS (AF_PACKET) and XDP_STATISTICS (AF_XDP).
//
// Asking is a system call, so it is never done per burst: the data path thread asks at most every
// kKernelStatsEveryNs, when it publishes counters (which it does at least every 100 ms, also when
// idle, see runtime/pmd.cc), and a driver asks once more as it closes, so that what its socket
// dropped since the last look is not lost with it.
#pragma once

#include <atomic>
#include <cstdint>

#include "core/counters.h"

namespace vw {

// Often enough that a scrape sees drops within a fraction of a second; rare enough to cost nothing.
constexpr uint64_t kKernelStatsEveryNs = 100 * 1000 * 1000;

// The kernel counters occupy one run of the queue counter table, in this order.
constexpr uint32_t kKernelCounterFirst = KERNEL_DROP_PACKET_DROPS;
constexpr uint32_t kKernelCounterCount = KERNEL_EVENT_XDP_TX_RING_EMPTY - KERNEL_DROP_PACKET_DROPS + 1;
static_assert(kKernelCounterCount == 8, "the kernel counters must stay one run of the table");

// Owned by the uplink port, shared by whichever drivers it has open; outlives them.
class KernelDrops {
 public:
  explicit KernelDrops(QueueCounters* counters) : c_(counters) {}
  KernelDrops(const KernelDrops&) = delete;
  KernelDrops& operator=(const KernelDrops&) = delete;

  // Data path thread: whether the running driver should read its socket's statistics now.
  bool due(uint64_t now) {
    if (now - last_read_ < kKernelStatsEveryNs) return false;
    last_read_ = now;
    return true;
  }
  // Data path thread: n more of kernel counter id.
  void add(QueueCounter id, uint64_t n) {
    if (n) c_->add(id, n);
  }
  // Data path thread: adds what drivers that closed since the last call left behind.
  void collect() {
    for (uint32_t i = 0; i < kKernelCounterCount; i++)
      if (left_[i].load(std::memory_order_relaxed))
        c_->add(kKernelCounterFirst + i, left_[i].exchange(0, std::memory_order_relaxed));
  }
  // A driver closing, on the control thread: the data path may already run on the next driver and owns
  // the counters, so its last counts wait here for collect().
  void leave(QueueCounter id, uint64_t n) {
    if (n) left_[id - kKernelCounterFirst].fetch_add(n, std::memory_order_relaxed);
  }

 private:
  QueueCounters* c_;
  uint64_t last_read_ = 0;
  std::atomic<uint64_t> left_[kKernelCounterCount] = {};
};

}  // namespace vw
