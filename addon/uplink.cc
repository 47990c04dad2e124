#include "uplink.h"

#include "af_packet.h"

namespace vw {

namespace {

// The one place that decides which driver serves an uplink in which mode. Kernel mode is AF_PACKET;
// bypass mode is meant for AF_XDP and uses AF_PACKET until that driver exists.
std::unique_ptr<Port> open_driver_for(Mode mode, const std::string& name, const std::string& ifname,
                                      QueueCounters* counters, std::string* err) {
  switch (mode) {
    case Mode::kKernel:
    case Mode::kBypass:
      return AfPacketPort::open(name, ifname, counters, err);
  }
  return nullptr;
}

}  // namespace

UplinkPort::UplinkPort(const std::string& name, const std::string& ifname, CounterBlock& block)
    : Port(name), block_(block), counter_set_(block.alloc_queue_sets(1)), ifname_(ifname) {
  if (counter_set_ >= 0) counters_.shared = block.queue_set(uint32_t(counter_set_));
}

UplinkPort::~UplinkPort() {
  driver_.reset();
  if (counter_set_ >= 0) block_.free_queue_sets(counter_set_, 1);
}

std::unique_ptr<UplinkPort> UplinkPort::open(const std::string& name, const std::string& ifname, Mode mode,
                                             CounterBlock& block, std::string* err) {
  std::unique_ptr<UplinkPort> u(new UplinkPort(name, ifname, block));
  u->driver_ = u->open_driver(mode, err);
  if (!u->driver_) return nullptr;
  u->mode_ = mode;
  return u;
}

std::unique_ptr<Port> UplinkPort::open_driver(Mode m, std::string* err) {
  return open_driver_for(m, name(), ifname_, &counters_, err);
}

// While both drivers are open, each may see the same received frames (two AF_PACKET sockets on one
// interface both get a copy): the few frames that arrive between open_driver and the pause can be
// forwarded twice, and those that arrive during the pause are lost with the old driver's ring.
void UplinkPort::install(Mode m, std::unique_ptr<Port> driver) {
  {
    DatapathPause pause(*this);
    driver_.swap(driver);
    mode_ = m;
  }
  driver.reset();
}

}  // namespace vw
