#include "ports/uplink/uplink.h"

#include "ports/uplink/af_packet.h"
#include "ports/uplink/af_xdp.h"

namespace vw {

namespace {

// The one place that decides which driver serves an uplink in which mode: kernel mode is an AF_PACKET
// ring served by the kernel stack, bypass mode an AF_XDP socket whose XDP program takes the interface's
// frames before the stack sees them.
std::unique_ptr<Port> open_driver_for(Mode mode, const std::string& name, const std::string& ifname,
                                      QueueCounters* counters, std::string* err) {
  switch (mode) {
    case Mode::kKernel:
      return AfPacketPort::open(name, ifname, counters, err);
    case Mode::kBypass:
      return AfXdpPort::open(name, ifname, counters, err);
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

// While both drivers are open, frames go to whichever takes them first: once the AF_XDP driver is open
// its XDP program redirects the interface's frames into its ring, where they wait until it is installed
// (kernel to bypass loses nothing); from bypass to kernel, frames left in the AF_XDP ring when the old
// driver closes are lost, and the AF_PACKET socket sees frames again from that moment.
void UplinkPort::install(Mode m, std::unique_ptr<Port> driver) {
  {
    DatapathPause pause(*this);
    driver_.swap(driver);
    mode_ = m;
  }
  driver.reset();
}

}  // namespace vw
