#include "frontend/virtio_user.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstring>

#include "ports/vhost_user/vhost_user_wire.h"
#include "virtio/virtio_spec.h"

namespace vw {

namespace {

// VERSION_1 is required, and with it the header always has num_buffers, merged buffers or not.
constexpr uint32_t kNetHdrSize = sizeof(virtio_net_hdr_mrg_rxbuf);
constexpr uint32_t kBurst = 32;
constexpr uint64_t kSlotAlign = 64;  // a multiple of 64 never straddles a (page-aligned) region boundary
constexpr uint32_t kMaxQueuePairs = (VHOST_USER_VRING_IDX_MASK + 1) / 2;
constexpr uint32_t kMaxStdFrame = 1518;  // Ethernet with one VLAN tag, without FCS
constexpr uint32_t kVlanEthHdr = 18;
constexpr uint32_t kMinUdpFrame = 14 + 20 + 8;
constexpr uint32_t kIndirectTable = 2 * sizeof(vring_desc);

constexpr uint64_t bit(unsigned b) { return 1ull << b; }

uint64_t round_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

const char* request_name(uint32_t req) {
  switch (req) {
    case VHOST_USER_GET_FEATURES: return "GET_FEATURES";
    case VHOST_USER_SET_FEATURES: return "SET_FEATURES";
    case VHOST_USER_SET_OWNER: return "SET_OWNER";
    case VHOST_USER_RESET_OWNER: return "RESET_OWNER";
    case VHOST_USER_SET_MEM_TABLE: return "SET_MEM_TABLE";
    case VHOST_USER_SET_LOG_BASE: return "SET_LOG_BASE";
    case VHOST_USER_SET_LOG_FD: return "SET_LOG_FD";
    case VHOST_USER_SET_VRING_NUM: return "SET_VRING_NUM";
    case VHOST_USER_SET_VRING_ADDR: return "SET_VRING_ADDR";
    case VHOST_USER_SET_VRING_BASE: return "SET_VRING_BASE";
    case VHOST_USER_GET_VRING_BASE: return "GET_VRING_BASE";
    case VHOST_USER_SET_VRING_KICK: return "SET_VRING_KICK";
    case VHOST_USER_SET_VRING_CALL: return "SET_VRING_CALL";
    case VHOST_USER_SET_VRING_ERR: return "SET_VRING_ERR";
    case VHOST_USER_GET_PROTOCOL_FEATURES: return "GET_PROTOCOL_FEATURES";
    case VHOST_USER_SET_PROTOCOL_FEATURES: return "SET_PROTOCOL_FEATURES";
    case VHOST_USER_GET_QUEUE_NUM: return "GET_QUEUE_NUM";
    case VHOST_USER_SET_VRING_ENABLE: return "SET_VRING_ENABLE";
    case VHOST_USER_SEND_RARP: return "SEND_RARP";
    case VHOST_USER_NET_SET_MTU: return "NET_SET_MTU";
    case VHOST_USER_GET_MAX_MEM_SLOTS: return "GET_MAX_MEM_SLOTS";
    case VHOST_USER_ADD_MEM_REG: return "ADD_MEM_REG";
    case VHOST_USER_REM_MEM_REG: return "REM_MEM_REG";
    default: return "an unknown request";
  }
}

bool fail(std::string* err, std::string msg) {
  if (err) *err = std::move(msg);
  return false;
}

std::string sys_error(const std::string& what) { return what + ": " + strerror(errno); }

// The backend runs concurrently in another process: ring indices it reads or writes go through atomics
// so that the descriptor and element contents are ordered around them.
// With interrupts, empty traffic-loop rounds before the thread sleeps on its call fds, and the longest
// sleep (a rate-limited sender wakes at least this often to send what has come due).
constexpr uint32_t kIdleSpinsBeforeSleep = 256;
constexpr int kSleepMs = 1;

uint16_t load_acquire(const uint16_t* p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
uint16_t load_relaxed(const uint16_t* p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
void store_release(uint16_t* p, uint16_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
void store_relaxed(uint16_t* p, uint16_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }

uint16_t ip_checksum(const uint8_t* p, size_t len) {
  uint32_t sum = 0;
  for (size_t i = 0; i + 1 < len; i += 2) sum += uint32_t(p[i]) << 8 | p[i + 1];
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return uint16_t(~sum);
}

// The generator's frame: Ethernet/IPv4/UDP from 02:00:00:00:00:01 198.18.0.1 to 02:00:00:00:00:02
// 198.18.0.2 (RFC 2544 benchmarking addresses), zero payload, UDP checksum 0 (none, legal on IPv4).
std::vector<uint8_t> udp_frame(uint32_t size) {
  std::vector<uint8_t> f(size, 0);
  const uint8_t eth[14] = {2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00};
  memcpy(f.data(), eth, sizeof(eth));
  uint8_t* ip = f.data() + 14;
  uint16_t ip_len = uint16_t(size - 14), udp_len = uint16_t(size - 34);
  const uint8_t iph[20] = {0x45, 0, uint8_t(ip_len >> 8), uint8_t(ip_len), 0, 0, 0x40, 0, 64, 17, 0, 0,
                           198, 18, 0, 1, 198, 18, 0, 2};
  memcpy(ip, iph, sizeof(iph));
  uint16_t csum = ip_checksum(ip, 20);
  ip[10] = uint8_t(csum >> 8);
  ip[11] = uint8_t(csum);
  const uint8_t udp[8] = {0x04, 0x00, 0x04, 0x00, uint8_t(udp_len >> 8), uint8_t(udp_len), 0, 0};
  memcpy(ip + 20, udp, sizeof(udp));
  return f;
}

struct Stats {
  std::atomic<uint64_t> tx_packets{0}, tx_bytes{0}, tx_ring_full{0};
  std::atomic<uint64_t> rx_packets{0}, rx_bytes{0};
  std::atomic<uint64_t> kicks{0}, calls{0};
};

// Read from any thread while the traffic thread or the caller counts.
void add(std::atomic<uint64_t>& c, uint64_t n) { c.fetch_add(n, std::memory_order_relaxed); }

}  // namespace

struct VirtioUser::Impl {
  struct Region {
    uint64_t gpa, size, offset;  // offset: in the memfd, also the mmap_offset the backend is told
    uint8_t* host;
    bool removed;  // gone from the backend's table; our mapping stays until we are destroyed
  };

  // One split virtqueue. Descriptor i always describes buffer slot i, so descriptors are written once
  // and a packet costs only a length and an avail entry.
  struct Vring {
    uint16_t num = 0, mask = 0;
    vring_desc* desc = nullptr;
    vring_avail* avail = nullptr;
    vring_used* used = nullptr;
    uint16_t* used_event = nullptr;   // avail->ring[num]: where we want a call (EVENT_IDX)
    uint16_t* avail_event = nullptr;  // used->ring[num]: where the backend wants a kick (EVENT_IDX)
    uint16_t avail_idx = 0;    // the next avail index we publish
    uint16_t checked_idx = 0;  // avail index when we last decided whether to kick (vring_need_event's old)
    uint16_t used_seen = 0;    // the next used index we consume
    int kick_fd = -1, call_fd = -1;
    int err_fd = -1;                      // SET_VRING_ERR, only when set_vring_err asked for it
    uint64_t slot_gpa = 0;                // buffer slot i at slot_gpa + i * stride
    uint32_t stride = 0;
    uint64_t indirect_gpa = 0;            // TX with tx_indirect: slot i's table at indirect_gpa + 32 * i
    std::vector<uint8_t*> hdr;            // host address of slot i's virtio-net header
    std::vector<vring_desc*> indirect;    // TX with tx_indirect: slot i's two-entry table
    std::vector<uint8_t> outstanding;     // 1 while the backend owns descriptor i
    std::vector<uint16_t> free_ids;       // TX: descriptors we may post
    std::vector<uint16_t> seg_id;         // RX: the buffers of the packet being reaped
    std::vector<uint32_t> seg_len;
  };

  VirtioUserOptions opt;
  uint64_t page = 4096;
  int sock = -1;
  int memfd = -1;
  uint64_t memfd_size = 0;
  std::vector<Region> regions;
  uint64_t features = 0, protocol_features = 0;
  bool reply_ack = false, mrg_rxbuf = false, event_idx = false, tx_indirect = false;
  bool hung_up = false;
  uint16_t nvrings = 0;
  std::unique_ptr<Vring[]> vrings;
  uint32_t tx_max_frame = 0;
  uint64_t scratch_next = 0, scratch_end = 0;  // guest addresses
  Stats stats;
  std::thread traffic;
  std::atomic<bool> traffic_stop{false};
  std::thread racer;
  std::atomic<bool> racer_stop{false};
  std::atomic<uint64_t> racer_rounds{0}, racer_posted{0}, racer_restarts{0}, racer_failed_restarts{0};

  ~Impl() {
    stop_traffic();
    stop_racer();
    if (sock >= 0) close(sock);
    for (uint16_t i = 0; i < nvrings; i++) {
      if (vrings[i].kick_fd >= 0) close(vrings[i].kick_fd);
      if (vrings[i].call_fd >= 0) close(vrings[i].call_fd);
      if (vrings[i].err_fd >= 0) close(vrings[i].err_fd);
    }
    for (const Region& r : regions) munmap(r.host, r.size);
    if (memfd >= 0) close(memfd);
  }

  void stop_traffic() {
    if (!traffic.joinable()) return;
    traffic_stop.store(true, std::memory_order_relaxed);
    traffic.join();
  }

  void stop_racer() {
    if (!racer.joinable()) return;
    racer_stop.store(true, std::memory_order_relaxed);
    racer.join();
  }

  // A racer target resolved to our mapping.
  struct RaceTarget {
    uint8_t* host;
    std::vector<std::vector<uint8_t>> values;
  };

  // Stores a value as a guest would: 8-byte atomic words where it can, else bytes; relaxed atomics so
  // that the compiler keeps every store (nothing in this thread reads them back).
  static void race_store(uint8_t* host, const std::vector<uint8_t>& v) {
    const size_t n = v.size();
    if (n % 8 == 0 && reinterpret_cast<uintptr_t>(host) % 8 == 0) {
      for (size_t i = 0; i < n; i += 8) {
        uint64_t w;
        memcpy(&w, v.data() + i, 8);
        __atomic_store_n(reinterpret_cast<uint64_t*>(host + i), w, __ATOMIC_RELAXED);
      }
    } else {
      for (size_t i = 0; i < n; i++) __atomic_store_n(host + i, v[i], __ATOMIC_RELAXED);
    }
  }

  // GET_VRING_BASE, then SET_VRING_BASE at what it returned, SET_VRING_KICK and SET_VRING_ENABLE.
  bool restart_vring(uint16_t vring, uint16_t* base, std::string* err) {
    Vring& v = vrings[vring];
    VhostUserVringState s = {vring, 0};
    if (!send_msg(VHOST_USER_GET_VRING_BASE, VHOST_USER_VERSION, &s, sizeof(s), nullptr, 0, err)) return false;
    VhostUserMsg reply;
    if (!recv_reply(VHOST_USER_GET_VRING_BASE, &reply, err)) return false;
    if (reply.hdr.size != sizeof(VhostUserVringState))
      return fail(err, "backend refused GET_VRING_BASE for vring " + std::to_string(vring));
    const uint16_t b = uint16_t(reply.payload.state.num);
    if (base) *base = b;
    if (!request_state(VHOST_USER_SET_VRING_BASE, vring, b, err)) return false;
    uint64_t idx = vring;
    if (!request(VHOST_USER_SET_VRING_KICK, &idx, sizeof(idx), &v.kick_fd, 1, err)) return false;
    if ((features & bit(VHOST_USER_F_PROTOCOL_FEATURES)) && !request_state(VHOST_USER_SET_VRING_ENABLE, vring, 1, err))
      return false;
    do_kick(v);
    return true;
  }

  void racer_loop(uint16_t vring, std::vector<uint16_t> heads, std::vector<RaceTarget> targets, bool restart) {
    Vring& v = vrings[vring];
    uint64_t rng = 0x9e3779b97f4a7c15ull ^ uint64_t(reinterpret_cast<uintptr_t>(this));
    size_t next_head = 0;
    uint64_t rounds = 0;
    while (!racer_stop.load(std::memory_order_relaxed)) {
      for (const RaceTarget& t : targets) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        race_store(t.host, t.values[rng % t.values.size()]);
      }
      // Keep the backend reading: post while fewer than a ring's worth are outstanding (counted from the
      // used index the backend publishes, so a restarted ring is never offered more than it may hold),
      // and only a head that is not outstanding already: one named twice would break the ring on that
      // rule alone (head_in_flight) and the race would test nothing else. The backend returns heads in
      // the order they were posted, so the outstanding ones are the last ones posted.
      if (!heads.empty()) {
        const uint16_t used = load_acquire(&v.used->idx);
        const uint16_t outstanding = uint16_t(v.avail_idx - used);
        const uint16_t h = heads[next_head % heads.size()];
        bool in_flight = false;
        for (uint16_t k = 1; k <= outstanding && k <= v.num && !in_flight; k++)
          in_flight = v.avail->ring[uint16_t(v.avail_idx - k) & v.mask] == h;
        if (outstanding < v.num && !in_flight) {
          next_head++;
          v.avail->ring[v.avail_idx & v.mask] = h;
          v.avail_idx++;
          store_release(&v.avail->idx, v.avail_idx);
          racer_posted.fetch_add(1, std::memory_order_relaxed);
          do_kick(v);
        }
      }
      if (restart && (rounds & 63) == 0) {
        uint64_t n;
        if (read(v.err_fd, &n, sizeof(n)) == sizeof(n)) {
          std::string e;
          (restart_vring(vring, nullptr, &e) ? racer_restarts : racer_failed_restarts).fetch_add(1, std::memory_order_relaxed);
        }
      }
      if ((++rounds & 1023) == 0) {
        racer_rounds.store(rounds, std::memory_order_relaxed);
        // Two cores: leave the backend's threads a chance to run between bursts of rewriting.
        std::this_thread::yield();
      }
    }
    racer_rounds.store(rounds, std::memory_order_relaxed);
  }

  // Guest address of a pointer into one of our mappings.
  uint64_t gpa_of(const void* p) const {
    const uint8_t* h = static_cast<const uint8_t*>(p);
    for (const Region& r : regions)
      if (h >= r.host && h < r.host + r.size) return r.gpa + uint64_t(h - r.host);
    return 0;
  }

  // ---- memory ----

  const Region* region_of(uint64_t gpa) const {
    for (const Region& r : regions)
      if (gpa >= r.gpa && gpa - r.gpa < r.size) return &r;
    return nullptr;
  }

  // Our address of [gpa, gpa + len) when it lies inside one mapping, else null.
  uint8_t* host(uint64_t gpa, uint64_t len) const {
    const Region* r = region_of(gpa);
    if (!r || len > r->size - (gpa - r->gpa)) return nullptr;
    return r->host + (gpa - r->gpa);
  }

  // Guest space is contiguous but each region is its own mapping, so a range is visited piecewise:
  // f(host, done, n) per piece. The whole range is checked first, so a failed access changes nothing.
  template <class F>
  bool walk(uint64_t gpa, uint64_t len, F&& f) const {
    if (len > UINT64_MAX - gpa) return false;
    for (int pass = 0; pass < 2; pass++) {
      for (uint64_t done = 0; done < len;) {
        const Region* r = region_of(gpa + done);
        if (!r) return false;
        const uint64_t off = gpa + done - r->gpa, n = std::min(len - done, r->size - off);
        if (pass == 1) f(r->host + off, done, n);
        done += n;
      }
    }
    return true;
  }

  bool write_guest(uint64_t gpa, const uint8_t* p, uint64_t len) const {
    return walk(gpa, len, [p](uint8_t* h, uint64_t done, uint64_t n) { memcpy(h, p + done, n); });
  }

  bool read_guest(uint64_t gpa, uint8_t* p, uint64_t len) const {
    return walk(gpa, len, [p](const uint8_t* h, uint64_t done, uint64_t n) { memcpy(p + done, h, n); });
  }

  uint64_t guest_end() const {
    uint64_t end = kGuestBase;
    for (const Region& r : regions) end = std::max(end, r.gpa + r.size);
    return end;
  }

  VhostUserMemRegion describe(const Region& r) const {
    return {r.gpa, r.size, uint64_t(reinterpret_cast<uintptr_t>(r.host)), r.offset};
  }

  bool map_region(uint64_t gpa, uint64_t size, uint64_t offset, std::string* err) {
    void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, off_t(offset));
    if (p == MAP_FAILED) return fail(err, sys_error("mmap of guest memory"));
    regions.push_back({gpa, size, offset, static_cast<uint8_t*>(p), false});
    return true;
  }

  // ---- messages ----

  bool send_msg(uint32_t req, uint32_t flags, const void* payload, uint32_t size, const int* fds,
                size_t nfds, std::string* err) {
    VhostUserMsg msg = {};
    msg.hdr = {req, flags, size};
    if (size) memcpy(&msg.payload, payload, size);
    if (!vhost_user_send(sock, msg, fds, nfds)) {
      if (errno == EPIPE || errno == ECONNRESET) hung_up = true;
      return fail(err, sys_error(std::string("sending ") + request_name(req)));
    }
    return true;
  }

  // Receives one message into *msg, closing any fds that came with it (no reply of ours carries any).
  bool recv_msg(uint32_t req, VhostUserMsg* msg, std::string* err) {
    int fds[kVhostUserMaxFds];
    size_t nfds = 0;
    WireResult r = vhost_user_recv(sock, msg, fds, kVhostUserMaxFds, &nfds);
    for (size_t i = 0; i < nfds; i++) close(fds[i]);
    const std::string what = std::string("the reply to ") + request_name(req);
    if (r == WireResult::kClosed) {
      hung_up = true;
      return fail(err, "backend hung up instead of sending " + what);
    }
    if (r == WireResult::kError) {
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        return fail(err, "timed out after " + std::to_string(opt.timeout_ms) + " ms waiting for " + what);
      if (errno == ECONNRESET) hung_up = true;
      return fail(err, sys_error("receiving " + what));
    }
    return true;
  }

  bool recv_reply(uint32_t req, VhostUserMsg* msg, std::string* err) {
    if (!recv_msg(req, msg, err)) return false;
    if (msg->hdr.request != req || !(msg->hdr.flags & VHOST_USER_REPLY_MASK))
      return fail(err, std::string("backend answered ") + request_name(req) + " with request " +
                           std::to_string(msg->hdr.request) + ", flags " + std::to_string(msg->hdr.flags));
    return true;
  }

  // A request without a reply of its own: acknowledged (and the ack checked) when REPLY_ACK is on.
  bool request(uint32_t req, const void* payload, uint32_t size, const int* fds, size_t nfds,
               std::string* err) {
    uint32_t flags = VHOST_USER_VERSION | (reply_ack ? VHOST_USER_NEED_REPLY_MASK : 0);
    if (!send_msg(req, flags, payload, size, fds, nfds, err)) return false;
    if (!reply_ack) return true;
    VhostUserMsg reply;
    if (!recv_reply(req, &reply, err)) return false;
    if (reply.hdr.size != sizeof(uint64_t))
      return fail(err, std::string("backend acknowledged ") + request_name(req) + " with " +
                           std::to_string(reply.hdr.size) + " bytes instead of 8");
    if (reply.payload.u64 != 0)
      return fail(err, std::string("backend refused ") + request_name(req) + " (status " +
                           std::to_string(reply.payload.u64) + ")");
    return true;
  }

  bool request_u64(uint32_t req, uint64_t v, std::string* err) {
    return request(req, &v, sizeof(v), nullptr, 0, err);
  }

  bool request_state(uint32_t req, uint32_t index, uint32_t num, std::string* err) {
    VhostUserVringState s = {index, num};
    return request(req, &s, sizeof(s), nullptr, 0, err);
  }

  // GET_FEATURES, GET_PROTOCOL_FEATURES, GET_QUEUE_NUM: a u64 reply of their own.
  bool get_u64(uint32_t req, uint64_t* v, std::string* err) {
    if (!send_msg(req, VHOST_USER_VERSION, nullptr, 0, nullptr, 0, err)) return false;
    VhostUserMsg reply;
    if (!recv_reply(req, &reply, err)) return false;
    if (reply.hdr.size != sizeof(uint64_t))
      return fail(err, std::string("backend replied to ") + request_name(req) + " with " +
                           std::to_string(reply.hdr.size) + " bytes instead of 8");
    *v = reply.payload.u64;
    return true;
  }

  // ---- connection ----

  bool set_timeouts(int fd, std::string* err) {
    if (opt.timeout_ms <= 0) return true;
    timeval tv = {opt.timeout_ms / 1000, (opt.timeout_ms % 1000) * 1000};
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0)
      return fail(err, sys_error("setting socket timeouts"));
    return true;
  }

  bool connect_client(const sockaddr_un& sa, std::string* err) {
    // The backend may still be starting: a missing or not yet listening socket is retried until the
    // timeout.
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(std::max(opt.timeout_ms, 0));
    for (;;) {
      int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (fd < 0) return fail(err, sys_error("socket"));
      if (!set_timeouts(fd, err)) {
        close(fd);
        return false;
      }
      if (connect(fd, reinterpret_cast<const sockaddr*>(&sa), sizeof(sa)) == 0) {
        sock = fd;
        return true;
      }
      int e = errno;
      close(fd);
      bool retry = e == ENOENT || e == ECONNREFUSED || e == EAGAIN || e == EINTR;
      if (!retry || (opt.timeout_ms > 0 && std::chrono::steady_clock::now() >= deadline)) {
        errno = e;
        return fail(err, sys_error("connecting to " + opt.path));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }

  bool accept_backend(const sockaddr_un& sa, std::string* err) {
    struct stat st;
    if (lstat(opt.path.c_str(), &st) == 0) {
      if (!S_ISSOCK(st.st_mode)) return fail(err, opt.path + " exists and is not a socket");
      unlink(opt.path.c_str());
    }
    int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd < 0) return fail(err, sys_error("socket"));
    bool ok = false;
    if (bind(lfd, reinterpret_cast<const sockaddr*>(&sa), sizeof(sa)) < 0) {
      fail(err, sys_error("binding " + opt.path));
    } else {
      if (listen(lfd, 1) < 0) {
        fail(err, sys_error("listening on " + opt.path));
      } else {
        pollfd p = {lfd, POLLIN, 0};
        int r;
        do {
          r = poll(&p, 1, opt.timeout_ms > 0 ? opt.timeout_ms : -1);
        } while (r < 0 && errno == EINTR);
        if (r < 0) {
          fail(err, sys_error("waiting for a backend on " + opt.path));
        } else if (r == 0) {
          fail(err, "no backend connected to " + opt.path + " within " + std::to_string(opt.timeout_ms) + " ms");
        } else {
          int fd = accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
          if (fd < 0) {
            fail(err, sys_error("accepting on " + opt.path));
          } else if (!set_timeouts(fd, err)) {
            close(fd);
          } else {
            sock = fd;
            ok = true;
          }
        }
      }
      // One connection is all we take: the path would only mislead a later backend.
      unlink(opt.path.c_str());
    }
    close(lfd);
    return ok;
  }

  // ---- setup ----

  bool negotiate(std::string* err) {
    if (!request(VHOST_USER_SET_OWNER, nullptr, 0, nullptr, 0, err)) return false;
    uint64_t offered = 0;
    if (!get_u64(VHOST_USER_GET_FEATURES, &offered, err)) return false;

    if (offered & bit(VHOST_USER_F_PROTOCOL_FEATURES)) {
      uint64_t pf = 0;
      if (!get_u64(VHOST_USER_GET_PROTOCOL_FEATURES, &pf, err)) return false;
      protocol_features = pf & (bit(VHOST_USER_PROTOCOL_F_MQ) | bit(VHOST_USER_PROTOCOL_F_REPLY_ACK) |
                                bit(VHOST_USER_PROTOCOL_F_MTU) | bit(VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS));
      // Not acknowledged: whether the backend acks depends on the very feature this message sets.
      if (!send_msg(VHOST_USER_SET_PROTOCOL_FEATURES, VHOST_USER_VERSION, &protocol_features,
                    sizeof(protocol_features), nullptr, 0, err))
        return false;
      reply_ack = protocol_features & bit(VHOST_USER_PROTOCOL_F_REPLY_ACK);
    }

    if (opt.queue_pairs > 1) {
      if (!(protocol_features & bit(VHOST_USER_PROTOCOL_F_MQ)) || !(offered & bit(VIRTIO_NET_F_MQ)))
        return fail(err, std::to_string(opt.queue_pairs) +
                             " queue pairs need multiqueue, which the backend does not offer");
      uint64_t n = 0;
      if (!get_u64(VHOST_USER_GET_QUEUE_NUM, &n, err)) return false;
      if (n < opt.queue_pairs)
        return fail(err, "backend supports " + std::to_string(n) + " queue pairs, " +
                             std::to_string(opt.queue_pairs) + " asked for");
    }

    if (!(offered & bit(VIRTIO_F_VERSION_1))) return fail(err, "backend does not offer VIRTIO_F_VERSION_1");
    uint64_t want = bit(VIRTIO_F_VERSION_1) | bit(VHOST_USER_F_PROTOCOL_FEATURES);
    if (opt.mrg_rxbuf) want |= bit(VIRTIO_NET_F_MRG_RXBUF);
    if (opt.indirect) want |= bit(VIRTIO_RING_F_INDIRECT_DESC);
    if (opt.event_idx) want |= bit(VIRTIO_RING_F_EVENT_IDX);
    if (opt.queue_pairs > 1) want |= bit(VIRTIO_NET_F_MQ);
    if (opt.mtu) want |= bit(VIRTIO_NET_F_MTU);
    features = want & offered;
    if (opt.tx_indirect && !(features & bit(VIRTIO_RING_F_INDIRECT_DESC)))
      return fail(err, "tx_indirect needs VIRTIO_RING_F_INDIRECT_DESC, which the backend does not offer");
    if (!request_u64(VHOST_USER_SET_FEATURES, features, err)) return false;
    mrg_rxbuf = features & bit(VIRTIO_NET_F_MRG_RXBUF);
    event_idx = features & bit(VIRTIO_RING_F_EVENT_IDX);

    if (opt.mtu && (protocol_features & bit(VHOST_USER_PROTOCOL_F_MTU)) && (features & bit(VIRTIO_NET_F_MTU)))
      return request_u64(VHOST_USER_NET_SET_MTU, opt.mtu, err);
    return true;
  }

  // Region 0 starts with the rings, then come the receive and transmit buffers (which may run on into
  // later regions) and the scratch area for alloc().
  bool layout(std::string* err) {
    const uint32_t n = opt.queue_size;
    const uint64_t end = guest_end();
    uint64_t gpa = kGuestBase;
    uint64_t ring_gpa[kMaxQueuePairs * 2][3];
    for (uint16_t i = 0; i < nvrings; i++) {
      uint64_t* r = ring_gpa[i];
      r[0] = gpa;
      r[1] = r[0] + vring_desc_size(n);
      r[2] = round_up(r[1] + vring_avail_size(n), kSlotAlign);
      gpa = round_up(r[2] + vring_used_size(n), page);
    }
    if (gpa - kGuestBase > regions[0].size)
      return fail(err, "region 0 (" + std::to_string(regions[0].size) + " bytes) cannot hold the rings (" +
                           std::to_string(gpa - kGuestBase) + " bytes); raise mem_size or lower mem_regions");
    const uint32_t rx_stride = uint32_t(round_up(opt.rx_buf_size, kSlotAlign));
    const uint32_t tx_stride = uint32_t(round_up(kNetHdrSize + uint64_t(tx_max_frame), kSlotAlign));
    for (uint16_t i = 0; i < nvrings; i++) {
      Vring& v = vrings[i];
      const bool rx = i % 2 == 0;
      v.slot_gpa = gpa;
      v.stride = rx ? rx_stride : tx_stride;
      gpa += uint64_t(n) * v.stride;
      if (!rx && tx_indirect) {
        v.indirect_gpa = gpa;
        gpa += uint64_t(n) * kIndirectTable;
      }
    }
    if (gpa > end)
      return fail(err, "mem_size " + std::to_string(end - kGuestBase) + " is too small: rings and buffers need " +
                           std::to_string(gpa - kGuestBase) + " bytes");
    scratch_next = gpa;
    scratch_end = end;

    for (uint16_t i = 0; i < nvrings; i++) {
      Vring& v = vrings[i];
      const bool rx = i % 2 == 0;
      v.num = uint16_t(n);
      v.mask = uint16_t(n - 1);
      v.desc = reinterpret_cast<vring_desc*>(host(ring_gpa[i][0], 1));
      v.avail = reinterpret_cast<vring_avail*>(host(ring_gpa[i][1], 1));
      v.used = reinterpret_cast<vring_used*>(host(ring_gpa[i][2], 1));
      v.used_event = &v.avail->ring[n];
      v.avail_event = reinterpret_cast<uint16_t*>(&v.used->ring[n]);
      v.hdr.resize(n);
      v.outstanding.assign(n, 0);
      if (!rx && tx_indirect) v.indirect.resize(n);
      for (uint32_t s = 0; s < n; s++) {
        const uint64_t slot = v.slot_gpa + uint64_t(s) * v.stride;
        v.hdr[s] = host(slot, kNetHdrSize);
        if (rx) {
          v.desc[s] = {slot, opt.rx_buf_size, VRING_DESC_F_WRITE, 0};
        } else if (tx_indirect) {
          const uint64_t table = v.indirect_gpa + uint64_t(s) * kIndirectTable;
          v.indirect[s] = reinterpret_cast<vring_desc*>(host(table, kIndirectTable));
          v.indirect[s][0] = {slot, kNetHdrSize, VRING_DESC_F_NEXT, 1};
          v.indirect[s][1] = {slot + kNetHdrSize, 0, 0, 0};
          v.desc[s] = {table, kIndirectTable, VRING_DESC_F_INDIRECT, 0};
        } else {
          v.desc[s] = {slot, kNetHdrSize, 0, 0};
        }
      }
      if (rx) {
        v.seg_id.resize(n);
        v.seg_len.resize(n);
        for (uint32_t s = 0; s < n; s++) {
          v.avail->ring[s] = uint16_t(s);
          v.outstanding[s] = 1;
        }
        v.avail_idx = uint16_t(n);
        store_release(&v.avail->idx, v.avail_idx);
      } else {
        v.free_ids.resize(n);
        for (uint32_t s = 0; s < n; s++) v.free_ids[s] = uint16_t(n - 1 - s);
      }
    }
    return true;
  }

  bool setup_vrings(std::string* err) {
    for (uint16_t i = 0; i < nvrings; i++) {
      Vring& v = vrings[i];
      // Without interrupts the backend need not call us; with EVENT_IDX, used_event stays 0 so that a
      // call is due only when the used index passes 0 again.
      if (!opt.interrupts && !event_idx) store_relaxed(&v.avail->flags, VRING_AVAIL_F_NO_INTERRUPT);
      v.kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
      v.call_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
      if (v.kick_fd < 0 || v.call_fd < 0) return fail(err, sys_error("eventfd"));
      if (!request_state(VHOST_USER_SET_VRING_NUM, i, v.num, err)) return false;
      VhostUserVringAddr a = {};
      a.index = i;
      a.desc_user_addr = uint64_t(reinterpret_cast<uintptr_t>(v.desc));
      a.used_user_addr = uint64_t(reinterpret_cast<uintptr_t>(v.used));
      a.avail_user_addr = uint64_t(reinterpret_cast<uintptr_t>(v.avail));
      if (!request(VHOST_USER_SET_VRING_ADDR, &a, sizeof(a), nullptr, 0, err)) return false;
      if (!request_state(VHOST_USER_SET_VRING_BASE, i, 0, err)) return false;
      uint64_t idx = i;
      if (!request(VHOST_USER_SET_VRING_CALL, &idx, sizeof(idx), &v.call_fd, 1, err)) return false;
      if (!request(VHOST_USER_SET_VRING_KICK, &idx, sizeof(idx), &v.kick_fd, 1, err)) return false;
      if ((features & bit(VHOST_USER_F_PROTOCOL_FEATURES)) && !request_state(VHOST_USER_SET_VRING_ENABLE, i, 1, err))
        return false;
    }
    // The receive rings were filled before the backend knew them; tell it, as a guest driver does.
    for (uint16_t i = 0; i < nvrings; i += 2) notify(vrings[i]);
    return true;
  }

  // ---- data path ----

  void do_kick(Vring& v) {
    uint64_t one = 1;
    // A full eventfd counter already means "kicked", so a failed write loses nothing.
    if (write(v.kick_fd, &one, sizeof(one)) == sizeof(one)) add(stats.kicks, 1);
  }

  // Publishes everything posted since the last call and kicks if the backend asked to be told.
  void publish(Vring& v) {
    store_release(&v.avail->idx, v.avail_idx);
    notify(v);
  }

  void notify(Vring& v) {
    // The index store must be visible before we read whether the backend wants a kick, or both sides
    // could decide the other will act.
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    bool need = event_idx ? vring_need_event(load_relaxed(v.avail_event), v.avail_idx, v.checked_idx)
                          : !(load_relaxed(&v.used->flags) & VRING_USED_F_NO_NOTIFY);
    v.checked_idx = v.avail_idx;
    if (need) do_kick(v);
  }

  void consumed_used(Vring& v) {
    if (opt.interrupts && event_idx) store_relaxed(v.used_event, v.used_seen);
  }

  // Takes completed transmit descriptors back; returns how many are free.
  uint32_t tx_reclaim(Vring& v) {
    const uint16_t used_idx = load_acquire(&v.used->idx);
    if (used_idx == v.used_seen) return uint32_t(v.free_ids.size());
    while (v.used_seen != used_idx) {
      const uint32_t id = v.used->ring[v.used_seen & v.mask].id;
      // A backend returning a descriptor it does not hold must not make us post it twice.
      if (id < v.num && v.outstanding[id]) {
        v.outstanding[id] = 0;
        v.free_ids.push_back(uint16_t(id));
      }
      v.used_seen++;
    }
    consumed_used(v);
    return uint32_t(v.free_ids.size());
  }

  // Posts a free descriptor whose slot already holds the frame; the caller publishes.
  void tx_post(Vring& v, uint32_t frame_len) {
    const uint16_t id = v.free_ids.back();
    v.free_ids.pop_back();
    if (tx_indirect)
      v.indirect[id][1].len = frame_len;
    else
      v.desc[id].len = kNetHdrSize + frame_len;
    v.outstanding[id] = 1;
    v.avail->ring[v.avail_idx++ & v.mask] = id;
  }

  uint64_t tx_slot(const Vring& v, uint16_t id) const { return v.slot_gpa + uint64_t(id) * v.stride; }

  // Reaps up to max received packets from receive ring v: deliver(ids, lens, nsegs) sees each packet's
  // buffers (header included, lengths capped at the buffer size), then the buffers are posted again.
  template <class Deliver>
  size_t rx_reap(Vring& v, size_t max, Deliver&& deliver) {
    const uint16_t used_idx = load_acquire(&v.used->idx);
    const uint16_t start = v.used_seen;
    size_t packets = 0;
    while (packets < max && v.used_seen != used_idx) {
      const uint16_t ready = uint16_t(used_idx - v.used_seen);
      const vring_used_elem& first = v.used->ring[v.used_seen & v.mask];
      uint32_t nbufs = 1;
      if (mrg_rxbuf && first.id < v.num && v.outstanding[first.id]) {
        uint16_t nb;
        memcpy(&nb, v.hdr[first.id] + offsetof(virtio_net_hdr_mrg_rxbuf, num_buffers), sizeof(nb));
        if (nb > 1 && nb <= v.num) nbufs = nb;
      }
      // The backend publishes a packet's buffers together; the rest of this one has not arrived.
      if (nbufs > ready) break;
      bool valid = true;
      uint32_t nsegs = 0;
      for (uint32_t k = 0; k < nbufs; k++) {
        const vring_used_elem& e = v.used->ring[uint16_t(v.used_seen + k) & v.mask];
        if (e.id >= v.num || !v.outstanding[e.id]) {
          valid = false;
          continue;
        }
        v.outstanding[e.id] = 0;
        v.seg_id[nsegs] = uint16_t(e.id);
        v.seg_len[nsegs++] = std::min(e.len, opt.rx_buf_size);
      }
      v.used_seen = uint16_t(v.used_seen + nbufs);
      if (valid) {
        deliver(v.seg_id.data(), v.seg_len.data(), nsegs);
        packets++;
      }
      for (uint32_t k = 0; k < nsegs; k++) {
        v.outstanding[v.seg_id[k]] = 1;
        v.avail->ring[v.avail_idx++ & v.mask] = v.seg_id[k];
      }
    }
    if (v.used_seen != start) {
      consumed_used(v);
      publish(v);
    }
    return packets;
  }

  // Frame bytes in a received packet's buffers: all but the header at the start of the first.
  static uint64_t frame_bytes(const uint32_t* lens, uint32_t n) {
    uint64_t b = 0;
    for (uint32_t k = 0; k < n; k++) b += lens[k];
    return b - std::min(lens[0], kNetHdrSize);
  }

  void traffic_loop(TrafficOptions t) {
    using clock = std::chrono::steady_clock;
    const uint16_t qps = opt.queue_pairs;
    const clock::time_point begin = clock::now();
    uint64_t sent = 0;
    uint16_t q = 0;
    // tx_ring_full counts the times a ring filled up, not the spins spent waiting on a full ring.
    std::vector<uint8_t> full(qps, 0);
    uint32_t idle = 0;
    while (!traffic_stop.load(std::memory_order_relaxed)) {
      bool progress = false;
      bool tx_due = t.tx_size && (t.tx_count == 0 || sent < t.tx_count);
      uint64_t want = tx_due ? kBurst : 0;
      if (want && t.tx_count) want = std::min(want, t.tx_count - sent);
      if (want && t.tx_rate > 0) {
        const double elapsed = std::chrono::duration<double>(clock::now() - begin).count();
        const uint64_t allowed = uint64_t(elapsed * t.tx_rate);
        want = allowed > sent ? std::min(want, allowed - sent) : 0;
        if (!want && !t.rx) {
          // Nothing due for a while: sleep rather than spin at low rates (a syscall per burst at most).
          const double wait = double(sent + 1) / t.tx_rate - elapsed;
          if (wait > 50e-6) std::this_thread::sleep_for(std::chrono::duration<double>(std::min(wait, 1e-3)));
        }
      }
      Vring& tx = vrings[2 * q + 1];
      const uint32_t free = tx_reclaim(tx);
      if (want) {
        const uint32_t n = uint32_t(std::min<uint64_t>(want, free));
        if (n == 0) {
          if (!full[q]) add(stats.tx_ring_full, 1);
          full[q] = 1;
        } else {
          full[q] = 0;
          for (uint32_t k = 0; k < n; k++) tx_post(tx, t.tx_size);
          publish(tx);
          progress = true;
          sent += n;
          add(stats.tx_packets, n);
          add(stats.tx_bytes, uint64_t(n) * t.tx_size);
        }
      } else if (!tx_due && !t.rx) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      if (t.rx) {
        uint64_t bytes = 0;
        const size_t n = rx_reap(vrings[2 * q], kBurst, [&](const uint16_t*, const uint32_t* lens, uint32_t nsegs) {
          bytes += frame_bytes(lens, nsegs);
        });
        if (n) {
          add(stats.rx_packets, n);
          add(stats.rx_bytes, bytes);
          progress = true;
        }
      }
      if (++q == qps) q = 0;
      if (opt.interrupts) {
        if (progress) {
          idle = 0;
        } else if (++idle >= kIdleSpinsBeforeSleep) {
          idle = 0;
          sleep_until_called(t);
        }
      }
    }
  }

  // With interrupts, an idle traffic thread sleeps on its call eventfds as a guest driver does (NAPI),
  // so a load generator shares a small machine with the backend instead of spinning against it. The
  // request for a call goes out before the last look at the used rings, so nothing is missed.
  void sleep_until_called(const TrafficOptions& t) {
    std::vector<pollfd> fds;
    bool pending = false;
    for (uint16_t i = 0; i < nvrings; i++) {
      const bool rx = i % 2 == 0;
      if (rx ? !t.rx : !t.tx_size) continue;
      Vring& v = vrings[i];
      if (event_idx) store_relaxed(v.used_event, v.used_seen);
      __atomic_thread_fence(__ATOMIC_SEQ_CST);
      if (load_acquire(&v.used->idx) != v.used_seen) pending = true;
      fds.push_back(pollfd{v.call_fd, POLLIN, 0});
    }
    if (pending || fds.empty()) return;
    int r;
    do {
      r = poll(fds.data(), fds.size(), kSleepMs);
    } while (r < 0 && errno == EINTR);
    for (const pollfd& p : fds) {
      uint64_t calls;
      if ((p.revents & POLLIN) && read(p.fd, &calls, sizeof(calls)) == sizeof(calls)) add(stats.calls, calls);
    }
  }
};

VirtioUser::VirtioUser(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
VirtioUser::~VirtioUser() = default;

std::unique_ptr<VirtioUser> VirtioUser::create(const VirtioUserOptions& options, std::string* err) {
  const VirtioUserOptions& o = options;
  auto refuse = [err](std::string msg) {
    fail(err, std::move(msg));
    return nullptr;
  };
  sockaddr_un sa = {};
  sa.sun_family = AF_UNIX;
  if (o.path.empty() || o.path.size() >= sizeof(sa.sun_path))
    return refuse("socket path must be 1 to " + std::to_string(sizeof(sa.sun_path) - 1) + " bytes");
  memcpy(sa.sun_path, o.path.c_str(), o.path.size());
  if (o.queue_pairs < 1 || o.queue_pairs > kMaxQueuePairs)
    return refuse("queue_pairs must be 1 to " + std::to_string(kMaxQueuePairs));
  if (o.queue_size < 1 || o.queue_size > kMaxQueueSize || (o.queue_size & (o.queue_size - 1)))
    return refuse("queue_size must be a power of two up to 32768");
  if (o.mem_regions < 1 || o.mem_regions > kVhostUserMaxFds)
    return refuse("mem_regions must be 1 to " + std::to_string(kVhostUserMaxFds));
  if (o.rx_buf_size <= kNetHdrSize || o.rx_buf_size > 65536)
    return refuse("rx_buf_size must be more than the 12-byte header and at most 65536");
  if (o.mem_size == 0) return refuse("mem_size must not be 0");
  if (o.tx_indirect && !o.indirect) return refuse("tx_indirect needs indirect");

  auto impl = std::make_unique<Impl>();
  Impl& m = *impl;
  m.opt = o;
  m.page = uint64_t(sysconf(_SC_PAGESIZE));
  m.nvrings = uint16_t(2 * o.queue_pairs);
  m.tx_indirect = o.tx_indirect;
  m.vrings.reset(new Impl::Vring[m.nvrings]);
  m.tx_max_frame = std::max({kMaxStdFrame, o.rx_buf_size - kNetHdrSize, o.mtu ? o.mtu + kVlanEthHdr : 0});

  const uint64_t region_size = round_up((o.mem_size + o.mem_regions - 1) / o.mem_regions, m.page);
  m.memfd = memfd_create("vhostwire-virtio-user", MFD_CLOEXEC);
  if (m.memfd < 0) return refuse(sys_error("memfd_create"));
  m.memfd_size = region_size * o.mem_regions;
  if (ftruncate(m.memfd, off_t(m.memfd_size)) < 0) return refuse(sys_error("sizing guest memory"));
  for (uint32_t i = 0; i < o.mem_regions; i++)
    if (!m.map_region(kGuestBase + i * region_size, region_size, i * region_size, err)) return nullptr;
  if (!m.layout(err)) return nullptr;

  if (!(o.server ? m.accept_backend(sa, err) : m.connect_client(sa, err))) return nullptr;
  if (!m.negotiate(err)) return nullptr;

  VhostUserMemory mem = {};
  mem.nregions = o.mem_regions;
  int fds[kVhostUserMaxFds];
  for (uint32_t i = 0; i < o.mem_regions; i++) {
    mem.regions[i] = m.describe(m.regions[i]);
    fds[i] = m.memfd;
  }
  const uint32_t mem_len = uint32_t(offsetof(VhostUserMemory, regions) + o.mem_regions * sizeof(VhostUserMemRegion));
  if (!m.request(VHOST_USER_SET_MEM_TABLE, &mem, mem_len, fds, o.mem_regions, err)) return nullptr;
  if (!m.setup_vrings(err)) return nullptr;
  return std::unique_ptr<VirtioUser>(new VirtioUser(std::move(impl)));
}

uint64_t VirtioUser::features() const { return impl_->features; }
uint64_t VirtioUser::protocol_features() const { return impl_->protocol_features; }

bool VirtioUser::connected() const {
  if (impl_->sock < 0 || impl_->hung_up) return false;
  // Looks for a hang-up without reading, so a message the backend sent stays queued.
  pollfd p = {impl_->sock, POLLRDHUP, 0};
  if (poll(&p, 1, 0) < 0) return true;
  return !(p.revents & (POLLHUP | POLLRDHUP | POLLERR | POLLNVAL));
}

bool VirtioUser::send(uint16_t qp, const uint8_t* frame, uint32_t len) {
  Impl& m = *impl_;
  if (m.traffic.joinable() || qp >= m.opt.queue_pairs || len > m.tx_max_frame) return false;
  Impl::Vring& v = m.vrings[2 * qp + 1];
  if (m.tx_reclaim(v) == 0) {
    add(m.stats.tx_ring_full, 1);
    return false;
  }
  m.write_guest(m.tx_slot(v, v.free_ids.back()) + kNetHdrSize, frame, len);
  m.tx_post(v, len);
  m.publish(v);
  add(m.stats.tx_packets, 1);
  add(m.stats.tx_bytes, len);
  return true;
}

std::vector<std::vector<uint8_t>> VirtioUser::receive(uint16_t qp, size_t max) {
  Impl& m = *impl_;
  std::vector<std::vector<uint8_t>> out;
  if (m.traffic.joinable() || qp >= m.opt.queue_pairs) return out;
  Impl::Vring& v = m.vrings[2 * qp];
  uint64_t bytes = 0;
  m.rx_reap(v, max, [&](const uint16_t* ids, const uint32_t* lens, uint32_t n) {
    std::vector<uint8_t> f(Impl::frame_bytes(lens, n));
    uint64_t at = 0;
    for (uint32_t k = 0; k < n; k++) {
      const uint32_t skip = k == 0 ? std::min(lens[0], kNetHdrSize) : 0;
      m.read_guest(v.slot_gpa + uint64_t(ids[k]) * v.stride + skip, f.data() + at, lens[k] - skip);
      at += lens[k] - skip;
    }
    bytes += f.size();
    out.push_back(std::move(f));
  });
  add(m.stats.rx_packets, out.size());
  add(m.stats.rx_bytes, bytes);
  return out;
}

bool VirtioUser::start_traffic(const TrafficOptions& t, std::string* err) {
  Impl& m = *impl_;
  if (m.traffic.joinable()) return fail(err, "traffic is already running");
  if (t.tx_size && (t.tx_size < kMinUdpFrame || t.tx_size > m.tx_max_frame))
    return fail(err, "tx_size must be " + std::to_string(kMinUdpFrame) + " to " + std::to_string(m.tx_max_frame));
  if (!(t.tx_rate >= 0) || std::isinf(t.tx_rate)) return fail(err, "tx_rate must be a finite number >= 0");
  if (t.tx_size) {
    // Every slot gets the frame once, so transmitting only hands out descriptors.
    std::vector<uint8_t> f = udp_frame(t.tx_size);
    for (uint16_t q = 0; q < m.opt.queue_pairs; q++) {
      const Impl::Vring& v = m.vrings[2 * q + 1];
      for (uint32_t s = 0; s < v.num; s++) m.write_guest(m.tx_slot(v, uint16_t(s)) + kNetHdrSize, f.data(), f.size());
    }
  }
  m.traffic_stop.store(false, std::memory_order_relaxed);
  m.traffic = std::thread(&Impl::traffic_loop, &m, t);
  pthread_setname_np(m.traffic.native_handle(), "vw-frontend");
  return true;
}

void VirtioUser::stop_traffic() { impl_->stop_traffic(); }

VirtioUserStats VirtioUser::stats() const {
  const Stats& s = impl_->stats;
  constexpr auto r = std::memory_order_relaxed;
  VirtioUserStats o;
  o.tx_packets = s.tx_packets.load(r);
  o.tx_bytes = s.tx_bytes.load(r);
  o.tx_ring_full = s.tx_ring_full.load(r);
  o.rx_packets = s.rx_packets.load(r);
  o.rx_bytes = s.rx_bytes.load(r);
  o.kicks = s.kicks.load(r);
  o.calls = s.calls.load(r);
  return o;
}

uint64_t VirtioUser::alloc(uint64_t len) {
  Impl& m = *impl_;
  const uint64_t at = round_up(m.scratch_next, kSlotAlign);
  if (len == 0 || at > m.scratch_end || len > m.scratch_end - at) return 0;
  m.scratch_next = at + len;
  return at;
}

bool VirtioUser::mem_write(uint64_t gpa, const uint8_t* p, uint64_t len) {
  return impl_->write_guest(gpa, p, len);
}

bool VirtioUser::mem_read(uint64_t gpa, uint8_t* p, uint64_t len) const { return impl_->read_guest(gpa, p, len); }

uint64_t VirtioUser::mem_size() const { return impl_->guest_end() - kGuestBase; }

void VirtioUser::raw_desc(uint16_t vring, uint16_t idx, const RawDesc& d) {
  Impl& m = *impl_;
  if (vring >= m.nvrings || idx >= m.vrings[vring].num) return;
  m.vrings[vring].desc[idx] = {d.addr, d.len, d.flags, d.next};
}

void VirtioUser::raw_avail_push(uint16_t vring, uint16_t head) {
  Impl& m = *impl_;
  if (vring >= m.nvrings) return;
  Impl::Vring& v = m.vrings[vring];
  v.avail->ring[v.avail_idx++ & v.mask] = head;
  store_release(&v.avail->idx, v.avail_idx);
}

void VirtioUser::raw_set_avail_idx(uint16_t vring, uint16_t idx) {
  Impl& m = *impl_;
  if (vring >= m.nvrings) return;
  m.vrings[vring].avail_idx = idx;
  store_release(&m.vrings[vring].avail->idx, idx);
}

uint16_t VirtioUser::raw_used_idx(uint16_t vring) const {
  const Impl& m = *impl_;
  return vring < m.nvrings ? load_acquire(&m.vrings[vring].used->idx) : 0;
}

void VirtioUser::raw_used_elem(uint16_t vring, uint16_t pos, uint32_t* id, uint32_t* len) const {
  const Impl& m = *impl_;
  if (vring >= m.nvrings) {
    *id = *len = 0;
    return;
  }
  const Impl::Vring& v = m.vrings[vring];
  const vring_used_elem& e = v.used->ring[pos & v.mask];
  *id = e.id;
  *len = e.len;
}

void VirtioUser::kick(uint16_t vring) {
  if (vring < impl_->nvrings) impl_->do_kick(impl_->vrings[vring]);
}

bool VirtioUser::wait_call(uint16_t vring, int timeout_ms) {
  Impl& m = *impl_;
  if (vring >= m.nvrings) return false;
  pollfd p = {m.vrings[vring].call_fd, POLLIN, 0};
  int r;
  do {
    r = poll(&p, 1, timeout_ms);
  } while (r < 0 && errno == EINTR);
  uint64_t calls = 0;
  if (r <= 0 || read(p.fd, &calls, sizeof(calls)) != sizeof(calls)) return false;
  add(m.stats.calls, calls);
  return true;
}

bool VirtioUser::raw_message(uint32_t request, uint32_t flags, const uint8_t* payload, uint32_t len,
                             const int* fds, size_t nfds, bool want_reply, std::vector<uint8_t>* reply,
                             std::string* err) {
  Impl& m = *impl_;
  if (len > kVhostUserMaxPayload)
    return fail(err, "payload of " + std::to_string(len) + " bytes exceeds " + std::to_string(kVhostUserMaxPayload));
  if (nfds > kVhostUserMaxFds) return fail(err, "at most " + std::to_string(kVhostUserMaxFds) + " fds");
  if (!m.send_msg(request, flags, payload, len, fds, nfds, err)) return false;
  if (!want_reply) return true;
  VhostUserMsg msg;
  if (!m.recv_msg(request, &msg, err)) return false;
  if (reply) reply->assign(reinterpret_cast<const uint8_t*>(&msg.payload),
                           reinterpret_cast<const uint8_t*>(&msg.payload) + msg.hdr.size);
  return true;
}

bool VirtioUser::add_region(uint64_t len, std::string* err) {
  Impl& m = *impl_;
  if (!(m.protocol_features & bit(VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS)))
    return fail(err, "ADD_MEM_REG needs CONFIGURE_MEM_SLOTS, which was not negotiated");
  if (len == 0) return fail(err, "a region must not be empty");
  len = round_up(len, m.page);
  const uint64_t offset = m.memfd_size;
  if (ftruncate(m.memfd, off_t(offset + len)) < 0) return fail(err, sys_error("growing guest memory"));
  // The file keeps its new size whatever happens next: unused file space costs nothing, and a region
  // is never given an offset twice.
  m.memfd_size = offset + len;
  if (!m.map_region(m.guest_end(), len, offset, err)) return false;
  VhostUserMemRegMsg msg = {};
  msg.region = m.describe(m.regions.back());
  if (m.request(VHOST_USER_ADD_MEM_REG, &msg, sizeof(msg), &m.memfd, 1, err)) return true;
  // Refused (or lost): the region is not guest memory, so our table must not claim it either.
  munmap(m.regions.back().host, len);
  m.regions.pop_back();
  return false;
}

std::vector<RegionInfo> VirtioUser::regions() const {
  std::vector<RegionInfo> out;
  for (const Impl::Region& r : impl_->regions)
    out.push_back({r.gpa, r.size, uint64_t(reinterpret_cast<uintptr_t>(r.host)), r.offset, r.removed});
  return out;
}

int VirtioUser::mem_fd() const { return impl_->memfd; }

bool VirtioUser::ring_addrs(uint16_t vring, RingAddrs* out) const {
  const Impl& m = *impl_;
  if (vring >= m.nvrings) return false;
  const Impl::Vring& v = m.vrings[vring];
  *out = {m.gpa_of(v.desc), m.gpa_of(v.avail), m.gpa_of(v.used)};
  return true;
}

bool VirtioUser::vring_fds(uint16_t vring, int* kick, int* call, int* err) const {
  const Impl& m = *impl_;
  if (vring >= m.nvrings) return false;
  *kick = m.vrings[vring].kick_fd;
  *call = m.vrings[vring].call_fd;
  *err = m.vrings[vring].err_fd;
  return true;
}

bool VirtioUser::set_vring_err(uint16_t vring, std::string* err) {
  Impl& m = *impl_;
  if (vring >= m.nvrings) return fail(err, "no vring " + std::to_string(vring));
  int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) return fail(err, sys_error("eventfd"));
  uint64_t idx = vring;
  if (!m.request(VHOST_USER_SET_VRING_ERR, &idx, sizeof(idx), &fd, 1, err)) {
    close(fd);
    return false;
  }
  Impl::Vring& v = m.vrings[vring];
  if (v.err_fd >= 0) close(v.err_fd);
  v.err_fd = fd;
  return true;
}

int64_t VirtioUser::read_err(uint16_t vring) {
  Impl& m = *impl_;
  if (vring >= m.nvrings || m.vrings[vring].err_fd < 0) return -1;
  uint64_t n = 0;
  if (read(m.vrings[vring].err_fd, &n, sizeof(n)) != sizeof(n)) return 0;  // EAGAIN: not signalled
  return int64_t(n);
}

bool VirtioUser::restart_vring(uint16_t vring, uint16_t* base, std::string* err) {
  Impl& m = *impl_;
  if (vring >= m.nvrings) return fail(err, "no vring " + std::to_string(vring));
  if (m.racer.joinable()) return fail(err, "not while the racer runs");
  return m.restart_vring(vring, base, err);
}

bool VirtioUser::raw_bytes(const uint8_t* p, size_t len, const int* fds, size_t nfds, std::string* err) {
  Impl& m = *impl_;
  constexpr size_t kMaxScmFds = 253;  // SCM_MAX_FD
  if (nfds > kMaxScmFds) return fail(err, "at most 253 fds");
  if (len == 0) return fail(err, "nothing to send");
  // cmsghdr-aligned room for up to SCM_MAX_FD fds.
  std::vector<cmsghdr> control(CMSG_SPACE(sizeof(int) * (nfds ? nfds : 1)) / sizeof(cmsghdr) + 1);
  iovec iov = {const_cast<uint8_t*>(p), len};
  msghdr mh = {};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  if (nfds) attach_fds(&mh, control.data(), fds, nfds);
  ssize_t r;
  do {
    r = sendmsg(m.sock, &mh, MSG_NOSIGNAL);
  } while (r < 0 && errno == EINTR);
  if (r < 0) {
    if (errno == EPIPE || errno == ECONNRESET) m.hung_up = true;
    return fail(err, sys_error("sending raw bytes"));
  }
  for (size_t done = size_t(r); done < len;) {
    ssize_t w = ::send(m.sock, p + done, len - done, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return fail(err, sys_error("sending raw bytes"));
    done += size_t(w);
  }
  return true;
}

int VirtioUser::make_fd(const std::string& kind, uint64_t size, std::string* err) {
  if (kind == "eventfd") {
    int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd < 0) fail(err, sys_error("eventfd"));
    return fd;
  }
  if (kind == "blocking-eventfd") {
    // Blocking, and its counter already at the maximum: the next write of 1 blocks until someone reads.
    int fd = eventfd(0, EFD_CLOEXEC);
    const uint64_t max = 0xfffffffffffffffeull;
    if (fd < 0 || write(fd, &max, sizeof(max)) != sizeof(max)) {
      fail(err, sys_error("eventfd"));
      if (fd >= 0) close(fd);
      return -1;
    }
    return fd;
  }
  if (kind == "memfd") {
    int fd = memfd_create("vhostwire-survival", MFD_CLOEXEC);
    if (fd < 0) {
      fail(err, sys_error("memfd_create"));
      return -1;
    }
    if (ftruncate(fd, off_t(size)) < 0) {
      fail(err, sys_error("sizing a memfd"));
      close(fd);
      return -1;
    }
    return fd;
  }
  fail(err, "kind must be \"memfd\", \"eventfd\" or \"blocking-eventfd\"");
  return -1;
}

bool VirtioUser::start_racer(const RacerOptions& o, std::string* err) {
  Impl& m = *impl_;
  if (m.racer.joinable()) return fail(err, "the racer is already running");
  if (m.traffic.joinable()) return fail(err, "not while traffic runs");
  if (o.vring >= m.nvrings) return fail(err, "no vring " + std::to_string(o.vring));
  for (uint16_t h : o.heads)
    if (h >= m.vrings[o.vring].num) return fail(err, "head " + std::to_string(h) + " is beyond the queue");
  std::vector<Impl::RaceTarget> targets;
  for (const RacerTarget& t : o.targets) {
    if (t.values.empty()) return fail(err, "a racer target needs at least one value");
    const size_t len = t.values[0].size();
    for (const auto& v : t.values)
      if (v.size() != len || len == 0 || len > 64) return fail(err, "racer values must be 1..64 bytes, all of one length");
    uint8_t* host = m.host(t.gpa, len);
    if (!host) return fail(err, "racer target at guest address " + std::to_string(t.gpa) + " is not inside one region");
    targets.push_back({host, t.values});
  }
  if (o.restart && m.vrings[o.vring].err_fd < 0) return fail(err, "restarting needs an err fd (set_vring_err)");
  m.racer_stop.store(false, std::memory_order_relaxed);
  for (auto* c : {&m.racer_rounds, &m.racer_posted, &m.racer_restarts, &m.racer_failed_restarts})
    c->store(0, std::memory_order_relaxed);
  m.racer = std::thread(&Impl::racer_loop, &m, o.vring, o.heads, std::move(targets), o.restart);
  pthread_setname_np(m.racer.native_handle(), "vw-racer");
  return true;
}

RacerStats VirtioUser::stop_racer() {
  Impl& m = *impl_;
  m.stop_racer();
  RacerStats s;
  s.rounds = m.racer_rounds.load(std::memory_order_relaxed);
  s.posted = m.racer_posted.load(std::memory_order_relaxed);
  s.restarts = m.racer_restarts.load(std::memory_order_relaxed);
  s.failed_restarts = m.racer_failed_restarts.load(std::memory_order_relaxed);
  return s;
}

bool VirtioUser::remove_region(uint32_t i, std::string* err) {
  Impl& m = *impl_;
  if (!(m.protocol_features & bit(VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS)))
    return fail(err, "REM_MEM_REG needs CONFIGURE_MEM_SLOTS, which was not negotiated");
  if (i >= m.regions.size() || m.regions[i].removed) return fail(err, "no region " + std::to_string(i));
  VhostUserMemRegMsg msg = {};
  msg.region = m.describe(m.regions[i]);
  if (!m.request(VHOST_USER_REM_MEM_REG, &msg, sizeof(msg), nullptr, 0, err)) return false;
  m.regions[i].removed = true;
  return true;
}

}  // namespace vw
