#include "frontend/traffic.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <vector>

namespace vw {

namespace {

constexpr uint32_t kBurst = 32;
// With interrupts, empty rounds before the thread sleeps on its call fds, and the longest sleep (a
// rate-limited sender wakes at least this often to send what has come due).
constexpr uint32_t kIdleSpinsBeforeSleep = 256;
constexpr int kSleepMs = 1;

}  // namespace

void Traffic::start(const TrafficOptions& t, DriverRing* rings, uint16_t queue_pairs, bool interrupts,
                    DriverStats* stats) {
  t_ = t;
  rings_ = rings;
  queue_pairs_ = queue_pairs;
  interrupts_ = interrupts;
  stats_ = stats;
  stop_.store(false, std::memory_order_relaxed);
  thread_ = std::thread(&Traffic::loop, this);
  pthread_setname_np(thread_.native_handle(), "vw-frontend");
}

void Traffic::stop() {
  if (!thread_.joinable()) return;
  stop_.store(true, std::memory_order_relaxed);
  thread_.join();
}

void Traffic::loop() {
  using clock = std::chrono::steady_clock;
  const TrafficOptions& t = t_;
  DriverStats& stats = *stats_;
  const clock::time_point begin = clock::now();
  uint64_t sent = 0;
  uint16_t q = 0;
  // tx_ring_full counts the times a ring filled up, not the spins spent waiting on a full ring.
  std::vector<uint8_t> full(queue_pairs_, 0);
  uint32_t idle = 0;
  while (!stop_.load(std::memory_order_relaxed)) {
    bool progress = false;
    bool tx_due = t.tx_size && (t.tx_count == 0 || sent < t.tx_count);
    uint64_t want = tx_due ? kBurst : 0;
    if (want && t.tx_count) want = std::min(want, t.tx_count - sent);
    if (want && t.tx_rate > 0) {
      const double elapsed = std::chrono::duration<double>(clock::now() - begin).count();
      const uint64_t allowed = uint64_t(elapsed * t.tx_rate);
      want = allowed > sent ? std::min(want, allowed - sent) : 0;
      if (!want && !t.rx) {
        // Nothing due for a while: sleep rather than spin at low rates (a syscall per burst at most).
        const double wait = double(sent + 1) / t.tx_rate - elapsed;
        if (wait > 50e-6) std::this_thread::sleep_for(std::chrono::duration<double>(std::min(wait, 1e-3)));
      }
    }
    DriverRing& tx = rings_[2 * q + 1];
    const uint32_t free = tx.tx_reclaim();
    if (want) {
      const uint32_t n = uint32_t(std::min<uint64_t>(want, free));
      if (n == 0) {
        if (!full[q]) add(stats.tx_ring_full, 1);
        full[q] = 1;
      } else {
        full[q] = 0;
        for (uint32_t k = 0; k < n; k++) tx.tx_post(t.tx_size);
        tx.publish();
        progress = true;
        sent += n;
        add(stats.tx_packets, n);
        add(stats.tx_bytes, uint64_t(n) * t.tx_size);
      }
    } else if (!tx_due && !t.rx) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    if (t.rx) {
      uint64_t bytes = 0;
      const size_t n = rings_[2 * q].rx_reap(kBurst, [&](const uint16_t*, const uint32_t* lens, uint32_t nsegs) {
        bytes += DriverRing::frame_bytes(lens, nsegs);
      });
      if (n) {
        add(stats.rx_packets, n);
        add(stats.rx_bytes, bytes);
        progress = true;
      }
    }
    if (++q == queue_pairs_) q = 0;
    if (interrupts_) {
      if (progress) {
        idle = 0;
      } else if (++idle >= kIdleSpinsBeforeSleep) {
        idle = 0;
        sleep_until_called();
      }
    }
  }
}

// An idle thread sleeps on its call eventfds as a guest driver does (NAPI), so a load generator shares a
// small machine with the backend instead of spinning against it. The request for a call goes out before
// the last look at the used rings, so nothing is missed.
void Traffic::sleep_until_called() {
  std::vector<pollfd> fds;
  bool pending = false;
  for (uint16_t i = 0; i < 2 * queue_pairs_; i++) {
    DriverRing& v = rings_[i];
    if (v.rx ? !t_.rx : !t_.tx_size) continue;
    if (v.event_idx) store_relaxed(v.used_event, v.used_seen);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (load_acquire(&v.used->idx) != v.used_seen) pending = true;
    fds.push_back(pollfd{v.call_fd, POLLIN, 0});
  }
  if (pending || fds.empty()) return;
  int r;
  do {
    r = poll(fds.data(), fds.size(), kSleepMs);
  } while (r < 0 && errno == EINTR);
  for (const pollfd& p : fds) {
    uint64_t calls;
    if ((p.revents & POLLIN) && read(p.fd, &calls, sizeof(calls)) == sizeof(calls)) add(stats_->calls, calls);
  }
}

}  // namespace vw
