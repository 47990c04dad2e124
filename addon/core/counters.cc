#include "core/counters.h"

#include <cstdlib>
#include <cstring>

namespace vw {

#define VW_INFO(id, family, labels, help) {#id, family, labels, help},
const CounterInfo kQueueCounterInfo[kQueueCounterCount] = {VW_QUEUE_COUNTERS(VW_INFO)};
const CounterInfo kPmdCounterInfo[kPmdCounterCount] = {VW_PMD_COUNTERS(VW_INFO)};
#undef VW_INFO

const char* invalid_reason(QueueCounter c) {
  // The reason is the label value of the counter's table entry: reason="...".
  static std::string reasons[kQueueCounterCount];
  static std::once_flag once;
  std::call_once(once, [] {
    for (uint32_t i = 0; i < kQueueCounterCount; i++) {
      const char* l = strstr(kQueueCounterInfo[i].labels, "reason=\"");
      if (!l) continue;
      l += 8;
      const char* e = strchr(l, '"');
      reasons[i].assign(l, e ? size_t(e - l) : strlen(l));
    }
  });
  return c < kQueueCounterCount ? reasons[c].c_str() : "";
}

CounterBlock::CounterBlock(uint32_t queue_sets, uint32_t pmd_sets)
    : queue_sets_(queue_sets),
      pmd_sets_(pmd_sets),
      total_words_(queue_sets * kQueueCounterCount + pmd_sets * kPmdCounterCount),
      used_(queue_sets, false) {
  data_ = static_cast<uint64_t*>(aligned_alloc(64, (size_t(total_words_) * 8 + 63) & ~size_t(63)));
  if (!data_) abort();  // a few hundred KiB at start-up; nothing sensible to do without it
  memset(data_, 0, size_t(total_words_) * 8);
}

CounterBlock::~CounterBlock() { free(data_); }

int CounterBlock::alloc_queue_sets(uint32_t n) {
  std::lock_guard<std::mutex> l(mu_);
  for (uint32_t first = 0; first + n <= queue_sets_; first++) {
    uint32_t k = 0;
    while (k < n && !used_[first + k]) k++;
    if (k == n) {
      for (k = 0; k < n; k++) used_[first + k] = true;
      memset(queue_set(first), 0, size_t(n) * kQueueCounterCount * 8);
      return int(first);
    }
  }
  return -1;
}

void CounterBlock::free_queue_sets(int first, uint32_t n) {
  std::lock_guard<std::mutex> l(mu_);
  for (uint32_t k = 0; k < n; k++) used_[uint32_t(first) + k] = false;
}

}  // namespace vw
