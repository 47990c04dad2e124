// A poll-mode driver thread: runs the wires given to it, moving bursts between their two ports in both
// directions. In bypass mode it spins; in kernel mode an idle PMD arms its ports' wakeup notifications
// and sleeps in poll() until a guest kicks (or a timer fires). Control changes reach it only while it is
// paused at a loop boundary, so the loop itself takes no locks.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#include "core/counters.h"
#include "core/port.h"

namespace vw {

enum class Mode { kBypass, kKernel };

struct Wire {
  Port* a;
  Port* b;
};

class Pmd : public PortRunner {
 public:
  // cpu: the CPU to pin the thread to, or -1.
  Pmd(uint32_t index, int cpu, Mode mode, CounterBlock& block);
  ~Pmd() override;

  bool start(std::string* err);
  // Asks the thread to leave its loop and joins it. Idempotent.
  void stop();

  // Waits until the thread is parked at a loop boundary; nests. Callers are serialized by the engine.
  void pause() override;
  void resume() override;

  // Only with this PMD paused (or not started).
  void add_wire(const Wire& w);
  void remove_wire(const Port* p);
  void set_mode(Mode m) { mode_ = m; }
  size_t wire_count() const { return wires_.size(); }
  uint32_t index() const { return index_; }

 private:
  void run();
  void run_wires();
  bool move(Port* from, Port* to);
  void sleep_until_work();
  void drain_wake_fd();
  void publish();
  // Runs f inside guest_access(); after a fault, stops the guest whose memory it was and puts the other
  // port of the step back in order. false after a fault.
  template <class F>
  bool guarded(F&& f);
  void recover(const void* addr);

  // The step the loop is in, so that recover() knows whose memory a fault can be in and what was left
  // half done: kTx is tx_burst on `to` with a burst borrowed from `from`.
  enum class Step { kNone, kRx, kTx, kRelease, kCheck };
  void at(Port* from, Port* to, uint16_t q, Step s) {
    from_ = from;
    to_ = to;
    q_ = q;
    step_ = s;
  }
  Port* from_ = nullptr;
  Port* to_ = nullptr;
  uint16_t q_ = 0;     // from's queue pair
  uint16_t to_q_ = 0;  // kTx: to's queue pair
  Step step_ = Step::kNone;

  uint32_t index_;
  int cpu_;
  Mode mode_;
  std::vector<Wire> wires_;
  Burst burst_;
  PmdCounters counters_;
  uint32_t delivered_ = 0;  // packets the current iteration got into their destination
  bool busy_ = false;       // the current iteration moved something
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
