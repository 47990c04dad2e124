// A host uplink as the engine sees it: one port on one host interface, whatever driver moves its
// packets: AF_PACKET sockets served by the kernel stack (a hash fanout group when there are several), or
// AF_XDP sockets, one per receive queue, that take the interface's frames before the stack sees them.
// The switch's mode picks the driver (driver_for in uplink.cc is the one place that does); switching
// drivers keeps the port, its name, its queues, its forwarder and its counters.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/counters.h"
#include "core/mode.h"
#include "core/port.h"
#include "ports/uplink/af_packet.h"
#include "ports/uplink/kernel_drops.h"

namespace vw {

enum class UplinkDriver { kAfPacket, kAfXdp };

// The highest receive queue an uplink may start at: the most queues Linux gives a device (4096) less one.
constexpr uint32_t kMaxUplinkQueue = 4095;

// Where an uplink sits on its interface.
struct UplinkPlace {
  std::string ifname;
  uint32_t first_queue = 0;  // bypass mode: queue pair q is the interface's receive queue first_queue + q
  uint16_t queues = 1;       // queue pairs: sockets, one per queue
  TpacketRing ring;          // kernel mode: each socket's receive ring
};

class XdpRedirect;

class UplinkPort : public Port {
 public:
  // Opens the driver mode wants on the interface. nullptr and *err on failure.
  static std::unique_ptr<UplinkPort> open(const std::string& name, const UplinkPlace& place, Mode mode,
                                          CounterBlock& block, std::string* err);
  ~UplinkPort() override;

  const std::string& ifname() const { return place_.ifname; }
  UplinkDriver driver() const { return driver_->kind; }

  int counter_set() const override { return sets_.first(); }
  void describe(Description& d) const override;
  // Opens the driver mode m wants next to the running one (which keeps running); its commit makes it the
  // running driver with the data path paused and closes the old one once the data path runs again.
  bool prepare_mode(Mode m, std::unique_ptr<ModeChange>* change, std::string* err) override;

  // Queue pair q is socket q of the running driver, which has one queue of its own.
  uint16_t queue_pairs() const override { return place_.queues; }
  uint16_t rx_burst(uint16_t qp, Burst& b) override { return driver_->queues[qp]->rx_burst(0, b); }
  uint16_t tx_burst(uint16_t qp, const Burst& b) override { return driver_->queues[qp]->tx_burst(0, b); }
  void release(uint16_t qp, Burst& b) override { driver_->queues[qp]->release(0, b); }
  // Each socket adds the kernel's drops first; closed drivers' last counts come in with them.
  void publish_counters() override;
  void abort_tx(uint16_t qp) override { driver_->queues[qp]->abort_tx(0); }
  bool arm_wakeup(std::vector<pollfd>& fds) override;

 private:
  // The sockets of one driver, one per queue pair, and for AF_XDP what steers the interface's frames to
  // them. The XDP program's link is closed before the sockets, so nothing is redirected to a closing one.
  struct Driver {
    UplinkDriver kind;
    std::unique_ptr<XdpRedirect> redirect;
    std::vector<std::unique_ptr<Port>> queues;
    explicit Driver(UplinkDriver k) : kind(k) {}
    ~Driver();
  };
  class DriverSwitch;
  UplinkPort(const std::string& name, const UplinkPlace& place, CounterBlock& block);
  std::unique_ptr<Driver> open_driver(UplinkDriver d, std::string* err);
  void install(std::unique_ptr<Driver> driver);

  UplinkPlace place_;
  CounterSets sets_;
  // Per queue pair: written by its socket, published by us. Both outlive every driver: declared before
  // driver_; never resized, so the sockets' pointers into them stay valid.
  std::vector<QueueCounters> counters_;
  std::vector<std::unique_ptr<KernelDrops>> kernel_;
  std::unique_ptr<Driver> driver_;
};

}  // namespace vw
