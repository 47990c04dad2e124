#include "runtime/engine.h"

#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "forward/wire.h"
#include "ports/test/gen.h"
#include "ports/test/sink.h"

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

bool Engine::add_vhost_user(const std::string& name, const std::string& path, bool client, uint16_t queue_pairs,
                            std::string* err) {
  std::lock_guard<std::mutex> l(mu_);
  if (!check_new_name(name, err)) return false;
  if (queue_pairs < 1 || queue_pairs > kMaxQueuePairs) {
    *err = "port \"" + name + "\": queues must be 1.." + std::to_string(kMaxQueuePairs);
    return false;
  }
  auto vu = std::make_unique<VhostUserPort>(name, path, client, queue_pairs, *this, *block_, events_);
  if (!vu->start(err)) {
    *err = "port \"" + name + "\": " + *err;
    return false;
  }
  Entry e;
  e.kind = "vhost-user";
  e.port = &vu->device();
  e.counter_set = vu->device().counter_set();
  e.path = path;
  e.client = client;
  e.vhost = std::move(vu);
  ports_.emplace(name, std::move(e));
  return true;
}

void Engine::insert_owned(const std::string& name, const char* kind, std::unique_ptr<Port> port, int counter_set) {
  Entry e;
  e.kind = kind;
  e.port = port.get();
  e.counter_set = counter_set;
  e.own = std::move(port);
  ports_.emplace(name, std::move(e));
}

bool Engine::add_sink(const std::string& name, std::string* err) {
  std::lock_guard<std::mutex> l(mu_);
  if (!check_new_name(name, err)) return false;
  auto s = std::make_unique<SinkPort>(name, *block_);
  const int set = s->counter_set();
  insert_owned(name, "sink", std::move(s), set);
  return true;
}

bool Engine::add_gen(const std::string& name, uint32_t size, uint64_t rate, uint64_t count, std::string* err) {
  std::lock_guard<std::mutex> l(mu_);
  if (!check_new_name(name, err)) return false;
  if (size < 60 || size > kMaxFrame) {
    *err = "port \"" + name + "\": frame size must be 60.." + std::to_string(kMaxFrame);
    return false;
  }
  auto g = std::make_unique<GenPort>(name, size, rate, count, *block_);
  const int set = g->counter_set();
  insert_owned(name, "gen", std::move(g), set);
  return true;
}

bool Engine::add_uplink(const std::string& name, const std::string& ifname, std::string* err) {
  std::lock_guard<std::mutex> l(mu_);
  if (!check_new_name(name, err)) return false;
  auto u = UplinkPort::open(name, ifname, mode_, *block_, err);
  if (!u) {
    *err = "port \"" + name + "\": " + *err;
    return false;
  }
  UplinkPort* up = u.get();
  insert_owned(name, "uplink", std::move(u), up->counter_set());
  Entry& e = ports_.at(name);
  e.uplink = up;
  return true;
}

Pmd& Engine::place(std::unique_ptr<Forwarder> fwd) {
  Pmd* pmd = pmds_.front().get();
  for (auto& p : pmds_)
    if (p->queue_count() < pmd->queue_count()) pmd = p.get();
  pmd->pause();
  for (Port* m : fwd->members()) {
    pmd->add_port(*m, *fwd);
    m->set_runners({pmd});
    ports_.at(m->name()).fwd = fwd.get();
  }
  pmd->resume();
  const std::string name = fwd->name();
  forwarders_[name] = Placed{std::move(fwd), pmd};
  return *pmd;
}

void Engine::unplace(Entry& e) {
  if (!e.fwd) return;
  auto it = forwarders_.find(e.fwd->name());
  Placed& pl = it->second;
  pl.pmd->pause();
  for (Port* m : pl.fwd->members()) {
    pl.pmd->remove_port(m);
    m->set_runners({});
    ports_.at(m->name()).fwd = nullptr;
  }
  pl.pmd->resume();
  forwarders_.erase(it);
}

bool Engine::remove_port(const std::string& name, std::string* err) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = ports_.find(name);
  if (it == ports_.end()) {
    *err = "no port named \"" + name + "\"";
    return false;
  }
  unplace(it->second);
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
      *err = "port \"" + (e == &ia->second ? a : b) + "\" is already in " + e->fwd->kind() + " \"" + e->fwd->name() + "\"";
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
  unplace(it->second);
  return true;
}

bool Engine::set_mode(Mode m, std::string* err) {
  std::lock_guard<std::mutex> l(mu_);
  std::vector<std::pair<UplinkPort*, std::unique_ptr<Port>>> drivers;
  for (auto& [name, e] : ports_) {
    if (!e.uplink || e.uplink->mode() == m) continue;
    auto d = e.uplink->open_driver(m, err);
    if (!d) {
      *err = "port \"" + name + "\": cannot switch to " + (m == Mode::kKernel ? "kernel" : "bypass") + " mode: " + *err;
      return false;
    }
    drivers.emplace_back(e.uplink, std::move(d));
  }
  for (auto& [uplink, driver] : drivers) uplink->install(m, std::move(driver));
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
    s.counter_set = e.counter_set;
    if (e.fwd) {
      s.forwarder = e.fwd->name();
      const Placed& pl = forwarders_.at(e.fwd->name());
      s.pmd = int(pl.pmd->index());
    }
    s.path = e.path;
    s.client = e.client;
    if (e.vhost) s.vhost = e.vhost->info();
    if (e.uplink) s.ifname = e.uplink->ifname();
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace vw
