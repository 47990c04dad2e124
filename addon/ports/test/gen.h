// A test port that behaves like a NIC's receive side: it produces frames of one size (an Ethernet/IPv4/
// UDP frame to 198.18.0.2, the benchmarking range), at a given rate and up to a given count, as views
// into one buffer it owns. It drops whatever is sent to it, counted as not_ready.
#pragma once

#include <cstdint>
#include <memory>

#include "core/port.h"

namespace vw {

class GenPort : public Port {
 public:
  // size: frame bytes (60..kMaxFrame); rate: packets per second, 0 = as fast as possible; count: total
  // packets to produce, 0 = no limit; macs: source addresses 02:01:00:00:00:00 + k for k < macs, one per
  // frame in turn (1: the fixed 02:00:00:00:00:01).
  GenPort(std::string name, uint32_t size, uint64_t rate, uint64_t count, uint32_t macs, CounterBlock& block);
  ~GenPort() override;

  uint16_t queue_pairs() const override { return 1; }
  uint16_t rx_burst(uint16_t qp, Burst& b) override;
  uint16_t tx_burst(uint16_t qp, const Burst& b) override;
  void release(uint16_t, Burst&) override {}
  void publish_counters() override { counters_.publish(); }
  QueueCounters* tx_counters(uint16_t) override { return &counters_; }
  // A generator stands for traffic arriving from outside: it starts (and its rate clock with it) when
  // the port it feeds can take packets, so count=N means N delivered, not N lost to a slow connect.
  bool holds_until_peer_ready() const override { return true; }
  bool arm_wakeup(std::vector<pollfd>& fds) override;
  void disarm_wakeup() override;
  int counter_set() const override { return sets_.first(); }
  void describe(Description& d) const override;

 private:
  uint64_t due(uint64_t now_ns) const;

  CounterSets sets_;
  QueueCounters counters_;
  uint32_t size_;
  uint64_t rate_, count_, sent_ = 0;
  uint64_t start_ns_ = 0;
  int timer_fd_ = -1;  // kernel mode: wakes the PMD when the next rate-limited burst is due
  // One frame per burst slot when the source MAC varies: a burst's frames are copied out before the next
  // rx_burst rewrites them (release is a no-op), so kBurst buffers suffice for any number of MACs.
  uint32_t macs_, next_mac_ = 0;
  std::unique_ptr<uint8_t[]> frame_;
};

}  // namespace vw
