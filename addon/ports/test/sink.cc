#include "ports/test/sink.h"

#include <cstring>

namespace vw {

SinkPort::SinkPort(std::string name, CounterBlock& block)
    : Port(std::move(name)), block_(block), counter_set_(block.alloc_queue_sets(1)), buf_(new uint8_t[kMaxFrame]) {
  if (counter_set_ >= 0) counters_.shared = block.queue_set(uint32_t(counter_set_));
}

SinkPort::~SinkPort() {
  if (counter_set_ >= 0) block_.free_queue_sets(counter_set_, 1);
}

uint16_t SinkPort::tx_burst(uint16_t, const Burst& b) {
  uint64_t bytes = 0;
  for (uint16_t i = 0; i < b.n; i++) {
    const PacketView& p = b.pkt[i];
    uint8_t* dst = buf_.get();
    for (uint16_t s = 0; s < p.nseg; s++) {
      const Span& sp = b.span[p.first + s];
      memcpy(dst, sp.p, sp.len);
      dst += sp.len;
    }
    bytes += p.len;
  }
  counters_.add(TX_PACKETS, b.n);
  counters_.add(TX_BYTES, bytes);
  return b.n;
}

}  // namespace vw
