// Forwarding, apart from the PMD loop: the PMD serves a port's receive queues and hands each burst it got
// to the port's forwarder, which decides where the packets go and transmits them through Transmit. A wire
// (forward/wire.h) is the first forwarder; the learning bridge is another. Forwarders are changed only with
// every PMD that runs them paused, so forward() itself takes no locks.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/clock.h"
#include "core/port.h"
#include "forward/offload_fallback.h"

namespace vw {

// How a forwarder hands packets to a destination. The PMD owns one per thread: it records which port is
// being written while tx_burst runs, so that a fault in guest memory can be pinned on the right guest and
// the destination asked to undo its half-done transmit (Port::abort_tx). What the destination cannot
// take (an offload it did not accept) is done in software on the way (OffloadFallback).
class Transmit {
 public:
  uint16_t send(Port& to, uint16_t qp, const Burst& b) {
    to_ = &to;
    qp_ = qp;
    const uint32_t can = to.tx_offloads();
    const uint16_t n = OffloadFallback::needed(b, can) ? fallback_.send(to, qp, b, can) : to.tx_burst(qp, b);
    to_ = nullptr;
    delivered_ += n;
    return n;
  }
  // The destination whose tx_burst was running when the thread was interrupted (a fault), or null.
  Port* in_progress(uint16_t* qp) const {
    *qp = qp_;
    return to_;
  }
  void clear_in_progress() { to_ = nullptr; }
  // The time the PMD read when this step began: forwarders stamp what they learn with it rather than read
  // the clock once more per burst (at most one step's staleness, microseconds, is nothing to a MAC's age). A
  // Transmit outside a PMD (tests, benchmarks) has none and reads the clock.
  void set_now(uint64_t ns) { now_ = ns; }
  uint64_t now() const { return now_ ? now_ : now_ns(); }
  // Packets delivered since the last take_delivered().
  uint32_t take_delivered() {
    const uint32_t n = delivered_;
    delivered_ = 0;
    return n;
  }

 private:
  Port* to_ = nullptr;
  uint16_t qp_ = 0;
  uint64_t now_ = 0;
  OffloadFallback fallback_;
  uint32_t delivered_ = 0;
};

class Forwarder {
 public:
  explicit Forwarder(std::string name) : name_(std::move(name)) {}
  virtual ~Forwarder() = default;
  Forwarder(const Forwarder&) = delete;
  Forwarder& operator=(const Forwarder&) = delete;

  const std::string& name() const { return name_; }
  virtual const char* kind() const = 0;
  // The ports it joins, in the order they were given.
  virtual const std::vector<Port*>& members() const = 0;

  // Whether packets may be taken from `in` now. A port that holds_until_peer_ready() (a generator) is not
  // read before a destination can take what it would produce.
  virtual bool accepts_from(Port& in) = 0;
  // Delivers burst b, just received from queue pair qp of `in`, to its destinations. The PMD releases the
  // burst afterwards.
  virtual void forward(Port& in, uint16_t qp, Burst& b, Transmit& tx) = 0;
  // Whether its members' queue pairs may be served by several PMDs at once (when the members spread too):
  // forward() then runs on several threads at once, so it must keep no state of its own.
  virtual bool spreads() const { return false; }
  // The PMD threads (their indices) that run it from now on, first the one running queue pair 0; called
  // with every one of them paused.
  virtual void set_threads(const std::vector<uint32_t>& pmds) { (void)pmds; }
  // Called once per PMD iteration, busy or idle, for bounded housekeeping off the per-packet path (a
  // bridge ages its MAC table a few slots at a time). Must not touch guest memory. now: the iteration's
  // clock reading.
  virtual void tick(uint64_t now) { (void)now; }

 private:
  std::string name_;
};

}  // namespace vw
