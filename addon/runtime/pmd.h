// A poll-mode driver thread: serves the receive queues given to it, handing each burst to the queue's
// forwarder. With the spin wait policy (bypass mode) it never sleeps; with the sleep policy (kernel mode) an
// idle PMD arms its ports' wakeup notifications and sleeps in poll() until a guest kicks (or a timer fires).
// Control changes reach it only while it is paused at a loop boundary, so the loop itself takes no locks.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#include "core/counters.h"
#include "core/port.h"
#include "forward/forwarder.h"

namespace vw {

// How an idle PMD waits for work: spinning (lowest latency, a core used up) or sleeping on its ports'
// notification fds.
enum class Wait { kSpin, kSleep };

// One receive queue a PMD serves, and where its packets go.
struct RxQueue {
  Port* port;
  uint16_t qp;
  Forwarder* fwd;
};

class Pmd : public PortRunner {
 public:
  // cpu: the CPU to pin the thread to, or -1.
  Pmd(uint32_t index, int cpu, Wait wait, CounterBlock& block);
  ~Pmd() override;

  bool start(std::string* err);
  // Asks the thread to leave its loop and joins it. Idempotent.
  void stop();

  // Waits until the thread is parked at a loop boundary; nests. Callers are serialized by the engine.
  void pause() override;
  void resume() override;

  // Only with this PMD paused (or not started).
  // Serves the receive queue pairs of p in qmask (bit q: queue pair q), handing their bursts to fwd. A
  // mask of 0 adds a port the PMD only transmits into: it still publishes its own counters of it.
  void add_port(Port& p, Forwarder& fwd, uint32_t qmask = ~0u);
  void remove_port(const Port* p);
  void set_wait(Wait w) { wait_ = w; }
  Wait wait() const { return wait_; }
  size_t queue_count() const { return queues_.size() + dormant_.size(); }
  uint32_t index() const override { return index_; }

 private:
  void run();
  // start: the clock read that opened this iteration (its time budget counts from it).
  void serve_queues(uint64_t start);
  void sleep_until_work();
  void drain_wake_fd();
  void publish();
  // Runs f inside guest_access(); after a fault, stops the guest whose memory it was and puts the other
  // ports of the step back in order. false after a fault.
  template <class F>
  bool guarded(F&& f);
  void recover(const void* addr);

  // The step the loop is in, so that recover() knows whose memory a fault can be in and what was left
  // half done. kForward: the burst borrowed from `in_` is being forwarded; Transmit says which destination
  // was being written.
  enum class Step { kNone, kRx, kForward, kRelease, kCheck };
  void at(Port* in, uint16_t q, Step s) {
    in_ = in;
    q_ = q;
    step_ = s;
  }
  Port* in_ = nullptr;
  uint16_t q_ = 0;
  Step step_ = Step::kNone;

  uint32_t index_;
  int cpu_;
  Wait wait_;
  std::vector<RxQueue> queues_;  // polled every iteration
  size_t next_queue_ = 0;        // where the next iteration starts: after the last queue a time-cut one served
  // Queues whose port said, when last asked, that they cannot have anything to receive (Port::rx_ready):
  // the rings of a guest not connected or not started. A bridge of 64 vhost-user ports with two guests
  // connected spent an iteration's time on 62 empty polls. The control side changes a port's rings only
  // with the PMD paused, so they are sorted again after every pause, and looked at every
  // kDormantRecheck iterations besides.
  std::vector<RxQueue> dormant_;
  // Moves every queue to queues_ or dormant_ by its port's rx_ready(), keeping their order.
  void sort_queues();
  // Moves the dormant queues that have become ready back to queues_.
  void wake_dormant();
  // Each port served or transmitted into once, with its forwarder and the queue pairs served here: for
  // sleeping, waking and publishing counters.
  struct Served {
    Port* port;
    Forwarder* fwd;
    uint32_t qmask;
  };
  std::vector<Served> ports_;
  // Each forwarder once, for its per-iteration tick().
  std::vector<Forwarder*> fwds_;
  void refresh_forwarders();
  Burst burst_;
  Transmit tx_;
  PmdCounters counters_;
  bool busy_ = false;        // the current iteration moved something
  std::vector<pollfd> fds_;  // what a kernel-mode sleep waits on

  std::thread thread_;
  bool running_ = false;
  std::atomic<bool> stop_{false};
  std::atomic<uint32_t> pause_requests_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  bool parked_ = false;
  int wake_fd_ = -1;  // eventfd: pulls a sleeping PMD out of poll() for a pause or stop
};

}  // namespace vw
