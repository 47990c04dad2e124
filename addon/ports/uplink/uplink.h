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
#include "core/pmd_tx_counters.h"
#include "core/port.h"
#include "core/queue_lock.h"
#include "ports/uplink/af_packet.h"
#include "ports/uplink/af_xdp.h"
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
  bool offloads = true;      // kernel mode: super-frames and partial checksums go to the kernel as they are
  XskParams xsk;             // bypass mode: each socket's UMEM and rings
};

class XdpRedirect;
class LinkMonitor;
struct PortContext;

// What the uplink last saw of its interface: administratively up with carrier, not, or deleted.
enum class LinkState { kUp, kDown, kGone };

class UplinkPort : public Port {
 public:
  // Opens the driver the context's mode wants on the interface and starts watching the interface's link.
  // nullptr and *err on failure.
  static std::unique_ptr<UplinkPort> open(const std::string& name, const UplinkPlace& place, PortContext& ctx,
                                          std::string* err);
  ~UplinkPort() override;

  const std::string& ifname() const { return place_.ifname; }
  UplinkDriver driver() const { return driver_->kind; }

  int counter_set() const override { return sets_.first(); }
  void describe(Description& d) const override;
  // Opens the driver mode m wants next to the running one (which keeps running); its commit makes it the
  // running driver with the data path paused and closes the old one once the data path runs again.
  bool prepare_mode(Mode m, std::unique_ptr<ModeChange>* change, std::string* err) override;

  // Queue pair q is socket q of the running driver, which has one queue of its own. With several runners
  // (queues spread over PMDs) a socket is used under its queue's lock, a call at a time: its receive side
  // by the PMD serving it, its transmit side by any that sends into it.
  uint16_t queue_pairs() const override { return place_.queues; }
  uint16_t rx_burst(uint16_t qp, Burst& b) override {
    Locked l(*this, qp);
    return driver_->queues[qp]->rx_burst(0, b);
  }
  uint16_t tx_burst(uint16_t qp, const Burst& b) override {
    // Not a scoped lock: a fault in the source's memory leaves tx_burst here, abort_tx gives it back.
    if (shared_) locks_[qp].lock();
    const uint16_t n = driver_->queues[qp]->tx_burst(0, b);
    if (shared_) locks_[qp].unlock();
    return n;
  }
  void release(uint16_t qp, Burst& b) override {
    Locked l(*this, qp);
    driver_->queues[qp]->release(0, b);
  }
  QueueCounters* tx_counters(uint16_t qp) override;
  // The running driver's: AF_PACKET takes offloads through its virtio_net_hdr, AF_XDP none.
  uint32_t tx_offloads() const override { return driver_->queues[0]->tx_offloads(); }
  // Each socket adds the kernel's drops first; closed drivers' last counts come in with them.
  void publish_counters() override;
  void abort_tx(uint16_t qp) override;
  void memory_fault() override;
  bool arm_wakeup(std::vector<pollfd>& fds) override;
  bool spreads() const override { return true; }
  void publish_queues(uint32_t qmask) override;
  bool arm_queues(uint32_t qmask, std::vector<pollfd>& fds) override;

 protected:
  void runners_changed() override;

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
  // Control thread: looks at the interface after a link message. Follows it by ifindex while it exists
  // (a rename changes our name for it); once it is deleted, waits for an interface of its last name and
  // reopens the running driver's sockets on it.
  void check_link();
  void set_link(LinkState s, const std::string& why);
  LinkState read_link_flags() const;
  void raise(const std::string& kind, const std::string& reason);

  UplinkPlace place_;
  EventSink events_;
  unsigned ifindex_ = 0;
  LinkState link_ = LinkState::kUp;
  uint64_t link_changes_ = 0;
  unsigned failed_ifindex_ = 0;  // the returned interface a reopen last failed on, so it is reported once
  CounterSets sets_;
  // Per queue pair: written by its socket, published by us. Both outlive every driver: declared before
  // driver_; never resized, so the sockets' pointers into them stay valid.
  std::vector<QueueCounters> counters_;
  std::vector<std::unique_ptr<KernelDrops>> kernel_;
  std::unique_ptr<Driver> driver_;
  std::unique_ptr<LinkMonitor> monitor_;  // goes first: no link callback runs into a half-destroyed port

  bool shared_ = false;
  std::unique_ptr<QueueLock[]> locks_;  // per queue pair
  // What each PMD's software fallback counts for each queue pair (tx_counters), outside the socket's lock.
  PmdTxCounters pmd_tx_;
  struct Locked {
    UplinkPort& u;
    uint16_t q;
    Locked(UplinkPort& port, uint16_t qp) : u(port), q(qp) {
      if (u.shared_) u.locks_[q].lock();
    }
    ~Locked() {
      if (u.shared_) u.locks_[q].unlock();
    }
  };
};

}  // namespace vw
