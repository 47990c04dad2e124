#include "ports/vhost_user/virtio_net.h"

#include "core/clock.h"
#include "core/guest_fault.h"
#include "core/hex.h"
#include "core/offload.h"

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

namespace vw {

namespace {

constexpr uint64_t bit(unsigned b) { return uint64_t(1) << b; }

// Spans of guest receive buffers one packet may fill (all its chains together when merging).
constexpr uint32_t kTxSpans = 256;
// tx_burst gives back the chains of one packet, at most one per span.
static_assert(kTxSpans <= SplitRing::kMaxUnpop, "unpop must cover a packet's chains");

// A receive ring whose driver posts buffers but never kicks counts as ready this long after it first
// posted them (see tx_ready()).
constexpr uint64_t kReadyWithoutKickNs = 100 * 1000 * 1000;

// Whether fd (an eventfd) has been signalled; the count is left for whoever reads it.
bool signalled(int fd) {
  pollfd p{fd, POLLIN, 0};
  return fd >= 0 && poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

// Marks "no drop" where a QueueCounter names the drop reason.
constexpr QueueCounter kNoDrop = kQueueCounterCount;

// The legacy header without MRG_RXBUF lacks num_buffers, the last two bytes.
uint32_t net_hdr_len(uint64_t features) {
  return features & (bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_NET_F_MRG_RXBUF)) ? 12 : 10;
}

// Copies the first n bytes held by spans (which hold at least n) to dst.
void gather(const Span* s, void* dst, uint32_t n) {
  uint8_t* d = static_cast<uint8_t*>(dst);
  for (; n; s++) {
    const uint32_t c = std::min(n, s->len);
    memcpy(d, s->p, c);
    d += c;
    n -= c;
  }
}

// Writes a byte stream into consecutive spans that the caller made sure are large enough. The source
// may overlap the destination: a guest can offer the same memory for transmit and receive (or two
// ports can share memory), and memcpy over overlapping ranges is undefined; memmove costs the same here.
struct SpanWriter {
  const Span* s;
  uint32_t off = 0;
  void write(const void* src, uint32_t n) {
    const uint8_t* from = static_cast<const uint8_t*>(src);
    while (n) {
      const uint32_t c = std::min(n, s->len - off);
      memmove(s->p + off, from, c);
      from += c;
      n -= c;
      off += c;
      if (off == s->len) {
        s++;
        off = 0;
      }
    }
  }
};

// Whether a guest's transmit header asks for offloads, by flags and gso_type, its first two bytes: a
// plain frame (nearly all without offloads) costs no more than this look.
inline bool asks_offloads(const uint8_t fg[2]) {
  return fg[1] != VIRTIO_NET_HDR_GSO_NONE || (fg[0] & VIRTIO_NET_HDR_F_NEEDS_CSUM);
}

// Reads the offload fields of the header at the start of spans s (the first 10 bytes; num_buffers means
// nothing on transmit) into *meta, for a frame of frame_len bytes after it: kNoDrop when the frame may go
// on, else the drop reason. The fields are copied once and only that copy is looked at: the guest may
// change them while we look. Out of line: the rare case, kept out of the burst loops' registers.
[[gnu::noinline]] QueueCounter read_offload_fields(const Span* s, uint32_t frame_len, uint32_t allowed,
                                                   PacketMeta* meta) {
  virtio_net_hdr_mrg_rxbuf h;
  if (s->len >= 10)
    memcpy(&h, s->p, 10);
  else
    gather(s, &h, 10);
  return read_offloads(h, frame_len, allowed, meta);
}

// Writes the virtio-net header of a packet going to the guest into d (hdr_len bytes: 12, or 10 without
// num_buffers). The offloads the packet still carries are ones the guest accepted (Transmit sent it
// through OffloadFallback otherwise): its header says what is left to do. A plain frame, nearly every
// one, is two fixed stores.
inline void write_net_header(uint8_t* d, const PacketMeta& m, uint16_t num_buffers, uint32_t hdr_len,
                             uint32_t* super_frames) {
  if (__builtin_expect(!(m.flags & PacketMeta::kCsumPartial) && !m.gso_type, 1)) {
    const uint64_t zero = 0;
    memcpy(d, &zero, 8);
    if (hdr_len == sizeof(virtio_net_hdr_mrg_rxbuf)) {
      const uint32_t tail = uint32_t(num_buffers) << 16;  // csum_offset 0, num_buffers
      memcpy(d + 8, &tail, 4);
    } else {
      memset(d + 8, 0, 2);
    }
    return;
  }
  virtio_net_hdr_mrg_rxbuf h = {};
  h.num_buffers = num_buffers;
  if (m.flags & PacketMeta::kCsumPartial) {
    h.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
    h.csum_start = m.csum_start;
    h.csum_offset = m.csum_offset;
  }
  if (m.gso_type) {
    h.gso_type = m.gso_type;
    h.gso_size = m.gso_size;
    h.hdr_len = m.hdr_len;
    ++*super_frames;
  }
  memcpy(d, &h, hdr_len);
}

// An eventfd write; a failure (the counter at its maximum) loses nothing the reader would not see anyway.
bool signal_fd(int fd) {
  const uint64_t one = 1;
  return write(fd, &one, sizeof one) == sizeof one;
}

}  // namespace

bool VirtioNetDevice::attach(uint16_t idx, std::string* err) {
  Vring& r = vrings_[idx];
  const GuestMemory& mem = *mem_;
  const VringSetup& setup = r.setup;
  const uint64_t n = setup.num;
  const std::string num = std::to_string(n);
  struct {
    const char* what;
    uint64_t uaddr, len;
    std::string size;
    void* host;
  } part[3] = {
      {"descriptor table", setup.desc_uaddr, 16 * n, "16*" + num, nullptr},
      {"avail ring", setup.avail_uaddr, 6 + 2 * n, "6+2*" + num, nullptr},
      {"used ring", setup.used_uaddr, 6 + 8 * n, "6+8*" + num, nullptr},
  };
  const std::string name = "vring " + std::to_string(idx) + ": ";
  for (auto& p : part) {
    p.host = mem.uva_to_host(p.uaddr, p.len);
    if (!p.host) {
      if (err) *err = name + p.what + " at " + hex(p.uaddr) + " (" + p.size + " bytes) is not inside guest memory";
      return false;
    }
  }
  const char* why = nullptr;
  // Even vrings are the guest's receive queues: the device writes their buffers.
  if (!r.vq.attach(setup.num, part[0].host, part[1].host, part[2].host, idx % 2 == 0, &why)) {
    if (err) *err = name + why;
    return false;
  }
  r.vq.set_features(features_ & bit(VIRTIO_RING_F_EVENT_IDX), features_ & bit(VIRTIO_RING_F_INDIRECT_DESC));
  return true;
}

void VirtioNetDevice::flush(Vring& r, QueueCounters& c) {
  bool saved = false;
  if (r.vq.flush(&saved) && r.call >= 0 && signal_fd(r.call)) c.add(GUEST_NOTIFICATIONS);
  if (saved) c.add(GUEST_NOTIFICATIONS_SAVED);
}

VirtioNetDevice::VirtioNetDevice(std::string name, uint16_t queue_pairs, CounterBlock& counters, EventSink events)
    : Port(std::move(name)),
      queue_pairs_(std::min(queue_pairs, kMaxQueuePairs)),
      sets_(counters, queue_pairs_),
      events_(std::move(events)),
      vrings_(new Vring[2 * queue_pairs_]) {
  for (uint16_t qp = 0; qp < queue_pairs_; qp++) counters_[qp].shared = sets_.set(qp);
}

VirtioNetDevice::~VirtioNetDevice() = default;

void VirtioNetDevice::set_memory(std::shared_ptr<const GuestMemory> mem) {
  mem_ = std::move(mem);
  poisoned_.store(false, std::memory_order_relaxed);
  if (!mem_) return;
  // The old table may be unmapped as soon as nobody holds it: running rings must point into the new one.
  for (uint16_t idx = 0; idx < 2 * queue_pairs_; idx++) {
    Vring& r = vrings_[idx];
    if (r.started && !r.broken && !attach(idx, nullptr)) ring_broken(idx, INVALID_BAD_ADDRESS);
  }
}

void VirtioNetDevice::set_features(uint64_t features) {
  features_ = features;
  from_guest_ = offloads_from_guest(features);
  to_guest_ = offloads_to_guest(features);
  for (uint16_t idx = 0; idx < 2 * queue_pairs_; idx++)
    vrings_[idx].vq.set_features(features & bit(VIRTIO_RING_F_EVENT_IDX), features & bit(VIRTIO_RING_F_INDIRECT_DESC));
}

bool VirtioNetDevice::start_vring(uint16_t idx, std::string* err) {
  if (idx >= 2 * queue_pairs_) {
    if (err)
      *err = "vring " + std::to_string(idx) + ": the port has only " + std::to_string(2 * queue_pairs_) + " vrings";
    return false;
  }
  if (!mem_) {
    if (err) *err = "vring " + std::to_string(idx) + ": started before any memory table";
    return false;
  }
  Vring& r = vrings_[idx];
  r.started = false;
  if (!attach(idx, err)) return false;
  // start() reads and writes the used ring: the front end may have truncated the memory behind it.
  if (!guest_access([&r] { r.vq.start(r.setup.base); })) {
    if (err) *err = "vring " + std::to_string(idx) + ": its rings lie in guest memory the front end has truncated";
    return false;
  }
  r.started = true;
  r.broken = false;
  r.primed_ns = 0;
  r.ready = false;
  return true;
}

void VirtioNetDevice::stop_vring(uint16_t idx) {
  if (idx >= 2 * queue_pairs_) return;
  Vring& r = vrings_[idx];
  r.started = false;
  r.setup.base = r.vq.last_avail();
}

void VirtioNetDevice::reset() {
  for (uint16_t idx = 0; idx < 2 * queue_pairs_; idx++) {
    Vring& r = vrings_[idx];
    r.setup = VringSetup();
    r.has_addr = r.started = r.enabled = r.broken = false;
    r.kick = r.call = r.err = -1;
  }
  mem_.reset();
  poisoned_.store(false, std::memory_order_relaxed);
  set_features(0);
}

void VirtioNetDevice::ring_broken(uint16_t idx, QueueCounter reason) {
  Vring& r = vrings_[idx];
  r.broken = true;
  // An odd vring is a receive queue, counted by the one PMD serving it; an even one by whoever fills it.
  QueueCounters& c = idx % 2 ? counters_[idx / 2] : tx_counters_of(uint16_t(idx / 2));
  c.add(reason);
  c.add(RINGS_BROKEN);
  // Whoever reacts to the event reads the counters next; they must already say why.
  c.publish();
  if (events_) events_(PortEvent{"ring-broken", name(), int(idx), invalid_reason(reason)});
  if (r.err >= 0) signal_fd(r.err);
}

uint16_t VirtioNetDevice::rx_burst(uint16_t qp, Burst& b) {
  b.clear();
  if (qp >= queue_pairs_ || !mem_) return 0;
  const uint16_t idx = uint16_t(2 * qp + 1);
  Vring& r = vrings_[idx];
  if (!r.served()) return 0;
  if (shared_ && poisoned_.load(std::memory_order_relaxed)) {
    ring_broken(idx, INVALID_MEMORY_GONE);
    return 0;
  }
  const GuestMemory& mem = *mem_;
  QueueCounters& c = counters_[qp];
  const uint32_t hdr_len = net_hdr_len(features_);

  // Two passes, as in tx_burst: the first takes the chains (descriptor reads only) and asks for the line
  // holding each packet's header, which the guest's core wrote last; the second reads the headers, which
  // by then have arrived together instead of one after another.
  struct Taken {
    Chain ch;
    uint16_t first;  // where its spans start in b.span
  };
  Taken taken[kBurst];
  uint16_t ntaken = 0;
  uint32_t descriptors = 0;
  uint64_t bytes = 0;
  uint32_t super_frames = 0;
  bool dropped = false;

  // The common chain first, taken in one pass (pop_simple): one descriptor holding the header and a frame
  // of a size we forward, as DPDK's virtio PMD posts with the header pushed in front of the frame. Its
  // header's line is asked for before any header is read. A chain it leaves (several descriptors, an
  // indirect table, the wrong size, a broken rule) goes through the general path below.
  SimpleChain got[kBurst];
  const uint16_t fast = r.vq.pop_simple(mem, kBurst, hdr_len + 1, hdr_len + kMaxFrame, got);
  for (uint16_t k = 0; k < fast; k++) __builtin_prefetch(got[k].p);
  bool stop = false;  // a dropped chain was given back with the rest: the burst ends here
  // The burst's counts in locals: the views' 16-bit fields could alias them, so the compiler would
  // reload them after every store.
  uint16_t npkts = 0, nspans = 0;
  for (uint16_t k = 0; k < fast; k++) {
    const SimpleChain& ch = got[k];
    PacketMeta meta{};
    uint8_t fg[2];
    memcpy(fg, ch.p, 2);
    QueueCounter why = kNoDrop;
    if (asks_offloads(fg)) {
      const Span whole{ch.p, ch.len, ch.gpa};
      why = read_offload_fields(&whole, ch.len - hdr_len, from_guest_, &meta);
    }
    if (why != kNoDrop) {
      // Given back in order, as below.
      if (npkts) {
        r.vq.unpop(uint16_t(fast - k));
        stop = true;
        break;
      }
      c.add(why);
      r.vq.push(ch.head, 0);
      dropped = true;
      ntaken++;
      continue;
    }
    b.span[nspans] = Span{ch.p + hdr_len, ch.len - hdr_len, ch.gpa + hdr_len};
    PacketView& p = b.pkt[npkts++];
    p.len = ch.len - hdr_len;
    p.first = nspans++;
    p.nseg = 1;
    p.cookie = ch.head;
    p.meta = meta;
    super_frames += meta.gso_type != 0;
    bytes += p.len;
    c.add(RX_SIZE_64 + size_bin(p.len));
    ntaken++;
  }
  b.n = npkts;
  b.nspans = nspans;
  descriptors = ntaken;
  // The general path fills the rest of the burst: taken[] holds only its own chains.
  const uint16_t first_general = ntaken;
  if (!stop && ntaken < kBurst) r.vq.prefetch(uint16_t(kBurst - ntaken));
  while (!stop && ntaken < kBurst) {
    // Dropped chains count against the burst too, so a ring full of bad chains costs one burst per call.
    if (descriptors + kChainBudget > kBurstBudget) {
      c.add(BUDGET_CUTS_BURST);
      break;
    }
    Taken& t = taken[ntaken - first_general];
    QueueCounter why;
    const int rc = r.vq.pop(mem, b.span + b.nspans, uint32_t(kBurstSpans - b.nspans), &t.ch, &why);
    if (rc == 0) break;
    if (rc < 0) {
      ring_broken(idx, why);
      break;
    }
    descriptors += t.ch.descriptors;
    t.first = b.nspans;
    // A cut chain is dropped whatever its header says: its spans need no room.
    if (!t.ch.truncated) {
      if (t.ch.nspans) __builtin_prefetch(b.span[b.nspans].p);
      b.nspans = uint16_t(b.nspans + t.ch.nspans);
    }
    ntaken++;
  }

  for (uint16_t k = 0; k < ntaken - first_general; k++) {
    const Chain& ch = taken[k].ch;
    Span* s = b.span + taken[k].first;
    QueueCounter drop = kNoDrop;
    PacketMeta meta{};
    if (ch.over_budget) {
      drop = DROP_RX_TOO_MANY_DESCRIPTORS;
    } else if (ch.truncated) {
      drop = DROP_RX_TOO_MANY_SEGMENTS;
    } else if (ch.len <= hdr_len) {
      // Shorter than the header, or a header with no frame after it: nothing to forward.
      drop = DROP_RX_BAD_HEADER;
    } else if (ch.len - hdr_len > kMaxFrame) {
      drop = DROP_RX_TOO_BIG;
    } else {
      uint8_t fg[2];
      if (s->len >= 2)
        memcpy(fg, s->p, 2);
      else
        gather(s, fg, 2);
      if (asks_offloads(fg)) drop = read_offload_fields(s, uint32_t(ch.len - hdr_len), from_guest_, &meta);
    }
    if (drop != kNoDrop) {
      // Chains go back in the order they came (IN_ORDER): with packets of this burst still lent, the
      // dropped chain and those after it wait for the next burst, which starts with them. A chain cut at
      // the budget is counted when it is dropped, not each time it is given back.
      if (b.n) {
        r.vq.unpop(uint16_t(ntaken - first_general - k));
        break;
      }
      c.add(drop);
      if (ch.over_budget) c.add(BUDGET_CUTS_CHAIN);
      r.vq.push(ch.head, 0);
      dropped = true;
      continue;
    }

    // The frame starts after the header, which may end inside a span or cover several.
    uint32_t nseg = ch.nspans;
    if (s->len > hdr_len) {
      s->p += hdr_len;
      s->gpa += hdr_len;
      s->len -= hdr_len;
    } else {
      uint32_t j = 0, skip = hdr_len;
      while (skip && skip >= s[j].len) skip -= s[j++].len;
      if (skip) {
        s[j].p += skip;
        s[j].gpa += skip;
        s[j].len -= skip;
      }
      nseg -= j;
      memmove(s, s + j, nseg * sizeof(Span));
    }
    PacketView& p = b.pkt[b.n++];
    p.len = uint32_t(ch.len - hdr_len);
    p.first = taken[k].first;
    p.nseg = uint16_t(nseg);
    p.cookie = ch.head;
    p.meta = meta;
    super_frames += meta.gso_type != 0;
    bytes += p.len;
    c.add(RX_SIZE_64 + size_bin(p.len));
  }
  c.raise(LONGEST_BURST_DESCRIPTORS, descriptors);
  c.set(RING_FILL_RX, r.vq.waiting());
  c.add(RX_PACKETS, b.n);
  c.add(RX_BYTES, bytes);
  c.add(RX_SUPER_FRAMES, super_frames);
  // With packets borrowed, release() publishes the dropped chains together with them.
  if (dropped && b.n == 0) flush(r, c);
  return b.n;
}

void VirtioNetDevice::release(uint16_t qp, Burst& b) {
  if (qp >= queue_pairs_ || !mem_) return;
  Vring& r = vrings_[2 * qp + 1];
  // A ring that broke during the burst still gets back the chains validated before it broke.
  if (!r.started) return;
  r.vq.push_n(b.n, [&b](uint32_t i) { return vring_used_elem{b.pkt[i].cookie, 0}; });
  flush(r, counters_[qp]);
}

int VirtioNetDevice::tx_ring(uint16_t qp) const {
  if (!mem_) return -1;
  if (qp < queue_pairs_ && vrings_[2 * qp].served()) return 2 * qp;
  for (uint16_t q = 0; q < queue_pairs_; q++)
    if (vrings_[2 * q].served()) return 2 * q;
  return -1;
}

uint16_t VirtioNetDevice::tx_burst(uint16_t qp, const Burst& b) {
  if (b.n == 0) return 0;
  const int idx = tx_ring(qp);
  if (idx < 0) {
    tx_counters_of(qp < queue_pairs_ ? qp : 0).add(DROP_TX_NOT_READY, b.n);
    return 0;
  }
  if (!shared_) return fill(idx, b);
  QueueLock& l = tx_locks_[idx / 2];
  l.lock();
  // Another PMD may have broken the ring, or found the memory gone, since tx_ring() looked.
  uint16_t n = 0;
  if (poisoned_.load(std::memory_order_relaxed) && !vrings_[idx].broken)
    ring_broken(uint16_t(idx), INVALID_MEMORY_GONE);
  if (vrings_[idx].served())
    n = fill(idx, b);
  else
    tx_counters_of(uint16_t(idx / 2)).add(DROP_TX_NOT_READY, b.n);
  l.unlock();
  return n;
}

uint16_t VirtioNetDevice::fill(int idx, const Burst& b) {
  Vring& r = vrings_[idx];
  const GuestMemory& mem = *mem_;
  QueueCounters& c = tx_counters_of(uint16_t(idx / 2));
  OpenTx& open = tx_open_[idx / 2];
  const bool merge = features_ & bit(VIRTIO_NET_F_MRG_RXBUF);
  const uint32_t hdr_len = net_hdr_len(features_);

  // Two passes over the burst. The first takes the chains each packet needs (descriptor reads only) and
  // asks for the first line of every destination buffer; the second copies and returns the chains, in
  // order. The guest's core wrote those buffers' lines last (it refilled them), so each costs an
  // ownership transfer; taken one packet at a time they serialize (64-byte enqueue sat at about 4 Mpps,
  // the PMD busy in tx_burst), asked for together they overlap.
  struct Piece {
    uint16_t head;
    uint32_t cap;
  };
  struct Planned {
    uint16_t pkt;
    uint16_t first_piece, npieces;
    uint16_t first_span;
    uint32_t need;
  };
  Piece pieces[kTxSpans];
  Span spans[kTxSpans];
  Planned plan[kBurst];
  // Kept here and added to the queue's counters once, at the end.
  uint32_t sent = 0, too_big = 0, no_buffer = 0, over_budget = 0, chain_cuts = 0, super_frames = 0;
  uint64_t bytes = 0;
  uint32_t descriptors = 0;
  // A packet of at least `unfit` bytes (with header) found no room in the chains the ring offers now, for
  // the reason `unfit_why`; until a packet is placed (and the ring's head moves) those chains are not read
  // again for packets that large. Without it, each packet of a burst would walk the same chains again.
  uint64_t unfit = UINT64_MAX;
  uint32_t* unfit_why = &too_big;
  uint16_t i = 0;
  bool stop = false;  // the ring ran dry, broke or used up the burst's budget: nothing more goes in

  // The common burst, recognised once: every packet in one span and no larger than a frame may be, and the
  // ring's next chains single buffers that each hold the largest of them, as drivers post receive buffers.
  // Those chains are taken in one pass (pop_simple), the packets copied in a second, with none of the
  // general path's per-packet planning. Whatever it leaves (a packet in pieces, a chain of several
  // descriptors or one too small, merged buffers, an empty or broken ring) goes through the general path
  // below, from the first packet it did not place.
  uint32_t longest = 0;
  bool one_span = true;
  for (uint16_t k = 0; k < b.n; k++) {
    one_span &= b.pkt[k].nseg == 1;
    longest = std::max(longest, b.pkt[k].len);
  }
  if (one_span && longest <= kMaxFrame) {
    SimpleChain got[kBurst];
    const uint16_t n = r.vq.pop_simple(mem, b.n, hdr_len + longest, UINT32_MAX, got);
    // Each destination's first line and each source's, asked for together before the copies (see above).
    for (uint16_t k = 0; k < n; k++) {
      __builtin_prefetch(got[k].p, 1);
      __builtin_prefetch(b.span[b.pkt[k].first].p);
    }
    for (uint16_t k = 0; k < n; k++) {
      const PacketView& p = b.pkt[k];
      open = {idx, uint32_t(n - k)};
      uint8_t* d = got[k].p;
      write_net_header(d, p.meta, 1, hdr_len, &super_frames);
      memmove(d + hdr_len, b.span[p.first].p, p.len);
      r.vq.push(got[k].head, hdr_len + p.len);
      bytes += p.len;
      c.add(TX_SIZE_64 + size_bin(p.len));
    }
    open.idx = -1;
    descriptors = n;
    sent = n;
    i = n;
  }

  if (i < b.n) r.vq.prefetch(uint16_t(b.n - i));
  while (i < b.n && !stop) {
    uint32_t np = 0, ns = 0;  // pieces and spans taken in this round
    uint16_t nplan = 0;
    for (; i < b.n; i++) {
      const PacketView& p = b.pkt[i];
      const uint64_t need = hdr_len + uint64_t(p.len);
      if (p.len > kMaxFrame) {
        too_big++;
        continue;
      }
      if (need >= unfit) {
        (*unfit_why)++;
        continue;
      }
      const uint32_t p0 = np, s0 = ns;
      uint64_t cap = 0;
      enum { kPlaced, kEmpty, kTooSmall, kNoRoom, kBudget, kBroken } got = kPlaced;
      QueueCounter why;
      while (cap < need) {
        if (np == kTxSpans || ns == kTxSpans) {
          got = kNoRoom;
          break;
        }
        if (descriptors + kChainBudget > kBurstBudget) {
          got = kBudget;
          break;
        }
        Chain ch;
        const int rc = r.vq.pop(mem, spans + ns, kTxSpans - ns, &ch, &why);
        if (rc <= 0) {
          got = rc < 0 ? kBroken : kEmpty;
          break;
        }
        descriptors += ch.descriptors;
        chain_cuts += ch.over_budget;
        pieces[np++] = Piece{ch.head, uint32_t(std::min<uint64_t>(ch.len, UINT32_MAX))};
        if (ch.nspans) __builtin_prefetch(spans[ns].p, 1);
        ns += ch.nspans;
        cap += ch.len;
        if (!merge && cap < need) {
          got = kTooSmall;
          break;
        }
      }
      if (got == kPlaced) {
        if (p.nseg) __builtin_prefetch(b.span[p.first].p);
        plan[nplan++] = Planned{i, uint16_t(p0), uint16_t(np - p0), uint16_t(s0), uint32_t(need)};
        unfit = UINT64_MAX;
        continue;
      }
      // Chains we did not fill go back to the ring for the packets after this one.
      r.vq.unpop(uint16_t(np - p0));
      np = p0;
      ns = s0;
      if (got == kBroken) {
        ring_broken(uint16_t(idx), why);
        stop = true;
        break;
      }
      if (got == kBudget) {
        c.add(BUDGET_CUTS_BURST);
        over_budget += b.n - i;
        i = b.n;
        stop = true;
        break;
      }
      // Out of room because of the packets planned before it: copy those, then try it again.
      if (got == kNoRoom && p0 > 0) break;
      if (got == kEmpty && cap == 0) {
        // The ring is empty: so it is for the rest of the burst.
        no_buffer += b.n - i;
        i = b.n;
        stop = true;
        break;
      }
      unfit = need;
      unfit_why = got == kEmpty ? &no_buffer : &too_big;
      (*unfit_why)++;
    }

    for (uint16_t k = 0; k < nplan; k++) {
      const Planned& pl = plan[k];
      const PacketView& p = b.pkt[pl.pkt];
      // From here the source's memory is read: a fault there leaves the chains of this packet and of
      // those planned after it to abort_tx().
      open = {idx, np - pl.first_piece};
      const Span& d = spans[pl.first_span];
      if (p.nseg == 1 && d.len >= pl.need) {
        // One source span into one buffer: the header written in place, the copy a memmove (the source
        // may overlap the destination: a guest can offer the same memory for transmit and receive, or two
        // ports share it).
        write_net_header(d.p, p.meta, pl.npieces, hdr_len, &super_frames);
        memmove(d.p + hdr_len, b.span[p.first].p, p.len);
      } else {
        uint8_t h[sizeof(virtio_net_hdr_mrg_rxbuf)];
        write_net_header(h, p.meta, pl.npieces, hdr_len, &super_frames);
        SpanWriter w{&d};
        w.write(h, hdr_len);
        uint32_t left = p.len;
        for (uint16_t s = p.first; left && s < p.first + p.nseg; s++) {
          const uint32_t l = std::min(b.span[s].len, left);
          w.write(b.span[s].p, l);
          left -= l;
        }
      }
      // Chains were filled in order, so each holds its capacity until the bytes run out.
      uint32_t rest = pl.need;
      for (uint32_t q = pl.first_piece; q < uint32_t(pl.first_piece) + pl.npieces; q++) {
        const uint32_t l = std::min(pieces[q].cap, rest);
        r.vq.push(pieces[q].head, l);
        rest -= l;
      }
      sent++;
      bytes += p.len;
      c.add(TX_SIZE_64 + size_bin(p.len));
    }
    open.idx = -1;
  }
  c.raise(LONGEST_BURST_DESCRIPTORS, descriptors);
  c.set(RING_FILL_TX, r.vq.waiting());
  c.add(TX_PACKETS, sent);
  c.add(TX_BYTES, bytes);
  c.add(TX_SUPER_FRAMES, super_frames);
  c.add(DROP_TX_TOO_BIG, too_big);
  c.add(DROP_TX_NO_BUFFER, no_buffer);
  c.add(DROP_TX_BUDGET, over_budget);
  c.add(BUDGET_CUTS_CHAIN, chain_cuts);
  // A broken ring ends the burst: the packets after it were never offered to the ring.
  if (i < b.n) c.add(DROP_TX_NOT_READY, b.n - i);
  flush(r, c);
  return uint16_t(sent);
}

void VirtioNetDevice::abort_tx(uint16_t) {
  // The one open packet is the calling thread's: with one runner there is only one; with several, the
  // ring it holds locked.
  for (uint16_t q = 0; q < queue_pairs_; q++) {
    OpenTx& open = tx_open_[q];
    if (open.idx < 0 || (shared_ && !tx_locks_[q].held_here())) continue;
    Vring& r = vrings_[open.idx];
    open.idx = -1;
    r.vq.unpop(uint16_t(open.npieces));
    // The packets copied before the fault were pushed: the guest gets them.
    flush(r, tx_counters_of(q));
    if (shared_) tx_locks_[q].unlock();
  }
}

bool VirtioNetDevice::owns(const void* addr) const { return mem_ && mem_->contains(addr); }

void VirtioNetDevice::memory_fault() {
  if (shared_) {
    // Other PMDs may be in the middle of bursts on the other rings: each stops its own when it next
    // touches it.
    poisoned_.store(true, std::memory_order_relaxed);
    release_held_rings();
    return;
  }
  for (OpenTx& open : tx_open_) open.idx = -1;
  for (uint16_t idx = 0; idx < 2 * queue_pairs_; idx++)
    if (vrings_[idx].started && !vrings_[idx].broken) ring_broken(idx, INVALID_MEMORY_GONE);
}

void VirtioNetDevice::release_held_rings() {
  for (uint16_t q = 0; q < queue_pairs_; q++) {
    if (!tx_locks_[q].held_here()) continue;
    tx_open_[q].idx = -1;
    const uint16_t idx = uint16_t(2 * q);
    if (vrings_[idx].started && !vrings_[idx].broken) ring_broken(idx, INVALID_MEMORY_GONE);
    tx_locks_[q].unlock();
  }
}

void VirtioNetDevice::runners_changed() {
  shared_ = runners().size() > 1;
  if (shared_) pmd_tx_.add_runners(runners(), sets_, queue_pairs_);
}

// A driver may post its receive buffers and then reclaim whatever arrived in them before it starts
// reading: DPDK's virtio PMD refills its receive rings at device start, then flushes the used ring, then
// kicks. Packets a source sends into that window are lost inside the guest, unseen by any counter of
// ours. So a receive ring is ready once it has buffers and the driver has kicked it; a driver that
// never kicks its receive ring (notifications suppressed) gets kReadyWithoutKickNs instead.
bool VirtioNetDevice::tx_ready() {
  if (!mem_) return false;
  for (uint16_t qp = 0; qp < queue_pairs_; qp++) {
    Vring& r = vrings_[2 * qp];
    if (!r.served()) continue;
    if (r.ready) return true;
    if (!r.vq.primed()) continue;
    const uint64_t now = now_ns();
    if (!r.primed_ns) r.primed_ns = now;
    if (signalled(r.kick) || now - r.primed_ns >= kReadyWithoutKickNs) {
      r.ready = true;
      return true;
    }
  }
  return false;
}

constexpr uint32_t kAllQueues = (1u << kMaxQueuePairs) - 1;

void VirtioNetDevice::publish_counters() { publish_queues(kAllQueues); }

void VirtioNetDevice::publish_queues(uint32_t qmask) {
  for (uint16_t qp = 0; qp < queue_pairs_; qp++)
    if (qmask & (1u << qp)) counters_[qp].publish();
  if (shared_) pmd_tx_.publish_mine();
}

bool VirtioNetDevice::arm_wakeup(std::vector<pollfd>& fds) { return arm_queues(kAllQueues, fds); }

bool VirtioNetDevice::arm_queues(uint32_t qmask, std::vector<pollfd>& fds) {
  if (!mem_) return true;
  for (uint16_t qp = 0; qp < queue_pairs_; qp++) {
    if (!(qmask & (1u << qp))) continue;
    Vring& r = vrings_[2 * qp + 1];
    if (!r.served()) continue;
    if (r.vq.enable_notify()) return false;
    if (r.kick >= 0) fds.push_back(pollfd{r.kick, POLLIN, 0});
  }
  return true;
}

void VirtioNetDevice::disarm_wakeup() { disarm_queues(kAllQueues); }

void VirtioNetDevice::disarm_queues(uint32_t qmask) {
  if (!mem_) return;
  pollfd pfd[kMaxQueuePairs];
  uint16_t owner[kMaxQueuePairs];
  nfds_t n = 0;
  for (uint16_t qp = 0; qp < queue_pairs_; qp++) {
    if (!(qmask & (1u << qp))) continue;
    Vring& r = vrings_[2 * qp + 1];
    if (!r.served()) continue;
    r.vq.disable_notify();
    if (r.kick >= 0) {
      pfd[n] = pollfd{r.kick, POLLIN, 0};
      owner[n++] = qp;
    }
  }
  // The kick fds may be blocking: read only those poll says are readable.
  if (n == 0 || poll(pfd, n, 0) <= 0) return;
  for (nfds_t k = 0; k < n; k++) {
    uint64_t v;
    if ((pfd[k].revents & POLLIN) && read(pfd[k].fd, &v, sizeof v) == sizeof v) counters_[owner[k]].add(GUEST_KICKS, v);
  }
}

}  // namespace vw
