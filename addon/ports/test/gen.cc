#include "ports/test/gen.h"

#include "core/clock.h"
#include "core/udp_frame.h"
#include "runtime/port_kind.h"

#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>

namespace vw {

GenPort::GenPort(std::string name, uint32_t size, uint64_t rate, uint64_t count, uint32_t macs, CounterBlock& block)
    : Port(std::move(name)),
      sets_(block, 1),
      size_(size),
      rate_(rate),
      count_(count),
      macs_(macs),
      frame_(new uint8_t[size_t(size) * (macs > 1 ? kBurst : 1)]) {
  counters_.shared = sets_.set(0);
  for (uint32_t i = 0; i < (macs > 1 ? kBurst : 1); i++) {
    uint8_t* f = frame_.get() + size_t(i) * size;
    build_udp_frame(f, size);
    if (macs > 1) f[7] = 0x01;  // 02:01:...: apart from the fixed addresses the other ports use
  }
  if (rate_) timer_fd_ = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
}

GenPort::~GenPort() {
  if (timer_fd_ >= 0) close(timer_fd_);
}

// Packets that should have been produced by now_ns under the rate limit.
uint64_t GenPort::due(uint64_t now) const {
  return uint64_t((unsigned __int128)(now - start_ns_) * rate_ / 1000000000ull);
}

uint16_t GenPort::rx_burst(uint16_t, Burst& b) {
  b.clear();
  uint64_t n = kBurst;
  if (count_) n = std::min(n, count_ - sent_);
  if (rate_) {
    uint64_t now = now_ns();
    if (!start_ns_) start_ns_ = now;
    uint64_t d = due(now);
    n = std::min(n, d > sent_ ? d - sent_ : 0);
  }
  for (uint16_t i = 0; i < n; i++) {
    uint8_t* f = frame_.get();
    if (macs_ > 1) {
      f += size_t(i) * size_;
      uint32_t k = next_mac_;
      next_mac_ = k + 1 == macs_ ? 0 : k + 1;
      f[8] = uint8_t(k >> 24);
      f[9] = uint8_t(k >> 16);
      f[10] = uint8_t(k >> 8);
      f[11] = uint8_t(k);
    }
    b.span[i] = {f, size_};
    b.pkt[i] = {size_, i, 1, 0};
  }
  b.n = uint16_t(n);
  b.nspans = uint16_t(n);
  sent_ += n;
  counters_.add(RX_PACKETS, n);
  counters_.add(RX_BYTES, n * size_);
  counters_.add(RX_SIZE_64 + size_bin(size_), n);
  return b.n;
}

uint16_t GenPort::tx_burst(uint16_t, const Burst& b) {
  counters_.add(DROP_TX_NOT_READY, b.n);
  return 0;
}

bool GenPort::arm_wakeup(std::vector<pollfd>& fds) {
  if (count_ && sent_ >= count_) return true;
  if (!rate_ || timer_fd_ < 0) return false;
  uint64_t now = now_ns();
  if (!start_ns_) return false;
  if (due(now) > sent_) return false;
  // Next packet is due at start + (sent + 1) / rate.
  uint64_t next = start_ns_ + uint64_t((unsigned __int128)(sent_ + 1) * 1000000000ull / rate_);
  itimerspec its = {};
  its.it_value.tv_sec = time_t(next / 1000000000ull);
  its.it_value.tv_nsec = long(next % 1000000000ull);
  timerfd_settime(timer_fd_, TFD_TIMER_ABSTIME, &its, nullptr);
  fds.push_back({timer_fd_, POLLIN, 0});
  return true;
}

void GenPort::disarm_wakeup() {
  uint64_t expirations;
  if (timer_fd_ >= 0 && read(timer_fd_, &expirations, sizeof(expirations)) < 0) {
    // Not expired yet: nothing to drain.
  }
}

void GenPort::describe(Description& d) const {
  Port::describe(d);
  d.set("size", size_);
  d.set("rate", double(rate_));
  d.set("count", double(count_));
  d.set("macs", macs_);
}

namespace {
std::unique_ptr<Port> create_gen(const std::string& name, const PortParams& p, PortContext& ctx, std::string* err) {
  uint64_t size, rate, count, macs;
  if (!p.num("size", 64, kMinFrame, kMaxFrame, &size, err) || !p.num("rate", 0, 0, UINT64_MAX >> 11, &rate, err) ||
      !p.num("count", 0, 0, UINT64_MAX >> 11, &count, err) || !p.num("macs", 1, 1, 1u << 24, &macs, err))
    return nullptr;
  return std::make_unique<GenPort>(name, uint32_t(size), rate, count, uint32_t(macs), ctx.counters);
}
}  // namespace

// Registered in runtime/port_kinds.cc (extern: a namespace-scope const is otherwise private to this file).
extern const PortKind kGenKind = {"gen", create_gen};

}  // namespace vw
