// The traffic thread: the front end as a load generator. It keeps every transmit ring as full as the
// rate allows and reaps (and counts) whatever the backend delivers, over all queue pairs in turn.
#pragma once

#include <atomic>
#include <cstdint>
#include <thread>

#include "frontend/driver_ring.h"

namespace vw {

struct TrafficOptions {
  uint32_t tx_size = 0;   // frame size to transmit (without virtio-net header); 0: do not transmit
  uint64_t tx_count = 0;  // stop transmitting after this many; 0: no limit
  double tx_rate = 0;     // packets per second; 0: as fast as the ring takes them
  bool rx = false;        // receive (and count) whatever arrives
};

class Traffic {
 public:
  ~Traffic() { stop(); }
  bool running() const { return thread_.joinable(); }
  // rings: queue pair q's receive ring at 2q, its transmit ring at 2q + 1, every transmit slot already
  // holding a tx_size frame. With interrupts, an idle thread sleeps on the call eventfds.
  void start(const TrafficOptions& t, DriverRing* rings, uint16_t queue_pairs, bool interrupts, DriverStats* stats);
  void stop();

 private:
  void loop();
  void sleep_until_called();

  TrafficOptions t_;
  DriverRing* rings_ = nullptr;
  uint16_t queue_pairs_ = 0;
  bool interrupts_ = false;
  DriverStats* stats_ = nullptr;
  std::thread thread_;
  std::atomic<bool> stop_{false};
};

}  // namespace vw
