#include "ports/uplink/uplink.h"

#include <net/if.h>

#include <cctype>

#include "ports/uplink/af_packet.h"
#include "ports/uplink/af_xdp.h"
#include "ports/uplink/link_monitor.h"
#include "ports/uplink/xdp_redirect.h"
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

UplinkPort::UplinkPort(const std::string& name, const UplinkPlace& place, CounterBlock& block)
    : Port(name),
      place_(place),
      sets_(block, place.queues),
      counters_(place.queues),
      locks_(new QueueLock[place.queues]) {
  for (uint16_t q = 0; q < place.queues; q++) {
    counters_[q].shared = sets_.set(q);
    kernel_.push_back(std::make_unique<KernelDrops>(&counters_[q]));
  }
}

UplinkPort::~UplinkPort() {
  monitor_.reset();
  driver_.reset();
}

UplinkPort::Driver::~Driver() {
  redirect.reset();
  queues.clear();
}

std::unique_ptr<UplinkPort> UplinkPort::open(const std::string& name, const UplinkPlace& place, PortContext& ctx,
                                             std::string* err) {
  std::unique_ptr<UplinkPort> u(new UplinkPort(name, place, ctx.counters));
  u->events_ = ctx.events;
  u->driver_ = u->open_driver(driver_for(ctx.mode), err);
  if (!u->driver_) return nullptr;
  // The drivers checked the name; the index is what the uplink follows from here on.
  u->ifindex_ = if_nametoindex(place.ifname.c_str());
  UplinkPort* self = u.get();
  u->monitor_ = LinkMonitor::open(
      ctx.reactor, [self] { self->check_link(); }, err);
  if (!u->monitor_) return nullptr;
  u->link_ = u->read_link_flags();
  return u;
}

void UplinkPort::raise(const std::string& kind, const std::string& reason) {
  if (events_) events_(PortEvent{kind, name(), -1, reason});
}

// Up means what the kernel means by a usable link: administratively up and with carrier (IFF_RUNNING;
// a veth has it while its peer is up too).
LinkState UplinkPort::read_link_flags() const {
  unsigned f = 0;
  if (!monitor_ || !monitor_->flags(place_.ifname, &f)) return LinkState::kGone;
  return (f & IFF_UP) && (f & IFF_RUNNING) ? LinkState::kUp : LinkState::kDown;
}

void UplinkPort::set_link(LinkState s, const std::string& why) {
  if (s == link_) return;
  link_ = s;
  link_changes_++;
  raise("link", why);
}

void UplinkPort::check_link() {
  if (link_ != LinkState::kGone) {
    char now[IF_NAMESIZE] = {};
    if (!if_indextoname(ifindex_, now)) {
      // The sockets stay open, dead, until the interface returns: the data path keeps polling them
      // (they answer ENETDOWN/ENXIO, which it drops and counts), and the VM stays connected.
      set_link(LinkState::kGone, "deleted");
    } else {
      if (place_.ifname != now) {
        const std::string was = place_.ifname;
        place_.ifname = now;
        link_changes_++;
        raise("link", "renamed from " + was + " to " + place_.ifname);
      }
      const LinkState s = read_link_flags();
      set_link(s, s == LinkState::kUp ? "up" : "down");
    }
  }
  if (link_ != LinkState::kGone) return;
  const unsigned idx = if_nametoindex(place_.ifname.c_str());
  if (!idx || idx == failed_ifindex_) return;
  std::string err;
  auto driver = open_driver(driver_->kind, &err);
  if (!driver) {
    failed_ifindex_ = idx;
    raise("link", "back as ifindex " + std::to_string(idx) + " but its sockets could not be reopened: " + err);
    return;
  }
  failed_ifindex_ = 0;
  ifindex_ = idx;
  install(std::move(driver));
  const LinkState s = read_link_flags();
  set_link(s,
           "back as ifindex " + std::to_string(idx) + ", sockets reopened, " + (s == LinkState::kUp ? "up" : "down"));
}

std::unique_ptr<UplinkPort::Driver> UplinkPort::open_driver(UplinkDriver d, std::string* err) {
  auto driver = std::make_unique<Driver>(d);
  const std::string& ifname = place_.ifname;
  // A lone AF_PACKET socket needs no fanout group; several share a new one.
  int fanout = -1;
  if (d == UplinkDriver::kAfXdp) {
    driver->redirect = XdpRedirect::open(ifname, place_.first_queue + place_.queues, err);
    if (!driver->redirect) return nullptr;
  }
  for (uint16_t q = 0; q < place_.queues; q++) {
    std::unique_ptr<Port> s;
    if (d == UplinkDriver::kAfPacket)
      s = AfPacketPort::open(name(), ifname, place_.ring, place_.offloads ? AfPacketPort::kOffloads : 0,
                             place_.queues > 1 ? &fanout : nullptr, &counters_[q], kernel_[q].get(), err);
    else
      s = AfXdpPort::open(name(), ifname, place_.first_queue + q, place_.xsk, driver->redirect->map_fd(), &counters_[q],
                          kernel_[q].get(), err);
    if (!s) return nullptr;
    driver->queues.push_back(std::move(s));
  }
  return driver;
}

void UplinkPort::publish_counters() { publish_queues(~0u); }

void UplinkPort::publish_queues(uint32_t qmask) {
  for (uint16_t q = 0; q < place_.queues; q++) {
    if (!(qmask & (1u << q))) continue;
    Locked l(*this, q);
    driver_->queues[q]->publish_counters();
    kernel_[q]->collect();
    counters_[q].publish();
  }
  if (shared_) pmd_tx_.publish_mine();
}

// The PMD may sleep only when no socket has work pending; every socket's fd is armed either way.
bool UplinkPort::arm_wakeup(std::vector<pollfd>& fds) { return arm_queues(~0u, fds); }

bool UplinkPort::arm_queues(uint32_t qmask, std::vector<pollfd>& fds) {
  bool idle = true;
  for (uint16_t q = 0; q < place_.queues; q++) {
    if (!(qmask & (1u << q))) continue;
    Locked l(*this, q);
    idle = driver_->queues[q]->arm_wakeup(fds) && idle;
  }
  return idle;
}

QueueCounters* UplinkPort::tx_counters(uint16_t qp) {
  QueueCounters* c = shared_ ? pmd_tx_.mine(qp) : nullptr;
  return c ? c : &counters_[qp];
}

void UplinkPort::abort_tx(uint16_t qp) {
  driver_->queues[qp]->abort_tx(0);
  if (shared_ && locks_[qp].held_here()) locks_[qp].unlock();
}

// Our memory never faults; a fault nobody claimed stops every port of the step, and a lock this thread
// took for a transmit cut short must not stay taken.
void UplinkPort::memory_fault() {
  for (uint16_t q = 0; q < place_.queues; q++)
    if (shared_ && locks_[q].held_here()) locks_[q].unlock();
}

void UplinkPort::runners_changed() {
  shared_ = runners().size() > 1;
  if (shared_) pmd_tx_.add_runners(runners(), sets_, place_.queues);
}

void UplinkPort::describe(Description& d) const {
  Port::describe(d);
  d.set("ifname", place_.ifname);
  d.set("driver", driver_name(driver_->kind));
  d.set("firstQueue", double(place_.first_queue));
  d.set("link", link_ == LinkState::kUp ? "up" : link_ == LinkState::kDown ? "down" : "gone");
  d.set("linkChanges", double(link_changes_));
  if (driver_->kind == UplinkDriver::kAfPacket) d.set("tpacket", place_.ring.version == 2 ? "v2" : "v3");
  // Bypass mode: how the kernel took the sockets (zero-copy only when every one of them got it) and
  // where the XDP program runs.
  if (driver_->kind == UplinkDriver::kAfXdp) {
    bool zc = true;
    for (auto& s : driver_->queues) zc = zc && static_cast<const AfXdpPort&>(*s).zero_copy();
    d.set("xdpBind", zc ? "zerocopy" : "copy");
    d.set("xdpAttach", driver_->redirect->attach_mode());
  }
  // What the kernel dropped at our sockets, by reason, summed over the queues, so the API and `stats`
  // show it beside our drops without knowing the counter table. Read as published: at most one
  // publication (100 ms) old. Each queue's own are in its counter set.
  auto& drops = d.list("kernelDrops");
  for (uint32_t id = KERNEL_DROP_PACKET_DROPS; id <= KERNEL_DROP_XDP_TX_INVALID_DESCS; id++) {
    double frames = 0;
    for (uint16_t q = 0; q < place_.queues; q++) {
      const uint64_t* shared = sets_.set(q);
      if (shared) frames += double(__atomic_load_n(&shared[id], __ATOMIC_RELAXED));
    }
    Description r;
    r.set("reason", kernel_drop_reason(QueueCounter(id)));
    r.set("frames", frames);
    drops.push_back(std::move(r));
  }
}

// While both drivers are open, frames go to whichever takes them first: once the AF_XDP driver is open
// its XDP program redirects the interface's frames into its ring, where they wait until it is installed
// (kernel to bypass loses nothing); from bypass to kernel, frames left in the AF_XDP ring when the old
// driver closes are lost, and the AF_PACKET socket sees frames again from that moment.
void UplinkPort::install(std::unique_ptr<Driver> driver) {
  {
    DatapathPause pause(*this);
    driver_.swap(driver);
  }
  driver.reset();
}

class UplinkPort::DriverSwitch final : public ModeChange {
 public:
  DriverSwitch(UplinkPort& port, std::unique_ptr<Driver> driver) : port_(port), driver_(std::move(driver)) {}
  void commit() override { port_.install(std::move(driver_)); }

 private:
  UplinkPort& port_;
  std::unique_ptr<Driver> driver_;
};

bool UplinkPort::prepare_mode(Mode m, std::unique_ptr<ModeChange>* change, std::string* err) {
  const UplinkDriver d = driver_for(m);
  if (d == driver_->kind) return true;
  auto driver = open_driver(d, err);
  if (!driver) return false;
  *change = std::make_unique<DriverSwitch>(*this, std::move(driver));
  return true;
}

namespace {
std::unique_ptr<Port> create_uplink(const std::string& name, const PortParams& p, PortContext& ctx, std::string* err) {
  UplinkPlace place;
  uint64_t first = 0, queues = 1, version = 3, block = 0, blocks = 0, retire = 0, frames = 0, frame = 0, ring = 0;
  bool withhold_offloads = false;
  using R = TpacketRing;
  using X = XskParams;
  if (!p.str("ifname", &place.ifname, err) || !p.num("queue", 0, 0, kMaxUplinkQueue, &first, err) ||
      !p.num("queues", 1, 1, kMaxQueuePairs, &queues, err) ||
      !p.num("blockSize", R::kDefaultBlockSize, R::kMinBlockSize, R::kMaxBlockSize, &block, err) ||
      !p.num("blocks", R::kDefaultBlocks, R::kMinBlocks, R::kMaxBlocks, &blocks, err) ||
      !p.num("retireMs", R::kDefaultRetireMs, R::kMinRetireMs, R::kMaxRetireMs, &retire, err) ||
      !p.num("tpacket", 3, 2, 3, &version, err) ||
      !p.num("frames", R::kDefaultFrames, R::kMinFrames, R::kMaxFrames, &frames, err) ||
      !p.num("frameSize", X::kDefaultFrameSize, X::kMinFrameSize, X::kMaxFrameSize, &frame, err) ||
      !p.num("ringSize", X::kDefaultRingSize, X::kMinRingSize, X::kMaxRingSize, &ring, err) ||
      !p.flag("withholdOffloads", &withhold_offloads, err))
    return nullptr;
  if (__builtin_popcountll(frame) != 1 || __builtin_popcountll(ring) != 1) {
    *err = "frame size " + std::to_string(frame) + " and ring size " + std::to_string(ring) + " must be powers of two";
    return nullptr;
  }
  if (block * blocks > R::kMaxBytes) {
    *err = "a receive ring of " + std::to_string(blocks) + " blocks of " + std::to_string(block) +
           " bytes is over the " + std::to_string(R::kMaxBytes >> 20) + " MiB one socket may map";
    return nullptr;
  }
  place.first_queue = uint32_t(first);
  place.queues = uint16_t(queues);
  place.ring = TpacketRing{uint32_t(version), uint32_t(block), uint32_t(blocks), uint32_t(retire), uint32_t(frames)};
  place.xsk = XskParams{uint32_t(frame), uint32_t(ring)};
  place.offloads = !withhold_offloads;
  return UplinkPort::open(name, place, ctx, err);
}
}  // namespace

// Registered in runtime/port_kinds.cc (extern: a namespace-scope const is otherwise private to this file).
extern const PortKind kUplinkKind = {"uplink", create_uplink};

}  // namespace vw
