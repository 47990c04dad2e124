#include "frontend/virtio_user.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>

#include "core/udp_frame.h"
#include "frontend/driver_ring.h"
#include "frontend/errors.h"
#include "frontend/guest_ram.h"
#include "frontend/vhost_user_client.h"
#include "ports/vhost_user/vhost_user_wire.h"
#include "virtio/virtio_spec.h"

namespace vw {

namespace {

constexpr uint64_t kSlotAlign = 64;  // a multiple of 64 never straddles a (page-aligned) region boundary
constexpr uint32_t kMaxQueuePairs = (VHOST_USER_VRING_IDX_MASK + 1) / 2;
constexpr uint32_t kMaxStdFrame = 1518;  // Ethernet with one VLAN tag, without FCS
constexpr uint32_t kVlanEthHdr = 18;
constexpr uint32_t kMinUdpFrame = 14 + 20 + 8;

constexpr uint64_t bit(unsigned b) { return 1ull << b; }

}  // namespace

struct VirtioUser::Impl {
  VirtioUserOptions opt;
  GuestRam ram;
  VhostUserClient client;
  uint64_t features = 0, protocol_features = 0;
  uint16_t nvrings = 0;
  std::unique_ptr<DriverRing[]> vrings;  // queue pair q: receive ring 2q, transmit ring 2q + 1
  uint32_t tx_max_frame = 0;
  uint64_t scratch_next = 0, scratch_end = 0;  // guest addresses
  DriverStats stats;
  // Last, so that both threads are joined before anything they use goes away.
  Traffic traffic;
  Racer racer;

  bool negotiate(std::string* err) {
    if (!client.request(VHOST_USER_SET_OWNER, nullptr, 0, nullptr, 0, err)) return false;
    uint64_t offered = 0;
    if (!client.get_u64(VHOST_USER_GET_FEATURES, &offered, err)) return false;

    if (offered & bit(VHOST_USER_F_PROTOCOL_FEATURES)) {
      uint64_t pf = 0;
      if (!client.get_u64(VHOST_USER_GET_PROTOCOL_FEATURES, &pf, err)) return false;
      protocol_features = pf & (bit(VHOST_USER_PROTOCOL_F_MQ) | bit(VHOST_USER_PROTOCOL_F_REPLY_ACK) |
                                bit(VHOST_USER_PROTOCOL_F_MTU) | bit(VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS));
      // Not acknowledged: whether the backend acks depends on the very feature this message sets.
      if (!client.send(VHOST_USER_SET_PROTOCOL_FEATURES, VHOST_USER_VERSION, &protocol_features,
                       sizeof(protocol_features), nullptr, 0, err))
        return false;
      client.set_reply_ack(protocol_features & bit(VHOST_USER_PROTOCOL_F_REPLY_ACK));
    }

    if (opt.queue_pairs > 1) {
      if (!(protocol_features & bit(VHOST_USER_PROTOCOL_F_MQ)) || !(offered & bit(VIRTIO_NET_F_MQ)))
        return fail(err,
                    std::to_string(opt.queue_pairs) + " queue pairs need multiqueue, which the backend does not offer");
      uint64_t n = 0;
      if (!client.get_u64(VHOST_USER_GET_QUEUE_NUM, &n, err)) return false;
      if (n < opt.queue_pairs)
        return fail(err, "backend supports " + std::to_string(n) + " queue pairs, " + std::to_string(opt.queue_pairs) +
                             " asked for");
    }

    if (!(offered & bit(VIRTIO_F_VERSION_1))) return fail(err, "backend does not offer VIRTIO_F_VERSION_1");
    uint64_t want = bit(VIRTIO_F_VERSION_1) | bit(VHOST_USER_F_PROTOCOL_FEATURES);
    if (opt.mrg_rxbuf) want |= bit(VIRTIO_NET_F_MRG_RXBUF);
    if (opt.indirect) want |= bit(VIRTIO_RING_F_INDIRECT_DESC);
    if (opt.event_idx) want |= bit(VIRTIO_RING_F_EVENT_IDX);
    if (opt.queue_pairs > 1) want |= bit(VIRTIO_NET_F_MQ);
    if (opt.mtu) want |= bit(VIRTIO_NET_F_MTU);
    if (opt.offloads)
      want |= bit(VIRTIO_NET_F_CSUM) | bit(VIRTIO_NET_F_GUEST_CSUM) | bit(VIRTIO_NET_F_HOST_TSO4) |
              bit(VIRTIO_NET_F_HOST_TSO6) | bit(VIRTIO_NET_F_HOST_ECN) | bit(VIRTIO_NET_F_GUEST_TSO4) |
              bit(VIRTIO_NET_F_GUEST_TSO6) | bit(VIRTIO_NET_F_GUEST_ECN);
    features = want & offered;
    if (opt.tx_indirect && !(features & bit(VIRTIO_RING_F_INDIRECT_DESC)))
      return fail(err, "tx_indirect needs VIRTIO_RING_F_INDIRECT_DESC, which the backend does not offer");
    if (!client.request_u64(VHOST_USER_SET_FEATURES, features, err)) return false;
    const bool mrg_rxbuf = features & bit(VIRTIO_NET_F_MRG_RXBUF);
    const bool event_idx = features & bit(VIRTIO_RING_F_EVENT_IDX);
    for (uint16_t i = 0; i < nvrings; i++) {
      vrings[i].mrg_rxbuf = mrg_rxbuf;
      vrings[i].event_idx = event_idx;
      vrings[i].want_calls = opt.interrupts && event_idx;
    }

    if (opt.mtu && (protocol_features & bit(VHOST_USER_PROTOCOL_F_MTU)) && (features & bit(VIRTIO_NET_F_MTU)))
      return client.request_u64(VHOST_USER_NET_SET_MTU, opt.mtu, err);
    return true;
  }

  // Region 0 starts with the rings, then come the receive and transmit buffers (which may run on into
  // later regions) and the scratch area for alloc().
  bool layout(std::string* err) {
    const uint32_t n = opt.queue_size;
    const uint64_t end = ram.end();
    uint64_t gpa = GuestRam::kGuestBase;
    uint64_t ring_gpa[kMaxQueuePairs * 2][3];
    for (uint16_t i = 0; i < nvrings; i++) {
      uint64_t* r = ring_gpa[i];
      r[0] = gpa;
      r[1] = r[0] + vring_desc_size(n);
      r[2] = round_up(r[1] + vring_avail_size(n), kSlotAlign);
      gpa = round_up(r[2] + vring_used_size(n), ram.page());
    }
    const uint64_t region0 = ram.regions()[0].size;
    if (gpa - GuestRam::kGuestBase > region0)
      return fail(err, "region 0 (" + std::to_string(region0) + " bytes) cannot hold the rings (" +
                           std::to_string(gpa - GuestRam::kGuestBase) + " bytes); raise mem_size or lower mem_regions");
    const uint32_t rx_stride = uint32_t(round_up(opt.rx_buf_size, kSlotAlign));
    const uint32_t tx_stride = uint32_t(round_up(kNetHdrSize + uint64_t(tx_max_frame), kSlotAlign));
    for (uint16_t i = 0; i < nvrings; i++) {
      DriverRing& v = vrings[i];
      v.rx = i % 2 == 0;
      v.indirect = !v.rx && opt.tx_indirect;
      v.buf_size = opt.rx_buf_size;
      v.stats = &stats;
      v.slot_gpa = gpa;
      v.stride = v.rx ? rx_stride : tx_stride;
      gpa += uint64_t(n) * v.stride;
      if (v.indirect) {
        v.indirect_gpa = gpa;
        gpa += uint64_t(n) * kIndirectTable;
      }
    }
    if (gpa > end)
      return fail(err, "mem_size " + std::to_string(end - GuestRam::kGuestBase) +
                           " is too small: rings and buffers need " + std::to_string(gpa - GuestRam::kGuestBase) +
                           " bytes");
    scratch_next = gpa;
    scratch_end = end;
    for (uint16_t i = 0; i < nvrings; i++)
      vrings[i].set_up(ram, uint16_t(n), ring_gpa[i][0], ring_gpa[i][1], ring_gpa[i][2]);
    return true;
  }

  bool set_mem_table(std::string* err) {
    VhostUserMemory mem = {};
    mem.nregions = opt.mem_regions;
    int fds[kVhostUserMaxFds];
    for (uint32_t i = 0; i < opt.mem_regions; i++) {
      mem.regions[i] = ram.describe(i);
      fds[i] = ram.fd();
    }
    const uint32_t len = uint32_t(offsetof(VhostUserMemory, regions) + opt.mem_regions * sizeof(VhostUserMemRegion));
    return client.request(VHOST_USER_SET_MEM_TABLE, &mem, len, fds, opt.mem_regions, err);
  }

  bool setup_vrings(std::string* err) {
    for (uint16_t i = 0; i < nvrings; i++) {
      DriverRing& v = vrings[i];
      // Without interrupts the backend need not call us; with EVENT_IDX, used_event stays 0 so that a
      // call is due only when the used index passes 0 again.
      if (!opt.interrupts && !v.event_idx) store_relaxed(&v.avail->flags, VRING_AVAIL_F_NO_INTERRUPT);
      v.kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
      v.call_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
      if (v.kick_fd < 0 || v.call_fd < 0) return fail(err, sys_error("eventfd"));
      if (!client.request_state(VHOST_USER_SET_VRING_NUM, i, v.num, err)) return false;
      VhostUserVringAddr a = {};
      a.index = i;
      a.desc_user_addr = uint64_t(reinterpret_cast<uintptr_t>(v.desc));
      a.used_user_addr = uint64_t(reinterpret_cast<uintptr_t>(v.used));
      a.avail_user_addr = uint64_t(reinterpret_cast<uintptr_t>(v.avail));
      if (!client.request(VHOST_USER_SET_VRING_ADDR, &a, sizeof(a), nullptr, 0, err)) return false;
      if (!client.request_state(VHOST_USER_SET_VRING_BASE, i, 0, err)) return false;
      uint64_t idx = i;
      if (!client.request(VHOST_USER_SET_VRING_CALL, &idx, sizeof(idx), &v.call_fd, 1, err)) return false;
      if (!client.request(VHOST_USER_SET_VRING_KICK, &idx, sizeof(idx), &v.kick_fd, 1, err)) return false;
      if ((features & bit(VHOST_USER_F_PROTOCOL_FEATURES)) &&
          !client.request_state(VHOST_USER_SET_VRING_ENABLE, i, 1, err))
        return false;
    }
    // The receive rings were filled before the backend knew them; tell it, as a guest driver does.
    for (uint16_t i = 0; i < nvrings; i += 2) vrings[i].notify();
    return true;
  }

  // GET_VRING_BASE, then SET_VRING_BASE at what it returned, SET_VRING_KICK and SET_VRING_ENABLE.
  bool restart_vring(uint16_t vring, uint16_t* base, std::string* err) {
    DriverRing& v = vrings[vring];
    VhostUserVringState s = {vring, 0};
    if (!client.send(VHOST_USER_GET_VRING_BASE, VHOST_USER_VERSION, &s, sizeof(s), nullptr, 0, err)) return false;
    VhostUserMsg reply;
    if (!client.receive_reply(VHOST_USER_GET_VRING_BASE, &reply, err)) return false;
    if (reply.hdr.size != sizeof(VhostUserVringState))
      return fail(err, "backend refused GET_VRING_BASE for vring " + std::to_string(vring));
    const uint16_t b = uint16_t(reply.payload.state.num);
    if (base) *base = b;
    if (!client.request_state(VHOST_USER_SET_VRING_BASE, vring, b, err)) return false;
    uint64_t idx = vring;
    if (!client.request(VHOST_USER_SET_VRING_KICK, &idx, sizeof(idx), &v.kick_fd, 1, err)) return false;
    if ((features & bit(VHOST_USER_F_PROTOCOL_FEATURES)) &&
        !client.request_state(VHOST_USER_SET_VRING_ENABLE, vring, 1, err))
      return false;
    v.kick();
    return true;
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
    return refuse("queue_size must be a power of two up to " + std::to_string(kMaxQueueSize));
  if (o.mem_regions < 1 || o.mem_regions > kVhostUserMaxFds)
    return refuse("mem_regions must be 1 to " + std::to_string(kVhostUserMaxFds));
  if (o.rx_buf_size <= kNetHdrSize || o.rx_buf_size > 65536)
    return refuse("rx_buf_size must be more than the 12-byte header and at most 65536");
  if (o.mem_size == 0) return refuse("mem_size must not be 0");
  if (o.tx_indirect && !o.indirect) return refuse("tx_indirect needs indirect");

  auto impl = std::make_unique<Impl>();
  Impl& m = *impl;
  m.opt = o;
  m.nvrings = uint16_t(2 * o.queue_pairs);
  m.vrings.reset(new DriverRing[m.nvrings]);
  m.tx_max_frame = std::max({kMaxStdFrame, o.rx_buf_size - kNetHdrSize, o.mtu ? o.mtu + kVlanEthHdr : 0});

  if (!m.ram.create(o.mem_size, o.mem_regions, err)) return nullptr;
  if (!m.layout(err)) return nullptr;
  if (!m.client.connect(sa, o.path, o.server, o.timeout_ms, err)) return nullptr;
  if (!m.negotiate(err)) return nullptr;
  if (!m.set_mem_table(err)) return nullptr;
  if (!m.setup_vrings(err)) return nullptr;
  return std::unique_ptr<VirtioUser>(new VirtioUser(std::move(impl)));
}

uint64_t VirtioUser::features() const { return impl_->features; }
uint64_t VirtioUser::protocol_features() const { return impl_->protocol_features; }

bool VirtioUser::connected() const { return impl_->client.connected(); }

bool VirtioUser::send(uint16_t qp, const uint8_t* frame, uint32_t len, const uint8_t* hdr) {
  Impl& m = *impl_;
  if (m.traffic.running() || qp >= m.opt.queue_pairs || len > m.tx_max_frame) return false;
  DriverRing& v = m.vrings[2 * qp + 1];
  if (v.tx_reclaim() == 0) {
    add(m.stats.tx_ring_full, 1);
    return false;
  }
  const uint16_t id = v.free_ids.back();
  // num_buffers stays 0: it means nothing on transmit.
  uint8_t h[kNetHdrSize] = {};
  if (hdr) memcpy(h, hdr, 10);
  m.ram.write(v.slot(id), h, kNetHdrSize);
  m.ram.write(v.slot(id) + kNetHdrSize, frame, len);
  v.tx_post(len);
  v.publish();
  add(m.stats.tx_packets, 1);
  add(m.stats.tx_bytes, len);
  return true;
}

std::vector<std::vector<uint8_t>> VirtioUser::receive(uint16_t qp, size_t max, bool with_header) {
  Impl& m = *impl_;
  std::vector<std::vector<uint8_t>> out;
  if (m.traffic.running() || qp >= m.opt.queue_pairs) return out;
  DriverRing& v = m.vrings[2 * qp];
  uint64_t bytes = 0;
  v.rx_reap(max, [&](const uint16_t* ids, const uint32_t* lens, uint32_t n) {
    const uint32_t keep = with_header ? std::min(lens[0], kNetHdrSize) : 0;
    std::vector<uint8_t> f(DriverRing::frame_bytes(lens, n) + keep);
    uint64_t at = 0;
    for (uint32_t k = 0; k < n; k++) {
      const uint32_t skip = k == 0 ? std::min(lens[0], kNetHdrSize) - keep : 0;
      m.ram.read(v.slot(ids[k]) + skip, f.data() + at, lens[k] - skip);
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
  if (m.traffic.running()) return fail(err, "traffic is already running");
  if (t.tx_size && (t.tx_size < kMinUdpFrame || t.tx_size > m.tx_max_frame))
    return fail(err, "tx_size must be " + std::to_string(kMinUdpFrame) + " to " + std::to_string(m.tx_max_frame));
  if (!(t.tx_rate >= 0) || std::isinf(t.tx_rate)) return fail(err, "tx_rate must be a finite number >= 0");
  if (t.tx_size) {
    // Every slot gets the frame once, so transmitting only hands out descriptors.
    std::vector<uint8_t> f(t.tx_size);
    build_udp_frame(f.data(), t.tx_size);
    for (uint16_t q = 0; q < m.opt.queue_pairs; q++) {
      const DriverRing& v = m.vrings[2 * q + 1];
      for (uint32_t s = 0; s < v.num; s++) m.ram.write(v.slot(uint16_t(s)) + kNetHdrSize, f.data(), f.size());
    }
  }
  m.traffic.start(t, m.vrings.get(), m.opt.queue_pairs, m.opt.interrupts, &m.stats);
  return true;
}

void VirtioUser::stop_traffic() { impl_->traffic.stop(); }

VirtioUserStats VirtioUser::stats() const {
  const DriverStats& s = impl_->stats;
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

bool VirtioUser::mem_write(uint64_t gpa, const uint8_t* p, uint64_t len) { return impl_->ram.write(gpa, p, len); }

bool VirtioUser::mem_read(uint64_t gpa, uint8_t* p, uint64_t len) const { return impl_->ram.read(gpa, p, len); }

uint64_t VirtioUser::mem_size() const { return impl_->ram.end() - GuestRam::kGuestBase; }

void VirtioUser::raw_desc(uint16_t vring, uint16_t idx, const RawDesc& d) {
  Impl& m = *impl_;
  if (vring >= m.nvrings || idx >= m.vrings[vring].num) return;
  m.vrings[vring].desc[idx] = {d.addr, d.len, d.flags, d.next};
}

void VirtioUser::raw_avail_push(uint16_t vring, uint16_t head) {
  Impl& m = *impl_;
  if (vring >= m.nvrings) return;
  DriverRing& v = m.vrings[vring];
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
  const DriverRing& v = m.vrings[vring];
  const vring_used_elem& e = v.used->ring[pos & v.mask];
  *id = e.id;
  *len = e.len;
}

void VirtioUser::kick(uint16_t vring) {
  if (vring < impl_->nvrings) impl_->vrings[vring].kick();
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

bool VirtioUser::raw_message(uint32_t request, uint32_t flags, const uint8_t* payload, uint32_t len, const int* fds,
                             size_t nfds, bool want_reply, std::vector<uint8_t>* reply, std::string* err) {
  Impl& m = *impl_;
  if (len > kVhostUserMaxPayload)
    return fail(err, "payload of " + std::to_string(len) + " bytes exceeds " + std::to_string(kVhostUserMaxPayload));
  if (nfds > kVhostUserMaxFds) return fail(err, "at most " + std::to_string(kVhostUserMaxFds) + " fds");
  if (!m.client.send(request, flags, payload, len, fds, nfds, err)) return false;
  if (!want_reply) return true;
  VhostUserMsg msg;
  if (!m.client.receive(request, &msg, err)) return false;
  if (reply)
    reply->assign(reinterpret_cast<const uint8_t*>(&msg.payload),
                  reinterpret_cast<const uint8_t*>(&msg.payload) + msg.hdr.size);
  return true;
}

bool VirtioUser::add_region(uint64_t len, std::string* err) {
  Impl& m = *impl_;
  if (!(m.protocol_features & bit(VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS)))
    return fail(err, "ADD_MEM_REG needs CONFIGURE_MEM_SLOTS, which was not negotiated");
  if (len == 0) return fail(err, "a region must not be empty");
  if (!m.ram.grow(len, err)) return false;
  VhostUserMemRegMsg msg = {};
  msg.region = m.ram.describe(m.ram.regions().size() - 1);
  const int fd = m.ram.fd();
  if (m.client.request(VHOST_USER_ADD_MEM_REG, &msg, sizeof(msg), &fd, 1, err)) return true;
  // Refused (or lost): the region is not guest memory, so our table must not claim it either.
  m.ram.shrink();
  return false;
}

std::vector<RegionInfo> VirtioUser::regions() const {
  std::vector<RegionInfo> out;
  for (const GuestRam::Region& r : impl_->ram.regions())
    out.push_back({r.gpa, r.size, uint64_t(reinterpret_cast<uintptr_t>(r.host)), r.offset, r.removed});
  return out;
}

int VirtioUser::mem_fd() const { return impl_->ram.fd(); }

bool VirtioUser::ring_addrs(uint16_t vring, RingAddrs* out) const {
  const Impl& m = *impl_;
  if (vring >= m.nvrings) return false;
  const DriverRing& v = m.vrings[vring];
  *out = {m.ram.gpa_of(v.desc), m.ram.gpa_of(v.avail), m.ram.gpa_of(v.used)};
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
  if (!m.client.request(VHOST_USER_SET_VRING_ERR, &idx, sizeof(idx), &fd, 1, err)) {
    close(fd);
    return false;
  }
  DriverRing& v = m.vrings[vring];
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
  if (m.racer.running()) return fail(err, "not while the racer runs");
  return m.restart_vring(vring, base, err);
}

bool VirtioUser::raw_bytes(const uint8_t* p, size_t len, const int* fds, size_t nfds, std::string* err) {
  return impl_->client.send_bytes(p, len, fds, nfds, err);
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
  if (m.racer.running()) return fail(err, "the racer is already running");
  if (m.traffic.running()) return fail(err, "not while traffic runs");
  if (o.vring >= m.nvrings) return fail(err, "no vring " + std::to_string(o.vring));
  for (uint16_t h : o.heads)
    if (h >= m.vrings[o.vring].num) return fail(err, "head " + std::to_string(h) + " is beyond the queue");
  std::vector<Racer::Target> targets;
  for (const RacerTarget& t : o.targets) {
    if (t.values.empty()) return fail(err, "a racer target needs at least one value");
    const size_t len = t.values[0].size();
    for (const auto& v : t.values)
      if (v.size() != len || len == 0 || len > 64)
        return fail(err, "racer values must be 1..64 bytes, all of one length");
    uint8_t* host = m.ram.host(t.gpa, len);
    if (!host) return fail(err, "racer target at guest address " + std::to_string(t.gpa) + " is not inside one region");
    targets.push_back({host, t.values});
  }
  if (o.restart && m.vrings[o.vring].err_fd < 0) return fail(err, "restarting needs an err fd (set_vring_err)");
  std::function<bool()> restart;
  if (o.restart) {
    const uint16_t vring = o.vring;
    restart = [&m, vring] {
      std::string e;
      return m.restart_vring(vring, nullptr, &e);
    };
  }
  m.racer.start(&m.vrings[o.vring], o.heads, std::move(targets), std::move(restart));
  return true;
}

RacerStats VirtioUser::stop_racer() { return impl_->racer.stop(); }

bool VirtioUser::remove_region(uint32_t i, std::string* err) {
  Impl& m = *impl_;
  if (!(m.protocol_features & bit(VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS)))
    return fail(err, "REM_MEM_REG needs CONFIGURE_MEM_SLOTS, which was not negotiated");
  if (i >= m.ram.regions().size() || m.ram.regions()[i].removed) return fail(err, "no region " + std::to_string(i));
  VhostUserMemRegMsg msg = {};
  msg.region = m.ram.describe(i);
  if (!m.client.request(VHOST_USER_REM_MEM_REG, &msg, sizeof(msg), nullptr, 0, err)) return false;
  m.ram.regions()[i].removed = true;
  return true;
}

}  // namespace vw
