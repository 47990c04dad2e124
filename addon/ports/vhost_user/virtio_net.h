// The virtio-net device a vhost-user front end drives: its vrings, negotiated features and the two
// data-path directions. As a Port, queue pair q is the guest's receive vring 2q (we transmit into it)
// and its transmit vring 2q+1 (we receive from it).
//
// Control methods are called by the vhost-user protocol code on the control thread, always with the
// data path paused (DatapathPause), so they never race the PMD running this port.
#pragma once

#include "virtio/virtio_spec.h"

#include <cstdint>
#include <memory>
#include <string>

#include "core/counters.h"
#include "core/guest_memory.h"
#include "core/port.h"
#include "virtio/virtqueue.h"

namespace vw {

constexpr uint16_t kMaxQueuePairs = 8;
constexpr uint16_t kMaxVrings = 2 * kMaxQueuePairs;

// What SET_VRING_NUM/ADDR/BASE said about one vring.
struct VringSetup {
  uint16_t num = 0;
  uint64_t desc_uaddr = 0, avail_uaddr = 0, used_uaddr = 0;  // front-end user addresses
  uint16_t base = 0;                                          // SET_VRING_BASE
};

class VirtioNetDevice : public Port {
 public:
  VirtioNetDevice(std::string name, uint16_t queue_pairs, CounterBlock& counters, EventSink events);
  ~VirtioNetDevice() override;

  // ---- control side (data path paused) ----
  void set_memory(std::shared_ptr<const GuestMemory> mem);
  const std::shared_ptr<const GuestMemory>& memory() const { return mem_; }
  void set_features(uint64_t features);
  uint64_t features() const { return features_; }
  // Starts vring idx: translates and checks the ring addresses against guest memory and alignment,
  // takes over the indices. The fds are borrowed: the protocol code owns and closes them. false and *err
  // when the ring cannot be used.
  bool start_vring(uint16_t idx, const VringSetup& s, std::string* err);
  // Stops vring idx; returns the avail index the next read would have used (GET_VRING_BASE's answer).
  uint16_t stop_vring(uint16_t idx);
  bool vring_started(uint16_t idx) const;
  bool vring_broken(uint16_t idx) const;
  void set_vring_enabled(uint16_t idx, bool enabled);
  void set_kick_fd(uint16_t idx, int fd);
  void set_call_fd(uint16_t idx, int fd);
  void set_err_fd(uint16_t idx, int fd);
  // Stops every vring and forgets memory and features (front end gone or RESET_OWNER).
  void reset();

  // ---- data path (the PMD running this port) ----
  uint16_t queue_pairs() const override { return queue_pairs_; }
  uint16_t rx_burst(uint16_t qp, Burst& b) override;
  uint16_t tx_burst(uint16_t qp, const Burst& b) override;
  void release(uint16_t qp, Burst& b) override;
  void publish_counters() override;
  bool tx_ready() override;
  bool arm_wakeup(std::vector<pollfd>& fds) override;
  void disarm_wakeup() override;
  bool owns(const void* addr) const override;
  void memory_fault() override;
  void abort_tx(uint16_t qp) override;

  int counter_set() const { return counter_set_; }

 private:
  struct Vring;
  void ring_broken(uint16_t idx, QueueCounter reason);

  uint16_t queue_pairs_;
  CounterBlock& block_;
  int counter_set_;
  EventSink events_;
  std::shared_ptr<const GuestMemory> mem_;
  uint64_t features_ = 0;
  std::unique_ptr<Vring[]> vrings_;
  QueueCounters counters_[kMaxQueuePairs];
  // The packet tx_burst is copying (vring index, chains taken for it); idx -1 when none.
  struct OpenTx {
    int idx = -1;
    uint32_t npieces = 0;
  } tx_open_;
};

}  // namespace vw
