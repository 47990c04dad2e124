// A queue that several PMD threads may use at once (a port whose queues are spread over PMDs, see
// Port::spreads): they take turns under this spinlock for a burst at a time. It records which PMD holds
// it, so that a thread cut short by a fault in guest memory while holding it can give it back.
#pragma once

#include <atomic>
#include <cstdint>

#include "core/port.h"

namespace vw {

struct alignas(64) QueueLock {
  std::atomic<uint32_t> holder{0};  // 1 + the PMD index holding it; 0: free

  void lock() {
    const uint32_t me = t_pmd_index + 1;
    for (;;) {
      uint32_t free = 0;
      if (holder.compare_exchange_weak(free, me, std::memory_order_acquire, std::memory_order_relaxed)) return;
      while (holder.load(std::memory_order_relaxed) != 0) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
      }
    }
  }
  void unlock() { holder.store(0, std::memory_order_release); }
  bool held_here() const { return holder.load(std::memory_order_relaxed) == t_pmd_index + 1; }
};

}  // namespace vw
