#include "runtime/engine.h"

#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "core/clock.h"
#include "forward/wire.h"
#include "runtime/port_kind.h"

namespace vw {

namespace {
Wait wait_policy(Mode m) { return m == Mode::kBypass ? Wait::kSpin : Wait::kSleep; }
}  // namespace

Engine::Engine(Mode mode, EventSink events)
    : mode_(mode), events_(std::move(events)), block_(std::make_shared<CounterBlock>(kQueueSets, kPmdSets)) {}

Engine::~Engine() { close(); }

bool Engine::start(const std::vector<int>& pmd_cores, std::string* err) {
  if (pmd_cores.empty() || pmd_cores.size() > kPmdSets) {
    *err = "between 1 and " + std::to_string(kPmdSets) + " PMD threads are supported";
    return false;
  }
  epfd_ = epoll_create1(EPOLL_CLOEXEC);
  stop_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (epfd_ < 0 || stop_fd_ < 0) {
    *err = std::string("cannot create the control thread's epoll: ") + strerror(errno);
    return false;
  }
  epoll_event ev = {};
  ev.events = EPOLLIN;
  ev.data.u64 = uint64_t(uint32_t(stop_fd_));
  epoll_ctl(epfd_, EPOLL_CTL_ADD, stop_fd_, &ev);
  for (size_t i = 0; i < pmd_cores.size(); i++) {
    pmds_.push_back(std::make_unique<Pmd>(uint32_t(i), pmd_cores[i], wait_policy(mode_), *block_));
    if (!pmds_.back()->start(err)) return false;
  }
  control_ = std::thread([this] { control_loop(); });
  pthread_setname_np(control_.native_handle(), "vw-control");
  return true;
}

void Engine::close() {
  if (closed_) return;
  closed_ = true;
  if (control_.joinable()) {
    uint64_t one = 1;
    if (write(stop_fd_, &one, sizeof(one)) < 0) {
      // Already signalled.
    }
    control_.join();
  }
  for (auto& p : pmds_) p->stop();
  std::lock_guard<std::mutex> l(mu_);
  forwarders_.clear();
  ports_.clear();  // vhost-user ports unwatch their fds and remove their sockets here
  pmds_.clear();
  if (epfd_ >= 0) ::close(epfd_);
  if (stop_fd_ >= 0) ::close(stop_fd_);
  epfd_ = stop_fd_ = -1;
}

void Engine::watch(int fd, std::function<void(uint32_t)> cb) {
  uint32_t gen = ++watch_gen_;
  watches_[fd] = Watch{gen, std::move(cb)};
  epoll_event ev = {};
  ev.events = EPOLLIN | EPOLLRDHUP;
  ev.data.u64 = uint64_t(gen) << 32 | uint32_t(fd);
  if (epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) < 0 && errno == EEXIST) epoll_ctl(epfd_, EPOLL_CTL_MOD, fd, &ev);
}

void Engine::unwatch(int fd) {
  if (watches_.erase(fd) && epfd_ >= 0) epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, nullptr);
}

void Engine::control_loop() {
  epoll_event evs[32];
  for (;;) {
    int n = epoll_wait(epfd_, evs, 32, -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return;
    std::lock_guard<std::mutex> l(mu_);
    for (int i = 0; i < n; i++) {
      int fd = int(uint32_t(evs[i].data.u64));
      uint32_t gen = uint32_t(evs[i].data.u64 >> 32);
      if (fd == stop_fd_) return;
      // The fd may have been unwatched (and even reused) by an earlier callback of this batch.
      auto it = watches_.find(fd);
      if (it == watches_.end() || it->second.gen != gen) continue;
      auto cb = it->second.cb;  // the callback may unwatch itself
      cb(evs[i].events);
    }
  }
}

bool Engine::check_new_name(const std::string& name, std::string* err) const {
  if (ports_.count(name)) {
    *err = "a port named \"" + name + "\" already exists";
    return false;
  }
  return true;
}

bool Engine::add_port(const std::string& kind, const std::string& name, const PortParams& params, std::string* err) {
  std::lock_guard<std::mutex> l(mu_);
  if (!check_new_name(name, err)) return false;
  const PortKind* k = find_port_kind(kind);
  if (!k) {
    *err = "port \"" + name + "\": there is no port kind \"" + kind + "\"";
    return false;
  }
  PortContext ctx{*block_, *this, events_, mode_};
  std::string why;
  std::unique_ptr<Port> port = k->create(name, params, ctx, &why);
  if (port && port->counter_set() < 0)
    why = "no room left for its counters (the switch has " + std::to_string(kQueueSets) + " queue counter sets)";
  if (!port || !why.empty()) {
    *err = "port \"" + name + "\": " + why;
    return false;
  }
  ports_.emplace(name, Entry{kind, std::move(port), nullptr});
  return true;
}

namespace {
// Pauses PMD threads for its lifetime, resuming them in the reverse order.
class PmdPause {
 public:
  explicit PmdPause(std::vector<Pmd*> pmds) : pmds_(std::move(pmds)) {
    for (Pmd* p : pmds_) p->pause();
  }
  ~PmdPause() {
    for (auto it = pmds_.rbegin(); it != pmds_.rend(); ++it) (*it)->resume();
  }
  PmdPause(const PmdPause&) = delete;
  PmdPause& operator=(const PmdPause&) = delete;

 private:
  std::vector<Pmd*> pmds_;
};
}  // namespace

std::vector<Pmd*> Engine::all_pmds() const {
  std::vector<Pmd*> v;
  for (auto& p : pmds_) v.push_back(p.get());
  return v;
}

void Engine::lay_out(Placed& pl) {
  for (Pmd* p : pl.pmds)
    for (Port* m : pl.fwd->members()) p->remove_port(m);
  pl.pmds.clear();
  pl.lanes.clear();
  uint16_t lanes = 0;
  bool spread = pl.fwd->spreads() && pmds_.size() > 1;
  for (Port* m : pl.fwd->members()) {
    spread = spread && m->spreads();
    lanes = std::max(lanes, m->queue_pairs());
  }
  const size_t home = pl.pmd->index();
  if (spread && lanes > 1) {
    for (uint16_t q = 0; q < lanes; q++) pl.lanes.push_back(pmds_[(home + q) % pmds_.size()].get());
    for (Pmd* p : pl.lanes)
      if (std::find(pl.pmds.begin(), pl.pmds.end(), p) == pl.pmds.end()) pl.pmds.push_back(p);
  } else {
    pl.pmds = {pl.pmd};
  }
  std::vector<uint32_t> threads;
  for (Pmd* p : pl.pmds) threads.push_back(p->index());
  pl.fwd->set_threads(threads);
  for (Port* m : pl.fwd->members()) {
    for (Pmd* p : pl.pmds) {
      uint32_t mask = 0;
      for (uint16_t q = 0; q < m->queue_pairs(); q++)
        if (pl.queue_pmd(q) == p) mask |= 1u << q;
      p->add_port(*m, *pl.fwd, mask);
    }
    m->set_runners(std::vector<PortRunner*>(pl.pmds.begin(), pl.pmds.end()));
    ports_.at(m->name()).fwd = pl.fwd.get();
  }
}

Pmd& Engine::place(std::unique_ptr<Forwarder> fwd) {
  size_t home = 0;
  for (size_t i = 1; i < pmds_.size(); i++)
    if (pmds_[i]->queue_count() < pmds_[home]->queue_count()) home = i;
  const std::string name = fwd->name();
  Placed& pl = forwarders_[name];
  pl = Placed{std::move(fwd), pmds_[home].get(), {}, {}};
  PmdPause paused(all_pmds());
  lay_out(pl);
  return *pl.pmd;
}

void Engine::unplace(std::string name) {
  auto it = forwarders_.find(name);
  Placed& pl = it->second;
  {
    PmdPause paused(all_pmds());
    for (Port* m : pl.fwd->members()) {
      for (Pmd* p : pl.pmds) p->remove_port(m);
      m->set_runners({});
      ports_.at(m->name()).fwd = nullptr;
    }
  }
  forwarders_.erase(it);
}

void Engine::leave_bridge(Placed& pl, Entry& e) {
  for (Pmd* p : pl.pmds) p->remove_port(e.port.get());
  static_cast<Bridge*>(pl.fwd.get())->remove_member(*e.port);
  e.port->set_runners({});
  e.fwd = nullptr;
  // Its queues may have been all that kept the others on one PMD, or the ones that spread them.
  lay_out(pl);
}

bool Engine::remove_port(const std::string& name, std::string* err) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = ports_.find(name);
  if (it == ports_.end()) {
    *err = "no port named \"" + name + "\"";
    return false;
  }
  Entry& e = it->second;
  if (e.fwd && std::string(e.fwd->kind()) == "bridge") {
    // Only this member leaves; the bridge and its other members carry on.
    PmdPause paused(all_pmds());
    leave_bridge(forwarders_.at(e.fwd->name()), e);
  }
  if (e.fwd) unplace(e.fwd->name());
  ports_.erase(it);
  return true;
}

bool Engine::wire(const std::string& a, const std::string& b, uint32_t* pmd, std::string* err) {
  std::lock_guard<std::mutex> l(mu_);
  auto ia = ports_.find(a), ib = ports_.find(b);
  if (ia == ports_.end() || ib == ports_.end()) {
    *err = "no port named \"" + (ia == ports_.end() ? a : b) + "\"";
    return false;
  }
  if (a == b) {
    *err = "cannot wire port \"" + a + "\" to itself";
    return false;
  }
  for (auto* e : {&ia->second, &ib->second}) {
    if (e->fwd) {
      *err =
          "port \"" + (e == &ia->second ? a : b) + "\" is already in " + e->fwd->kind() + " \"" + e->fwd->name() + "\"";
      return false;
    }
  }
  *pmd = place(std::make_unique<Wire>(*ia->second.port, *ib->second.port)).index();
  return true;
}

bool Engine::unwire(const std::string& a, std::string* err) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = ports_.find(a);
  if (it == ports_.end()) {
    *err = "no port named \"" + a + "\"";
    return false;
  }
  if (!it->second.fwd || std::string(it->second.fwd->kind()) != "wire") {
    *err = "port \"" + a + "\" is not wired";
    return false;
  }
  unplace(it->second.fwd->name());
  return true;
}

bool Engine::set_mode(Mode m, std::string* err) {
  std::lock_guard<std::mutex> l(mu_);
  // Every port prepares its part first; one that cannot run in mode m leaves everything as it was.
  std::vector<std::unique_ptr<ModeChange>> changes;
  for (auto& [name, e] : ports_) {
    std::unique_ptr<ModeChange> c;
    if (!e.port->prepare_mode(m, &c, err)) {
      *err = "port \"" + name + "\": cannot switch to " + mode_name(m) + " mode: " + *err;
      return false;
    }
    if (c) changes.push_back(std::move(c));
  }
  for (auto& c : changes) c->commit();
  mode_ = m;
  for (auto& p : pmds_) {
    p->pause();
    p->set_wait(wait_policy(m));
    p->resume();
  }
  return true;
}

std::vector<ForwarderSummary> Engine::forwarders() {
  std::lock_guard<std::mutex> l(mu_);
  std::vector<ForwarderSummary> out;
  for (auto& [name, pl] : forwarders_) {
    ForwarderSummary f{pl.fwd->kind(), name, int(pl.pmd->index()), {}};
    for (Port* m : pl.fwd->members()) f.members.push_back(m->name());
    out.push_back(std::move(f));
  }
  return out;
}

std::vector<PortSummary> Engine::ports() {
  std::lock_guard<std::mutex> l(mu_);
  std::vector<PortSummary> out;
  for (auto& [name, e] : ports_) {
    PortSummary s;
    s.name = name;
    s.kind = e.kind;
    s.queue_pairs = e.port->queue_pairs();
    s.counter_set = e.port->counter_set();
    e.port->describe(s.description);
    if (e.fwd) {
      s.forwarder = e.fwd->name();
      const Placed& pl = forwarders_.at(e.fwd->name());
      s.pmd = int(pl.pmd->index());
      for (uint16_t q = 0; q < s.queue_pairs; q++) s.queue_pmds.push_back(int(pl.queue_pmd(q)->index()));
    }
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace vw

namespace vw {

Engine::Entry* Engine::free_port(const std::string& port, std::string* err) {
  auto it = ports_.find(port);
  if (it == ports_.end()) {
    *err = "no port named \"" + port + "\"";
    return nullptr;
  }
  if (it->second.fwd) {
    *err = "port \"" + port + "\" is already in " + it->second.fwd->kind() + " \"" + it->second.fwd->name() +
           "\": a port is in one wire or one bridge";
    return nullptr;
  }
  return &it->second;
}

Engine::Placed* Engine::find_bridge(const std::string& name, std::string* err) {
  auto it = forwarders_.find(name);
  if (it == forwarders_.end() || std::string(it->second.fwd->kind()) != "bridge") {
    *err = "no bridge named \"" + name + "\"";
    return nullptr;
  }
  return &it->second;
}

bool Engine::add_bridge(const std::string& name, const BridgeOptions& o, const std::vector<BridgeMember>& members,
                        const std::vector<StaticMac>& statics, uint32_t* pmd, std::string* err) {
  std::lock_guard<std::mutex> l(mu_);
  if (forwarders_.count(name)) {
    *err = "a bridge or wire named \"" + name + "\" already exists";
    return false;
  }
  auto br = std::make_unique<Bridge>(name, o);
  for (size_t i = 0; i < members.size(); i++) {
    for (size_t k = 0; k < i; k++) {
      if (members[k].port == members[i].port) {
        *err = "bridge \"" + name + "\": port \"" + members[i].port + "\" is listed twice";
        return false;
      }
    }
    Entry* e = free_port(members[i].port, err);
    if (!e) {
      *err = "bridge \"" + name + "\": " + *err;
      return false;
    }
    br->add_member(*e->port, members[i].cfg);
  }
  for (const StaticMac& s : statics) {
    auto it = ports_.find(s.port);
    if (it == ports_.end() || !br->has_member(*it->second.port)) {
      *err = "bridge \"" + name + "\": static MAC entry on \"" + s.port + "\", which is not a member";
      return false;
    }
    if (!br->add_static(s.vlan, s.mac, *it->second.port)) {
      *err = "bridge \"" + name + "\": no room for static MAC entries beyond " + std::to_string(o.max_macs);
      return false;
    }
  }
  *pmd = place(std::move(br)).index();
  return true;
}

bool Engine::remove_bridge(const std::string& name, std::string* err) {
  std::lock_guard<std::mutex> l(mu_);
  if (!find_bridge(name, err)) return false;
  unplace(name);
  return true;
}

bool Engine::bridge_add_port(const std::string& bridge, const BridgeMember& m, std::string* err) {
  std::lock_guard<std::mutex> l(mu_);
  Placed* pl = find_bridge(bridge, err);
  if (!pl) return false;
  Entry* e = free_port(m.port, err);
  if (!e) return false;
  PmdPause paused(all_pmds());
  static_cast<Bridge*>(pl->fwd.get())->add_member(*e->port, m.cfg);
  lay_out(*pl);
  return true;
}

bool Engine::bridge_remove_port(const std::string& bridge, const std::string& port, std::string* err) {
  std::lock_guard<std::mutex> l(mu_);
  Placed* pl = find_bridge(bridge, err);
  if (!pl) return false;
  auto it = ports_.find(port);
  if (it == ports_.end() || it->second.fwd != pl->fwd.get()) {
    *err = "port \"" + port + "\" is not in bridge \"" + bridge + "\"";
    return false;
  }
  PmdPause paused(all_pmds());
  leave_bridge(*pl, it->second);
  return true;
}

bool Engine::fdb(const std::string& bridge, std::vector<FdbRow>* out, std::string* err) {
  std::lock_guard<std::mutex> l(mu_);
  Placed* pl = find_bridge(bridge, err);
  if (!pl) return false;
  const Bridge* br = static_cast<const Bridge*>(pl->fwd.get());
  std::vector<FdbEntry> entries;
  {
    PmdPause paused(pl->pmds);
    entries = br->fdb().entries(now_ns());
  }
  out->clear();
  for (const FdbEntry& e : entries) {
    out->push_back(FdbRow{e.mac, e.vlan, br->members()[e.port]->name(), double(e.age_ns) / 1e9, e.is_static});
  }
  return true;
}

std::vector<BridgeSummary> Engine::bridges() {
  std::lock_guard<std::mutex> l(mu_);
  std::vector<BridgeSummary> out;
  for (auto& [name, pl] : forwarders_) {
    if (std::string(pl.fwd->kind()) != "bridge") continue;
    const Bridge& br = *static_cast<const Bridge*>(pl.fwd.get());
    BridgeSummary s{name, int(pl.pmd->index()), br.options(), {}, {}};
    PmdPause paused(pl.pmds);
    s.stats = br.stats();
    s.vlan_drops = br.vlan_drops();
    for (size_t i = 0; i < br.members().size(); i++) {
      const Port& p = *br.members()[i];
      s.members.push_back({p.name(), br.port_config(p), br.port_stats(p), br.fdb().port_entries(uint16_t(i))});
    }
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace vw
