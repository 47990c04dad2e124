#include "ports/test/gen.h"

#include "core/clock.h"
#include "runtime/port_kind.h"

#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

namespace vw {

namespace {

uint16_t ip_checksum(const uint8_t* p, size_t len) {
  uint32_t sum = 0;
  for (size_t i = 0; i + 1 < len; i += 2) sum += uint32_t(p[i]) << 8 | p[i + 1];
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return uint16_t(~sum);
}

// Ethernet 02:00:00:00:00:01 -> 02:00:00:00:00:02, IPv4 198.18.0.1 -> 198.18.0.2, UDP 1024 -> 1024.
void build_frame(uint8_t* f, uint32_t size) {
  memset(f, 0, size);
  const uint8_t eth[14] = {2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00};
  memcpy(f, eth, sizeof(eth));
  uint8_t* ip = f + 14;
  uint16_t ip_len = uint16_t(std::min<uint32_t>(size - 14, 0xffff));
  ip[0] = 0x45;
  ip[2] = uint8_t(ip_len >> 8);
  ip[3] = uint8_t(ip_len);
  ip[8] = 64;
  ip[9] = 17;
  const uint8_t addrs[8] = {198, 18, 0, 1, 198, 18, 0, 2};
  memcpy(ip + 12, addrs, sizeof(addrs));
  uint16_t c = ip_checksum(ip, 20);
  ip[10] = uint8_t(c >> 8);
  ip[11] = uint8_t(c);
  uint8_t* udp = ip + 20;
  uint16_t udp_len = uint16_t(ip_len - 20);
  udp[0] = 0x04;
  udp[2] = 0x04;
  udp[4] = uint8_t(udp_len >> 8);
  udp[5] = uint8_t(udp_len);
  for (uint32_t i = 42; i < size; i++) f[i] = uint8_t(i);
}

}  // namespace

GenPort::GenPort(std::string name, uint32_t size, uint64_t rate, uint64_t count, CounterBlock& block)
    : Port(std::move(name)),
      sets_(block, 1),
      size_(size),
      rate_(rate),
      count_(count),
      frame_(new uint8_t[size]) {
  counters_.shared = sets_.set(0);
  build_frame(frame_.get(), size);
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
    b.span[i] = {frame_.get(), size_};
    b.pkt[i] = {size_, i, 1, 0};
  }
  b.n = uint16_t(n);
  b.nspans = uint16_t(n);
  sent_ += n;
  counters_.add(RX_PACKETS, n);
  counters_.add(RX_BYTES, n * size_);
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
}

namespace {
std::unique_ptr<Port> create_gen(const std::string& name, const PortParams& p, PortContext& ctx, std::string* err) {
  uint64_t size, rate, count;
  if (!p.num("size", 64, kMinFrame, kMaxFrame, &size, err) || !p.num("rate", 0, 0, UINT64_MAX >> 11, &rate, err) ||
      !p.num("count", 0, 0, UINT64_MAX >> 11, &count, err))
    return nullptr;
  return std::make_unique<GenPort>(name, uint32_t(size), rate, count, ctx.counters);
}
}  // namespace

// Registered in runtime/port_kinds.cc (extern: a namespace-scope const is otherwise private to this file).
extern const PortKind kGenKind = {"gen", create_gen};

}  // namespace vw
