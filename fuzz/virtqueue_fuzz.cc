// Structure-aware fuzzer for the data path a guest controls: guest memory translation, the split
// virtqueue parser and the virtio-net device (rx_burst / tx_burst / release) over both vrings.
//
// Each input builds a guest: 1 to 3 memory regions (memfds, mapped by GuestMemory itself between
// PROT_NONE guard pages, see guarded_mmap.cc), a valid pair of rings (receive vring 0, transmit vring 1)
// filled with valid chains (split headers, indirect tables when negotiated), negotiated features taken
// from the input, then mutates descriptor, indirect-table, avail and header fields from the input and
// runs a sequence of data-path operations.
//
// Besides ASan/UBSan and the guard pages, every operation is checked against the invariants of
// docs/security.md:
//   - the device writes guest memory only inside the used rings and the device-writable buffers of the
//     receive vring (read-only buffers, descriptor tables, avail rings and free memory stay unchanged);
//   - a used index only moves forward, by at most the queue size per operation; a used length on the
//     receive vring never exceeds the writable capacity of that chain, and is 0 on the transmit vring;
//   - every packet rx_burst lends lies inside guest memory, its segments add up to its length, and it
//     is no longer than kMaxFrame; no head is lent twice in one burst (a head in flight is not taken
//     again);
//   - the offloads a lent packet carries were negotiated (CSUM, HOST_TSO4/6, HOST_ECN) and its offload
//     fields obey the header rules of core/offload.h (checksum position inside the frame, a known
//     gso_type, a non-zero gso_size making at most kMaxGsoSegments segments, hdr_len inside the frame,
//     NEEDS_CSUM with every super-frame); those the receive side does not take (GUEST_*) are completed or
//     segmented on the way back in (forward/offload_fallback.h, through Transmit, as a wire does), over
//     whatever frame bytes the guest wrote.
#include <fuzzer/FuzzedDataProvider.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "core/counters.h"
#include "core/guest_memory.h"
#include "core/offload.h"
#include "forward/forwarder.h"
#include "ports/vhost_user/virtio_net.h"
#include "virtio/virtio_spec.h"

using namespace vw;

namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kUvaDelta = 0x7f0000000000ull;  // front-end user address = gpa + this

[[noreturn]] void die(const char* what) {
  fprintf(stderr, "virtqueue_fuzz: invariant broken: %s\n", what);
  abort();
}

uint64_t bit(unsigned b) { return uint64_t(1) << b; }

struct Region {
  uint64_t gpa, size;
  uint8_t* host;
};

struct RingAddr {
  uint64_t desc, avail, used;  // guest physical addresses
};

// The harness's own view of guest memory: plain region list, independent of GuestMemory::translate.
struct Guest {
  std::vector<Region> regions;
  uint8_t* at(uint64_t gpa, uint64_t len) const {
    for (const Region& r : regions)
      if (gpa >= r.gpa && gpa - r.gpa < r.size && len <= r.size - (gpa - r.gpa)) return r.host + (gpa - r.gpa);
    return nullptr;
  }
  bool host_inside(const uint8_t* p, uint64_t len) const {
    for (const Region& r : regions)
      if (p >= r.host && p < r.host + r.size && len <= uint64_t(r.host + r.size - p)) return true;
    return false;
  }
};

// A bump allocator over guest physical memory outside the rings.
struct Pool {
  struct Range {
    uint64_t gpa, end;
  };
  std::vector<Range> free;
  uint64_t alloc(uint64_t len, uint64_t align = 1) {
    for (Range& r : free) {
      uint64_t a = (r.gpa + align - 1) / align * align;
      if (a + len <= r.end) {
        r.gpa = a + len;
        return a;
      }
    }
    return 0;
  }
};

// Process-wide state: one counter block and one eventfd each for call and err, reused by every input.
struct Globals {
  CounterBlock counters{8, 1};
  int call_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  int err_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  uint8_t frames[65536 + 64];
  Globals() {
    for (size_t i = 0; i < sizeof frames; i++) frames[i] = uint8_t(i * 7 + 3);
  }
};
Globals& g() {
  static Globals* x = new Globals;
  return *x;
}

void drain(int fd) {
  uint64_t v;
  while (read(fd, &v, sizeof v) == sizeof v) {
  }
}

uint64_t interesting_addr(FuzzedDataProvider& fdp, const Guest& guest) {
  const Region& r = guest.regions[fdp.ConsumeIntegralInRange<size_t>(0, guest.regions.size() - 1)];
  switch (fdp.ConsumeIntegralInRange<int>(0, 9)) {
    case 0: return 0;
    case 1: return ~uint64_t(0) - fdp.ConsumeIntegralInRange<uint64_t>(0, 4096);
    case 2: return r.gpa + r.size - fdp.ConsumeIntegralInRange<uint64_t>(0, 64);  // at / near the end
    case 3: return r.gpa + r.size;                                                // just past the end
    case 4: return r.gpa - fdp.ConsumeIntegralInRange<uint64_t>(1, 64);           // just before
    case 5: return r.gpa + fdp.ConsumeIntegralInRange<uint64_t>(0, r.size - 1);
    case 6: return r.gpa + kUvaDelta;  // a user address where a guest address belongs
    case 7: return uint64_t(1) << fdp.ConsumeIntegralInRange<int>(12, 63);
    default: return fdp.ConsumeIntegral<uint64_t>();
  }
}

uint32_t interesting_len(FuzzedDataProvider& fdp) {
  switch (fdp.ConsumeIntegralInRange<int>(0, 7)) {
    case 0: return 0;
    case 1: return 1;
    case 2: return 0xffffffffu - fdp.ConsumeIntegralInRange<uint32_t>(0, 16);
    case 3: return 12 - fdp.ConsumeIntegralInRange<uint32_t>(0, 3);
    case 4: return 16 * fdp.ConsumeIntegralInRange<uint32_t>(0, 300);
    default: return fdp.ConsumeIntegralInRange<uint32_t>(0, 70000);
  }
}

class Harness {
 public:
  explicit Harness(FuzzedDataProvider& fdp) : fdp_(fdp) {}
  ~Harness() {
    dev_.reset();
    mem_.reset();
  }

  void run();

 private:
  bool build_memory();
  void build_rings();
  void add_tx_chain();
  void add_rx_chain();
  uint16_t write_chain(int ring, const std::vector<vring_desc>& bufs, bool indirect);
  void publish(int ring, uint16_t head);
  void mutate();
  void op();
  void check_after(const std::vector<std::vector<uint8_t>>& snap, bool device_wrote_rx, const uint16_t used_before[2]);
  uint64_t chain_capacity(const std::vector<std::vector<uint8_t>>& snap, uint16_t head);
  const uint8_t* snap_at(const std::vector<std::vector<uint8_t>>& snap, uint64_t gpa, uint64_t len) const;
  void mark_writable(const std::vector<std::vector<uint8_t>>& snap, std::vector<std::vector<uint8_t>>& ok);
  void mark_gpa(std::vector<std::vector<uint8_t>>& ok, uint64_t gpa, uint64_t len);
  void check_burst(const Burst& b);
  vring_desc* desc(int ring, uint16_t i) {
    return reinterpret_cast<vring_desc*>(guest_.at(ring_[ring].desc, 16 * qsize_)) + i;
  }
  vring_avail* avail(int ring) { return reinterpret_cast<vring_avail*>(guest_.at(ring_[ring].avail, 6 + 2 * qsize_)); }
  vring_used* used(int ring) { return reinterpret_cast<vring_used*>(guest_.at(ring_[ring].used, 6 + 8 * qsize_)); }
  // Inside guest memory and aligned as the spec requires: exactly the rings the device must accept.
  bool ring_ok(int ring) {
    return guest_.at(ring_[ring].desc, 16 * qsize_) && guest_.at(ring_[ring].avail, 6 + 2 * qsize_) &&
           guest_.at(ring_[ring].used, 6 + 8 * qsize_) && ring_[ring].desc % 16 == 0 && ring_[ring].avail % 2 == 0 &&
           ring_[ring].used % 4 == 0;
  }
  void start(int ring, uint16_t base);

  FuzzedDataProvider& fdp_;
  Guest guest_;
  Pool pool_;
  std::shared_ptr<const GuestMemory> mem_;
  std::unique_ptr<VirtioNetDevice> dev_;
  Transmit tx_;
  uint64_t features_ = 0;
  uint32_t hdr_len_ = 12;
  uint16_t qsize_ = 0;
  RingAddr ring_[2] = {};
  uint16_t next_desc_[2] = {0, 0};  // next unused descriptor index while laying out chains
  uint16_t avail_idx_[2] = {0, 0};
  uint16_t device_used_[2] = {0, 0};  // the used index the device last published (or adopted at start)
  bool started_[2] = {false, false};
  std::vector<uint16_t> returned_[2];                           // heads the device gave back (used ring), to post again
  std::vector<std::pair<uint64_t, uint64_t>> indirect_tables_;  // found by mark_writable
  uint64_t broken_events_ = 0;                                  // ring-broken events since the last operation's check
};

bool Harness::build_memory() {
  const int nregions = fdp_.ConsumeIntegralInRange<int>(1, 3);
  // Ring area needed in region 0: 2 * (desc + avail + used), page aligned each.
  const uint64_t per_ring =
      (16ull * qsize_ + kPage - 1) / kPage * kPage + kPage + (6 + 8ull * qsize_ + kPage - 1) / kPage * kPage;
  uint64_t gpa = kPage * fdp_.ConsumeIntegralInRange<uint64_t>(0, 16);
  auto mem = std::make_shared<const GuestMemory>();
  for (int i = 0; i < nregions; i++) {
    uint64_t size = kPage * fdp_.ConsumeIntegralInRange<uint64_t>(1, 6);
    if (i == 0) size += 2 * per_ring;
    const uint64_t off = kPage * fdp_.ConsumeIntegralInRange<uint64_t>(0, 1);
    int fd = memfd_create("vw-fuzz-guest", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, off_t(off + size)) != 0) abort();
    std::string err;
    auto next = mem->with_region(fd, gpa, size, gpa + kUvaDelta, off, &err);  // takes fd
    if (!next) die(("a valid region was refused: " + err).c_str());
    mem = next;
    // Our own region list from GuestMemory's: the host address is its mapping of the region.
    uint8_t* host = mem->uva_to_host(gpa + kUvaDelta, size);
    if (!host) die("uva_to_host refused a whole region");
    guest_.regions.push_back(Region{gpa, size, host});
    // Contiguous (a buffer may span two regions) or a hole between regions.
    gpa += size + kPage * fdp_.ConsumeIntegralInRange<uint64_t>(0, 2);
  }
  mem_ = mem;
  std::sort(guest_.regions.begin(), guest_.regions.end(),
            [](const Region& a, const Region& b) { return a.gpa < b.gpa; });
  // Rings at the start of region 0 (which has room for them), buffers everywhere after.
  const Region& r0 = guest_.regions[0];
  uint64_t p = r0.gpa;
  for (int ring = 0; ring < 2; ring++) {
    ring_[ring].desc = p;
    p += (16ull * qsize_ + kPage - 1) / kPage * kPage;
    ring_[ring].avail = p;
    p += kPage;
    ring_[ring].used = p;
    p += (6 + 8ull * qsize_ + kPage - 1) / kPage * kPage;
  }
  // Occasionally push a ring part to a misaligned or out-of-memory address: start must refuse it.
  if (fdp_.ConsumeIntegralInRange<int>(0, 15) == 0) {
    int ring = fdp_.ConsumeIntegralInRange<int>(0, 1);
    uint64_t* part[3] = {&ring_[ring].desc, &ring_[ring].avail, &ring_[ring].used};
    uint64_t* which = part[fdp_.ConsumeIntegralInRange<int>(0, 2)];
    *which =
        fdp_.ConsumeBool() ? *which + fdp_.ConsumeIntegralInRange<uint64_t>(1, 15) : interesting_addr(fdp_, guest_);
  }
  if (getenv("VQ_FUZZ_DEBUG")) {
    fprintf(stderr, "qsize %u features 0x%llx\n", qsize_, (unsigned long long)features_);
    for (const Region& r : guest_.regions)
      fprintf(stderr, "region gpa 0x%llx size 0x%llx\n", (unsigned long long)r.gpa, (unsigned long long)r.size);
    for (int ring = 0; ring < 2; ring++)
      fprintf(stderr, "vring %d desc 0x%llx avail 0x%llx used 0x%llx\n", ring, (unsigned long long)ring_[ring].desc,
              (unsigned long long)ring_[ring].avail, (unsigned long long)ring_[ring].used);
  }
  pool_.free.push_back({p, r0.gpa + r0.size});
  for (size_t i = 1; i < guest_.regions.size(); i++)
    pool_.free.push_back({guest_.regions[i].gpa, guest_.regions[i].gpa + guest_.regions[i].size});
  // Make cross-region buffers possible: merge contiguous ranges.
  for (size_t i = 1; i < pool_.free.size();) {
    if (pool_.free[i - 1].end == pool_.free[i].gpa) {
      pool_.free[i - 1].end = pool_.free[i].end;
      pool_.free.erase(pool_.free.begin() + long(i));
    } else {
      i++;
    }
  }
  // Free memory is filled with a pattern so that a stray write shows.
  for (const Region& r : guest_.regions) memset(r.host, 0x5a, r.size);
  for (int ring = 0; ring < 2; ring++) {
    if (uint8_t* d = guest_.at(ring_[ring].desc, 16 * qsize_)) memset(d, 0, 16 * qsize_);
    if (uint8_t* a = guest_.at(ring_[ring].avail, 6 + 2 * qsize_)) memset(a, 0, 6 + 2 * qsize_);
    if (uint8_t* u = guest_.at(ring_[ring].used, 6 + 8 * qsize_)) memset(u, 0, 6 + 8 * qsize_);
  }
  return true;
}

// Lays out bufs as one chain of ring (directly, or through an indirect table); returns its head or
// 0xffff when out of descriptors or memory.
uint16_t Harness::write_chain(int ring, const std::vector<vring_desc>& bufs, bool indirect) {
  if (!ring_ok(ring) || bufs.empty()) return 0xffff;
  if (indirect) {
    if (next_desc_[ring] >= qsize_) return 0xffff;
    uint64_t t = pool_.alloc(16 * bufs.size(), fdp_.ConsumeBool() ? 16 : 1);
    uint8_t* th = t ? guest_.at(t, 16 * bufs.size()) : nullptr;
    if (!th) return 0xffff;
    for (size_t k = 0; k < bufs.size(); k++) {
      vring_desc d = bufs[k];
      d.flags = uint16_t(d.flags | (k + 1 < bufs.size() ? VRING_DESC_F_NEXT : 0));
      d.next = uint16_t(k + 1 < bufs.size() ? k + 1 : 0);
      memcpy(th + 16 * k, &d, 16);
    }
    const uint16_t head = next_desc_[ring]++;
    *desc(ring, head) = vring_desc{t, uint32_t(16 * bufs.size()), VRING_DESC_F_INDIRECT, 0};
    return head;
  }
  if (next_desc_[ring] + bufs.size() > qsize_) return 0xffff;
  const uint16_t head = next_desc_[ring];
  for (size_t k = 0; k < bufs.size(); k++) {
    const uint16_t i = next_desc_[ring]++;
    vring_desc d = bufs[k];
    d.flags = uint16_t(d.flags | (k + 1 < bufs.size() ? VRING_DESC_F_NEXT : 0));
    d.next = uint16_t(k + 1 < bufs.size() ? i + 1 : 0);
    *desc(ring, i) = d;
  }
  return head;
}

void Harness::publish(int ring, uint16_t head) {
  if (!ring_ok(ring)) return;
  vring_avail* a = avail(ring);
  a->ring[avail_idx_[ring] & (qsize_ - 1)] = head;
  avail_idx_[ring]++;
  __atomic_store_n(&a->idx, avail_idx_[ring], __ATOMIC_RELEASE);
}

// A packet the guest transmits: header (maybe split) and frame, over 1 to 4 descriptors.
void Harness::add_tx_chain() {
  const uint32_t frame = fdp_.ConsumeIntegralInRange<uint32_t>(0, fdp_.ConsumeBool() ? 1600 : 66000);
  const uint32_t total = hdr_len_ + frame;
  const uint64_t addr = pool_.alloc(total);
  uint8_t* h = addr ? guest_.at(addr, total) : nullptr;
  if (!h) return;
  memset(h, 0, hdr_len_);
  for (uint32_t i = 0; i < frame; i++) h[hdr_len_ + i] = uint8_t(i);
  if (fdp_.ConsumeBool()) {
    // Offload fields near the rules' edges: a checksum position around the frame's end, a gso_type from
    // the valid ones and past them, sizes around 0 and the segment bound. Headers of a plausible TCP
    // frame underneath sometimes, so segmentation gets past its parser.
    virtio_net_hdr_mrg_rxbuf v = {};
    v.flags = fdp_.ConsumeBool() ? VIRTIO_NET_HDR_F_NEEDS_CSUM : fdp_.ConsumeIntegral<uint8_t>();
    v.gso_type = fdp_.PickValueInArray<uint8_t>({0, 1, 4, 0x81, 0x84, 3, 5, 0x80, 0xff});
    v.gso_size = fdp_.PickValueInArray<uint16_t>({0, 1, 64, 536, 1448, 9000, 0xffff});
    v.hdr_len = uint16_t(fdp_.ConsumeIntegralInRange<uint32_t>(0, frame + 2));
    v.csum_start = uint16_t(fdp_.ConsumeIntegralInRange<uint32_t>(0, frame + 2));
    v.csum_offset = fdp_.PickValueInArray<uint16_t>({6, 16, 0, 0xfffe, uint16_t(frame)});
    memcpy(h, &v, 10);
    if (frame >= 54 && fdp_.ConsumeBool()) {
      uint8_t* f = h + hdr_len_;
      const bool v6 = v.gso_type & 4;
      f[12] = v6 ? 0x86 : 0x08;
      f[13] = v6 ? 0xdd : 0x00;
      f[14] = v6 ? 0x60 : uint8_t(0x45 + fdp_.ConsumeIntegralInRange<int>(0, 10));
      if (v6)
        f[20] = 6;
      else
        f[23] = 6, f[20] = f[21] = 0;
      const uint32_t l4 = v6 ? 54 : 14 + (f[14] & 0xf) * 4u;
      if (l4 + 13 < frame) f[l4 + 12] = uint8_t(fdp_.ConsumeIntegralInRange<int>(0, 15) << 4);
    }
  }
  std::vector<vring_desc> bufs;
  uint32_t at = 0;
  const int pieces = fdp_.ConsumeIntegralInRange<int>(1, 4);
  for (int k = 0; k < pieces && at < total; k++) {
    uint32_t len = k + 1 == pieces ? total - at : fdp_.ConsumeIntegralInRange<uint32_t>(1, total - at);
    bufs.push_back(vring_desc{addr + at, len, 0, 0});
    at += len;
  }
  const bool ind = (features_ & bit(VIRTIO_RING_F_INDIRECT_DESC)) && fdp_.ConsumeBool();
  const uint16_t head = write_chain(1, bufs, ind);
  if (head != 0xffff) publish(1, head);
}

// A receive buffer the guest offers: 1 to 3 writable descriptors.
void Harness::add_rx_chain() {
  std::vector<vring_desc> bufs;
  const int pieces = fdp_.ConsumeIntegralInRange<int>(1, 3);
  for (int k = 0; k < pieces; k++) {
    const uint32_t len = fdp_.ConsumeIntegralInRange<uint32_t>(1, fdp_.ConsumeBool() ? 2048 : 9000);
    const uint64_t addr = pool_.alloc(len);
    if (!addr) break;
    bufs.push_back(vring_desc{addr, len, VRING_DESC_F_WRITE, 0});
  }
  const bool ind = (features_ & bit(VIRTIO_RING_F_INDIRECT_DESC)) && fdp_.ConsumeBool();
  const uint16_t head = write_chain(0, bufs, ind);
  if (head != 0xffff) publish(0, head);
}

void Harness::mutate() {
  const int ring = fdp_.ConsumeIntegralInRange<int>(0, 1);
  if (!ring_ok(ring)) return;
  const uint16_t i = fdp_.ConsumeIntegralInRange<uint16_t>(0, uint16_t(qsize_ - 1));
  vring_desc* d = desc(ring, i);
  switch (fdp_.ConsumeIntegralInRange<int>(0, 12)) {
    case 0: d->addr = interesting_addr(fdp_, guest_); break;
    case 1: d->len = interesting_len(fdp_); break;
    case 2: d->flags = fdp_.ConsumeIntegral<uint16_t>() & 0x7; break;
    case 3: d->flags = fdp_.ConsumeIntegral<uint16_t>(); break;
    case 4:
      d->next = fdp_.ConsumeBool() ? fdp_.ConsumeIntegralInRange<uint16_t>(0, uint16_t(qsize_))
                                   : fdp_.ConsumeIntegral<uint16_t>();
      break;
    case 5:
      avail(ring)->ring[fdp_.ConsumeIntegralInRange<uint16_t>(0, uint16_t(qsize_ - 1))] =
          fdp_.ConsumeBool() ? fdp_.ConsumeIntegralInRange<uint16_t>(0, uint16_t(qsize_))
                             : fdp_.ConsumeIntegral<uint16_t>();
      break;
    case 6: {
      // The avail index jumps: a little, a lot, or backwards.
      avail_idx_[ring] = uint16_t(avail_idx_[ring] + fdp_.ConsumeIntegral<int16_t>());
      avail(ring)->idx = avail_idx_[ring];
      break;
    }
    case 7: used(ring)->idx = fdp_.ConsumeIntegral<uint16_t>(); break;
    case 8:
      avail(ring)->flags = fdp_.ConsumeIntegral<uint16_t>();
      avail(ring)->ring[qsize_] = fdp_.ConsumeIntegral<uint16_t>();
      break;
    case 9: {
      // A field of an indirect table entry this descriptor points to.
      if (!(d->flags & VRING_DESC_F_INDIRECT) || d->len < 16) break;
      uint8_t* t = guest_.at(d->addr, d->len);
      if (!t) break;
      vring_desc e;
      uint8_t* ep = t + 16 * fdp_.ConsumeIntegralInRange<uint32_t>(0, d->len / 16 - 1);
      memcpy(&e, ep, 16);
      switch (fdp_.ConsumeIntegralInRange<int>(0, 3)) {
        case 0: e.addr = interesting_addr(fdp_, guest_); break;
        case 1: e.len = interesting_len(fdp_); break;
        case 2: e.flags = fdp_.ConsumeIntegral<uint16_t>() & 0x7; break;
        default: e.next = fdp_.ConsumeIntegral<uint16_t>() % uint16_t(d->len / 16 + 2); break;
      }
      memcpy(ep, &e, 16);
      break;
    }
    case 10: {
      // The virtio-net header of a packet: offload flags, gso, csum fields.
      uint8_t* h = d->len >= 1 ? guest_.at(d->addr, std::min<uint32_t>(d->len, 12)) : nullptr;
      if (!h) break;
      const uint32_t n = std::min<uint32_t>(d->len, 12);
      const uint32_t k = fdp_.ConsumeIntegralInRange<uint32_t>(0, n - 1);
      h[k] = fdp_.ConsumeIntegral<uint8_t>();
      break;
    }
    case 11: d->len = uint32_t(d->len + fdp_.ConsumeIntegralInRange<int32_t>(-16, 16)); break;
    default: {
      // A loop or a chain that runs through the whole table.
      d->flags |= VRING_DESC_F_NEXT;
      d->next = fdp_.ConsumeBool() ? i : uint16_t((i + 1) & (qsize_ - 1));
      break;
    }
  }
}

void Harness::start(int ring, uint16_t base) {
  VringSetup s;
  s.num = qsize_;
  s.desc_uaddr = ring_[ring].desc + kUvaDelta;
  s.avail_uaddr = ring_[ring].avail + kUvaDelta;
  s.used_uaddr = ring_[ring].used + kUvaDelta;
  s.base = base;
  std::string err;
  dev_->vring(uint16_t(ring)).setup = s;
  started_[ring] = dev_->start_vring(uint16_t(ring), &err);
  // Regions are page aligned and mapped at page boundaries, so guest and host alignment agree.
  if (ring_ok(ring) && !started_[ring]) die(("a valid ring was refused: " + err).c_str());
  if (!ring_ok(ring) && started_[ring]) die("a ring outside guest memory or misaligned was accepted");
  if (started_[ring]) {
    dev_->vring(uint16_t(ring)).enabled = fdp_.ConsumeIntegralInRange<int>(0, 15) != 0;
    device_used_[ring] = used(ring)->idx;
  }
}

const uint8_t* Harness::snap_at(const std::vector<std::vector<uint8_t>>& snap, uint64_t gpa, uint64_t len) const {
  for (size_t k = 0; k < guest_.regions.size(); k++) {
    const Region& r = guest_.regions[k];
    if (gpa >= r.gpa && gpa - r.gpa < r.size && len <= r.size - (gpa - r.gpa)) return snap[k].data() + (gpa - r.gpa);
  }
  return nullptr;
}

__attribute__((no_sanitize("coverage"))) void Harness::mark_gpa(std::vector<std::vector<uint8_t>>& ok, uint64_t gpa,
                                                                uint64_t len) {
  // Byte by byte over regions (buffers may span regions); stops at the first byte outside memory.
  while (len) {
    bool found = false;
    for (size_t k = 0; k < guest_.regions.size(); k++) {
      const Region& r = guest_.regions[k];
      if (gpa >= r.gpa && gpa - r.gpa < r.size) {
        const uint64_t off = gpa - r.gpa, n = std::min(len, r.size - off);
        memset(ok[k].data() + off, 1, n);
        gpa += n;
        len -= n;
        found = true;
        break;
      }
    }
    if (!found) return;
  }
}

// Everything the device may legitimately write while filling the receive vring: the buffers of every
// device-writable descriptor of its table and of the indirect tables it points to (as they were before
// the operation), wherever the guest put them.
void Harness::mark_writable(const std::vector<std::vector<uint8_t>>& snap, std::vector<std::vector<uint8_t>>& ok) {
  const uint8_t* table = snap_at(snap, ring_[0].desc, 16ull * qsize_);
  if (!table) return;
  for (uint32_t i = 0; i < qsize_; i++) {
    vring_desc d;
    memcpy(&d, table + 16 * i, 16);
    if (d.flags & VRING_DESC_F_INDIRECT) {
      const uint8_t* it = d.len ? snap_at(snap, d.addr, d.len) : nullptr;
      if (!it) continue;
      indirect_tables_.emplace_back(d.addr, d.len);
      for (uint32_t k = 0; k < d.len / 16; k++) {
        vring_desc e;
        memcpy(&e, it + 16 * k, 16);
        if (e.flags & VRING_DESC_F_WRITE) mark_gpa(ok, e.addr, e.len);
      }
    } else if (d.flags & VRING_DESC_F_WRITE) {
      mark_gpa(ok, d.addr, d.len);
    }
  }
}

// Writable bytes of the receive chain at head, as the guest laid it out before the operation (an upper
// bound of what a used length may say; 0 for a chain the device must refuse does not matter: we only
// compare against chains it accepted).
uint64_t Harness::chain_capacity(const std::vector<std::vector<uint8_t>>& snap, uint16_t head) {
  const uint8_t* table = snap_at(snap, ring_[0].desc, 16ull * qsize_);
  if (!table || head >= qsize_) return 0;
  uint64_t cap = 0;
  const uint8_t* t = table;
  uint32_t tlen = qsize_, i = head, steps = 0;
  for (;;) {
    if (++steps > 2u * qsize_ + 2) return cap;
    vring_desc d;
    memcpy(&d, t + 16 * i, 16);
    if (d.flags & VRING_DESC_F_INDIRECT) {
      t = d.len ? snap_at(snap, d.addr, d.len) : nullptr;
      if (!t) return cap;
      tlen = d.len / 16;
      i = 0;
      continue;
    }
    if (d.flags & VRING_DESC_F_WRITE) cap += d.len;
    if (!(d.flags & VRING_DESC_F_NEXT) || d.next >= tlen) return cap;
    i = d.next;
  }
}

void Harness::check_burst(const Burst& b) {
  if (b.n > kBurst || b.nspans > kBurstSpans) die("burst counts out of range");
  for (uint16_t i = 0; i < b.n; i++) {
    const PacketView& p = b.pkt[i];
    if (p.len > kMaxFrame) die("rx_burst lent a packet longer than kMaxFrame");
    if (uint32_t(p.first) + p.nseg > b.nspans) die("packet segments outside the burst's span array");
    uint64_t sum = 0;
    for (uint16_t k = p.first; k < p.first + p.nseg; k++) {
      if (!guest_.host_inside(b.span[k].p, b.span[k].len)) die("rx_burst lent a segment outside guest memory");
      sum += b.span[k].len;
    }
    if (sum != p.len) die("packet segments do not add up to its length");
    const PacketMeta& m = p.meta;
    if (offloads_needed(m) & ~offloads_from_guest(features_))
      die("rx_burst lent a packet with an offload not negotiated");
    if ((m.flags & PacketMeta::kCsumPartial) && uint32_t(m.csum_start) + m.csum_offset + 2 > p.len)
      die("rx_burst lent a partial checksum outside its frame");
    if (m.gso_type) {
      const uint8_t type = uint8_t(m.gso_type & ~VIRTIO_NET_HDR_GSO_ECN);
      if (type != VIRTIO_NET_HDR_GSO_TCPV4 && type != VIRTIO_NET_HDR_GSO_TCPV6)
        die("rx_burst lent an unknown gso_type");
      if (!m.gso_size || p.len / m.gso_size > kMaxGsoSegments) die("rx_burst lent a super-frame with a bad gso_size");
      if (m.hdr_len > p.len) die("rx_burst lent a super-frame whose hdr_len runs past it");
      if (!(m.flags & PacketMeta::kCsumPartial)) die("rx_burst lent a super-frame without NEEDS_CSUM");
    }
    if (p.cookie >= qsize_) die("cookie is not a valid head");
    for (uint16_t j = 0; j < i; j++)
      if (b.pkt[j].cookie == p.cookie) die("rx_burst lent the same head twice in one burst");
  }
}

__attribute__((no_sanitize("coverage"))) void Harness::check_after(const std::vector<std::vector<uint8_t>>& snap,
                                                                   bool device_wrote_rx,
                                                                   const uint16_t used_before[2]) {
  std::vector<std::vector<uint8_t>> ok(guest_.regions.size());
  for (size_t k = 0; k < ok.size(); k++) ok[k].assign(guest_.regions[k].size, 0);
  indirect_tables_.clear();
  if (device_wrote_rx) {
    mark_writable(snap, ok);
    // A guest that hands us its own rings or tables as receive buffers gets them overwritten, and
    // what we read from them afterwards is whatever we wrote: the exact checks below no longer
    // apply (memory safety still does).
    std::vector<std::vector<uint8_t>> rings(guest_.regions.size());
    for (size_t k = 0; k < rings.size(); k++) rings[k].assign(guest_.regions[k].size, 0);
    for (int ring = 0; ring < 2; ring++) {
      mark_gpa(rings, ring_[ring].desc, 16ull * qsize_);
      mark_gpa(rings, ring_[ring].avail, 6 + 2ull * qsize_);
      mark_gpa(rings, ring_[ring].used, 6 + 8ull * qsize_);
    }
    for (const auto& t : indirect_tables_) mark_gpa(rings, t.first, t.second);
    for (size_t k = 0; k < rings.size(); k++)
      for (uint64_t off = 0; off < rings[k].size(); off++)
        if (rings[k][off] && ok[k][off]) {
          for (int ring = 0; ring < 2; ring++)
            if (ring_ok(ring)) device_used_[ring] = used(ring)->idx;
          return;
        }
  }
  for (int ring = 0; ring < 2; ring++) mark_gpa(ok, ring_[ring].used, 6 + 8ull * qsize_);
  for (size_t k = 0; k < guest_.regions.size(); k++) {
    const uint8_t* now = guest_.regions[k].host;
    if (memcmp(now, snap[k].data(), guest_.regions[k].size) == 0) continue;
    for (uint64_t off = 0; off < guest_.regions[k].size; off++)
      if (now[off] != snap[k][off] && !ok[k][off]) {
        fprintf(stderr, "region %zu (gpa 0x%llx) offset 0x%llx changed from 0x%02x to 0x%02x\n", k,
                (unsigned long long)guest_.regions[k].gpa, (unsigned long long)off, snap[k][off], now[off]);
        die("the device wrote guest memory it must not write");
      }
  }
  for (int ring = 0; ring < 2; ring++) {
    if (!ring_ok(ring)) continue;
    // The used index belongs to the device: a guest that scribbles on it is ignored until the ring is
    // started again, so progress is measured from what the device itself last published.
    const uint16_t now = used(ring)->idx;
    if (getenv("VQ_FUZZ_DEBUG"))
      fprintf(stderr, "vring %d used idx %u -> %u (device had %u)\n", ring, used_before[ring], now, device_used_[ring]);
    if (now == used_before[ring]) continue;
    const uint16_t from = device_used_[ring];
    const uint16_t moved = uint16_t(now - from);
    device_used_[ring] = now;
    if (moved > qsize_) die("the used index moved backwards or by more than the queue size");
    for (uint16_t k = 0; k < moved; k++) {
      const vring_used_elem e = used(ring)->ring[uint16_t(from + k) & (qsize_ - 1)];
      if (e.id >= qsize_) die("a used entry names a head outside the queue");
      if (ring == 1 && e.len != 0) die("a used length on the transmit vring is not 0");
      if (ring == 0 && e.len > chain_capacity(snap, uint16_t(e.id)))
        die("a used length exceeds the chain's writable bytes");
      returned_[ring].push_back(uint16_t(e.id));
    }
  }
}

void Harness::op() {
  const int kind = fdp_.ConsumeIntegralInRange<int>(0, 9);
  if (kind == 5) {
    // The guest posts what came back, and maybe a few new chains.
    for (int ring = 0; ring < 2; ring++) {
      for (uint16_t h : returned_[ring])
        if (fdp_.ConsumeIntegralInRange<int>(0, 7)) publish(ring, h);
      returned_[ring].clear();
    }
    if (fdp_.ConsumeBool()) add_tx_chain();
    if (fdp_.ConsumeBool()) add_rx_chain();
    return;
  }
  if (kind == 6) {
    mutate();
    return;
  }
  if (getenv("VQ_FUZZ_DEBUG")) fprintf(stderr, "op %d\n", kind);
  // The device's turn: everything it writes is checked against a snapshot taken just before.
  std::vector<std::vector<uint8_t>> snap(guest_.regions.size());
  for (size_t k = 0; k < snap.size(); k++)
    snap[k].assign(guest_.regions[k].host, guest_.regions[k].host + guest_.regions[k].size);
  uint16_t used_before[2] = {0, 0};
  for (int ring = 0; ring < 2; ring++)
    if (ring_ok(ring)) used_before[ring] = used(ring)->idx;
  bool wrote_rx = false;
  switch (kind) {
    case 0:
    case 1:
    case 2: {
      // The PMD loop of a port wired to a port sharing its memory: borrow from the guest's transmit
      // vring, copy into its receive vring, give back.
      Burst b;
      dev_->rx_burst(0, b);
      check_burst(b);
      if (fdp_.ConsumeBool()) {
        // Through Transmit, as a wire sends: what the receive side did not accept is done in software.
        tx_.send(*dev_, 0, b);
        wrote_rx = true;
        check_burst(b);
      }
      dev_->release(0, b);
      break;
    }
    case 3:
    case 4: {
      // Frames from another port (ours, outside guest memory) into the receive vring.
      Burst b;
      const uint16_t n = fdp_.ConsumeIntegralInRange<uint16_t>(1, kBurst);
      uint32_t off = 0;
      for (uint16_t i = 0; i < n && b.nspans + 4 <= kBurstSpans; i++) {
        PacketView& p = b.pkt[b.n++];
        p.first = b.nspans;
        p.nseg = uint16_t(fdp_.ConsumeIntegralInRange<int>(0, 3));
        p.len = 0;
        p.cookie = 0;
        for (uint16_t k = 0; k < p.nseg; k++) {
          const uint32_t l = fdp_.ConsumeIntegralInRange<uint32_t>(0, fdp_.ConsumeBool() ? 1514 : 30000);
          off = (off + 61) % 1024;
          b.span[b.nspans++] = Span{g().frames + off, l};
          p.len += l;
        }
      }
      dev_->tx_burst(0, b);
      wrote_rx = true;
      break;
    }
    case 7: {
      // Stop and start a vring (GET_VRING_BASE then SET_VRING_*), maybe at another base.
      const int ring = fdp_.ConsumeIntegralInRange<int>(0, 1);
      dev_->stop_vring(uint16_t(ring));
      uint16_t base = dev_->vring(uint16_t(ring)).setup.base;
      if (fdp_.ConsumeBool()) base = fdp_.ConsumeIntegral<uint16_t>();
      start(ring, base);
      break;
    }
    case 8: {
      // A new memory table (same regions) or new features, as the control thread applies them.
      if (fdp_.ConsumeBool()) {
        dev_->set_memory(mem_);
      } else {
        features_ ^=
            bit(fdp_.PickValueInArray({VIRTIO_NET_F_MRG_RXBUF, VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC,
                                       VIRTIO_F_VERSION_1, VIRTIO_NET_F_CSUM, VIRTIO_NET_F_HOST_TSO4,
                                       VIRTIO_NET_F_HOST_ECN, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO6}));
        dev_->set_features(features_);
        hdr_len_ = features_ & (bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_NET_F_MRG_RXBUF)) ? 12 : 10;
      }
      break;
    }
    default: {
      std::vector<pollfd> fds;
      dev_->arm_wakeup(fds);
      dev_->disarm_wakeup();
      break;
    }
  }
  check_after(snap, wrote_rx, used_before);
  // A ring that broke was reported on its VHOST_USER_SET_VRING_ERR eventfd too, once per break.
  uint64_t signalled = 0;
  if (read(g().err_fd, &signalled, sizeof signalled) != sizeof signalled) signalled = 0;
  if (signalled != broken_events_) die("ring-broken events and err eventfd signals disagree");
  broken_events_ = 0;
  drain(g().call_fd);
}

void Harness::run() {
  const uint8_t f = fdp_.ConsumeIntegral<uint8_t>();
  if (f & 1) features_ |= bit(VIRTIO_F_VERSION_1);
  if (f & 2) features_ |= bit(VIRTIO_NET_F_MRG_RXBUF);
  if (f & 4) features_ |= bit(VIRTIO_RING_F_INDIRECT_DESC);
  if (f & 8) features_ |= bit(VIRTIO_RING_F_EVENT_IDX);
  if (f & 16) features_ |= bit(VIRTIO_NET_F_CSUM) | bit(VIRTIO_NET_F_HOST_TSO4) | bit(VIRTIO_NET_F_HOST_TSO6);
  if (f & 32) features_ |= bit(VIRTIO_NET_F_HOST_ECN);
  if (f & 64) features_ |= bit(VIRTIO_NET_F_GUEST_CSUM) | bit(VIRTIO_NET_F_GUEST_TSO4);
  if (f & 128) features_ |= bit(VIRTIO_NET_F_GUEST_TSO6) | bit(VIRTIO_NET_F_GUEST_ECN);
  hdr_len_ = features_ & (bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_NET_F_MRG_RXBUF)) ? 12 : 10;
  qsize_ = uint16_t(1u << fdp_.ConsumeIntegralInRange<int>(0, 8));
  build_memory();

  // Valid chains first, published from a base that may be anywhere (index wrap-around).
  const uint16_t base = fdp_.ConsumeBool() ? fdp_.ConsumeIntegral<uint16_t>() : 0;
  for (int ring = 0; ring < 2; ring++) {
    avail_idx_[ring] = base;
    if (ring_ok(ring)) {
      avail(ring)->idx = base;
      used(ring)->idx = base;
    }
  }
  const int ntx = fdp_.ConsumeIntegralInRange<int>(0, std::min<int>(qsize_, 40));
  for (int i = 0; i < ntx; i++) add_tx_chain();
  const int nrx = fdp_.ConsumeIntegralInRange<int>(0, std::min<int>(qsize_, 40));
  for (int i = 0; i < nrx; i++) add_rx_chain();
  const int nmut = fdp_.ConsumeIntegralInRange<int>(0, 8);
  for (int i = 0; i < nmut; i++) mutate();

  dev_ = std::make_unique<VirtioNetDevice>("fuzz", 1, g().counters, [this](const PortEvent& e) {
    if (e.kind == "ring-broken") broken_events_++;
  });
  dev_->set_memory(mem_);
  dev_->set_features(features_);
  for (int ring = 0; ring < 2; ring++) {
    dev_->vring(uint16_t(ring)).call = g().call_fd;
    dev_->vring(uint16_t(ring)).err = g().err_fd;
    start(ring, base);
  }
  const int nops = fdp_.ConsumeIntegralInRange<int>(1, 12);
  for (int i = 0; i < nops && fdp_.remaining_bytes() > 0; i++) op();
  // Whatever is left: keep draining with the PMD loop.
  for (int i = 0; i < 2; i++) {
    Burst b;
    dev_->rx_burst(0, b);
    check_burst(b);
    tx_.send(*dev_, 0, b);
    dev_->release(0, b);
  }
  drain(g().err_fd);
  drain(g().call_fd);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider fdp(data, size);
  Harness h(fdp);
  h.run();
  return 0;
}
