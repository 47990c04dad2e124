// A wire: two ports joined in both directions, everything one receives transmitted into the other. The
// point-to-point fast path: no lookup, one copy straight from the source's memory into the destination's.
#pragma once

#include "forward/forwarder.h"

namespace vw {

class Wire final : public Forwarder {
 public:
  Wire(Port& a, Port& b) : Forwarder(a.name() + "=" + b.name()), members_{&a, &b} {}

  const char* kind() const override { return "wire"; }
  bool spreads() const override { return true; }
  const std::vector<Port*>& members() const override { return members_; }
  bool accepts_from(Port& in) override { return !in.holds_until_peer_ready() || peer(in).tx_ready(); }
  // Queue pair q of one side feeds queue pair q of the other, folded onto the queues it has.
  void forward(Port& in, uint16_t qp, Burst& b, Transmit& tx) override {
    Port& to = peer(in);
    tx.send(to, uint16_t(qp % to.queue_pairs()), b);
  }
  Port& peer(const Port& p) const { return members_[0] == &p ? *members_[1] : *members_[0]; }

 private:
  std::vector<Port*> members_;
};

}  // namespace vw
