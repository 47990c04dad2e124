// A port is anything packets enter and leave the backend through: a vhost-user guest, a host uplink, a
// sink, a generator. A PMD thread serves a port's receive queues with three calls per burst (Snabb's
// app/link shape): rx_burst borrows packets as views into memory the port owns, the port's forwarder hands
// them to tx_burst of each destination, which copies them in, and release gives the borrowed buffers
// back. Nothing is borrowed past one iteration, so a guest never waits on a slow peer.
#pragma once

#include <poll.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/counters.h"
#include "core/description.h"
#include "core/mode.h"
#include "core/packet.h"

namespace vw {

// Queue pairs one port may have (a vhost-user device's MQ, an uplink's queues).
constexpr uint16_t kMaxQueuePairs = 8;

// Something that runs a port's data path and can stop it at a loop boundary (a PMD thread). Control
// changes that affect the data path (memory table, ring addresses, features, mode) are applied between
// pause() and resume().
class PortRunner {
 public:
  virtual ~PortRunner() = default;
  // The thread's PMD index (t_pmd_index on it).
  virtual uint32_t index() const = 0;
  virtual void pause() = 0;
  virtual void resume() = 0;
};

// The PMD thread this is (its index), 0 on any other thread. A port that several PMDs transmit into keeps
// private counters per PMD and picks them by it.
inline thread_local uint32_t t_pmd_index = 0;

// Rare things that happen to a port, delivered to JavaScript as events. May be raised from any thread.
struct PortEvent {
  std::string kind;  // "connected", "disconnected", "ring-broken", "error"
  std::string port;
  int queue = -1;      // vring index for ring events, -1 otherwise
  std::string reason;  // ring-broken: the invalid_descriptors reason label; error: a sentence
};
using EventSink = std::function<void(const PortEvent&)>;

class Port {
 public:
  explicit Port(std::string name) : name_(std::move(name)) {}
  virtual ~Port() = default;
  Port(const Port&) = delete;
  Port& operator=(const Port&) = delete;

  const std::string& name() const { return name_; }

  // Queue counter sets of the shared block that are this port's: queue pair q counts in set
  // counter_set() + q. -1: none.
  virtual int counter_set() const { return -1; }
  // What the port says about itself, for the API and `stats`; "state" first ("connected", "disconnected",
  // "up").
  virtual void describe(Description& d) const { d.set("state", "up"); }
  // The port's part of switching to mode m: *change is what commit() will make current (left null when the
  // port has nothing to change). false and *err when the port cannot run in mode m; nothing changes then.
  virtual bool prepare_mode(Mode m, std::unique_ptr<ModeChange>* change, std::string* err) {
    (void)m, (void)change, (void)err;
    return true;
  }

  // Queue pairs the port was created with. Queue pair q means "the q-th receive/transmit pair".
  virtual uint16_t queue_pairs() const = 0;
  // Borrows up to kBurst packets from queue pair qp into b (b is cleared first). Returns b.n.
  virtual uint16_t rx_burst(uint16_t qp, Burst& b) = 0;
  // Copies the packets of b into the port on queue pair qp. Whatever does not fit is dropped and
  // counted with a reason. Returns the number accepted.
  virtual uint16_t tx_burst(uint16_t qp, const Burst& b) = 0;
  // Gives back what rx_burst(qp, b) borrowed.
  virtual void release(uint16_t qp, Burst& b) = 0;
  // Copies the running thread's private counters to the shared block.
  virtual void publish_counters() = 0;

  // The offloads (core/offload.h) tx_burst takes as they are: a packet needing one it lacks is completed
  // or segmented in software before tx_burst sees it (forward/offload_fallback.h). 0: plain frames only.
  virtual uint32_t tx_offloads() const { return 0; }
  // The counters of queue pair qp that the thread calling tx_burst(qp, ...) writes: the software
  // fallback counts its work and its drops there. Null only for ports that are never a forwarder's
  // destination themselves (an uplink's drivers, which UplinkPort wraps).
  virtual QueueCounters* tx_counters(uint16_t qp) {
    (void)qp;
    return nullptr;
  }

  // Whether tx_burst would deliver anything now (for a guest: a receive ring is up, and its driver has
  // posted buffers and kicked it at least once, see VirtioNetDevice::tx_ready). A port that holds_until_peer_ready()
  // produces nothing while its peer is not ready, so a traffic source starts when its destination does; from every
  // other port packets are taken and, with no ready peer, dropped and counted, as a switch does.
  virtual bool tx_ready() { return true; }
  virtual bool holds_until_peer_ready() const { return false; }

  // false while queue pair qp cannot have anything to receive (a guest that has not started or enabled its
  // ring, or has not connected): its PMD then asks again only after a pause or now and then, instead of
  // polling it every iteration. Only a hint: rx_burst checks for itself.
  virtual bool rx_ready(uint16_t qp) const {
    (void)qp;
    return true;
  }

  // Faults on guest memory (see guest_fault.h). A guest's front end can truncate the file behind its
  // memory at any time; the thread that then touches a lost page gets control back and calls these.
  // Whether addr lies in memory this port's guest owns.
  virtual bool owns(const void* addr) const {
    (void)addr;
    return false;
  }
  // This port's guest memory faulted: stop every ring that reads or writes it.
  virtual void memory_fault() {}
  // tx_burst(qp, ...) was cut short by a fault in the memory of the packets' source: undo the packet it
  // was copying, so the buffers it had taken for it are not lost to the port's guest.
  virtual void abort_tx(uint16_t qp) { (void)qp; }

  // Kernel mode: prepare to sleep. Enables the notifications that signal new work and appends the fds
  // to wait on. Returns false when work is already pending (the caller must not sleep then).
  virtual bool arm_wakeup(std::vector<pollfd>& fds) {
    (void)fds;
    return true;
  }
  // Kernel mode: woken up (or not sleeping after all). Suppresses notifications again and drains fds.
  virtual void disarm_wakeup() {}

  // Whether the port's queue pairs may be served by several PMD threads at once, each receive queue by
  // one of them, and transmitted into by several (a vhost-user device: it locks a receive ring of its
  // guest that more than one PMD fills). A port that does not is always served whole by one PMD.
  virtual bool spreads() const { return false; }
  // The PMD serving only the receive queue pairs in qmask (bit q: queue pair q; 0 for a PMD that only
  // transmits into the port) publishes, arms and disarms through these. A port that never spreads is
  // always served whole, so the defaults ignore the mask.
  virtual void publish_queues(uint32_t qmask) {
    (void)qmask;
    publish_counters();
  }
  virtual bool arm_queues(uint32_t qmask, std::vector<pollfd>& fds) {
    (void)qmask;
    return arm_wakeup(fds);
  }
  virtual void disarm_queues(uint32_t qmask) {
    (void)qmask;
    disarm_wakeup();
  }

  // The threads that touch this port's rings or memory: those serving its receive queues and those that
  // may transmit into it. Set by the engine, only with every old and new runner paused.
  const std::vector<PortRunner*>& runners() const { return runners_; }
  void set_runners(std::vector<PortRunner*> r) {
    runners_ = std::move(r);
    runners_changed();
  }

 protected:
  // After set_runners, with every runner paused: a port that spreads learns whether it is now shared.
  virtual void runners_changed() {}

 private:
  std::string name_;
  std::vector<PortRunner*> runners_;
};

// Pauses a port's data path for the lifetime of the guard: every thread that touches it, in the order the
// engine gave them (a no-op for a port no thread runs).
class DatapathPause {
 public:
  explicit DatapathPause(Port& p) : r_(p.runners()) {
    for (PortRunner* r : r_) r->pause();
  }
  ~DatapathPause() {
    for (auto it = r_.rbegin(); it != r_.rend(); ++it) (*it)->resume();
  }
  DatapathPause(const DatapathPause&) = delete;
  DatapathPause& operator=(const DatapathPause&) = delete;

 private:
  std::vector<PortRunner*> r_;
};

}  // namespace vw
