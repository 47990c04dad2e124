#include "runtime/pmd.h"

#include "core/clock.h"
#include "core/guest_fault.h"

#include <pthread.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace vw {

namespace {
// Empty iterations a kernel-mode PMD spins before it sleeps: enough to ride out the gap between two
// bursts of a busy guest without paying a wakeup for each.
constexpr uint32_t kIdleSpinsBeforeSleep = 2048;
// Longest sleep, so counters are published at least this often.
constexpr int kSleepMs = 100;
// Iterations between counter publications.
constexpr uint32_t kPublishEvery = 1024;
// Iterations between two looks at the dormant queues (a guard: their state changes in pauses).
constexpr uint32_t kDormantRecheck = 256;
// After an iteration that delivered fewer than kLowYield packets, the PMD pauses this long before
// polling again. Polling a nearly empty guest ring every few tens of nanoseconds hands the guest one or
// two packets at a time and keeps pulling the ring's cache lines away from the core that refills it;
// both sides then pay cross-core misses per packet instead of per burst. Measured with DPDK's
// virtio-user rxonly as the guest (bench vhost, 64 bytes): enqueue went from about 4.3 Mpps (half of
// DPDK's vhost PMD in the same rounds) to 12-15 Mpps (on a par); 0.7 us helped less, 5 us hurt.
constexpr uint32_t kLowYield = 8;
constexpr uint64_t kLowYieldPauseNs = 2000;

// How long one iteration may serve queues before the rest wait for the next one, which starts where this
// one stopped. Each step is bounded in descriptors (virtio/ring.h: a burst reads at most kBurstBudget), so
// one step costs at most tens of microseconds even on a hostile ring; the time budget keeps a PMD with
// many busy queues answering pauses and visiting every queue within about one budget, and rotating the
// start keeps the queues at the end of the list from being the ones that always wait.
constexpr uint64_t kIterationBudgetNs = 200 * 1000;

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// PAUSE lasts from a few to over a hundred cycles depending on the processor (34 ns on the AMD EPYC
// these machines have): count how many make the wanted wait on this one. The thread starts while the
// process is busy starting up, and a sample it was preempted in reads too long (too few pauses);
// preemption only ever lengthens a sample, so the shortest of several is the one to trust.
uint32_t pauses_for(uint64_t ns) {
  constexpr uint32_t kSample = 1024, kSamples = 16;
  uint64_t best = UINT64_MAX;
  for (uint32_t r = 0; r < kSamples; r++) {
    const uint64_t t0 = now_ns();
    for (uint32_t i = 0; i < kSample; i++) cpu_relax();
    best = std::min(best, now_ns() - t0);
  }
  const double per = std::max(1.0, double(best) / kSample);
  return uint32_t(std::max(1.0, double(ns) / per));
}
}  // namespace

Pmd::Pmd(uint32_t index, int cpu, Wait wait, CounterBlock& block) : index_(index), cpu_(cpu), wait_(wait) {
  if (index < block.pmd_sets()) counters_.shared = block.pmd_set(index);
}

Pmd::~Pmd() {
  stop();
  if (wake_fd_ >= 0) close(wake_fd_);
}

bool Pmd::start(std::string* err) {
  wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd_ < 0) {
    *err = std::string("PMD ") + std::to_string(index_) + ": eventfd failed: " + strerror(errno);
    return false;
  }
  std::lock_guard<std::mutex> l(mu_);
  thread_ = std::thread([this] { run(); });
  // Named so top, perf and gdb tell PMD threads apart from node's own (at most 15 characters).
  pthread_setname_np(thread_.native_handle(), ("vw-pmd" + std::to_string(index_)).substr(0, 15).c_str());
  running_ = true;
  if (cpu_ >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu_, &set);
    int e = pthread_setaffinity_np(thread_.native_handle(), sizeof(set), &set);
    if (e) {
      *err = "PMD " + std::to_string(index_) + ": cannot pin to CPU " + std::to_string(cpu_) + ": " + strerror(e);
      return false;
    }
  }
  return true;
}

void Pmd::stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (!running_) return;
    stop_.store(true);
    cv_.notify_all();
  }
  uint64_t one = 1;
  if (write(wake_fd_, &one, sizeof(one)) < 0) {
    // The counter is already non-zero: the thread will wake anyway.
  }
  thread_.join();
  std::lock_guard<std::mutex> l(mu_);
  running_ = false;
}

void Pmd::pause() {
  std::unique_lock<std::mutex> l(mu_);
  pause_requests_.fetch_add(1, std::memory_order_acq_rel);
  if (!running_) return;
  uint64_t one = 1;
  if (write(wake_fd_, &one, sizeof(one)) < 0) {
    // Already signalled.
  }
  cv_.wait(l, [this] { return parked_ || stop_.load(); });
}

void Pmd::resume() {
  std::lock_guard<std::mutex> l(mu_);
  if (pause_requests_.fetch_sub(1, std::memory_order_acq_rel) == 1) cv_.notify_all();
}

void Pmd::drain_wake_fd() {
  uint64_t n;
  if (read(wake_fd_, &n, sizeof(n)) < 0) {
    // Nothing pending (EAGAIN): the fd is non-blocking.
  }
}

void Pmd::add_port(Port& p, Forwarder& fwd, uint32_t qmask) {
  uint32_t mask = 0;
  for (uint16_t q = 0; q < p.queue_pairs(); q++)
    if (qmask & (1u << q)) {
      queues_.push_back(RxQueue{&p, q, &fwd});
      mask |= 1u << q;
    }
  ports_.push_back(Served{&p, &fwd, mask});
  refresh_forwarders();
}

void Pmd::refresh_forwarders() {
  fwds_.clear();
  for (const Served& s : ports_)
    if (std::find(fwds_.begin(), fwds_.end(), s.fwd) == fwds_.end()) fwds_.push_back(s.fwd);
}

void Pmd::remove_port(const Port* p) {
  for (std::vector<RxQueue>* v : {&queues_, &dormant_})
    v->erase(std::remove_if(v->begin(), v->end(), [p](const RxQueue& q) { return q.port == p; }), v->end());
  ports_.erase(std::remove_if(ports_.begin(), ports_.end(), [p](const Served& s) { return s.port == p; }),
               ports_.end());
  refresh_forwarders();
}

namespace {
// Moves the queues of `from` whose rx_ready() is `ready` to the end of `to`, keeping both in order. A
// plain pass: nothing is allocated while `to` has room (queues_ keeps the capacity of every queue).
void move_queues(std::vector<RxQueue>& from, std::vector<RxQueue>& to, bool ready) {
  size_t keep = 0;
  for (const RxQueue& q : from)
    if (q.port->rx_ready(q.qp) == ready)
      to.push_back(q);
    else
      from[keep++] = q;
  from.resize(keep);
}
}  // namespace

void Pmd::sort_queues() {
  queues_.insert(queues_.end(), dormant_.begin(), dormant_.end());
  dormant_.clear();
  move_queues(queues_, dormant_, false);
}

void Pmd::wake_dormant() { move_queues(dormant_, queues_, true); }

void Pmd::publish() {
  for (const Served& s : ports_) s.port->publish_queues(s.qmask);
  counters_.publish();
}

template <class F>
bool Pmd::guarded(F&& f) {
  const void* addr = nullptr;
  if (guest_access(f, &addr)) return true;
  recover(addr);
  return false;
}

void Pmd::recover(const void* addr) {
  Port* const in = in_;
  const uint16_t q = q_;
  const Step step = step_;
  uint16_t tq = 0;
  Port* const to = step == Step::kForward ? tx_.in_progress(&tq) : nullptr;
  at(nullptr, 0, Step::kNone);
  tx_.clear_in_progress();
  Port* owner = in && in->owns(addr) ? in : to && to->owns(addr) ? to : nullptr;
  if (!owner) {
    // Only the step's ports touch guest memory; should none claim the address, stop them all.
    if (in) in->memory_fault();
    if (to && to != in) to->memory_fault();
    return;
  }
  owner->memory_fault();
  if (step != Step::kForward) return;
  // The burst borrowed from `in` was being forwarded: each port that did not fault puts its own side back.
  // A destination cut short in the middle of its copy undoes it; the source gets its burst back.
  if (to && owner != to && !guest_access([to, tq] { to->abort_tx(tq); })) to->memory_fault();
  if (owner != in && !guest_access([this, in, q] { in->release(q, burst_); })) in->memory_fault();
}

void Pmd::serve_queues(uint64_t start) {
  const size_t n = queues_.size();
  if (next_queue_ >= n) next_queue_ = 0;
  uint64_t mark = start;
  for (size_t k = 0; k < n; k++) {
    const RxQueue& rq = queues_[(next_queue_ + k) % n];
    Port* const p = rq.port;
    at(p, rq.qp, Step::kCheck);
    if (!rq.fwd->accepts_from(*p)) continue;
    at(p, rq.qp, Step::kRx);
    if (!p->rx_burst(rq.qp, burst_)) continue;
    at(p, rq.qp, Step::kForward);
    tx_.set_now(mark);
    rq.fwd->forward(*p, rq.qp, burst_, tx_);
    at(p, rq.qp, Step::kRelease);
    p->release(rq.qp, burst_);
    busy_ = true;
    // The clock is read only after steps that moved packets, so an idle poll costs nothing more; a step's
    // time includes the idle polls just before it.
    const uint64_t now = now_ns();
    counters_.raise(LONGEST_STEP_NS, now - mark);
    mark = now;
    if (now - start > kIterationBudgetNs && k + 1 < n) {
      counters_.add(TIME_BUDGET_CUTS);
      next_queue_ = (next_queue_ + k + 1) % n;
      break;
    }
  }
  at(nullptr, 0, Step::kNone);
}

void Pmd::sleep_until_work() {
  fds_.clear();
  fds_.push_back({wake_fd_, POLLIN, 0});
  // A source held back until a destination is ready has nothing to do yet: the poll timeout looks again.
  bool can_sleep = true;
  bool faulted = false;
  for (const Served& s : ports_) {
    faulted |= !guarded([&, p = s.port, fwd = s.fwd, m = s.qmask] {
      at(p, 0, Step::kCheck);
      const bool ok = !fwd->accepts_from(*p) || p->arm_queues(m, fds_);
      can_sleep = can_sleep && ok;
    });
  }
  if (can_sleep && !faulted && pause_requests_.load(std::memory_order_acquire) == 0 && !stop_.load()) {
    counters_.add(SLEEPS);
    publish();
    // A pause or stop that woke us is seen at the top of the loop (it is in pause_requests_ and stop_);
    // the eventfd only carried the wakeup. Left unread, it would cut every later sleep short: a pause
    // nested inside another (two ports of one PMD paused together) writes it while we are parked.
    if (poll(fds_.data(), fds_.size(), kSleepMs) > 0 && (fds_[0].revents & POLLIN)) drain_wake_fd();
  }
  for (const Served& s : ports_)
    guarded([this, p = s.port, m = s.qmask] {
      at(p, 0, Step::kCheck);
      p->disarm_queues(m);
    });
  at(nullptr, 0, Step::kNone);
}

void Pmd::run() {
  t_pmd_index = index_;
  uint32_t idle = 0, since_publish = 0, since_recheck = 0;
  const uint32_t low_yield_pauses = pauses_for(kLowYieldPauseNs);
  // Busy and idle time: the one clock read at the top of an iteration closes the one before (its sleep
  // included), which was busy or idle; time parked for a pause counts as neither.
  uint64_t last = now_ns();
  bool last_busy = false;
  sort_queues();
  while (!stop_.load(std::memory_order_relaxed)) {
    const uint64_t now = now_ns();
    counters_.add(last_busy ? BUSY_NS : IDLE_NS, now - last);
    last = now;
    if (pause_requests_.load(std::memory_order_acquire)) {
      publish();
      drain_wake_fd();
      std::unique_lock<std::mutex> l(mu_);
      parked_ = true;
      cv_.notify_all();
      cv_.wait(l, [this] { return pause_requests_.load() == 0 || stop_.load(); });
      parked_ = false;
      sort_queues();
      last = now_ns();
      last_busy = false;
      continue;
    }
    if (++since_recheck >= kDormantRecheck) {
      since_recheck = 0;
      if (!dormant_.empty()) wake_dormant();
    }
    busy_ = false;
    // A fault ends the iteration early; the next one carries on with the guest's rings stopped.
    guarded([this, now] { serve_queues(now); });
    for (Forwarder* f : fwds_) f->tick(now);
    const bool busy = busy_;
    last_busy = busy;
    if (tx_.take_delivered() < kLowYield && !queues_.empty())
      for (uint32_t k = 0; k < low_yield_pauses; k++) cpu_relax();
    counters_.add(busy ? BUSY_ITERATIONS : IDLE_ITERATIONS);
    if (++since_publish >= kPublishEvery) {
      since_publish = 0;
      publish();
    }
    if (busy) {
      idle = 0;
    } else if (wait_ == Wait::kSleep && ++idle >= kIdleSpinsBeforeSleep) {
      idle = 0;
      sleep_until_work();
    } else if (queues_.empty() && dormant_.empty()) {
      // Nothing to serve: sleep rather than spin until queues arrive (a pause or stop wakes us).
      pollfd p = {wake_fd_, POLLIN, 0};
      poll(&p, 1, kSleepMs);
    }
  }
  publish();
}

}  // namespace vw
