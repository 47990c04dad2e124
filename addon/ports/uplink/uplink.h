// A host uplink as the engine sees it: one port on one host interface, whatever driver moves its
// packets (AF_PACKET in kernel mode, AF_XDP in bypass mode). The driver follows the engine's mode
// (open_driver in uplink.cc is the one place that picks it); switching drivers keeps the port, its
// name, its wire and its counters.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/counters.h"
#include "runtime/mode.h"
#include "core/port.h"

namespace vw {

class UplinkPort : public Port {
 public:
  // Opens the driver mode wants on interface ifname. nullptr and *err on failure.
  static std::unique_ptr<UplinkPort> open(const std::string& name, const std::string& ifname, Mode mode,
                                          CounterBlock& block, std::string* err);
  ~UplinkPort() override;

  const std::string& ifname() const { return ifname_; }
  int counter_set() const { return counter_set_; }
  Mode mode() const { return mode_; }

  // Switching drivers, in two steps so that a caller switching several ports can open every new driver
  // before it changes any. open_driver: the driver mode m wants, opened next to the running one (which
  // keeps running). install: makes it the running driver with the data path paused, and closes the old
  // one once the data path runs again.
  std::unique_ptr<Port> open_driver(Mode m, std::string* err);
  void install(Mode m, std::unique_ptr<Port> driver);

  uint16_t queue_pairs() const override { return driver_->queue_pairs(); }
  uint16_t rx_burst(uint16_t qp, Burst& b) override { return driver_->rx_burst(qp, b); }
  uint16_t tx_burst(uint16_t qp, const Burst& b) override { return driver_->tx_burst(qp, b); }
  void release(uint16_t qp, Burst& b) override { driver_->release(qp, b); }
  void publish_counters() override { counters_.publish(); }
  bool tx_ready() override { return driver_->tx_ready(); }
  bool holds_until_peer_ready() const override { return driver_->holds_until_peer_ready(); }
  bool owns(const void* addr) const override { return driver_->owns(addr); }
  void memory_fault() override { driver_->memory_fault(); }
  void abort_tx(uint16_t qp) override { driver_->abort_tx(qp); }
  bool arm_wakeup(std::vector<pollfd>& fds) override { return driver_->arm_wakeup(fds); }
  void disarm_wakeup() override { driver_->disarm_wakeup(); }

 private:
  UplinkPort(const std::string& name, const std::string& ifname, CounterBlock& block);

  CounterBlock& block_;
  int counter_set_;
  QueueCounters counters_;  // written by the driver, published by us
  std::string ifname_;
  Mode mode_ = Mode::kKernel;
  std::unique_ptr<Port> driver_;
};

}  // namespace vw
