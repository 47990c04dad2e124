// A host uplink as the engine sees it: one port on one host interface, whatever driver moves its
// packets: an AF_PACKET socket served by the kernel stack, or an AF_XDP socket that takes the interface's
// frames before the stack sees them. The switch's mode picks the driver (driver_for in uplink.cc is the one
// place that does); switching drivers keeps the port, its name, its forwarder and its counters.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/counters.h"
#include "core/mode.h"
#include "core/port.h"
#include "ports/uplink/kernel_drops.h"

namespace vw {

enum class UplinkDriver { kAfPacket, kAfXdp };

class UplinkPort : public Port {
 public:
  // Opens the driver mode wants on interface ifname. nullptr and *err on failure.
  static std::unique_ptr<UplinkPort> open(const std::string& name, const std::string& ifname, Mode mode,
                                          CounterBlock& block, std::string* err);
  ~UplinkPort() override;

  const std::string& ifname() const { return ifname_; }
  UplinkDriver driver() const { return driver_kind_; }

  int counter_set() const override { return sets_.first(); }
  void describe(Description& d) const override;
  // Opens the driver mode m wants next to the running one (which keeps running); its commit makes it the
  // running driver with the data path paused and closes the old one once the data path runs again.
  bool prepare_mode(Mode m, std::unique_ptr<ModeChange>* change, std::string* err) override;

  uint16_t queue_pairs() const override { return driver_->queue_pairs(); }
  uint16_t rx_burst(uint16_t qp, Burst& b) override { return driver_->rx_burst(qp, b); }
  uint16_t tx_burst(uint16_t qp, const Burst& b) override { return driver_->tx_burst(qp, b); }
  QueueCounters* tx_counters(uint16_t) override { return &counters_; }
  void release(uint16_t qp, Burst& b) override { driver_->release(qp, b); }
  // The driver adds the kernel's drops first; closed drivers' last counts come in with them.
  void publish_counters() override {
    driver_->publish_counters();
    kernel_.collect();
    counters_.publish();
  }
  bool tx_ready() override { return driver_->tx_ready(); }
  bool holds_until_peer_ready() const override { return driver_->holds_until_peer_ready(); }
  bool owns(const void* addr) const override { return driver_->owns(addr); }
  void memory_fault() override { driver_->memory_fault(); }
  void abort_tx(uint16_t qp) override { driver_->abort_tx(qp); }
  bool arm_wakeup(std::vector<pollfd>& fds) override { return driver_->arm_wakeup(fds); }
  void disarm_wakeup() override { driver_->disarm_wakeup(); }

 private:
  class DriverSwitch;
  UplinkPort(const std::string& name, const std::string& ifname, CounterBlock& block);
  std::unique_ptr<Port> open_driver(UplinkDriver d, std::string* err);
  void install(UplinkDriver d, std::unique_ptr<Port> driver);

  CounterSets sets_;
  QueueCounters counters_;  // written by the driver, published by us
  KernelDrops kernel_;      // outlives every driver: declared before driver_
  std::string ifname_;
  UplinkDriver driver_kind_ = UplinkDriver::kAfPacket;
  std::unique_ptr<Port> driver_;
};

}  // namespace vw
