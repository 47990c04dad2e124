// The virtio-net device a vhost-user front end drives: its vrings, negotiated features and the two
// data-path directions. As a Port, queue pair q is the guest's receive vring 2q (we transmit into it)
// and its transmit vring 2q+1 (we receive from it).
//
// Control methods are called by the vhost-user protocol code on the control thread, always with the
// data path paused (DatapathPause), so they never race the PMD running this port. The protocol code
// (vhost_user.cc) derives from the device: a vhost-user port is this device plus its session.
#pragma once

#include "virtio/virtio_spec.h"

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "core/counters.h"
#include "core/guest_memory.h"
#include "core/pmd_tx_counters.h"
#include "core/port.h"
#include "core/queue_lock.h"
#include "virtio/split_ring.h"

namespace vw {

constexpr uint16_t kMaxVrings = 2 * kMaxQueuePairs;

// What SET_VRING_NUM/ADDR/BASE said about one vring.
struct VringSetup {
  uint16_t num = 0;
  uint64_t desc_uaddr = 0, avail_uaddr = 0, used_uaddr = 0;  // front-end user addresses
  uint16_t base = 0;                                         // SET_VRING_BASE
};

// One vring: what the front end said about it (SET_VRING_NUM/ADDR/BASE/ENABLE and the KICK/CALL/ERR
// eventfds) and the data path's state, in one record. Every field the data path reads (started, enabled,
// broken, the fds, the queue) is written only with the data path paused; setup and has_addr it never
// reads. The fds belong to the protocol code, which closes them.
struct Vring {
  VringSetup setup;
  bool has_addr = false;
  bool enabled = false;
  int kick = -1, call = -1, err = -1;  // kick is held only while the ring is started
  bool started = false;
  // Read by every PMD that may transmit into the ring (tx_ring()), set by the one that found it broken.
  std::atomic<bool> broken{false};
  SplitRing vq;
  // Receive rings only: when the guest first made buffers available since start, and whether it has
  // since said the ring is ready (see tx_ready()).
  uint64_t primed_ns = 0;
  bool ready = false;

  bool served() const { return started && enabled && !broken; }
};

class VirtioNetDevice : public Port {
 public:
  VirtioNetDevice(std::string name, uint16_t queue_pairs, CounterBlock& counters, EventSink events);
  ~VirtioNetDevice() override;

  // ---- control side (data path paused) ----
  uint16_t vring_count() const { return uint16_t(2 * queue_pairs_); }
  Vring& vring(uint16_t idx) { return vrings_[idx]; }
  const Vring& vring(uint16_t idx) const { return vrings_[idx]; }
  void set_memory(std::shared_ptr<const GuestMemory> mem);
  const std::shared_ptr<const GuestMemory>& memory() const { return mem_; }
  void set_features(uint64_t features);
  uint64_t features() const { return features_; }
  // Starts vring idx from its setup: translates and checks the ring addresses against guest memory and
  // alignment, takes over the indices. false and *err when the ring cannot be used.
  bool start_vring(uint16_t idx, std::string* err);
  // Stops vring idx, keeping in setup.base the avail index the next read would have used (GET_VRING_BASE's
  // answer and where a later start resumes).
  void stop_vring(uint16_t idx);
  // Stops every vring and forgets memory, features and every record, fds included (front end gone or
  // RESET_OWNER): the caller closes the fds it held first.
  void reset();

  // ---- data path (the PMD running this port) ----
  uint16_t queue_pairs() const override { return queue_pairs_; }
  uint16_t rx_burst(uint16_t qp, Burst& b) override;
  uint16_t tx_burst(uint16_t qp, const Burst& b) override;
  void release(uint16_t qp, Burst& b) override;
  void publish_counters() override;
  bool tx_ready() override;
  bool rx_ready(uint16_t qp) const override { return qp < queue_pairs_ && mem_ && vrings_[2 * qp + 1].served(); }
  bool arm_wakeup(std::vector<pollfd>& fds) override;
  void disarm_wakeup() override;
  bool owns(const void* addr) const override;
  void memory_fault() override;
  void abort_tx(uint16_t qp) override;
  uint32_t tx_offloads() const override { return to_guest_; }
  QueueCounters* tx_counters(uint16_t qp) override { return &tx_counters_of(qp < queue_pairs_ ? qp : 0); }
  bool spreads() const override { return true; }
  void publish_queues(uint32_t qmask) override;
  bool arm_queues(uint32_t qmask, std::vector<pollfd>& fds) override;
  void disarm_queues(uint32_t qmask) override;

  int counter_set() const override { return sets_.first(); }

 protected:
  void runners_changed() override;

 private:
  // The counters the calling thread writes for what it transmits into queue pair qp's receive ring: with
  // one runner they are the queue pair's own; with several, each PMD keeps its own copy.
  QueueCounters& tx_counters_of(uint16_t qp) {
    QueueCounters* c = shared_ ? pmd_tx_.mine(qp) : nullptr;
    return c ? *c : counters_[qp];
  }
  // tx_burst's work on receive vring idx, under its lock when the device is shared.
  uint16_t fill(int idx, const Burst& b);
  // With several runners: gives the receive rings the calling thread holds locked back, broken (their
  // memory faulted under it); the other rings are broken by whoever touches them next (poisoned_).
  void release_held_rings();
  // Translates the ring addresses of vring idx's setup through the memory table and points its queue at
  // them (indices untouched).
  bool attach(uint16_t idx, std::string* err);
  // The receive vring tx_burst fills for queue pair qp: its own when served, else the first served one.
  // -1 when none is.
  int tx_ring(uint16_t qp) const;
  // Publishes the used entries pushed on r and notifies the guest if it asked for it.
  void flush(Vring& r, QueueCounters& c);
  void ring_broken(uint16_t idx, QueueCounter reason);

  uint16_t queue_pairs_;
  CounterSets sets_;
  EventSink events_;
  std::shared_ptr<const GuestMemory> mem_;
  uint64_t features_ = 0;
  // The offloads the negotiated features allow (core/offload.h): what the guest may send us, and what we
  // may send it.
  uint32_t from_guest_ = 0, to_guest_ = 0;
  std::unique_ptr<Vring[]> vrings_;
  QueueCounters counters_[kMaxQueuePairs];
  // The packet tx_burst is copying into queue pair q's receive ring (vring index, chains taken for it);
  // idx -1 when none.
  struct OpenTx {
    int idx = -1;
    uint32_t npieces = 0;
  } tx_open_[kMaxQueuePairs];

  // Queues spread over PMDs (Port::spreads): with more than one runner the device is shared. Each
  // receive queue is then served by one PMD, but several may fill one of the guest's receive rings (a
  // guest with fewer queue pairs, or rings it has not enabled): the ring's lock serializes them, as DPDK's
  // vhost takes its per-virtqueue access lock. One runner takes no lock.
  bool shared_ = false;
  QueueLock tx_locks_[kMaxQueuePairs];
  // The guest's memory faulted on some PMD: every ring is to be stopped, each by the thread that owns it.
  std::atomic<bool> poisoned_{false};
  PmdTxCounters pmd_tx_;
};

}  // namespace vw
