#include "ports/uplink/af_xdp.h"

#include <linux/bpf.h>
#include <linux/if_xdp.h>
#include <net/if.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>

#include "core/clock.h"

namespace vw {

namespace {

// How long open() waits for a queue that a socket closed just before still holds (see setup()).
constexpr uint32_t kBindRetryMs = 1000;
constexpr uint32_t kBindRetryStepMs = 5;
// SO_BUSY_POLL: microseconds a sendto()/poll() on the socket may spin on the device's NAPI context.
constexpr int kBusyPollUs = 20;

uint32_t load_acquire(const uint32_t* p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
void store_release(uint32_t* p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }

long sys_bpf(int cmd, bpf_attr* attr) { return syscall(__NR_bpf, cmd, attr, sizeof(*attr)); }

}  // namespace

// ---- XskRings ------------------------------------------------------------------------------------

XskRings::XskRings(const XskGeometry& g, uint8_t* umem, const XskRing& fill, const XskRing& comp, const XskRing& rx,
                   const XskRing& tx, QueueCounters* counters)
    : g_(g),
      shift_(uint32_t(__builtin_ctz(g.frame_size))),
      umem_(umem),
      umem_len_(uint64_t(g.frame_size) * (g.rx_frames + g.tx_frames)),
      fill_(fill),
      comp_(comp),
      rx_(rx),
      tx_(tx),
      c_(counters),
      owner_(g.rx_frames + g.tx_frames, kFree) {
  // Our indices start where the rings are (0 on a new socket); from here on only our copies count.
  fill_prod_ = *fill_.producer;
  comp_cons_ = *comp_.consumer;
  rx_cons_ = *rx_.consumer;
  tx_prod_ = *tx_.producer;
  free_rx_.reserve(g.rx_frames);
  free_tx_.reserve(g.tx_frames);
  for (uint32_t f = g.rx_frames; f-- > 0;) free_rx_.push_back(f);
  for (uint32_t f = g.rx_frames + g.tx_frames; f-- > g.rx_frames;) free_tx_.push_back(f);
  refill();
}

bool XskRings::BadIndex::note(uint32_t v) {
  if (active && value == v) return false;
  active = true;
  value = v;
  return true;
}

int64_t XskRings::available(const XskRing& r, uint32_t cons, BadIndex& bad) {
  const uint32_t prod = load_acquire(r.producer);
  const uint32_t n = prod - cons;
  if (n <= r.size) {
    bad.active = false;
    return n;
  }
  if (bad.note(prod)) c_->add(INVALID_KERNEL_ENTRY);
  return -1;
}

uint32_t XskRings::room(const XskRing& r, uint32_t prod, BadIndex& bad) {
  const uint32_t cons = load_acquire(r.consumer);
  const uint32_t used = prod - cons;
  if (used <= r.size) {
    bad.active = false;
    return r.size - used;
  }
  if (bad.note(cons)) c_->add(INVALID_KERNEL_ENTRY);
  return 0;
}

bool XskRings::rx_empty() { return available(rx_, rx_cons_, bad_rx_) <= 0; }

uint16_t XskRings::rx(Burst& b) {
  b.clear();
  // Frames the fill ring had no slot for at release time (the kernel publishes received frames before
  // it frees their fill slots) go out now.
  if (!free_rx_.empty()) refill();
  const int64_t avail = available(rx_, rx_cons_, bad_rx_);
  if (avail <= 0) return 0;
  const uint32_t n = std::min<uint32_t>(uint32_t(avail), kBurst);
  const xdp_desc* ring = static_cast<const xdp_desc*>(rx_.desc);
  const uint64_t in_frame = g_.frame_size - 1;
  uint64_t bytes = 0;
  for (uint32_t i = 0; i < n; i++) {
    xdp_desc d;
    memcpy(&d, &ring[(rx_cons_ + i) & (rx_.size - 1)], sizeof d);
    // Only the copy is looked at: the compiler must not read the shared entry again.
    asm volatile("" ::: "memory");
    const uint64_t off = d.addr & in_frame;
    // Inside the UMEM, past the headroom, ending inside the same frame, and a frame the kernel holds
    // from the fill ring. We asked for no options (no XDP_USE_SG), so none may be set. A bad entry
    // proves nothing about the frame it names, which stays with the kernel.
    if (d.addr >= umem_len_ || off < kXskRxHeadroom || d.len == 0 || d.len > g_.frame_size - off || d.options != 0 ||
        owner_[d.addr >> shift_] != kFill) {
      c_->add(INVALID_KERNEL_ENTRY);
      continue;
    }
    const uint32_t f = uint32_t(d.addr >> shift_);
    owner_[f] = kLent;
    b.pkt[b.n++] = PacketView{d.len, b.nspans, 1, f};
    b.span[b.nspans++] = Span{umem_ + d.addr, d.len};
    bytes += d.len;
    c_->add(RX_SIZE_64 + size_bin(d.len));
  }
  rx_cons_ += n;
  store_release(rx_.consumer, rx_cons_);
  c_->add(RX_PACKETS, b.n);
  c_->add(RX_BYTES, bytes);
  return b.n;
}

void XskRings::release(Burst& b) {
  for (uint16_t i = 0; i < b.n; i++) {
    const uint32_t f = b.pkt[i].cookie;
    if (f < owner_.size() && owner_[f] == kLent) {
      owner_[f] = kFree;
      free_rx_.push_back(f);
    }
  }
  b.clear();
  refill();
}

void XskRings::refill() {
  if (free_rx_.empty()) return;
  const uint32_t n = std::min<uint32_t>(room(fill_, fill_prod_, bad_fill_), uint32_t(free_rx_.size()));
  if (!n) return;
  uint64_t* ring = static_cast<uint64_t*>(fill_.desc);
  for (uint32_t k = 0; k < n; k++) {
    const uint32_t f = free_rx_.back();
    free_rx_.pop_back();
    owner_[f] = kFill;
    ring[fill_prod_++ & (fill_.size - 1)] = uint64_t(f) << shift_;
  }
  store_release(fill_.producer, fill_prod_);
}

void XskRings::reap() {
  const int64_t avail = available(comp_, comp_cons_, bad_comp_);
  if (avail <= 0) return;
  const uint64_t* ring = static_cast<const uint64_t*>(comp_.desc);
  for (uint32_t i = 0; i < uint32_t(avail); i++) {
    const uint64_t a = __atomic_load_n(&ring[(comp_cons_ + i) & (comp_.size - 1)], __ATOMIC_RELAXED);
    // Exactly the address we posted (a frame's first byte) of a frame still on its way out.
    if (a >= umem_len_ || (a & (g_.frame_size - 1)) || owner_[a >> shift_] != kTx) {
      c_->add(INVALID_KERNEL_ENTRY);
      continue;
    }
    const uint32_t f = uint32_t(a >> shift_);
    owner_[f] = kFree;
    free_tx_.push_back(f);
  }
  comp_cons_ += uint32_t(avail);
  store_release(comp_.consumer, comp_cons_);
}

uint16_t XskRings::tx(const Burst& b) {
  reap();
  if (b.n == 0) return 0;
  uint32_t space = room(tx_, tx_prod_, bad_tx_);
  xdp_desc* ring = static_cast<xdp_desc*>(tx_.desc);
  uint16_t sent = 0;
  for (uint16_t i = 0; i < b.n; i++) {
    const PacketView& p = b.pkt[i];
    // The kernel takes a descriptor of 1..frame_size bytes; it skips any other without completing it,
    // which would lose the frame.
    if (p.len == 0 || p.len > g_.frame_size) {
      c_->add(DROP_TX_TOO_BIG);
      continue;
    }
    if (free_tx_.empty() || space == 0) {
      c_->add(DROP_TX_NO_BUFFER);
      continue;
    }
    const uint32_t f = free_tx_.back();
    free_tx_.pop_back();
    // From here the source's memory is read: a fault there leaves this frame to abort_tx().
    filling_ = f;
    uint8_t* dst = umem_ + (uint64_t(f) << shift_);
    uint32_t left = p.len;
    for (uint16_t k = p.first; left && k < p.first + p.nseg; k++) {
      const uint32_t l = std::min(b.span[k].len, left);
      memcpy(dst, b.span[k].p, l);
      dst += l;
      left -= l;
    }
    filling_ = -1;
    const xdp_desc d = {uint64_t(f) << shift_, p.len, 0};
    memcpy(&ring[tx_prod_ & (tx_.size - 1)], &d, sizeof d);
    owner_[f] = kTx;
    tx_prod_++;
    space--;
    sent++;
    c_->add(TX_PACKETS);
    c_->add(TX_BYTES, p.len);
    c_->add(TX_SIZE_64 + size_bin(p.len));
  }
  if (sent) store_release(tx_.producer, tx_prod_);
  return sent;
}

void XskRings::abort_tx() {
  if (filling_ >= 0) {
    free_tx_.push_back(uint32_t(filling_));
    filling_ = -1;
  }
  // The packets copied before the fault are complete: the kernel gets them.
  store_release(tx_.producer, tx_prod_);
}

// ---- AfXdpPort -----------------------------------------------------------------------------------

AfXdpPort::AfXdpPort(const std::string& name, const std::string& ifname, uint32_t queue, const XskParams& params,
                     int xsk_map, QueueCounters* counters, KernelDrops* kernel)
    : Port(name),
      ifname_(ifname),
      queue_(queue),
      params_(params),
      xsk_map_(xsk_map),
      counters_(counters),
      kernel_(kernel) {}

void AfXdpPort::read_kernel_stats(bool closing) {
  if (!kernel_ || sock_ < 0) return;
  xdp_statistics st;
  memset(&st, 0, sizeof st);
  socklen_t len = sizeof st;
  if (getsockopt(sock_, SOL_XDP, XDP_STATISTICS, &st, &len) != 0) return;
  const uint64_t now[6] = {
      st.rx_dropped,         st.rx_ring_full, st.tx_invalid_descs, st.rx_invalid_descs, st.rx_fill_ring_empty_descs,
      st.tx_ring_empty_descs};
  static const QueueCounter ids[6] = {KERNEL_DROP_XDP_RX_DROPPED,       KERNEL_DROP_XDP_RX_RING_FULL,
                                      KERNEL_DROP_XDP_TX_INVALID_DESCS, KERNEL_EVENT_XDP_RX_INVALID_DESCS,
                                      KERNEL_EVENT_XDP_FILL_RING_EMPTY, KERNEL_EVENT_XDP_TX_RING_EMPTY};
  for (int i = 0; i < 6; i++) {
    // A count never falls on one socket; should it seem to, nothing is added rather than a wrapped delta.
    const uint64_t d = now[i] > kernel_seen_[i] ? now[i] - kernel_seen_[i] : 0;
    kernel_seen_[i] = std::max(kernel_seen_[i], now[i]);
    if (closing)
      kernel_->leave(ids[i], d);
    else
      kernel_->add(ids[i], d);
  }
}

void AfXdpPort::publish_counters() {
  if (kernel_ && kernel_->due(now_ns())) read_kernel_stats(false);
}

AfXdpPort::~AfXdpPort() {
  // The uplink closed the XDP program's link first (uplink.cc): nothing more is redirected to the socket,
  // so its last counts are final.
  read_kernel_stats(true);
  // Closing the socket also takes it out of the XSKMAP.
  if (sock_ >= 0) close(sock_);
  rings_.reset();
  for (Mapping& m : maps_)
    if (m.p) munmap(m.p, m.len);
  if (umem_) munmap(umem_, umem_len_);
}

std::unique_ptr<AfXdpPort> AfXdpPort::open(const std::string& name, const std::string& ifname, uint32_t queue,
                                           const XskParams& params, int xsk_map, QueueCounters* counters,
                                           KernelDrops* kernel, std::string* err) {
  std::unique_ptr<AfXdpPort> p(new AfXdpPort(name, ifname, queue, params, xsk_map, counters, kernel));
  std::string why;
  if (!p->setup(&why)) {
    if (err) *err = "AF_XDP port " + name + " on interface " + ifname + " queue " + std::to_string(queue) + ": " + why;
    return nullptr;
  }
  return p;
}

bool AfXdpPort::setup(std::string* err) {
  auto fail = [&](const std::string& step, int e, const std::string& hint = "") {
    *err = step + ": " + strerror(e) + (hint.empty() ? "" : " (" + hint + ")");
    return false;
  };
  const std::string caps = "needs root, or CAP_NET_ADMIN, CAP_NET_RAW, CAP_BPF and CAP_IPC_LOCK";

  if (ifname_.empty() || ifname_.size() >= IFNAMSIZ) return fail("bad interface name", EINVAL);
  ifindex_ = if_nametoindex(ifname_.c_str());
  if (!ifindex_) return fail("looking up the interface", errno, "no such interface in this network namespace");

  umem_len_ = size_t(params_.frame_size) * 2 * params_.ring_size;
  void* u = mmap(nullptr, umem_len_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  if (u == MAP_FAILED) return fail("mapping " + std::to_string(umem_len_ >> 20) + " MiB of UMEM", errno);
  umem_ = static_cast<uint8_t*>(u);

  sock_ = socket(AF_XDP, SOCK_RAW | SOCK_CLOEXEC, 0);
  if (sock_ < 0) {
    const int e = errno;
    return fail("creating the AF_XDP socket", e,
                e == EAFNOSUPPORT ? "the kernel has no AF_XDP support (CONFIG_XDP_SOCKETS)"
                : e == EPERM      ? caps
                                  : "");
  }

  // The kernel reads fields newer than ours from the struct's tail padding: it must be zero.
  xdp_umem_reg reg;
  memset(&reg, 0, sizeof reg);
  reg.addr = reinterpret_cast<uint64_t>(umem_);
  reg.len = umem_len_;
  reg.chunk_size = params_.frame_size;
  if (setsockopt(sock_, SOL_XDP, XDP_UMEM_REG, &reg, sizeof reg) != 0) {
    const int e = errno;
    return fail("registering the UMEM", e,
                e == ENOMEM || e == ENOBUFS || e == EPERM
                    ? "its " + std::to_string(umem_len_ >> 20) +
                          " MiB are pinned: needs CAP_IPC_LOCK or ulimit -l of at least that"
                    : "");
  }
  const struct {
    int opt;
    const char* what;
  } sizes[] = {
      {XDP_UMEM_FILL_RING, "fill"}, {XDP_UMEM_COMPLETION_RING, "completion"}, {XDP_RX_RING, "RX"}, {XDP_TX_RING, "TX"}};
  for (const auto& s : sizes) {
    const uint32_t n = params_.ring_size;
    if (setsockopt(sock_, SOL_XDP, s.opt, &n, sizeof n) != 0)
      return fail(std::string("sizing the ") + s.what + " ring to " + std::to_string(n) + " entries", errno);
  }

  xdp_mmap_offsets off;
  socklen_t optlen = sizeof off;
  if (getsockopt(sock_, SOL_XDP, XDP_MMAP_OFFSETS, &off, &optlen) != 0) return fail("reading the ring offsets", errno);
  if (optlen != sizeof off)
    return fail("reading the ring offsets", ENOTSUP, "kernel without ring flags: needs Linux 5.9 or later");

  const struct {
    const xdp_ring_offset* o;
    uint64_t pgoff;
    size_t entry;
    const char* what;
  } rings[4] = {{&off.fr, XDP_UMEM_PGOFF_FILL_RING, sizeof(uint64_t), "fill"},
                {&off.cr, XDP_UMEM_PGOFF_COMPLETION_RING, sizeof(uint64_t), "completion"},
                {&off.rx, XDP_PGOFF_RX_RING, sizeof(xdp_desc), "RX"},
                {&off.tx, XDP_PGOFF_TX_RING, sizeof(xdp_desc), "TX"}};
  XskRing r[4];
  for (int i = 0; i < 4; i++) {
    const size_t len = rings[i].o->desc + size_t(params_.ring_size) * rings[i].entry;
    void* m = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, sock_, off_t(rings[i].pgoff));
    if (m == MAP_FAILED) return fail(std::string("mapping the ") + rings[i].what + " ring", errno);
    maps_[i] = {m, len};
    uint8_t* base = static_cast<uint8_t*>(m);
    r[i] = XskRing{reinterpret_cast<uint32_t*>(base + rings[i].o->producer),
                   reinterpret_cast<uint32_t*>(base + rings[i].o->consumer),
                   reinterpret_cast<uint32_t*>(base + rings[i].o->flags), base + rings[i].o->desc, params_.ring_size};
  }
  // The fill ring is full before the socket is bound, so the first frames already have somewhere to go.
  rings_.reset(new XskRings(XskGeometry{params_.frame_size, params_.ring_size, params_.ring_size}, umem_, r[0], r[1],
                            r[2], r[3], counters_));

  // Zero-copy first: the driver receives straight into the UMEM's frames and sends from them. A driver
  // without it (veth, any interface in generic XDP mode) refuses the bind, and copy mode, where the
  // kernel copies frames between its buffers and the UMEM, works everywhere.
  sockaddr_xdp sa;
  memset(&sa, 0, sizeof sa);
  sa.sxdp_family = AF_XDP;
  sa.sxdp_ifindex = ifindex_;
  sa.sxdp_queue_id = queue_;
  // A queue stays busy for a while after the socket that had it is closed (measured here: about 60 ms),
  // because the kernel frees the socket's buffer pool from a workqueue. Closing a port and opening one
  // on the same interface, or restarting after a crash, must not fail for that: a busy queue is retried
  // for up to kBindRetryMs before it counts as taken.
  int rc = -1, e = 0;
  for (uint32_t waited = 0;; waited += kBindRetryStepMs) {
    sa.sxdp_flags = XDP_ZEROCOPY | XDP_USE_NEED_WAKEUP;
    rc = bind(sock_, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
    e = errno;
    zero_copy_ = rc == 0;
    if (rc != 0 && e != EBUSY) {
      sa.sxdp_flags = XDP_COPY | XDP_USE_NEED_WAKEUP;
      rc = bind(sock_, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
      e = errno;
    }
    if (rc == 0 || e != EBUSY || waited >= kBindRetryMs) break;
    usleep(kBindRetryStepMs * 1000);
  }
  if (rc != 0)
    return fail("binding the socket to queue " + std::to_string(queue_), e,
                e == EBUSY
                    ? "another AF_XDP socket has held that queue for over " + std::to_string(kBindRetryMs) + " ms"
                : e == EINVAL ? "the interface has no queue " + std::to_string(queue_)
                              : "");

  // Busy polling where the kernel accepts it: sendto() and poll() on the socket then run the device's
  // receive processing in our thread instead of waiting for a softirq. Raising SO_BUSY_POLL and its
  // budget needs CAP_NET_ADMIN; without it the socket simply works without busy polling.
  const struct {
    int opt;
    int val;
  } bp[] = {{SO_PREFER_BUSY_POLL, 1}, {SO_BUSY_POLL, kBusyPollUs}, {SO_BUSY_POLL_BUDGET, kBurst}};
  for (const auto& o : bp) setsockopt(sock_, SOL_SOCKET, o.opt, &o.val, sizeof o.val);

  // Frames of our queue come to the socket from here on (frames before went to the kernel's stack).
  bpf_attr a;
  memset(&a, 0, sizeof a);
  const uint32_t key = queue_, value = uint32_t(sock_);
  a.map_fd = uint32_t(xsk_map_);
  a.key = reinterpret_cast<uint64_t>(&key);
  a.value = reinterpret_cast<uint64_t>(&value);
  a.flags = BPF_ANY;
  if (sys_bpf(BPF_MAP_UPDATE_ELEM, &a) != 0) return fail("putting the socket in the XSKMAP", errno);
  return true;
}

void AfXdpPort::kick_tx() {
  // Copy mode sends in this call, at most 32 frames per call. EAGAIN, EBUSY and ENOBUFS leave the rest
  // on the ring for the next kick; ENETDOWN and ENXIO (interface down or gone) have no remedy here.
  if (sendto(sock_, nullptr, 0, MSG_DONTWAIT, nullptr, 0) < 0) {
  }
}

uint16_t AfXdpPort::rx_burst(uint16_t, Burst& b) {
  // Frames a previous kick could not send would otherwise wait for the next tx_burst.
  if (rings_->tx_needs_wakeup() && rings_->tx_pending()) kick_tx();
  const uint16_t n = rings_->rx(b);
  if (!n && rings_->fill_needs_wakeup()) {
    if (recvfrom(sock_, nullptr, 0, MSG_DONTWAIT, nullptr, nullptr) < 0) {
      // Nothing to receive is the normal answer.
    }
  }
  return n;
}

uint16_t AfXdpPort::tx_burst(uint16_t, const Burst& b) {
  const uint16_t n = rings_->tx(b);
  if (rings_->tx_needs_wakeup() && rings_->tx_pending()) kick_tx();
  return n;
}

void AfXdpPort::release(uint16_t, Burst& b) { rings_->release(b); }

void AfXdpPort::abort_tx(uint16_t) { rings_->abort_tx(); }

bool AfXdpPort::arm_wakeup(std::vector<pollfd>& fds) {
  // The socket polls readable while its RX ring holds frames; in copy mode poll() also sends what is
  // left on the TX ring.
  fds.push_back(pollfd{sock_, POLLIN, 0});
  return rings_->rx_empty();
}

}  // namespace vw
