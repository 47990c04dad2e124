// The transmit side's counters of a port that several PMD threads send into (its queues spread over
// PMDs, Port::spreads): each PMD counts what it sends in a private copy per queue pair and publishes it
// itself, so no two threads write one copy; the copies add up in the port's shared sets
// (PrivateCounters::publish adds what changed).
#pragma once

#include <memory>
#include <vector>

#include "core/counters.h"
#include "core/port.h"

namespace vw {

class PmdTxCounters {
 public:
  // With the runners paused: a copy per queue pair for each runner that has none yet. Copies are never
  // dropped, so nothing a PMD counted is lost when the runners change.
  void add_runners(const std::vector<PortRunner*>& runners, const CounterSets& sets, uint16_t queue_pairs) {
    for (PortRunner* r : runners) {
      const uint32_t k = r->index();
      if (k >= by_pmd_.size()) by_pmd_.resize(k + 1);
      if (by_pmd_[k]) continue;
      by_pmd_[k].reset(new QueueCounters[queue_pairs]);
      for (uint16_t q = 0; q < queue_pairs; q++) by_pmd_[k][q].shared = sets.set(q);
    }
    queue_pairs_ = queue_pairs;
  }
  // The calling PMD's copy for queue pair qp; null on a thread that has none.
  QueueCounters* mine(uint16_t qp) {
    return t_pmd_index < by_pmd_.size() && by_pmd_[t_pmd_index] ? &by_pmd_[t_pmd_index][qp] : nullptr;
  }
  void publish_mine() {
    if (t_pmd_index < by_pmd_.size() && by_pmd_[t_pmd_index])
      for (uint16_t q = 0; q < queue_pairs_; q++) by_pmd_[t_pmd_index][q].publish();
  }

 private:
  std::vector<std::unique_ptr<QueueCounters[]>> by_pmd_;
  uint16_t queue_pairs_ = 0;
};

}  // namespace vw
