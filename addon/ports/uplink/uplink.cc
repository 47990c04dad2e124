#include "ports/uplink/uplink.h"

#include <cctype>

#include "ports/uplink/af_packet.h"
#include "ports/uplink/af_xdp.h"
#include "runtime/port_kind.h"

namespace vw {

namespace {

// The one place that decides which driver serves an uplink in which mode: kernel mode is an AF_PACKET
// ring served by the kernel stack, bypass mode an AF_XDP socket whose XDP program takes the interface's
// frames before the stack sees them.
UplinkDriver driver_for(Mode m) { return m == Mode::kKernel ? UplinkDriver::kAfPacket : UplinkDriver::kAfXdp; }

const char* driver_name(UplinkDriver d) { return d == UplinkDriver::kAfPacket ? "af_packet" : "af_xdp"; }

// The reason label of a kernel drop counter, as /metrics has it: KERNEL_DROP_XDP_RX_RING_FULL ->
// xdp_rx_ring_full.
std::string kernel_drop_reason(QueueCounter id) {
  std::string r = kQueueCounterInfo[id].id + sizeof("KERNEL_DROP_") - 1;
  for (char& c : r) c = char(std::tolower(static_cast<unsigned char>(c)));
  return r;
}

}  // namespace

UplinkPort::UplinkPort(const std::string& name, const std::string& ifname, CounterBlock& block)
    : Port(name), sets_(block, 1), kernel_(&counters_), ifname_(ifname) {
  counters_.shared = sets_.set(0);
}

UplinkPort::~UplinkPort() { driver_.reset(); }

std::unique_ptr<UplinkPort> UplinkPort::open(const std::string& name, const std::string& ifname, Mode mode,
                                             CounterBlock& block, std::string* err) {
  std::unique_ptr<UplinkPort> u(new UplinkPort(name, ifname, block));
  const UplinkDriver d = driver_for(mode);
  u->driver_ = u->open_driver(d, err);
  if (!u->driver_) return nullptr;
  u->driver_kind_ = d;
  return u;
}

std::unique_ptr<Port> UplinkPort::open_driver(UplinkDriver d, std::string* err) {
  if (d == UplinkDriver::kAfPacket) return AfPacketPort::open(name(), ifname_, &counters_, &kernel_, err);
  return AfXdpPort::open(name(), ifname_, &counters_, &kernel_, err);
}

void UplinkPort::describe(Description& d) const {
  Port::describe(d);
  d.set("ifname", ifname_);
  d.set("driver", driver_name(driver_kind_));
  // What the kernel dropped at our socket, by reason, so the API and `stats` show it beside our drops
  // without knowing the counter table. Read as published: at most one publication (100 ms) old.
  auto& drops = d.list("kernelDrops");
  const uint64_t* shared = sets_.set(0);
  for (uint32_t id = KERNEL_DROP_PACKET_DROPS; id <= KERNEL_DROP_XDP_TX_INVALID_DESCS; id++) {
    Description r;
    r.set("reason", kernel_drop_reason(QueueCounter(id)));
    r.set("frames", shared ? double(__atomic_load_n(&shared[id], __ATOMIC_RELAXED)) : 0.0);
    drops.push_back(std::move(r));
  }
}

// While both drivers are open, frames go to whichever takes them first: once the AF_XDP driver is open
// its XDP program redirects the interface's frames into its ring, where they wait until it is installed
// (kernel to bypass loses nothing); from bypass to kernel, frames left in the AF_XDP ring when the old
// driver closes are lost, and the AF_PACKET socket sees frames again from that moment.
void UplinkPort::install(UplinkDriver d, std::unique_ptr<Port> driver) {
  {
    DatapathPause pause(*this);
    driver_.swap(driver);
    driver_kind_ = d;
  }
  driver.reset();
}

class UplinkPort::DriverSwitch final : public ModeChange {
 public:
  DriverSwitch(UplinkPort& port, UplinkDriver d, std::unique_ptr<Port> driver)
      : port_(port), d_(d), driver_(std::move(driver)) {}
  void commit() override { port_.install(d_, std::move(driver_)); }

 private:
  UplinkPort& port_;
  UplinkDriver d_;
  std::unique_ptr<Port> driver_;
};

bool UplinkPort::prepare_mode(Mode m, std::unique_ptr<ModeChange>* change, std::string* err) {
  const UplinkDriver d = driver_for(m);
  if (d == driver_kind_) return true;
  auto driver = open_driver(d, err);
  if (!driver) return false;
  *change = std::make_unique<DriverSwitch>(*this, d, std::move(driver));
  return true;
}

namespace {
std::unique_ptr<Port> create_uplink(const std::string& name, const PortParams& p, PortContext& ctx, std::string* err) {
  std::string ifname;
  if (!p.str("ifname", &ifname, err)) return nullptr;
  return UplinkPort::open(name, ifname, ctx.mode, ctx.counters, err);
}
}  // namespace

// Registered in runtime/port_kinds.cc (extern: a namespace-scope const is otherwise private to this file).
extern const PortKind kUplinkKind = {"uplink", create_uplink};

}  // namespace vw
