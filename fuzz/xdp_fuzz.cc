// Structure-aware fuzzer for the AF_XDP ring readers (addon/af_xdp.cc: XskRings). The input plays the
// kernel: it writes RX descriptors and completion addresses, moves the producer indices of the rings
// the kernel fills and the consumer indices of the rings it drains (honestly, or to any value), and
// scribbles on the indices that are ours; interleaved with the data path's steps: rx, tx (of its own
// bursts or of what rx lent), release, reap, rx_empty, abort_tx. Some packets it sends read guest
// memory that is gone: tx faults in the middle of a burst and abort_tx must put things back.
//
// The UMEM and the four rings are anonymous mappings between PROT_NONE guard pages (guarded_mmap.cc);
// each ring's entries end exactly at a guard page. A model of every frame, kept from what the port
// wrote into the rings and handed out in bursts (not from its own table), checks after every step:
//   - every lent span lies inside one UMEM frame, past the headroom, and that frame had been put on the
//     fill ring and not come back since; no frame is lent twice;
//   - every fill entry and TX descriptor names a frame that was free, every TX descriptor carries the
//     packet's bytes, and the UMEM changes only in the frames just posted;
//   - the port writes only its own indices and the fill/TX slots it just produced, never an entry the
//     kernel has not consumed;
//   - after a fault, the frame tx was filling is free again and the packets before it are posted;
//   - its owner table and free lists agree with the model: every frame accounted for exactly once;
//   - every counter (INVALID_KERNEL_ENTRY included, one per bad entry and per new bad index) is exact.
#include <fuzzer/FuzzedDataProvider.h>
#include <linux/if_xdp.h>
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
#include "core/guest_fault.h"
#include "ports/uplink/af_xdp.h"

extern "C" void* vw_guarded_mmap(void* addr, size_t len, int prot, int flags, int fd, off_t off);
extern "C" int vw_guarded_munmap(void* addr, size_t len);

using namespace vw;

namespace {

constexpr size_t kPage = 4096;
constexpr uint64_t kRxHeadroom = kXskRxHeadroom;

[[noreturn]] void die(const char* what) {
  fprintf(stderr, "xdp_fuzz: invariant broken: %s\n", what);
  abort();
}
#define CHECK(c, what)   \
  do {                   \
    if (!(c)) die(what); \
  } while (0)

bool debug() {
  static const bool d = getenv("XDP_FUZZ_DEBUG") != nullptr;
  return d;
}

struct Globals {
  // Source bytes for packets the fuzzer sends (heap memory, so ASan watches reads past it).
  std::vector<uint8_t> src = std::vector<uint8_t>(16384);
  // Guest memory whose file was cut to one page after it was mapped: reading the second page raises
  // SIGBUS, which guest_access() turns into a return (guest_fault.h), as when a front end truncates
  // its memory while we copy from it. A packet with a span there faults in the middle of tx().
  uint8_t* cut = nullptr;
  Globals() {
    for (size_t i = 0; i < src.size(); i++) src[i] = uint8_t(i * 13 + 5);
    const int fd = memfd_create("vw-xdp-fuzz-cut", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, 2 * kPage) != 0) abort();
    void* m = mmap(nullptr, 2 * kPage, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED || !register_guest_mapping(m, 2 * kPage)) abort();
    cut = static_cast<uint8_t*>(m);
    memset(cut, 0x5a, kPage);
    if (ftruncate(fd, kPage) != 0) abort();
    close(fd);
  }
  bool faults(const Span& s) const { return s.len && s.p + s.len > cut + kPage && s.p < cut + 2 * kPage; }
};
Globals& g() {
  static Globals* x = new Globals;
  return *x;
}

struct Mem {
  uint8_t* p = nullptr;
  size_t len = 0;
  explicit Mem(size_t n) : len((n + kPage - 1) / kPage * kPage) {
    void* m = vw_guarded_mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) abort();
    p = static_cast<uint8_t*>(m);
  }
  ~Mem() { vw_guarded_munmap(p, len); }
  Mem(const Mem&) = delete;
  Mem& operator=(const Mem&) = delete;
};

// A ring laid out as the kernel does (producer, consumer and flags on their own cache lines), with the
// entries at the very end of the mapping so that one entry too far is a guard-page fault.
struct Ring {
  std::unique_ptr<Mem> mem;
  XskRing r;
  size_t entry;
  size_t desc_off;
  Ring(uint32_t size, size_t entry_size) : entry(entry_size) {
    const size_t need = 192 + size * entry_size;
    mem.reset(new Mem(need));
    desc_off = mem->len - size * entry_size;
    r = XskRing{reinterpret_cast<uint32_t*>(mem->p), reinterpret_cast<uint32_t*>(mem->p + 64),
                reinterpret_cast<uint32_t*>(mem->p + 128), mem->p + desc_off, size};
  }
  uint64_t& addr(uint32_t i) { return static_cast<uint64_t*>(r.desc)[i & (r.size - 1)]; }
  xdp_desc& desc(uint32_t i) { return static_cast<xdp_desc*>(r.desc)[i & (r.size - 1)]; }
};

// The model's view of a frame, from the kernel's side of the rings.
enum State : uint8_t { kFreeM, kGiven, kLentM, kPosted };

struct Bad {
  bool active = false;
  uint32_t value = 0;
};

class Harness {
 public:
  explicit Harness(FuzzedDataProvider& fdp) : fdp_(fdp) {}
  void run();

 private:
  // Kernel side.
  void kernel_fill_consume() { move_consumer(*fill_, m_fill_prod_); }
  void kernel_tx_consume() { move_consumer(*tx_, m_tx_prod_); }
  void move_consumer(Ring& ring, uint32_t our_prod);
  uint32_t produce_count(Ring& ring, uint32_t cons);
  void kernel_rx_produce();
  void kernel_comp_produce();
  void scribble();
  uint32_t entry_frame(State held);
  void kernel_bad_index();
  void kernel_honest(bool receive);
  uint64_t bad_addr();

  // Our side, each followed by the model's expectations.
  void op_rx();
  void op_tx_own();
  void op_release();
  void op_reap();
  void op_rx_empty();
  void op_abort_tx();

  void before();
  void after();
  int64_t m_available(Ring& ring, uint32_t cons, Bad& bad);
  uint32_t m_room(Ring& ring, uint32_t prod, Bad& bad);
  void expect_refill();
  void expect_reap();
  void expect_tx(const Burst& b, uint16_t sent, bool returned = true);
  void check_all();
  uint32_t count(State s, bool rx_frames) const;

  FuzzedDataProvider& fdp_;
  XskGeometry geo_{};
  uint32_t frames_ = 0;
  uint64_t umem_len_ = 0;
  std::unique_ptr<Mem> umem_;
  std::unique_ptr<Ring> fill_, comp_, rx_, tx_;
  QueueCounters c_;
  std::unique_ptr<XskRings> x_;

  std::vector<uint8_t> model_;
  uint32_t m_fill_prod_ = 0, m_comp_cons_ = 0, m_rx_cons_ = 0, m_tx_prod_ = 0;
  Bad bad_fill_, bad_comp_, bad_rx_, bad_tx_;
  uint64_t exp_[kQueueCounterCount] = {};
  // The model's own reading of DPDK's vhost size bins, not the addon's size_bin().
  static uint32_t bin(uint64_t len) {
    static const uint64_t upper[] = {64, 127, 255, 511, 1023, 1518};
    uint32_t b = 0;
    while (b < 6 && len > upper[b]) b++;
    return b;
  }

  Burst lent_;  // what rx() lent and is not released yet
  bool have_lent_ = false;

  // Snapshots taken before each of our steps.
  std::vector<uint8_t> snap_umem_;
  std::vector<uint8_t> snap_ring_[4];
  uint32_t old_fill_prod_ = 0, old_tx_prod_ = 0;
  std::vector<uint32_t> posted_now_;  // frames tx() posted in this step, with their lengths
  std::vector<uint32_t> posted_len_;
  uint32_t fault_frame_ = 0;  // the frame a faulting tx() was filling, frames_ when none
};

uint32_t Harness::count(State s, bool rx_frames) const {
  uint32_t n = 0;
  const uint32_t lo = rx_frames ? 0 : geo_.rx_frames, hi = rx_frames ? geo_.rx_frames : frames_;
  for (uint32_t f = lo; f < hi; f++) n += model_[f] == s;
  return n;
}

// The frame an entry names: mostly one in state `held` (the frames the kernel may return), otherwise
// any frame at all, in whatever state our side has it.
uint32_t Harness::entry_frame(State held) {
  if (fdp_.ConsumeIntegralInRange<int>(0, 2)) {
    std::vector<uint32_t> v;
    for (uint32_t f = 0; f < frames_; f++)
      if (model_[f] == held) v.push_back(f);
    if (!v.empty()) return v[fdp_.ConsumeIntegralInRange<size_t>(0, v.size() - 1)];
  }
  return fdp_.ConsumeIntegralInRange<uint32_t>(0, frames_ - 1);
}

uint64_t Harness::bad_addr() {
  switch (fdp_.ConsumeIntegralInRange<int>(0, 5)) {
    case 0: return umem_len_ + fdp_.ConsumeIntegralInRange<uint64_t>(0, 2 * kPage);
    case 1: return ~uint64_t(0) - fdp_.ConsumeIntegralInRange<uint64_t>(0, 4096);
    case 2: return uint64_t(1) << fdp_.ConsumeIntegralInRange<int>(12, 63);
    case 3: return umem_len_ - fdp_.ConsumeIntegralInRange<uint64_t>(1, 300);
    default: return fdp_.ConsumeIntegral<uint64_t>();
  }
}

void Harness::move_consumer(Ring& ring, uint32_t our_prod) {
  uint32_t v;
  switch (fdp_.ConsumeIntegralInRange<int>(0, 5)) {
    case 0: v = fdp_.ConsumeIntegral<uint32_t>(); break;                                      // anything
    case 1: v = our_prod + fdp_.ConsumeIntegralInRange<uint32_t>(1, 8); break;                // ahead of us
    case 2: v = our_prod - ring.r.size - fdp_.ConsumeIntegralInRange<uint32_t>(1, 8); break;  // too far behind
    default: v = our_prod - fdp_.ConsumeIntegralInRange<uint32_t>(0, ring.r.size); break;     // inside the window
  }
  __atomic_store_n(ring.r.consumer, v, __ATOMIC_RELEASE);
}

// How many entries the kernel adds to a ring it produces, whose consumer (ours) is at cons: mostly what
// fits, sometimes more than fits (overwriting entries we have not read, and a producer more than a ring
// ahead). A producer left out of range by an earlier step is usually put back first.
uint32_t Harness::produce_count(Ring& ring, uint32_t cons) {
  const uint32_t size = ring.r.size;
  if (*ring.r.producer - cons > size && fdp_.ConsumeIntegralInRange<int>(0, 3))
    *ring.r.producer = cons + fdp_.ConsumeIntegralInRange<uint32_t>(0, size);
  const uint32_t used = *ring.r.producer - cons;
  if (used > size) return fdp_.ConsumeIntegralInRange<uint32_t>(0, size + 2);
  switch (fdp_.ConsumeIntegralInRange<int>(0, 7)) {
    case 0: return size - used;      // exactly full
    case 1: return size - used + 1;  // one more than fits
    case 2: return fdp_.ConsumeIntegralInRange<uint32_t>(0, size + 2);
    default: return fdp_.ConsumeIntegralInRange<uint32_t>(0, std::min(size - used, 8u));
  }
}

void Harness::kernel_rx_produce() {
  const uint32_t n = produce_count(*rx_, m_rx_cons_);
  const uint32_t p = *rx_->r.producer;
  const uint32_t fs = geo_.frame_size;
  for (uint32_t i = 0; i < n; i++) {
    xdp_desc d = {0, 0, 0};
    const uint32_t f = entry_frame(kGiven);
    const int kind = fdp_.ConsumeIntegralInRange<int>(0, 15);  // 9..15: a malformed entry
    uint64_t off = fdp_.ConsumeBool() ? kRxHeadroom : fdp_.ConsumeIntegralInRange<uint64_t>(kRxHeadroom, fs - 1);
    d.addr = uint64_t(f) * fs + off;
    d.len = fdp_.ConsumeIntegralInRange<uint32_t>(1, uint32_t(fs - off));
    switch (kind) {
      case 9: d.addr = bad_addr(); break;
      case 10: d.addr = uint64_t(f) * fs + fdp_.ConsumeIntegralInRange<uint64_t>(0, kRxHeadroom - 1); break;
      case 11: d.len = 0; break;
      case 12:
        d.len = uint32_t(fs - off) + fdp_.ConsumeIntegralInRange<uint32_t>(1, 2 * fs);
        break;  // into the next frame
      case 13: d.len = ~0u - fdp_.ConsumeIntegralInRange<uint32_t>(0, 16); break;
      case 14: d.options = fdp_.ConsumeIntegral<uint32_t>(); break;
      case 15:
        d.addr = fdp_.ConsumeIntegral<uint64_t>();
        d.len = fdp_.ConsumeIntegral<uint32_t>();
        break;
      default: break;
    }
    rx_->desc(p + i) = d;
  }
  uint32_t prod = p + n;
  if (fdp_.ConsumeIntegralInRange<int>(0, 9) == 0) prod = fdp_.ConsumeIntegral<uint32_t>();
  __atomic_store_n(rx_->r.producer, prod, __ATOMIC_RELEASE);
}

void Harness::kernel_comp_produce() {
  const uint32_t n = produce_count(*comp_, m_comp_cons_);
  const uint32_t p = *comp_->r.producer;
  const uint32_t fs = geo_.frame_size;
  for (uint32_t i = 0; i < n; i++) {
    const uint32_t f = entry_frame(kPosted);
    const int kind = fdp_.ConsumeIntegralInRange<int>(0, 11);  // 9..11: a malformed address
    uint64_t a = uint64_t(f) * fs;
    if (kind == 9) a = bad_addr();
    if (kind == 10) a += fdp_.ConsumeIntegralInRange<uint64_t>(1, fs - 1);
    if (kind == 11) a = fdp_.ConsumeIntegral<uint64_t>();
    comp_->addr(p + i) = a;
  }
  uint32_t prod = p + n;
  if (fdp_.ConsumeIntegralInRange<int>(0, 9) == 0) prod = fdp_.ConsumeIntegral<uint32_t>();
  __atomic_store_n(comp_->r.producer, prod, __ATOMIC_RELEASE);
}

// A well-behaved kernel, cheap in input bytes so that long runs cycle every frame many times: it
// returns some of the frames it holds from the fill ring as received frames, or completes some of the
// frames on the TX ring, in a fuzzer-chosen order, with the producer moved just past them.
void Harness::kernel_honest(bool receive) {
  Ring& ring = receive ? *rx_ : *comp_;
  const uint32_t cons = receive ? m_rx_cons_ : m_comp_cons_;
  uint32_t p = *ring.r.producer;
  if (p - cons > ring.r.size) p = cons;
  std::vector<uint32_t> v;
  for (uint32_t f = 0; f < frames_; f++)
    if (model_[f] == (receive ? kGiven : kPosted)) v.push_back(f);
  const size_t room = ring.r.size - (p - cons);
  const size_t n = std::min<size_t>({v.size(), room, fdp_.ConsumeIntegralInRange<size_t>(0, kBurst + 8)});
  const uint32_t fs = geo_.frame_size;
  for (size_t i = 0; i < n; i++) {
    std::swap(v[i], v[i + fdp_.ConsumeIntegralInRange<size_t>(0, v.size() - 1 - i)]);
    if (receive) {
      const uint32_t len = 1 + (v[i] * 977u + p) % (fs - uint32_t(kRxHeadroom));
      rx_->desc(p) = xdp_desc{uint64_t(v[i]) * fs + kRxHeadroom, len, 0};
    } else {
      comp_->addr(p) = uint64_t(v[i]) * fs;
    }
    p++;
  }
  __atomic_store_n(ring.r.producer, p, __ATOMIC_RELEASE);
}

// The kernel moves one of its indices to a boundary: a producer exactly a ring ahead of our consumer
// (valid) or one more (not), a producer behind our consumer, or a consumer just past our producer.
void Harness::kernel_bad_index() {
  Ring* kernel_produces[2] = {rx_.get(), comp_.get()};
  const uint32_t cons[2] = {m_rx_cons_, m_comp_cons_};
  Ring* kernel_consumes[2] = {fill_.get(), tx_.get()};
  const uint32_t prod[2] = {m_fill_prod_, m_tx_prod_};
  const int i = fdp_.ConsumeIntegralInRange<int>(0, 1);
  switch (fdp_.ConsumeIntegralInRange<int>(0, 4)) {
    case 0: *kernel_produces[i]->r.producer = cons[i] + kernel_produces[i]->r.size; break;
    case 1: *kernel_produces[i]->r.producer = cons[i] + kernel_produces[i]->r.size + 1; break;
    case 2: *kernel_produces[i]->r.producer = cons[i] - 1; break;
    case 3: *kernel_consumes[i]->r.consumer = prod[i] + 1; break;
    case 4: *kernel_consumes[i]->r.consumer = prod[i] - kernel_consumes[i]->r.size - 1; break;
  }
}

// The kernel writes indices that are ours: the port must neither read them back nor be thrown by them.
void Harness::scribble() {
  uint32_t* ours[4] = {fill_->r.producer, comp_->r.consumer, rx_->r.consumer, tx_->r.producer};
  *ours[fdp_.ConsumeIntegralInRange<int>(0, 3)] = fdp_.ConsumeIntegral<uint32_t>();
  if (fdp_.ConsumeBool()) *fill_->r.flags = fdp_.ConsumeIntegral<uint32_t>();
  if (fdp_.ConsumeBool()) *tx_->r.flags = fdp_.ConsumeIntegral<uint32_t>();
}

// ---- the model ----------------------------------------------------------------------------------

int64_t Harness::m_available(Ring& ring, uint32_t cons, Bad& bad) {
  const uint32_t prod = *ring.r.producer;
  if (prod - cons <= ring.r.size) {
    bad.active = false;
    return prod - cons;
  }
  if (!bad.active || bad.value != prod) exp_[INVALID_KERNEL_ENTRY]++;
  bad = Bad{true, prod};
  return -1;
}

uint32_t Harness::m_room(Ring& ring, uint32_t prod, Bad& bad) {
  const uint32_t cons = *ring.r.consumer;
  if (prod - cons <= ring.r.size) {
    bad.active = false;
    return ring.r.size - (prod - cons);
  }
  if (!bad.active || bad.value != cons) exp_[INVALID_KERNEL_ENTRY]++;
  bad = Bad{true, cons};
  return 0;
}

// The port gave back free receive frames: as many as the fill ring has room for must now be on it.
void Harness::expect_refill() {
  const uint32_t nfree = count(kFreeM, true);
  if (!nfree) return;
  const uint32_t n = std::min(m_room(*fill_, m_fill_prod_, bad_fill_), nfree);
  if (!n) return;
  for (uint32_t k = 0; k < n; k++) {
    const uint64_t a = fill_->addr(m_fill_prod_ + k);
    CHECK(a % geo_.frame_size == 0 && a / geo_.frame_size < geo_.rx_frames, "a fill entry is not a receive frame");
    CHECK(model_[a / geo_.frame_size] == kFreeM, "a fill entry names a frame that was not free (owned twice)");
    model_[a / geo_.frame_size] = kGiven;
  }
  m_fill_prod_ += n;
  CHECK(*fill_->r.producer == m_fill_prod_, "the fill producer is not what the port pushed");
}

void Harness::expect_reap() {
  const int64_t avail = m_available(*comp_, m_comp_cons_, bad_comp_);
  if (avail <= 0) return;
  uint32_t back = 0;
  for (uint32_t i = 0; i < uint32_t(avail); i++) {
    const uint64_t a = comp_->addr(m_comp_cons_ + i);
    if (a < umem_len_ && a % geo_.frame_size == 0 && model_[a / geo_.frame_size] == kPosted) {
      model_[a / geo_.frame_size] = kFreeM;
      back++;
    } else {
      exp_[INVALID_KERNEL_ENTRY]++;
    }
  }
  if (debug()) fprintf(stderr, "reap: %u back, %u bad\n", back, uint32_t(avail) - back);
  m_comp_cons_ += uint32_t(avail);
  CHECK(*comp_->r.consumer == m_comp_cons_, "the completion consumer is not what the port read");
}

void Harness::expect_tx(const Burst& b, uint16_t sent, bool returned) {
  expect_reap();
  posted_now_.clear();
  posted_len_.clear();
  if (b.n == 0) {
    CHECK(sent == 0, "tx of nothing sent something");
    return;
  }
  uint32_t space = m_room(*tx_, m_tx_prod_, bad_tx_);
  uint32_t nfree = count(kFreeM, false);
  uint16_t want = 0;
  std::vector<uint8_t> pkt;
  for (uint16_t i = 0; i < b.n; i++) {
    const PacketView& p = b.pkt[i];
    if (p.len == 0 || p.len > geo_.frame_size) {
      exp_[DROP_TX_TOO_BIG]++;
      continue;
    }
    if (!nfree || !space) {
      exp_[DROP_TX_NO_BUFFER]++;
      continue;
    }
    bool faults = false;
    for (uint16_t k = p.first; k < p.first + p.nseg; k++) faults |= g().faults(b.span[k]);
    if (faults) {
      // The copy faulted: the packets before this one are posted, this one and the rest are not.
      CHECK(!returned, "tx read a page that is gone and returned");
      CHECK(fault_frame_ < frames_ && fault_frame_ >= geo_.rx_frames && model_[fault_frame_] == kFreeM,
            "abort_tx did not give back the frame it was filling");
      CHECK(*tx_->r.producer == m_tx_prod_, "abort_tx did not post the packets copied before the fault");
      return;
    }
    const xdp_desc d = tx_->desc(m_tx_prod_);
    CHECK(d.addr % geo_.frame_size == 0 && d.addr < umem_len_ && d.addr / geo_.frame_size >= geo_.rx_frames,
          "a TX descriptor does not name a transmit frame");
    const uint32_t f = uint32_t(d.addr / geo_.frame_size);
    CHECK(model_[f] == kFreeM, "a TX descriptor names a frame that was not free (owned twice)");
    CHECK(d.len == p.len && d.options == 0, "a TX descriptor has the wrong length or options");
    pkt.clear();
    for (uint16_t k = p.first; k < p.first + p.nseg; k++)
      pkt.insert(pkt.end(), b.span[k].p, b.span[k].p + b.span[k].len);
    CHECK(pkt.size() == p.len && memcmp(umem_->p + d.addr, pkt.data(), p.len) == 0,
          "a sent frame does not hold the packet");
    model_[f] = kPosted;
    posted_now_.push_back(f);
    posted_len_.push_back(p.len);
    m_tx_prod_++;
    space--;
    nfree--;
    want++;
    exp_[TX_PACKETS]++;
    exp_[TX_BYTES] += p.len;
    exp_[TX_SIZE_64 + bin(p.len)]++;
  }
  CHECK(returned, "tx faulted on a packet that reads no missing page");
  CHECK(sent == want, "tx returned a different count than it posted");
  if (want) CHECK(*tx_->r.producer == m_tx_prod_, "the TX producer is not what the port posted");
}

void Harness::before() {
  snap_umem_.assign(umem_->p, umem_->p + umem_len_);
  Ring* rings[4] = {fill_.get(), comp_.get(), rx_.get(), tx_.get()};
  for (int i = 0; i < 4; i++) snap_ring_[i].assign(rings[i]->mem->p, rings[i]->mem->p + rings[i]->mem->len);
  old_fill_prod_ = m_fill_prod_;
  old_tx_prod_ = m_tx_prod_;
  posted_now_.clear();
  posted_len_.clear();
  fault_frame_ = frames_;
}

// What the port wrote during the step: only its own indices, the fill/TX slots it produced, and the
// frames it posted (the packet's bytes, nothing past them).
void Harness::after() {
  const uint32_t fs = geo_.frame_size;
  for (uint32_t f = 0; f < frames_; f++) {
    if (f == fault_frame_) continue;
    uint64_t from = 0;
    for (size_t k = 0; k < posted_now_.size(); k++)
      if (posted_now_[k] == f) from = posted_len_[k];
    CHECK(memcmp(umem_->p + uint64_t(f) * fs + from, snap_umem_.data() + uint64_t(f) * fs + from, fs - from) == 0,
          "the port wrote UMEM outside the frames it posted");
  }
  Ring* rings[4] = {fill_.get(), comp_.get(), rx_.get(), tx_.get()};
  for (int i = 0; i < 4; i++) {
    Ring& r = *rings[i];
    // The snapshot with what the port may write taken over from the ring must equal the ring.
    std::vector<uint8_t>& s = snap_ring_[i];
    auto allow = [&](size_t off, size_t len) { memcpy(s.data() + off, r.mem->p + off, len); };
    // fill and TX: our producer, and the slots we produced; completion and RX: our consumer.
    if (i == 0 || i == 3) {
      allow(0, 4);
      const uint32_t from = i == 0 ? old_fill_prod_ : old_tx_prod_, to = i == 0 ? m_fill_prod_ : m_tx_prod_;
      for (uint32_t k = from; k != to && k - from < r.r.size; k++)
        allow(r.desc_off + (k & (r.r.size - 1)) * r.entry, r.entry);
    } else {
      allow(64, 4);
    }
    CHECK(memcmp(s.data(), r.mem->p, r.mem->len) == 0, "the port wrote ring memory that is not its own");
  }
  // Never overwrite a fill or TX entry the kernel has not consumed: whatever we produced fits between
  // the consumer the kernel showed and a ring's worth past it.
  if (m_fill_prod_ != old_fill_prod_) CHECK(m_fill_prod_ - *fill_->r.consumer <= fill_->r.size, "fill ring overrun");
  if (m_tx_prod_ != old_tx_prod_) CHECK(m_tx_prod_ - *tx_->r.consumer <= tx_->r.size, "TX ring overrun");
  check_all();
}

void Harness::check_all() {
  static const XskRings::Owner as[] = {XskRings::kFree, XskRings::kFill, XskRings::kLent, XskRings::kTx};
  for (uint32_t f = 0; f < frames_; f++)
    CHECK(x_->owner(f) == as[model_[f]], "the owner table disagrees with the model");
  std::vector<uint8_t> seen(frames_, 0);
  for (uint32_t f : x_->free_rx()) {
    CHECK(f < geo_.rx_frames && model_[f] == kFreeM && !seen[f]++,
          "free_rx holds a frame that is not a free receive frame, or twice");
  }
  for (uint32_t f : x_->free_tx()) {
    CHECK(f >= geo_.rx_frames && f < frames_ && model_[f] == kFreeM && !seen[f]++,
          "free_tx holds a frame that is not a free transmit frame, or twice");
  }
  for (uint32_t f = 0; f < frames_; f++)
    CHECK(model_[f] != kFreeM || seen[f], "a free frame is on no free list (lost)");
  for (uint32_t i = 0; i < kQueueCounterCount; i++)
    if (c_.v[i] != exp_[i]) {
      fprintf(stderr, "counter %s: %llu, expected %llu\n", kQueueCounterInfo[i].id, (unsigned long long)c_.v[i],
              (unsigned long long)exp_[i]);
      die("a counter is off");
    }
}

// ---- our steps ----------------------------------------------------------------------------------

void Harness::op_release() {
  if (!have_lent_) return;
  before();
  Burst b = lent_;
  x_->release(b);
  for (uint16_t i = 0; i < lent_.n; i++) model_[lent_.pkt[i].cookie] = kFreeM;
  have_lent_ = false;
  expect_refill();
  after();
}

void Harness::op_rx() {
  op_release();
  before();
  const bool refill = count(kFreeM, true) > 0;
  Burst& b = lent_;
  const uint16_t n = x_->rx(b);
  if (refill) expect_refill();
  const int64_t avail = m_available(*rx_, m_rx_cons_, bad_rx_);
  uint16_t want = 0;
  if (avail > 0) {
    const uint32_t take = std::min<uint32_t>(uint32_t(avail), kBurst);
    const uint32_t fs = geo_.frame_size;
    for (uint32_t i = 0; i < take; i++) {
      const xdp_desc d = rx_->desc(m_rx_cons_ + i);
      const uint64_t off = d.addr % fs;
      if (!(d.addr < umem_len_ && off >= kRxHeadroom && d.len >= 1 && d.len <= fs - off && d.options == 0 &&
            model_[d.addr / fs] == kGiven)) {
        if (debug())
          fprintf(stderr, "rx: bad entry addr 0x%llx len %u options 0x%x%s\n", (unsigned long long)d.addr, d.len,
                  d.options,
                  d.addr < umem_len_ ? (model_[d.addr / fs] == kGiven ? "" : " (frame not given)") : " (outside)");
        exp_[INVALID_KERNEL_ENTRY]++;
        continue;
      }
      const uint32_t f = uint32_t(d.addr / fs);
      CHECK(want < n, "rx lent fewer packets than the ring held valid entries");
      const PacketView& p = b.pkt[want];
      CHECK(p.cookie == f && p.len == d.len && p.nseg == 1, "rx lent a packet that is not the next valid entry");
      const Span& s = b.span[p.first];
      const uint8_t* lo = umem_->p + uint64_t(f) * fs + kRxHeadroom;
      const uint8_t* hi = umem_->p + uint64_t(f + 1) * fs;
      CHECK(s.p == umem_->p + d.addr && s.len == d.len && s.p >= lo && s.p + s.len <= hi,
            "a lent span is not inside its frame");
      model_[f] = kLentM;
      want++;
      exp_[RX_PACKETS]++;
      exp_[RX_BYTES] += d.len;
      exp_[RX_SIZE_64 + bin(d.len)]++;
    }
    m_rx_cons_ += take;
    CHECK(*rx_->r.consumer == m_rx_cons_, "the RX consumer is not what the port read");
  }
  CHECK(n == want && b.n == n, "rx lent more packets than the ring held valid entries");
  have_lent_ = n > 0;
  if (debug()) fprintf(stderr, "rx: %u lent\n", n);
  after();
  // The PMD loop on a wire back to the same port: what was lent is sent.
  if (have_lent_ && fdp_.ConsumeBool()) {
    before();
    const uint16_t sent = x_->tx(b);
    expect_tx(b, sent);
    after();
  }
}

void Harness::op_tx_own() {
  Burst b;
  const uint16_t n = fdp_.ConsumeIntegralInRange<uint16_t>(0, fdp_.ConsumeBool() ? 4 : kBurst);
  for (uint16_t i = 0; i < n; i++) {
    PacketView& p = b.pkt[b.n++];
    p.first = b.nspans;
    p.nseg = uint16_t(fdp_.ConsumeIntegralInRange<int>(0, 3));
    p.len = 0;
    p.cookie = 0;
    for (uint16_t k = 0; k < p.nseg; k++) {
      if (fdp_.ConsumeIntegralInRange<int>(0, 31) == 0) {
        // A span running from the last bytes of the page that is left into the one that is gone.
        const uint32_t a = fdp_.ConsumeIntegralInRange<uint32_t>(0, 64);
        b.span[b.nspans++] = Span{g().cut + kPage - a, a + fdp_.ConsumeIntegralInRange<uint32_t>(1, 100)};
      } else {
        const uint32_t l = fdp_.ConsumeIntegralInRange<uint32_t>(0, fdp_.ConsumeBool() ? 1514 : 4200);
        const size_t off = fdp_.ConsumeIntegralInRange<size_t>(0, g().src.size() - l);
        b.span[b.nspans++] = Span{g().src.data() + off, l};
      }
      p.len += b.span[b.nspans - 1].len;
    }
  }
  before();
  // What a PMD does (pmd.cc, recover): a fault in the source's memory during tx_burst ends in abort_tx.
  uint16_t sent = 0;
  const bool returned = guest_access([&] { sent = x_->tx(b); });
  if (!returned) {
    x_->abort_tx();
    // abort_tx pushed the frame it was filling back last; its bytes are whatever the copy got to.
    fault_frame_ = x_->free_tx().empty() ? frames_ : x_->free_tx().back();
  }
  if (debug()) {
    if (returned)
      fprintf(stderr, "tx: %u of %u posted\n", sent, b.n);
    else
      fprintf(stderr, "tx: a fault in one of %u packets\n", b.n);
  }
  expect_tx(b, sent, returned);
  after();
}

void Harness::op_reap() {
  before();
  x_->reap();
  expect_reap();
  after();
}

void Harness::op_rx_empty() {
  before();
  const bool empty = x_->rx_empty();
  const int64_t avail = m_available(*rx_, m_rx_cons_, bad_rx_);
  CHECK(empty == (avail <= 0), "rx_empty disagrees with the ring");
  after();
}

void Harness::op_abort_tx() {
  before();
  x_->abort_tx();
  CHECK(*tx_->r.producer == m_tx_prod_, "abort_tx published a TX producer that is not ours");
  after();
}

void Harness::run() {
  const uint32_t fs = fdp_.ConsumeBool() ? 2048 : 4096;
  geo_ = XskGeometry{fs, fdp_.ConsumeIntegralInRange<uint32_t>(1, 32), fdp_.ConsumeIntegralInRange<uint32_t>(1, 32)};
  frames_ = geo_.rx_frames + geo_.tx_frames;
  umem_len_ = uint64_t(fs) * frames_;
  umem_.reset(new Mem(umem_len_));
  auto ring_size = [&] { return uint32_t(1) << fdp_.ConsumeIntegralInRange<int>(0, 7); };
  fill_.reset(new Ring(ring_size(), 8));
  comp_.reset(new Ring(ring_size(), 8));
  rx_.reset(new Ring(ring_size(), sizeof(xdp_desc)));
  tx_.reset(new Ring(ring_size(), sizeof(xdp_desc)));
  // Indices start wherever the rings are, near the 2^32 wrap in particular.
  Ring* rings[4] = {fill_.get(), comp_.get(), rx_.get(), tx_.get()};
  for (Ring* r : rings) {
    const uint32_t base =
        fdp_.ConsumeBool() ? 0u - fdp_.ConsumeIntegralInRange<uint32_t>(0, 300) : fdp_.ConsumeIntegral<uint32_t>();
    *r->r.producer = *r->r.consumer = base;
  }
  m_fill_prod_ = *fill_->r.producer;
  m_comp_cons_ = *comp_->r.consumer;
  m_rx_cons_ = *rx_->r.consumer;
  m_tx_prod_ = *tx_->r.producer;
  model_.assign(frames_, kFreeM);
  if (debug())
    fprintf(stderr, "frame %u rx %u tx %u rings fill %u comp %u rx %u tx %u\n", fs, geo_.rx_frames, geo_.tx_frames,
            fill_->r.size, comp_->r.size, rx_->r.size, tx_->r.size);

  before();
  x_.reset(new XskRings(geo_, umem_->p, fill_->r, comp_->r, rx_->r, tx_->r, &c_));
  expect_refill();
  after();

  for (int steps = 0; steps < 2000 && fdp_.remaining_bytes() > 0; steps++) {
    const int op = fdp_.ConsumeIntegralInRange<int>(0, 19);
    if (debug()) fprintf(stderr, "op %d\n", op);
    switch (op) {
      case 0: kernel_fill_consume(); break;
      case 1: kernel_tx_consume(); break;
      case 2: kernel_rx_produce(); break;
      case 3: kernel_comp_produce(); break;
      case 4:
      case 5: kernel_honest(true); break;
      case 6:
      case 7: kernel_honest(false); break;
      case 8: kernel_bad_index(); break;
      case 9: scribble(); break;
      case 10:
      case 11:
      case 12: op_rx(); break;
      case 13:
      case 14: op_tx_own(); break;
      case 15: op_release(); break;
      case 16: op_reap(); break;
      case 17: op_rx_empty(); break;
      case 18: op_abort_tx(); break;
      case 19: kernel_fill_consume(), kernel_tx_consume(); break;
    }
  }
  op_release();
  x_.reset();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider fdp(data, size);
  Harness h(fdp);
  h.run();
  return 0;
}
