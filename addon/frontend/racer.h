// The racer: a thread that keeps rewriting guest memory (descriptors, indirect table entries, headers)
// while the backend reads it, and keeps posting heads on one vring so that the backend keeps reading.
// Each round stores one value, picked at random, into every target; a value of 8-byte multiple length
// at an 8-byte aligned address is stored as 8-byte atomic words (as a guest's 64-bit stores would be),
// anything else byte by byte.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <thread>
#include <vector>

#include "frontend/driver_ring.h"

namespace vw {

struct RacerTarget {
  uint64_t gpa;
  std::vector<std::vector<uint8_t>> values;  // 1..64 bytes each, all of one length
};
struct RacerOptions {
  uint16_t vring = 0;
  std::vector<uint16_t> heads;  // posted in turn whenever the ring has room; empty: post nothing
  std::vector<RacerTarget> targets;
  // Restart the vring (as restart_vring) whenever its err eventfd is signalled; needs set_vring_err first.
  // The racer then owns the socket: no messages from other threads until stop_racer.
  bool restart = false;
};
struct RacerStats {
  uint64_t rounds = 0, posted = 0, restarts = 0, failed_restarts = 0;
};

class Racer {
 public:
  // A target resolved to our mapping.
  struct Target {
    uint8_t* host;
    std::vector<std::vector<uint8_t>> values;
  };

  ~Racer() { stop(); }
  bool running() const { return thread_.joinable(); }
  // Races on ring (heads and targets already checked against it); restart, when given, brings the ring
  // back after the backend signalled its err eventfd, and says whether it could.
  void start(DriverRing* ring, std::vector<uint16_t> heads, std::vector<Target> targets, std::function<bool()> restart);
  RacerStats stop();  // joins the thread; harmless when none runs

 private:
  void loop();

  DriverRing* ring_ = nullptr;
  std::vector<uint16_t> heads_;
  std::vector<Target> targets_;
  std::function<bool()> restart_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> rounds_{0}, posted_{0}, restarts_{0}, failed_restarts_{0};
};

}  // namespace vw
