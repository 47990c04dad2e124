#include "frontend/racer.h"

#include <pthread.h>
#include <unistd.h>

#include <cstring>

namespace vw {

namespace {

// Stores a value as a guest would: 8-byte atomic words where it can, else bytes; relaxed atomics so
// that the compiler keeps every store (nothing in this thread reads them back).
void race_store(uint8_t* host, const std::vector<uint8_t>& v) {
  const size_t n = v.size();
  if (n % 8 == 0 && reinterpret_cast<uintptr_t>(host) % 8 == 0) {
    for (size_t i = 0; i < n; i += 8) {
      uint64_t w;
      memcpy(&w, v.data() + i, 8);
      __atomic_store_n(reinterpret_cast<uint64_t*>(host + i), w, __ATOMIC_RELAXED);
    }
  } else {
    for (size_t i = 0; i < n; i++) __atomic_store_n(host + i, v[i], __ATOMIC_RELAXED);
  }
}

}  // namespace

void Racer::start(DriverRing* ring, std::vector<uint16_t> heads, std::vector<Target> targets,
                  std::function<bool()> restart) {
  ring_ = ring;
  heads_ = std::move(heads);
  targets_ = std::move(targets);
  restart_ = std::move(restart);
  stop_.store(false, std::memory_order_relaxed);
  for (auto* c : {&rounds_, &posted_, &restarts_, &failed_restarts_}) c->store(0, std::memory_order_relaxed);
  thread_ = std::thread(&Racer::loop, this);
  pthread_setname_np(thread_.native_handle(), "vw-racer");
}

RacerStats Racer::stop() {
  if (thread_.joinable()) {
    stop_.store(true, std::memory_order_relaxed);
    thread_.join();
  }
  RacerStats s;
  s.rounds = rounds_.load(std::memory_order_relaxed);
  s.posted = posted_.load(std::memory_order_relaxed);
  s.restarts = restarts_.load(std::memory_order_relaxed);
  s.failed_restarts = failed_restarts_.load(std::memory_order_relaxed);
  return s;
}

void Racer::loop() {
  DriverRing& v = *ring_;
  uint64_t rng = 0x9e3779b97f4a7c15ull ^ uint64_t(reinterpret_cast<uintptr_t>(this));
  size_t next_head = 0;
  uint64_t rounds = 0;
  while (!stop_.load(std::memory_order_relaxed)) {
    for (const Target& t : targets_) {
      rng ^= rng << 13;
      rng ^= rng >> 7;
      rng ^= rng << 17;
      race_store(t.host, t.values[rng % t.values.size()]);
    }
    // Keep the backend reading: post while fewer than a ring's worth are outstanding (counted from the
    // used index the backend publishes, so a restarted ring is never offered more than it may hold),
    // and only a head that is not outstanding already: one named twice would break the ring on that
    // rule alone (head_in_flight) and the race would test nothing else. The backend returns heads in
    // the order they were posted, so the outstanding ones are the last ones posted.
    if (!heads_.empty()) {
      const uint16_t used = load_acquire(&v.used->idx);
      const uint16_t outstanding = uint16_t(v.avail_idx - used);
      const uint16_t h = heads_[next_head % heads_.size()];
      bool in_flight = false;
      for (uint16_t k = 1; k <= outstanding && k <= v.num && !in_flight; k++)
        in_flight = v.avail->ring[uint16_t(v.avail_idx - k) & v.mask] == h;
      if (outstanding < v.num && !in_flight) {
        next_head++;
        v.avail->ring[v.avail_idx & v.mask] = h;
        v.avail_idx++;
        store_release(&v.avail->idx, v.avail_idx);
        posted_.fetch_add(1, std::memory_order_relaxed);
        v.kick();
      }
    }
    if (restart_ && (rounds & 63) == 0) {
      uint64_t n;
      if (read(v.err_fd, &n, sizeof(n)) == sizeof(n))
        (restart_() ? restarts_ : failed_restarts_).fetch_add(1, std::memory_order_relaxed);
    }
    if ((++rounds & 1023) == 0) {
      rounds_.store(rounds, std::memory_order_relaxed);
      // Two cores: leave the backend's threads a chance to run between bursts of rewriting.
      std::this_thread::yield();
    }
  }
  rounds_.store(rounds, std::memory_order_relaxed);
}

}  // namespace vw
