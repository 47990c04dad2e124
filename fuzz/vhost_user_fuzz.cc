// Fuzzer for the vhost-user protocol server: a sequence of messages, with real file descriptors
// (memfds of chosen sizes, eventfds, pipes, /dev/null) attached as the input asks, sent over a real
// Unix socket to a VhostUserPort driven by a minimal in-harness Reactor.
//
// Checked besides ASan/UBSan:
//   - after every message, the process holds no more fds than one connection can legitimately keep
//     (3 per vring + the memory slots + the sockets): repeated messages must not grow fds;
//   - after the port is destroyed, nothing is left watched in the reactor and the process's open fd
//     count is back to what it was before the input (every received fd closed on every path);
//   - the reply to a request that has one arrives (the server never leaves a front end waiting).
#include <dirent.h>
#include <fcntl.h>
#include <fuzzer/FuzzedDataProvider.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/counters.h"
#include "core/guest_memory.h"
#include "ports/vhost_user/vhost_user.h"
#include "ports/vhost_user/vhost_user_wire.h"
#include "virtio/virtio_spec.h"

using namespace vw;

namespace {

constexpr uint64_t kPage = 4096;

[[noreturn]] void die(const std::string& what) {
  fprintf(stderr, "vhost_user_fuzz: invariant broken: %s\n", what.c_str());
  abort();
}

int count_fds() {
  int n = 0;
  DIR* d = opendir("/proc/self/fd");
  if (!d) abort();
  while (dirent* e = readdir(d))
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n - 1;  // the directory's own fd
}

std::string list_fds() {
  std::string out;
  DIR* d = opendir("/proc/self/fd");
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    char link[256] = {};
    std::string p = std::string("/proc/self/fd/") + e->d_name;
    if (readlink(p.c_str(), link, sizeof link - 1) < 0) continue;
    out += std::string("  ") + e->d_name + " -> " + link + "\n";
  }
  closedir(d);
  return out;
}

// The control thread's event loop, reduced to what a port needs: level-triggered readiness, callbacks
// run on this thread. A callback may unwatch its own fd (it is copied before it runs).
class FakeReactor : public Reactor {
 public:
  void watch(int fd, std::function<void(uint32_t)> cb) override { w_[fd] = std::move(cb); }
  void unwatch(int fd) override { w_.erase(fd); }
  size_t watched() const { return w_.size(); }
  // Runs callbacks until no watched fd is readable (bounded, so a stuck fd cannot hang the fuzzer).
  void run() {
    for (int iter = 0; iter < 16; iter++) {
      std::vector<pollfd> p;
      for (const auto& x : w_) p.push_back(pollfd{x.first, POLLIN, 0});
      if (p.empty() || poll(p.data(), p.size(), 0) <= 0) return;
      for (const pollfd& q : p) {
        if (!q.revents) continue;
        auto it = w_.find(q.fd);
        if (it == w_.end()) continue;
        auto cb = it->second;
        cb(uint32_t(q.revents));
      }
    }
  }

 private:
  std::map<int, std::function<void(uint32_t)>> w_;
};

struct Globals {
  CounterBlock counters{64, 1};
  std::string dir, path;
  Globals() {
    char tmpl[] = "/tmp/vw-fuzz-XXXXXX";
    if (!mkdtemp(tmpl)) abort();
    dir = tmpl;
    path = dir + "/p.sock";
  }
  ~Globals() {
    unlink(path.c_str());
    rmdir(dir.c_str());
  }
};
Globals& g() {
  static Globals x;
  return x;
}

// What the harness sent as memory, so later addresses can be plausible.
struct SentRegion {
  uint64_t gpa, size, uaddr;
};

class Harness {
 public:
  explicit Harness(FuzzedDataProvider& fdp) : fdp_(fdp) {}
  void run();

 private:
  bool connect_peer();
  void send_message();
  int make_fd();
  void region(VhostUserMemRegion* r);
  uint64_t addr_near_memory();
  size_t drain_replies();
  void poke_datapath();

  FuzzedDataProvider& fdp_;
  FakeReactor reactor_;
  std::unique_ptr<VhostUserPort> port_;
  int sock_ = -1;
  bool client_ = false;
  uint16_t qp_ = 1;
  std::vector<SentRegion> sent_;
  std::vector<uint64_t> memfd_sizes_;  // file sizes of the memfds of the message being built
  int fd_bound_ = 0;
};

bool Harness::connect_peer() {
  if (client_) {
    // The port connected to our listener in start(); take the connection.
    return sock_ >= 0;
  }
  sock_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un sa = {};
  sa.sun_family = AF_UNIX;
  strncpy(sa.sun_path, g().path.c_str(), sizeof sa.sun_path - 1);
  if (connect(sock_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) die("cannot connect to the port");
  reactor_.run();  // accept
  return true;
}

int Harness::make_fd() {
  switch (fdp_.ConsumeIntegralInRange<int>(0, 9)) {
    case 0: return eventfd(0, EFD_CLOEXEC);
    case 1: {
      int p[2];
      if (pipe2(p, O_CLOEXEC) != 0) abort();
      close(p[1]);
      return p[0];
    }
    case 2: return open("/dev/null", O_RDWR | O_CLOEXEC);
    default: {
      // Guest memory: a memfd of a few pages (sometimes empty or odd-sized).
      int fd = memfd_create("vw-fuzz", MFD_CLOEXEC);
      uint64_t size = kPage * fdp_.ConsumeIntegralInRange<uint64_t>(0, 8);
      if (fdp_.ConsumeIntegralInRange<int>(0, 7) == 0) size += fdp_.ConsumeIntegralInRange<uint64_t>(1, kPage - 1);
      if (ftruncate(fd, off_t(size)) != 0) abort();
      memfd_sizes_.push_back(size);
      return fd;
    }
  }
}

uint64_t Harness::addr_near_memory() {
  if (sent_.empty() || fdp_.ConsumeIntegralInRange<int>(0, 3) == 0) {
    switch (fdp_.ConsumeIntegralInRange<int>(0, 3)) {
      case 0: return 0;
      case 1: return ~uint64_t(0) - fdp_.ConsumeIntegralInRange<uint64_t>(0, 64);
      default: return fdp_.ConsumeIntegral<uint64_t>();
    }
  }
  const SentRegion& r = sent_[fdp_.ConsumeIntegralInRange<size_t>(0, sent_.size() - 1)];
  const uint64_t base = fdp_.ConsumeBool() ? r.uaddr : r.gpa;
  switch (fdp_.ConsumeIntegralInRange<int>(0, 3)) {
    case 0: return base + fdp_.ConsumeIntegralInRange<uint64_t>(0, r.size) / 16 * 16;
    case 1: return base + r.size - fdp_.ConsumeIntegralInRange<uint64_t>(0, 64);
    case 2: return base + fdp_.ConsumeIntegralInRange<uint64_t>(0, r.size);
    default: return base;
  }
}

// A memory region description: mostly consistent with the memfd it goes with, sometimes not.
void Harness::region(VhostUserMemRegion* r) {
  const uint64_t fsize =
      memfd_sizes_.empty() ? kPage : memfd_sizes_[fdp_.ConsumeIntegralInRange<size_t>(0, memfd_sizes_.size() - 1)];
  if (fdp_.ConsumeIntegralInRange<int>(0, 4)) {
    r->guest_phys_addr = kPage * fdp_.ConsumeIntegralInRange<uint64_t>(0, 64);
    r->mmap_offset = kPage * fdp_.ConsumeIntegralInRange<uint64_t>(0, 2);
    r->memory_size = fsize > r->mmap_offset ? fsize - r->mmap_offset : kPage;
    if (fdp_.ConsumeIntegralInRange<int>(0, 5) == 0)
      r->memory_size += fdp_.ConsumeIntegralInRange<uint64_t>(0, 2 * kPage);
    r->userspace_addr = 0x7f0000000000ull + r->guest_phys_addr * (fdp_.ConsumeBool() ? 1 : 3);
  } else {
    r->guest_phys_addr = addr_near_memory();
    r->memory_size =
        fdp_.ConsumeBool() ? fdp_.ConsumeIntegral<uint64_t>() : fdp_.ConsumeIntegralInRange<uint64_t>(0, 3 * kPage);
    r->userspace_addr = addr_near_memory();
    r->mmap_offset =
        fdp_.ConsumeBool() ? fdp_.ConsumeIntegral<uint64_t>() : fdp_.ConsumeIntegralInRange<uint64_t>(0, 3 * kPage);
  }
}

size_t Harness::drain_replies() {
  uint8_t buf[4096];
  size_t total = 0;
  ssize_t r;
  while ((r = recv(sock_, buf, sizeof buf, MSG_DONTWAIT)) > 0) total += size_t(r);
  return total;
}

void Harness::send_message() {
  static const uint32_t kRequests[] = {
      VHOST_USER_GET_FEATURES,      VHOST_USER_SET_FEATURES,          VHOST_USER_SET_OWNER,
      VHOST_USER_RESET_OWNER,       VHOST_USER_SET_MEM_TABLE,         VHOST_USER_SET_LOG_BASE,
      VHOST_USER_SET_VRING_NUM,     VHOST_USER_SET_VRING_ADDR,        VHOST_USER_SET_VRING_BASE,
      VHOST_USER_GET_VRING_BASE,    VHOST_USER_SET_VRING_KICK,        VHOST_USER_SET_VRING_CALL,
      VHOST_USER_SET_VRING_ERR,     VHOST_USER_GET_PROTOCOL_FEATURES, VHOST_USER_SET_PROTOCOL_FEATURES,
      VHOST_USER_GET_QUEUE_NUM,     VHOST_USER_SET_VRING_ENABLE,      VHOST_USER_NET_SET_MTU,
      VHOST_USER_GET_MAX_MEM_SLOTS, VHOST_USER_ADD_MEM_REG,           VHOST_USER_REM_MEM_REG,
  };
  VhostUserMsg msg = {};
  uint32_t req = fdp_.ConsumeIntegralInRange<int>(0, 31) == 0 ? fdp_.ConsumeIntegral<uint32_t>()
                                                              : fdp_.PickValueInArray(kRequests);
  msg.hdr.request = req;
  msg.hdr.flags = VHOST_USER_VERSION;
  if (fdp_.ConsumeBool()) msg.hdr.flags |= VHOST_USER_NEED_REPLY_MASK;
  if (fdp_.ConsumeIntegralInRange<int>(0, 31) == 0) msg.hdr.flags = fdp_.ConsumeIntegral<uint32_t>();

  std::vector<int> fds;
  memfd_sizes_.clear();
  auto vring_index = [&]() -> uint32_t {
    return fdp_.ConsumeIntegralInRange<int>(0, 7) ? fdp_.ConsumeIntegralInRange<uint32_t>(0, 2u * qp_)
                                                  : fdp_.ConsumeIntegral<uint32_t>();
  };
  uint32_t size = 0;
  switch (req) {
    case VHOST_USER_SET_FEATURES:
    case VHOST_USER_SET_PROTOCOL_FEATURES: {
      static const uint64_t kFeat[] = {0,
                                       1ull << 32,
                                       (1ull << 32) | (1ull << 30),
                                       (1ull << 32) | (1ull << 15) | (1ull << 28) | (1ull << 29) | (1ull << 30),
                                       (1ull << 0) | (1ull << 3) | (1ull << 15),
                                       0x8009};
      msg.payload.u64 = fdp_.ConsumeBool() ? fdp_.PickValueInArray(kFeat) : fdp_.ConsumeIntegral<uint64_t>();
      size = 8;
      break;
    }
    case VHOST_USER_NET_SET_MTU:
      msg.payload.u64 =
          fdp_.ConsumeBool() ? fdp_.ConsumeIntegralInRange<uint64_t>(0, 70000) : fdp_.ConsumeIntegral<uint64_t>();
      size = 8;
      break;
    case VHOST_USER_SET_VRING_KICK:
    case VHOST_USER_SET_VRING_CALL:
    case VHOST_USER_SET_VRING_ERR: {
      const bool nofd = fdp_.ConsumeIntegralInRange<int>(0, 3) == 0;
      msg.payload.u64 = (vring_index() & 0xff) | (nofd ? VHOST_USER_VRING_NOFD_MASK : 0);
      if (fdp_.ConsumeIntegralInRange<int>(0, 15) == 0) msg.payload.u64 |= fdp_.ConsumeIntegral<uint64_t>();
      if (!nofd) fds.push_back(fdp_.ConsumeIntegralInRange<int>(0, 7) ? eventfd(0, EFD_CLOEXEC) : make_fd());
      size = 8;
      break;
    }
    case VHOST_USER_SET_VRING_NUM:
    case VHOST_USER_SET_VRING_BASE:
    case VHOST_USER_GET_VRING_BASE:
    case VHOST_USER_SET_VRING_ENABLE: {
      static const uint32_t kNum[] = {0, 1, 2, 3, 64, 256, 1024, 32768, 65535, 65536, 0xffffffffu};
      msg.payload.state.index = vring_index();
      msg.payload.state.num = fdp_.ConsumeBool()
                                  ? fdp_.PickValueInArray(kNum)
                                  : (req == VHOST_USER_SET_VRING_ENABLE ? fdp_.ConsumeIntegralInRange<uint32_t>(0, 2)
                                                                        : fdp_.ConsumeIntegral<uint32_t>());
      size = sizeof(VhostUserVringState);
      break;
    }
    case VHOST_USER_SET_VRING_ADDR: {
      msg.payload.addr.index = vring_index();
      msg.payload.addr.flags = fdp_.ConsumeIntegralInRange<int>(0, 7) ? 0 : fdp_.ConsumeIntegral<uint32_t>();
      msg.payload.addr.desc_user_addr = addr_near_memory();
      msg.payload.addr.avail_user_addr = addr_near_memory();
      msg.payload.addr.used_user_addr = addr_near_memory();
      msg.payload.addr.log_guest_addr = fdp_.ConsumeIntegral<uint64_t>();
      size = sizeof(VhostUserVringAddr);
      break;
    }
    case VHOST_USER_SET_MEM_TABLE: {
      const uint32_t n = fdp_.ConsumeIntegralInRange<int>(0, 15) == 0 ? fdp_.ConsumeIntegral<uint32_t>()
                                                                      : fdp_.ConsumeIntegralInRange<uint32_t>(0, 9);
      const uint32_t nfd = fdp_.ConsumeIntegralInRange<int>(0, 5) == 0 ? fdp_.ConsumeIntegralInRange<uint32_t>(0, 12)
                                                                       : std::min<uint32_t>(n, 8);
      for (uint32_t i = 0; i < nfd; i++) fds.push_back(make_fd());
      msg.payload.memory.nregions = n;
      for (uint32_t i = 0; i < std::min<uint32_t>(n, kVhostUserMaxFds); i++) region(&msg.payload.memory.regions[i]);
      size = uint32_t(offsetof(VhostUserMemory, regions) +
                      std::min<uint32_t>(n, kVhostUserMaxFds) * sizeof(VhostUserMemRegion));
      break;
    }
    case VHOST_USER_ADD_MEM_REG:
    case VHOST_USER_REM_MEM_REG: {
      if (req == VHOST_USER_ADD_MEM_REG || fdp_.ConsumeIntegralInRange<int>(0, 7) == 0) fds.push_back(make_fd());
      if (req == VHOST_USER_REM_MEM_REG && !sent_.empty() && fdp_.ConsumeBool()) {
        const SentRegion& s = sent_[fdp_.ConsumeIntegralInRange<size_t>(0, sent_.size() - 1)];
        msg.payload.memreg.region = {s.gpa, s.size, s.uaddr, 0};
      } else {
        region(&msg.payload.memreg.region);
      }
      size = sizeof(VhostUserMemRegMsg);
      break;
    }
    default: size = 0; break;
  }
  // Remember what memory the front end described, for plausible ring addresses later.
  if (req == VHOST_USER_SET_MEM_TABLE) {
    sent_.clear();
    for (uint32_t i = 0; i < std::min<uint32_t>(msg.payload.memory.nregions, kVhostUserMaxFds); i++) {
      const VhostUserMemRegion& r = msg.payload.memory.regions[i];
      sent_.push_back({r.guest_phys_addr, r.memory_size, r.userspace_addr});
    }
  } else if (req == VHOST_USER_ADD_MEM_REG) {
    const VhostUserMemRegion& r = msg.payload.memreg.region;
    sent_.push_back({r.guest_phys_addr, r.memory_size, r.userspace_addr});
  }
  // Wrong payload sizes and stray fds, sometimes.
  if (fdp_.ConsumeIntegralInRange<int>(0, 15) == 0) {
    size = fdp_.ConsumeIntegralInRange<uint32_t>(0, 300);
    auto junk = fdp_.ConsumeBytes<uint8_t>(std::min<size_t>(size, sizeof msg.payload));
    if (!junk.empty()) memcpy(&msg.payload, junk.data(), junk.size());
  }
  if (fdp_.ConsumeIntegralInRange<int>(0, 15) == 0) {
    const int extra = fdp_.ConsumeIntegralInRange<int>(1, 10);
    for (int i = 0; i < extra; i++) fds.push_back(make_fd());
  }
  if (fds.size() > 32) abort();
  msg.hdr.size = size;
  // A payload larger than any message is refused from the header alone: send only the header then, as
  // the server reads no further (sending more would only be read as the next message).
  const size_t len = kVhostUserHeaderSize + (size <= kVhostUserMaxPayload ? size : 0);

  iovec iov = {&msg, len};
  msghdr mh = {};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 32)];
  if (!fds.empty()) {
    mh.msg_control = control;
    mh.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  const ssize_t sent = sendmsg(sock_, &mh, MSG_NOSIGNAL);
  for (int fd : fds) close(fd);
  if (sent != ssize_t(len)) {
    // The port already hung up on us (an earlier message was fatal): start a new connection.
    close(sock_);
    sock_ = -1;
    reactor_.run();
    return;
  }
  reactor_.run();
  const size_t got = drain_replies();
  const bool has_reply = req == VHOST_USER_GET_FEATURES || req == VHOST_USER_GET_PROTOCOL_FEATURES ||
                         req == VHOST_USER_GET_MAX_MEM_SLOTS || req == VHOST_USER_GET_VRING_BASE ||
                         req == VHOST_USER_GET_QUEUE_NUM;
  // A well-framed request that has a reply gets one, even when it is refused (an empty one then).
  if (has_reply && size <= kVhostUserMaxPayload && fds.size() <= kVhostUserMaxFds && got < kVhostUserHeaderSize)
    die("no reply to request " + std::to_string(req));
}

void Harness::poke_datapath() {
  // What a PMD would do between two messages; the rings mostly hold zeros, this exercises the control
  // state (memory swapped, rings restarted) under the data path.
  VirtioNetDevice& dev = *port_;
  const uint16_t qp = fdp_.ConsumeIntegralInRange<uint16_t>(0, qp_);
  Burst b;
  dev.rx_burst(qp, b);
  static uint8_t frame[1514];
  Burst t;
  t.n = 1;
  t.nspans = 1;
  t.pkt[0] = PacketView{uint32_t(sizeof frame), 0, 1, 0};
  t.span[0] = Span{frame, uint32_t(sizeof frame)};
  dev.tx_burst(qp, t);
  dev.release(qp, b);
  std::vector<pollfd> fds;
  dev.arm_wakeup(fds);
  dev.disarm_wakeup();
}

void Harness::run() {
  const int baseline = count_fds();
  client_ = fdp_.ConsumeIntegralInRange<int>(0, 7) == 0;
  qp_ = fdp_.ConsumeIntegralInRange<uint16_t>(1, 4);
  // Listen (server port) / connect (client port) fds, the harness's socket, the port's two timerfds
  // (reconnect or accept back-off, and the connection's deadline), 3 fds per vring, the memory slots,
  // and the fds one message carries while it is being handled.
  fd_bound_ = baseline + 5 + 3 * 2 * qp_ + int(kMaxMemRegions) + 2;
  int listener = -1;
  if (client_) {
    unlink(g().path.c_str());
    listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un sa = {};
    sa.sun_family = AF_UNIX;
    strncpy(sa.sun_path, g().path.c_str(), sizeof sa.sun_path - 1);
    if (bind(listener, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 || listen(listener, 1) != 0) die("listen");
  }
  port_ =
      std::make_unique<VhostUserPort>("fuzz", g().path, client_, qp_, reactor_, g().counters, [](const PortEvent&) {});
  std::string err;
  if (!port_->start(&err)) die("start: " + err);
  if (client_) {
    sock_ = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    if (sock_ < 0) die("the client port did not connect");
  }
  connect_peer();

  for (int i = 0; i < 64 && fdp_.remaining_bytes() > 0; i++) {
    if (sock_ < 0) {
      // A fatal message closed the connection. A server port takes a new one; a client port would
      // reconnect a second later, too slow for a fuzzer: stop there.
      if (client_) break;
      connect_peer();
    }
    switch (fdp_.ConsumeIntegralInRange<int>(0, 15)) {
      case 0: poke_datapath(); break;
      case 1:
        // The front end goes away and comes back.
        close(sock_);
        sock_ = -1;
        reactor_.run();
        break;
      case 2: {
        // The front end asks for something and hangs up without reading the answer: the reply left
        // unread makes the server's next read fail with ECONNRESET rather than see a clean EOF.
        VhostUserMsg q = {};
        q.hdr = {VHOST_USER_GET_FEATURES, VHOST_USER_VERSION, 0};
        if (send(sock_, &q, kVhostUserHeaderSize, MSG_NOSIGNAL) == ssize_t(kVhostUserHeaderSize)) reactor_.run();
        close(sock_);
        sock_ = -1;
        reactor_.run();
        break;
      }
      default: send_message(); break;
    }
    const int now = count_fds();
    if (now > fd_bound_)
      die("fd count grew to " + std::to_string(now) + " (bound " + std::to_string(fd_bound_) + ")\n" + list_fds());
  }

  if (sock_ >= 0) close(sock_);
  sock_ = -1;
  reactor_.run();
  port_.reset();
  if (listener >= 0) close(listener);
  if (reactor_.watched()) die(std::to_string(reactor_.watched()) + " fds still watched after the port was destroyed");
  const int after = count_fds();
  if (after != baseline)
    die("fd count " + std::to_string(after) + " after the input, " + std::to_string(baseline) + " before\n" +
        list_fds());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  g();
  FuzzedDataProvider fdp(data, size);
  Harness h(fdp);
  h.run();
  return 0;
}
