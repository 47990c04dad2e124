#include "ports/test/sink.h"

#include <cstring>

#include "runtime/port_kind.h"

namespace vw {

SinkPort::SinkPort(std::string name, CounterBlock& block)
    : Port(std::move(name)), sets_(block, 1), buf_(new uint8_t[kMaxFrame]) {
  counters_.shared = sets_.set(0);
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
    counters_.add(TX_SIZE_64 + size_bin(p.len));
  }
  counters_.add(TX_PACKETS, b.n);
  counters_.add(TX_BYTES, bytes);
  return b.n;
}

// Registered in runtime/port_kinds.cc (extern: a namespace-scope const is otherwise private to this file).
extern const PortKind kSinkKind = {"sink",
                                   [](const std::string& name, const PortParams&, PortContext& ctx, std::string*) {
                                     return std::unique_ptr<Port>(new SinkPort(name, ctx.counters));
                                   }};

}  // namespace vw
