// Where the data path's cycles go, stage by stage, over real split rings in one process: a guest of our
// own (memory in a memfd, the driver side of the rings written here), two virtio-net devices as the
// backend serves them (a: the guest that transmits, b: the guest that receives), and the device's data
// path called the way a PMD wire calls it. Single-threaded and cache-hot: what it measures is the
// software's own cost per packet (instructions, branches, stores), not the cache-line transfers between
// a guest's core and ours that the side-by-side benchmarks (npm run bench) add on top. Run it under
// valgrind --tool=callgrind (bench/native/run.sh --callgrind) for instruction counts that do not depend
// on how busy the machine is.
//
//   stages [--size BYTES] [--bursts N] [--queue-size N] [--mrg 0|1] [--event-idx 0|1] [--bridge 0|1] [--shared 0|1]
// --shared 1 gives b two runners, as when its queues are spread over two PMD threads: each tx_burst
// into it then takes its receive ring's lock (uncontended here: what the lock itself costs).
// --bridge 1 puts a and b on a learning bridge (b's MAC a static entry, so every frame is a learned
// unicast) and forwards through it instead of calling b.tx_burst directly: the difference is what the
// bridge costs over a wire.
//   stages --hostile QUEUE_SIZE
//   stages --offloads BURSTS
// --offloads times the offload paths toward a destination that copies what it is sent (as a NIC's DMA or a
// guest's buffers): a 64000-byte TCP super-frame carried as it is, the same segmented in software, and the
// same payload as 1500-byte frames a stack without TSO would have sent; a partial checksum completed.
// --hostile times single bursts against the rings a hostile guest builds to make them expensive (see
// hostile()): the worst case one PMD step costs, which every other port on that PMD waits through.
#include <sys/mman.h>
#include <unistd.h>
#include <x86intrin.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "core/checksum.h"
#include "core/counters.h"
#include "core/guest_memory.h"
#include "core/offload.h"
#include "forward/bridge.h"
#include "forward/forwarder.h"
#include "ports/vhost_user/virtio_net.h"
#include "virtio/virtio_spec.h"

using namespace vw;

namespace {

constexpr uint64_t kGuestBase = 0x100000000ull;
constexpr uint32_t kRxBuf = 2048;  // what DPDK's virtio PMD and Linux post per receive buffer, about
constexpr uint32_t kHdr = 12;

uint64_t bit(unsigned b) { return uint64_t(1) << b; }

[[noreturn]] void die(const std::string& why) {
  fprintf(stderr, "stages: %s\n", why.c_str());
  exit(1);
}

// The driver side of one split ring, laid out in our guest memory.
struct DriverRing {
  uint16_t size = 0;
  vring_desc* desc = nullptr;
  vring_avail* avail = nullptr;
  vring_used* used = nullptr;
  uint64_t desc_gpa = 0, avail_gpa = 0, used_gpa = 0;
  uint16_t avail_idx = 0;  // next avail entry we write
  uint16_t used_seen = 0;  // used entries we have reaped
  uint16_t next_head = 0;  // heads are posted and come back in order (IN_ORDER)

  void post(uint16_t n) {
    for (uint16_t i = 0; i < n; i++) {
      avail->ring[avail_idx & (size - 1)] = next_head;
      next_head = uint16_t((next_head + 1) & (size - 1));
      avail_idx++;
    }
    __atomic_store_n(&avail->idx, avail_idx, __ATOMIC_RELEASE);
  }
  uint16_t reap() {
    const uint16_t u = __atomic_load_n(&used->idx, __ATOMIC_ACQUIRE);
    const uint16_t n = uint16_t(u - used_seen);
    used_seen = u;
    return n;
  }
  uint16_t in_flight() const { return uint16_t(avail_idx - used_seen); }
};

struct Guest {
  int fd = -1;
  uint64_t size = 0;
  uint8_t* host = nullptr;
  uint64_t next = 0;  // bump allocator, offset from the start
  std::shared_ptr<const GuestMemory> mem;

  explicit Guest(uint64_t bytes) : size(bytes) {
    fd = memfd_create("stages", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, off_t(bytes)) != 0) die("memfd");
    host = static_cast<uint8_t*>(mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
    if (host == MAP_FAILED) die("mmap");
    std::string err;
    mem = std::make_shared<const GuestMemory>()->with_region(dup(fd), kGuestBase, bytes,
                                                             reinterpret_cast<uint64_t>(host), 0, &err);
    if (!mem) die(err);
  }
  uint64_t alloc(uint64_t len, uint64_t align = 64) {
    next = (next + align - 1) / align * align;
    const uint64_t off = next;
    next += len;
    if (next > size) die("guest memory exhausted");
    return kGuestBase + off;
  }
  uint8_t* at(uint64_t gpa) { return host + (gpa - kGuestBase); }

  DriverRing ring(uint16_t qsize) {
    DriverRing r;
    r.size = qsize;
    r.desc_gpa = alloc(16ull * qsize, 16);
    r.avail_gpa = alloc(6 + 2ull * qsize, 2);
    r.used_gpa = alloc(6 + 8ull * qsize, 4096);
    r.desc = reinterpret_cast<vring_desc*>(at(r.desc_gpa));
    r.avail = reinterpret_cast<vring_avail*>(at(r.avail_gpa));
    r.used = reinterpret_cast<vring_used*>(at(r.used_gpa));
    return r;
  }
};

// Starts vring idx of dev on ring r (the user address of a byte is its host address here).
void start(VirtioNetDevice& dev, Guest& g, uint16_t idx, const DriverRing& r) {
  Vring& v = dev.vring(idx);
  v.setup.num = r.size;
  v.setup.desc_uaddr = reinterpret_cast<uint64_t>(g.at(r.desc_gpa));
  v.setup.avail_uaddr = reinterpret_cast<uint64_t>(g.at(r.avail_gpa));
  v.setup.used_uaddr = reinterpret_cast<uint64_t>(g.at(r.used_gpa));
  v.setup.base = 0;
  v.enabled = true;
  std::string err;
  if (!dev.start_vring(idx, &err)) die(err);
}

struct Stage {
  const char* name;
  uint64_t cycles = 0;
  uint64_t units = 0;  // packets (or chains, or bursts) the cycles were spent on
  void add(uint64_t c, uint64_t n) {
    cycles += c;
    units += n;
  }
};

double tsc_per_ns() {
  timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  const uint64_t t0 = __rdtsc();
  do clock_gettime(CLOCK_MONOTONIC, &b);
  while ((b.tv_sec - a.tv_sec) * 1000000000ll + (b.tv_nsec - a.tv_nsec) < 50000000);
  const uint64_t t1 = __rdtsc();
  return double(t1 - t0) / double((b.tv_sec - a.tv_sec) * 1000000000ll + (b.tv_nsec - a.tv_nsec));
}

// Two rings a hostile guest can build, at queue size qsize, each burst timed alone:
// - receive buffers (b's vring 0, MRG_RXBUF): descriptor i zero bytes long leading to i+1, the last one
//   byte; every head starts a chain of up to qsize descriptors that holds one byte, and a 64-byte frame
//   needs 76 bytes of them;
// - transmit chains (a's vring 1): as many chains of one-byte descriptors as fit, each max(qsize/32, 300)
//   long.
void hostile(uint32_t qsize) {
  const uint32_t rounds = 101;
  Guest g(64ull << 20);
  const uint64_t features = bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_RING_F_INDIRECT_DESC) | bit(VIRTIO_NET_F_MRG_RXBUF);
  CounterBlock block(8, 1);
  VirtioNetDevice a("a", 1, block, nullptr), b("b", 1, block, nullptr);
  for (VirtioNetDevice* d : {&a, &b}) {
    d->set_memory(g.mem);
    d->set_features(features);
  }
  DriverRing atx = g.ring(uint16_t(qsize)), brx = g.ring(uint16_t(qsize));
  const uint64_t byte = g.alloc(1);
  for (uint32_t i = 0; i < qsize; i++)
    brx.desc[i] = i + 1 < qsize ? vring_desc{byte, 0, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, uint16_t(i + 1)}
                                : vring_desc{byte, 1, VRING_DESC_F_WRITE, 0};
  const uint32_t len =
      std::max<uint32_t>(qsize / kBurst, 300) > qsize ? qsize : std::max<uint32_t>(qsize / kBurst, 300);
  const uint32_t chains = qsize / len;
  for (uint32_t i = 0; i < qsize; i++)
    atx.desc[i] = vring_desc{byte, 1, uint16_t((i + 1) % len ? VRING_DESC_F_NEXT : 0), uint16_t(i + 1)};
  start(a, g, 1, atx);
  start(b, g, 0, brx);
  brx.post(uint16_t(qsize));

  // A burst of ordinary 64-byte frames to offer b, from a ring of good buffers.
  Burst burst;
  std::vector<uint8_t> frames(kBurst * 64);
  for (uint16_t i = 0; i < kBurst; i++) {
    burst.span[i] = Span{frames.data() + 64 * i, 64, 0};
    burst.pkt[i] = PacketView{64, i, 1, 0, PacketMeta{}};
  }
  burst.n = kBurst;
  burst.nspans = kBurst;
  // The median burst: what the work costs; the longest adds whatever preempted us.
  std::vector<uint64_t> txs, rxs;
  for (uint32_t r = 0; r < rounds; r++) {
    const uint64_t t0 = __rdtsc();
    b.tx_burst(0, burst);
    txs.push_back(__rdtsc() - t0);
  }
  Burst got;
  for (uint32_t r = 0; r < rounds; r++) {
    // Post the chains again each round: the device returns (drops) what it took.
    for (uint32_t c = 0; c < chains; c++) {
      atx.avail->ring[atx.avail_idx & (qsize - 1)] = uint16_t(c * len);
      atx.avail_idx++;
    }
    __atomic_store_n(&atx.avail->idx, atx.avail_idx, __ATOMIC_RELEASE);
    for (uint32_t left = chains; left;) {
      const uint64_t t0 = __rdtsc();
      const uint16_t n = a.rx_burst(0, got);
      a.release(0, got);
      rxs.push_back(__rdtsc() - t0);
      const uint16_t done = atx.reap();
      if (!done && !n) break;
      left -= std::min<uint32_t>(left, done);
    }
  }
  const double us = tsc_per_ns() * 1000;
  const auto median = [](std::vector<uint64_t>& v) {
    std::sort(v.begin(), v.end());
    return double(v[v.size() / 2]);
  };
  const double tx_med = median(txs), rx_med = median(rxs);
  printf(
      "queue size %5u: tx_burst into zero-length receive chains %8.1f us (longest %8.1f); "
      "rx_burst + release of %u-descriptor transmit chains %8.1f us (longest %8.1f)\n",
      qsize, tx_med / us, double(txs.back()) / us, len, rx_med / us, double(rxs.back()) / us);
}

// A destination that copies every packet into a buffer of its own, taking the offloads it is told to.
class CopyPort : public Port {
 public:
  CopyPort(uint32_t offloads) : Port("copy"), offloads_(offloads), buf_(new uint8_t[kMaxFrame]) {}
  uint16_t queue_pairs() const override { return 1; }
  uint16_t rx_burst(uint16_t, Burst& b) override { return b.n = 0; }
  uint16_t tx_burst(uint16_t, const Burst& b) override {
    for (uint16_t i = 0; i < b.n; i++) {
      uint8_t* d = buf_.get();
      for (uint16_t s = 0; s < b.pkt[i].nseg; s++) {
        const Span& sp = b.span[b.pkt[i].first + s];
        memcpy(d, sp.p, sp.len);
        d += sp.len;
      }
    }
    packets += b.n;
    return b.n;
  }
  void release(uint16_t, Burst&) override {}
  void publish_counters() override {}
  uint32_t tx_offloads() const override { return offloads_; }
  QueueCounters* tx_counters(uint16_t) override { return &counters_; }
  uint64_t packets = 0;

 private:
  uint32_t offloads_;
  QueueCounters counters_;
  std::unique_ptr<uint8_t[]> buf_;
};

// Ethernet/IPv4/TCP with payload bytes after 54 bytes of headers, the TCP checksum left partial.
std::vector<uint8_t> tcp_frame(uint32_t payload) {
  std::vector<uint8_t> f(54 + payload);
  f[12] = 0x08;
  f[14] = 0x45;
  f[16] = uint8_t((40 + payload) >> 8);
  f[17] = uint8_t(40 + payload);
  f[23] = 6;
  f[46] = 0x50;
  for (uint32_t i = 0; i < payload; i++) f[54 + i] = uint8_t(i * 7);
  return f;
}

void offload_paths(uint32_t rounds) {
  constexpr uint32_t kPayload = 64000, kMss = 1448;
  std::vector<uint8_t> sf = tcp_frame(kPayload);
  const uint32_t nseg = (kPayload + kMss - 1) / kMss;
  std::vector<std::vector<uint8_t>> plain;
  for (uint32_t k = 0; k < nseg; k++) plain.push_back(tcp_frame(std::min(kMss, kPayload - k * kMss)));
  Burst super, small, partial;
  super.span[0] = Span{sf.data(), uint32_t(sf.size()), 0};
  super.pkt[0] = PacketView{uint32_t(sf.size()), 0, 1, 0, PacketMeta{}};
  super.pkt[0].meta.flags = PacketMeta::kCsumPartial;
  super.pkt[0].meta.gso_type = VIRTIO_NET_HDR_GSO_TCPV4;
  super.pkt[0].meta.gso_size = kMss;
  super.pkt[0].meta.hdr_len = 54;
  super.pkt[0].meta.csum_start = 34;
  super.pkt[0].meta.csum_offset = 16;
  super.n = super.nspans = 1;
  partial.span[0] = Span{plain[0].data(), uint32_t(plain[0].size()), 0};
  partial.pkt[0] = super.pkt[0];
  partial.pkt[0].len = uint32_t(plain[0].size());
  partial.pkt[0].meta.gso_type = 0;
  partial.n = partial.nspans = 1;
  CopyPort tso(kOffloadCsum | kOffloadTso4 | kOffloadTso6), none(0);
  Transmit tx;
  const double f = tsc_per_ns();
  const auto time = [&](const char* what, uint32_t per, auto&& once) {
    const uint64_t t0 = __rdtsc();
    for (uint32_t r = 0; r < rounds; r++) once();
    const double c = double(__rdtsc() - t0) / rounds;
    printf("%-64s %10.0f %10.1f   per %s\n", what, c, c / f, per == 1 ? "frame" : "64000 bytes of payload");
  };
  printf("offload paths toward a destination that copies what it is sent, %u rounds\n", rounds);
  printf("%-64s %10s %10s\n", "path", "cycles", "ns");
  time("a 64000-byte super-frame carried as it is (one copy)", 0, [&] { tx.send(tso, 0, super); });
  time("the same segmented in software (45 segments, checksums filled)", 0, [&] { tx.send(none, 0, super); });
  time("the same payload as 45 plain frames (what a stack without TSO sends)", 0, [&] {
    for (uint32_t k = 0; k < nseg; k += kBurst) {
      small.clear();
      for (uint32_t j = k; j < std::min(nseg, k + kBurst); j++) {
        small.span[small.nspans] = Span{plain[j].data(), uint32_t(plain[j].size()), 0};
        small.pkt[small.n++] = PacketView{uint32_t(plain[j].size()), small.nspans++, 1, 0, PacketMeta{}};
      }
      tx.send(none, 0, small);
    }
  });
  time("a 1502-byte partial checksum passed on", 1, [&] { tx.send(tso, 0, partial); });
  time("the same completed in software", 1, [&] { tx.send(none, 0, partial); });
}

}  // namespace

int main(int argc, char** argv) {
  uint32_t size = 64, bursts = 200000, qsize = 256;
  bool mrg = true, event_idx = false, bridged = false, shared = false;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    const uint32_t v = uint32_t(strtoul(argv[i + 1], nullptr, 10));
    if (k == "--hostile") {
      if (v < 64 || v > 32768 || (v & (v - 1))) die("--hostile takes a queue size, a power of two from 64 to 32768");
      hostile(v);
      return 0;
    }
    if (k == "--offloads") {
      offload_paths(std::max(v, 1u));
      return 0;
    }
    if (k == "--size")
      size = v;
    else if (k == "--bursts")
      bursts = v;
    else if (k == "--queue-size")
      qsize = v;
    else if (k == "--mrg")
      mrg = v;
    else if (k == "--event-idx")
      event_idx = v;
    else if (k == "--bridge")
      bridged = v;
    else if (k == "--shared")
      shared = v;
    else
      die("unknown option " + k);
  }
  if (size < 60 || size + kHdr > kRxBuf || qsize < 2 * kBurst || (qsize & (qsize - 1))) die("bad size or queue size");

  Guest g(64ull << 20);
  // What DPDK's virtio PMD negotiates with us, EVENT_IDX on request.
  const uint64_t features = bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_F_IN_ORDER) | bit(VIRTIO_RING_F_INDIRECT_DESC) |
                            (mrg ? bit(VIRTIO_NET_F_MRG_RXBUF) : 0) | (event_idx ? bit(VIRTIO_RING_F_EVENT_IDX) : 0);
  CounterBlock block(8, 1);
  VirtioNetDevice a("a", 1, block, nullptr), b("b", 1, block, nullptr);
  for (VirtioNetDevice* d : {&a, &b}) {
    d->set_memory(g.mem);
    d->set_features(features);
  }
  // a's transmit ring (vring 1) holds one header-and-frame buffer per descriptor, as DPDK's virtio PMD
  // posts them with IN_ORDER (the header pushed in front of the frame); b's receive ring (vring 0) holds
  // writable buffers.
  DriverRing atx = g.ring(uint16_t(qsize)), brx = g.ring(uint16_t(qsize));
  for (uint16_t i = 0; i < qsize; i++) {
    const uint64_t t = g.alloc(kHdr + size);
    memset(g.at(t), 0, kHdr);
    for (uint32_t k = 0; k < size; k++) g.at(t)[kHdr + k] = uint8_t(k);
    atx.desc[i] = vring_desc{t, kHdr + size, 0, 0};
    brx.desc[i] = vring_desc{g.alloc(kRxBuf), kRxBuf, VRING_DESC_F_WRITE, 0};
  }
  start(a, g, 1, atx);
  start(b, g, 0, brx);
  struct Runner final : PortRunner {
    uint32_t i;
    explicit Runner(uint32_t k) : i(k) {}
    uint32_t index() const override { return i; }
    void pause() override {}
    void resume() override {}
  } r0(0), r1(1);
  if (shared) b.set_runners({&r0, &r1});

  // The frames' bytes count up from 0: destination 00:01:02:03:04:05, source 06:07:08:09:0a:0b.
  Bridge br("br0", BridgeOptions{});
  Transmit via;
  if (bridged) {
    br.add_member(a, BridgePortConfig{});
    br.add_member(b, BridgePortConfig{});
    br.add_static(0, 0x000102030405ull, b);
  }
  Stage rx{"rx_burst (dequeue: pop, header check, spans)"},
      tx{bridged ? "bridge forward (learn, lookup, then b.tx_burst)"
                 : "tx_burst (enqueue: pop, header, copy, push, flush)"},
      rel{"release (push, flush)"}, pop{"  split ring pop, one chain"}, pushflush{"  split ring push x32 + flush"};
  Burst burst;
  uint64_t moved = 0;
  for (uint32_t it = 0; it < bursts; it++) {
    atx.post(uint16_t(kBurst - atx.in_flight()));
    brx.post(uint16_t(kBurst - brx.in_flight()));
    const uint64_t t0 = __rdtsc();
    const uint16_t n = a.rx_burst(0, burst);
    const uint64_t t1 = __rdtsc();
    uint16_t sent;
    if (bridged) {
      br.forward(a, 0, burst, via);
      sent = uint16_t(via.take_delivered());
    } else {
      sent = b.tx_burst(0, burst);
    }
    const uint64_t t2 = __rdtsc();
    a.release(0, burst);
    const uint64_t t3 = __rdtsc();
    rx.add(t1 - t0, n);
    tx.add(t2 - t1, sent);
    rel.add(t3 - t2, n);
    if (n != kBurst || sent != kBurst) die("a burst moved " + std::to_string(n) + "/" + std::to_string(sent));
    moved += sent;
    atx.reap();
    brx.reap();
  }

  // The ring primitives alone, on b's receive ring: pops of single-descriptor chains, then their return.
  SplitRing& vq = b.vring(0).vq;
  Span spans[kBurstSpans];
  for (uint32_t it = 0; it < bursts; it++) {
    brx.post(uint16_t(kBurst - brx.in_flight()));
    Chain ch[kBurst];
    QueueCounter why;
    const uint64_t t0 = __rdtsc();
    for (uint16_t i = 0; i < kBurst; i++)
      if (vq.pop(*g.mem, spans + i, 1, &ch[i], &why) != 1) die("pop");
    const uint64_t t1 = __rdtsc();
    for (uint16_t i = 0; i < kBurst; i++) vq.push(ch[i].head, 0);
    vq.flush();
    const uint64_t t2 = __rdtsc();
    pop.add(t1 - t0, kBurst);
    pushflush.add(t2 - t1, 1);
    brx.reap();
  }

  const double f = tsc_per_ns();
  printf("%u-byte frames, queue size %u, %s, %s, %u bursts of %u (%llu packets moved a -> b)\n", size, qsize,
         mrg ? "MRG_RXBUF" : "no MRG_RXBUF", event_idx ? "EVENT_IDX" : "no EVENT_IDX", bursts, kBurst,
         static_cast<unsigned long long>(moved));
  printf("%-52s %10s %10s\n", "stage", "cycles", "ns");
  double per_packet = 0;
  for (const Stage* s : {&rx, &tx, &rel}) {
    const double c = double(s->cycles) / double(s->units);
    per_packet += c;
    printf("%-52s %10.1f %10.2f   per packet\n", s->name, c, c / f);
  }
  printf("%-52s %10.1f %10.2f   per packet (%.1f Mpps on one core)\n", "one copy a -> b, all stages", per_packet,
         per_packet / f, 1000.0 * f / per_packet);
  const double pc = double(pop.cycles) / double(pop.units), pf = double(pushflush.cycles) / double(pushflush.units);
  printf("%-52s %10.1f %10.2f   per chain\n", pop.name, pc, pc / f);
  printf("%-52s %10.1f %10.2f   per burst\n", pushflush.name, pf, pf / f);
  return 0;
}
