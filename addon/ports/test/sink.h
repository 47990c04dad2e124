// A test port that behaves like a NIC's transmit side: every packet sent to it is copied into its own
// buffer (the copy a real device would DMA), counted, and dropped. It never produces packets.
#pragma once

#include <memory>

#include "core/port.h"

namespace vw {

class SinkPort : public Port {
 public:
  SinkPort(std::string name, CounterBlock& block);

  uint16_t queue_pairs() const override { return 1; }
  uint16_t rx_burst(uint16_t, Burst& b) override {
    b.clear();
    return 0;
  }
  // Never receives: its PMD need not poll it.
  bool rx_ready(uint16_t) const override { return false; }
  uint16_t tx_burst(uint16_t qp, const Burst& b) override;
  void release(uint16_t, Burst&) override {}
  void publish_counters() override { counters_.publish(); }
  QueueCounters* tx_counters(uint16_t) override { return &counters_; }
  int counter_set() const override { return sets_.first(); }

 private:
  CounterSets sets_;
  QueueCounters counters_;
  std::unique_ptr<uint8_t[]> buf_;
};

}  // namespace vw
