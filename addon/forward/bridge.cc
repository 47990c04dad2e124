#include "forward/bridge.h"

#include <algorithm>
#include <cstring>

namespace vw {

namespace {
constexpr uint32_t kEthHeader = 14;
constexpr uint32_t kTagLen = 4;
constexpr uint32_t kMacsLen = 12;
constexpr uint16_t kTpid8021Q = 0x8100;
// Slots one aging step examines: a few hundred nanoseconds at most. Steps are spaced in time, not run
// every PMD iteration: streaming through the table each iteration evicted the rings' and buffers' cache
// lines and cost the bridge a quarter of the wire's rate, at 1518 bytes as at 64. A whole pass takes a
// quarter of the ageing time (at most kAgePassMaxNs), so an entry goes at most that late.
constexpr uint32_t kAgeSlotsPerTick = 32;
constexpr uint64_t kAgePassMaxNs = 10'000'000'000ull;

// The MAC at p as a number, first byte most significant. Reads 8 bytes: both MACs of a 14-byte Ethernet
// header have that many behind them, and one load beats six.
uint64_t mac_at(const uint8_t* p) {
  uint64_t m;
  memcpy(&m, p, sizeof m);
  return __builtin_bswap64(m) >> 16;
}

// Whether a frame of bridge VLAN vlan leaves port c tagged. VLAN 0 is the untagged segment of VLAN-unaware
// ports: frames cross it as they came.
bool leaves_tagged(const BridgePortConfig& c, uint16_t vlan, bool came_tagged) {
  return vlan ? c.is_trunk && vlan != c.native : came_tagged;
}

// The first packet from `from` on whose first 16 bytes (both MACs and the tag or the start of the payload,
// all in its first span) are not w0 and w1: where a run of one flow ends. b.n when it does not.
uint16_t run_end(const Burst& b, uint16_t from, uint64_t w0, uint64_t w1) {
  uint16_t i = from;
  for (; i < b.n; i++) {
    const PacketView& p = b.pkt[i];
    if (!p.nseg || p.len < kEthHeader + kTagLen || b.span[p.first].len < kEthHeader + kTagLen) break;
    uint64_t a, c;
    memcpy(&a, b.span[p.first].p, 8);
    memcpy(&c, b.span[p.first].p + 8, 8);
    if (a != w0 || c != w1) break;
  }
  return i;
}

}  // namespace

Bridge::Bridge(std::string name, const BridgeOptions& o)
    : Forwarder(std::move(name)), opts_(o), fdb_(o.max_macs, o.max_macs_per_port, o.ageing_s * 1000000000ull) {
  vlan_row_.fill(kNoVlan);
  work_.emplace_back(new Work);
  const uint64_t pass_ns = std::min<uint64_t>(o.ageing_s * 1000000000ull / 4, kAgePassMaxNs);
  age_every_ns_ = pass_ns / std::max<uint32_t>(1, fdb_.capacity() / kAgeSlotsPerTick);
}

bool Bridge::carries(const BridgePortConfig& c, uint16_t vlan) const {
  if (c.is_trunk) return c.trunk[vlan] || (c.native && c.native == vlan);
  return c.vlan == vlan;
}

int Bridge::classify(const BridgePortConfig& c, bool tagged, uint16_t vid) const {
  if (c.is_trunk) {
    if (!tagged) return c.native ? c.native : -1;
    return vid && c.trunk[vid] ? vid : -1;
  }
  // An access port takes untagged frames only; a VLAN-unaware one (vlan 0) takes everything as it is.
  if (c.vlan) return tagged ? -1 : c.vlan;
  return 0;
}

void Bridge::rebuild() {
  vlan_row_.fill(kNoVlan);
  const size_t n = members_.size();
  std::vector<uint16_t> vlans;
  for (uint32_t v = 0; v < 4096; v++) {
    for (const Member& m : m_) {
      if (carries(m.cfg, uint16_t(v))) {
        vlan_row_[v] = uint16_t(vlans.size());
        vlans.push_back(uint16_t(v));
        break;
      }
    }
  }
  for (auto& f : flood_) {
    f.assign(vlans.size() * n, {});
  }
  for (size_t r = 0; r < vlans.size(); r++) {
    for (size_t i = 0; i < n; i++) {
      if (!carries(m_[i].cfg, vlans[r])) continue;
      for (size_t j = 0; j < n; j++) {
        if (j == i || !carries(m_[j].cfg, vlans[r])) continue;
        if (m_[i].cfg.isolated && m_[j].cfg.isolated) continue;
        if (m_[j].cfg.flood_unknown) flood_[0][r * n + i].push_back(uint16_t(j));
        if (m_[j].cfg.flood_multicast) flood_[1][r * n + i].push_back(uint16_t(j));
      }
    }
  }
  for (auto& w : work_) {
    if (!w) continue;
    w->pending.assign(n, {});
    w->pending_n.assign(n, 0);
    w->touched.clear();
    w->touched.reserve(n);
  }
}

void Bridge::set_threads(const std::vector<uint32_t>& pmds) {
  spread_ = pmds.size() > 1;
  first_ = pmds.empty() ? 0 : pmds[0];
  for (uint32_t k : pmds) {
    if (k >= work_.size()) work_.resize(k + 1);
    if (!work_[k]) {
      work_[k].reset(new Work);
      work_[k]->stats.resize(members_.size());
    }
  }
  rebuild();
}

const std::vector<uint16_t>& Bridge::flood_list(bool multicast, uint16_t vlan, uint16_t in) const {
  return flood_[multicast][size_t(vlan_row_[vlan]) * members_.size() + in];
}

void Bridge::add_member(Port& p, const BridgePortConfig& c) {
  members_.push_back(&p);
  m_.push_back(Member{c});
  for (auto& w : work_)
    if (w) w->stats.emplace_back();
  fdb_.ensure_port(uint16_t(members_.size() - 1));
  rebuild();
}

void Bridge::remove_member(const Port& p) {
  const uint16_t i = index_of(&p);
  if (i == Fdb::kNoPort) return;
  members_.erase(members_.begin() + i);
  m_.erase(m_.begin() + i);
  for (auto& w : work_)
    if (w) w->stats.erase(w->stats.begin() + i);
  fdb_.remove_port(i);
  fdb_size_.store(fdb_.size(), std::memory_order_relaxed);
  rebuild();
}

bool Bridge::add_static(uint16_t vlan, uint64_t mac, const Port& p) {
  const uint16_t i = index_of(&p);
  const bool ok = i != Fdb::kNoPort && fdb_.add_static(vlan, mac, i);
  fdb_size_.store(fdb_.size(), std::memory_order_relaxed);
  return ok;
}

BridgePortStats Bridge::port_stats(const Port& p) const {
  const uint16_t i = index_of(&p);
  BridgePortStats t;
  for (const auto& w : work_)
    if (w) t += w->stats[i];
  return t;
}

std::vector<std::pair<int, uint64_t>> Bridge::vlan_drops() const {
  std::vector<std::pair<int, uint64_t>> out;
  const auto drops = [this](size_t slot) {
    uint64_t n = 0;
    for (const auto& w : work_)
      if (w) n += w->vlan_drops[slot];
    return n;
  };
  for (int v = 0; v < 4096; v++)
    if (vlan_row_[v] != kNoVlan) out.emplace_back(v, drops(size_t(v)));
  out.emplace_back(kUntagged, drops(kUntaggedSlot));
  out.emplace_back(kOther, drops(kOtherSlot));
  return out;
}

BridgeStats Bridge::stats() const {
  BridgeStats s;
  s.fdb = fdb_.stats();
  s.size = fdb_.size();
  for (const auto& w : work_) {
    if (!w) continue;
    s.flooded += w->flooded;
    s.flood_copies += w->flood_copies;
  }
  return s;
}

bool Bridge::accepts_from(Port& in) {
  if (!in.holds_until_peer_ready()) return true;
  for (Port* m : members_)
    if (m != &in && m->tx_ready()) return true;
  return false;
}

void Bridge::tick(uint64_t now) {
  // One PMD ages.
  if (!fdb_size_.load(std::memory_order_relaxed) || (spread_ && t_pmd_index != first_)) return;
  if (now < next_age_ns_) return;
  next_age_ns_ = now + age_every_ns_;
  lock_fdb();
  fdb_.age_step(now, kAgeSlotsPerTick);
  fdb_size_.store(fdb_.size(), std::memory_order_relaxed);
  unlock_fdb();
}

void Bridge::spill(Work& w) {
  w.lone = false;
  if (!w.lone_n) return;
  for (uint8_t k = 0; k < w.lone_n; k++) w.pending[w.lone_dst][k] = k;
  w.pending_n[w.lone_dst] = w.lone_n;
  w.touched.push_back(w.lone_dst);
}

uint16_t Bridge::prefetch(const Member& m, const Burst& b) const {
  uint16_t first_end = 0;
  for (uint16_t i = 0; i < b.n;) {
    const PacketView& p = b.pkt[i];
    // Only frames whose headers lie in the first span: the rest are rare and are simply not prefetched.
    if (!p.nseg || std::min(b.span[p.first].len, p.len) < kEthHeader + kTagLen) {
      i++;
      continue;
    }
    const uint8_t* h = b.span[p.first].p;
    // Frames with this one's addresses and tag look up the same slots: one prefetch for the run.
    uint64_t w0, w1;
    memcpy(&w0, h, 8);
    memcpy(&w1, h + 8, 8);
    const uint16_t start = i;
    i = run_end(b, uint16_t(i + 1), w0, w1);
    if (start == 0) {
      first_end = i;
      // A burst of one run looks up only its first frame's slots, and right after this: nothing to hide.
      if (i == b.n) return first_end;
    }
    const bool tagged = (uint16_t(h[12] << 8) | h[13]) == kTpid8021Q;
    const int vlan = classify(m.cfg, tagged, tagged ? uint16_t((h[14] << 8 | h[15]) & 0xfff) : 0);
    if (vlan < 0) continue;
    if (m.cfg.learning && !(h[6] & 1)) fdb_.prefetch(uint16_t(vlan), mac_at(h + 6));
    if (!(h[0] & 1)) fdb_.prefetch(uint16_t(vlan), mac_at(h));
  }
  return first_end;
}

void Bridge::forward(Port& in, uint16_t qp, Burst& b, Transmit& tx) {
  const uint16_t src = index_of(&in);
  if (src == Fdb::kNoPort) return;
  Member& m = m_[src];
  Work& w = work();
  const uint64_t now = tx.now();
  // Reset here rather than after delivering: a fault in guest memory can cut forward() short anywhere.
  for (uint16_t d : w.touched) w.pending_n[d] = 0;
  w.touched.clear();
  w.lone = true;
  w.lone_n = 0;
  w.vlans = 0;
  // Counted once per burst: a store per frame would not stay in a register past the byte stores below.
  w.stats[src].rx += b.n;
  // Where the first frame's run ends, when the prefetch pass found it (0: not looked for).
  const uint16_t first_end = fdb_size_.load(std::memory_order_relaxed) > kPrefetchAbove ? prefetch(m, b) : 0;
  uint64_t last_src = 0, last_dst = 0;
  int last_src_vlan = -1, last_dst_vlan = -1;
  uint16_t last_dst_port = Fdb::kNoPort;
  struct Run {
    bool valid;
    uint64_t w0, w1;
    uint16_t vlan;
    bool tagged;
    uint16_t dst;
  } run{};
  for (uint16_t i = 0; i < b.n; i++) {
    const PacketView& p = b.pkt[i];
    // The headers are read where they lie when the first span holds them (nearly always), copied out of
    // the spans otherwise.
    // got: how many of the header bytes the checks below need are at h (all of them, or the frame).
    uint8_t copy[kEthHeader + kTagLen];
    const uint8_t* h = copy;
    uint32_t got = kEthHeader + kTagLen;
    if (p.nseg && p.len >= got && b.span[p.first].len >= got)
      h = b.span[p.first].p;
    else
      got = peek_packet(b, p, copy, sizeof copy);
    // A frame whose first 16 bytes (both MACs and the tag or the start of the payload) match the last
    // frame sent to one port goes where it went: the decision depends on nothing else, and a burst is
    // mostly one flow.
    uint64_t w0 = 0, w1 = 0;
    if (got >= kEthHeader + kTagLen) {
      memcpy(&w0, h, 8);
      memcpy(&w1, h + 8, 8);
      if (run.valid && w0 == run.w0 && w1 == run.w1) {
        w.pkt_vlan[i] = run.vlan;
        w.pkt_tagged[i] = run.tagged;
        enqueue(w, run.dst, uint8_t(i));
        continue;
      }
    }
    if (got < kEthHeader) {
      w.stats[src].drop_runt++;
      continue;
    }
    const bool tagged = (uint16_t(h[12] << 8) | h[13]) == kTpid8021Q;
    if (tagged && got < kEthHeader + kTagLen) {
      w.stats[src].drop_runt++;
      continue;
    }
    const uint16_t vid = tagged ? uint16_t((h[14] << 8 | h[15]) & 0xfff) : 0;
    const int vlan = classify(m.cfg, tagged, vid);
    if (vlan < 0) {
      w.stats[src].drop_vlan++;
      w.vlan_drops[!tagged ? kUntaggedSlot : vlan_row_[vid] != kNoVlan ? vid : kOtherSlot]++;
      continue;
    }
    const uint64_t smac = mac_at(h + 6), dmac = mac_at(h);
    if (m.cfg.has_mac && smac != m.cfg.mac) {
      w.stats[src].drop_spoofed++;
      w.vlan_drops[vlan]++;
      continue;
    }
    w.pkt_vlan[i] = uint16_t(vlan);
    w.pkt_tagged[i] = tagged;
    w.vlans |= uint16_t(vlan);
    // A multicast source is not an address a port can own: never learned. A burst mostly repeats one
    // source and one destination: each is looked up once per run of equal frames. Learning may evict,
    // so a learn that did reach the table forgets the remembered destination.
    if (m.cfg.learning && !(h[6] & 1) && (smac != last_src || vlan != last_src_vlan)) {
      lock_fdb();
      fdb_.learn(uint16_t(vlan), smac, src, now);
      fdb_size_.store(fdb_.size(), std::memory_order_relaxed);
      unlock_fdb();
      last_src = smac;
      last_src_vlan = vlan;
      last_dst_vlan = -1;
      run.valid = false;
    }
    bool flood = h[0] & 1;
    if (!flood) {
      if (dmac != last_dst || vlan != last_dst_vlan) {
        lock_fdb();
        last_dst_port = fdb_.lookup(uint16_t(vlan), dmac);
        unlock_fdb();
        last_dst = dmac;
        last_dst_vlan = vlan;
      }
      const uint16_t d = last_dst_port;
      if (d == src) {
        w.stats[src].drop_local++;
        w.vlan_drops[vlan]++;
        continue;
      }
      if (d != Fdb::kNoPort) {
        if (m.cfg.isolated && m_[d].cfg.isolated) {
          w.stats[src].drop_isolated++;
          w.vlan_drops[vlan]++;
          continue;
        }
        enqueue(w, d, uint8_t(i));
        run = Run{got >= kEthHeader + kTagLen, w0, w1, uint16_t(vlan), tagged, d};
        // The first frame of a burst starts the run most bursts are whole: one flow to one port. Its end
        // is found in one tight pass; a burst that is all of it goes as it came, with nothing written per
        // frame, exactly as the per-frame path would have sent it.
        if (i == 0 && run.valid) {
          const uint16_t end = first_end ? first_end : run_end(b, 1, w0, w1);
          if (end == b.n && leaves_tagged(m_[d].cfg, uint16_t(vlan), tagged) == tagged)
            return send_all(w, d, qp, b, tx);
          for (uint16_t k = 1; k < end; k++) {
            w.pkt_vlan[k] = uint16_t(vlan);
            w.pkt_tagged[k] = tagged;
            enqueue(w, d, uint8_t(k));
          }
          i = uint16_t(end - 1);
        }
        continue;
      }
    }
    const std::vector<uint16_t>& list = flood_list(h[0] & 1, uint16_t(vlan), src);
    w.flooded++;
    w.flood_copies += list.size();
    for (uint16_t d : list) enqueue(w, d, uint8_t(i));
  }
  if (w.lone) {
    if (w.lone_n == b.n && !w.vlans) return send_all(w, w.lone_dst, qp, b, tx);
    spill(w);
  }
  for (uint16_t d : w.touched) deliver(w, d, qp, b, tx);
}

void Bridge::send_all(Work& w, uint16_t dest, uint16_t qp, const Burst& b, Transmit& tx) {
  Port& to = *members_[dest];
  const uint16_t sent = tx.send(to, uint16_t(qp % to.queue_pairs()), b);
  w.stats[dest].tx += sent;
  w.stats[dest].drop_no_room += b.n - sent;
}

void Bridge::deliver(Work& w, uint16_t dest, uint16_t qp, const Burst& b, Transmit& tx) {
  Member& o = m_[dest];
  Port& to = *members_[dest];
  const uint16_t tq = uint16_t(qp % to.queue_pairs());
  // Every frame of the burst to this one destination, none retagged: the burst goes as it came.
  if (w.pending_n[dest] == b.n) {
    bool as_is = true;
    for (uint16_t i = 0; i < b.n && as_is && w.vlans; i++)
      as_is = leaves_tagged(o.cfg, w.pkt_vlan[i], w.pkt_tagged[i]) == w.pkt_tagged[i];
    if (as_is) return send_all(w, dest, qp, b, tx);
  }
  w.out.clear();
  auto flush = [&] {
    if (!w.out.n) return;
    const uint16_t sent = tx.send(to, tq, w.out);
    w.stats[dest].tx += sent;
    w.stats[dest].drop_no_room += w.out.n - sent;
    w.out.clear();
  };
  for (uint8_t k = 0; k < w.pending_n[dest]; k++) {
    const uint8_t i = w.pending[dest][k];
    const PacketView& p = b.pkt[i];
    const uint16_t vlan = w.pkt_vlan[i];
    const bool in_tagged = w.pkt_tagged[i];
    const bool out_tagged = leaves_tagged(o.cfg, vlan, in_tagged);
    // A packet adds at most two spans (a span split at byte 12 and the tag). One that could not fit even
    // in an empty burst is dropped (chains are bounded well below that; this keeps the bound local).
    if (uint32_t(p.nseg) + 2 > kBurstSpans) {
      w.stats[dest].drop_no_room++;
      continue;
    }
    if (w.out.nspans + uint32_t(p.nseg) + 2 > kBurstSpans) flush();
    PacketView q = p;
    q.first = w.out.nspans;
    if (in_tagged == out_tagged) {
      emit_spans(b, p, 0, p.len, w.out);
    } else if (out_tagged) {
      w.tags[i][0] = uint8_t(kTpid8021Q >> 8);
      w.tags[i][1] = uint8_t(kTpid8021Q);
      w.tags[i][2] = uint8_t(vlan >> 8);
      w.tags[i][3] = uint8_t(vlan);
      emit_spans(b, p, 0, kMacsLen, w.out);
      w.out.span[w.out.nspans++] = Span{w.tags[i], kTagLen, 0};
      emit_spans(b, p, kMacsLen, p.len, w.out);
      q.len = p.len + kTagLen;
      // Offsets the virtio-net header gives are from the frame's start: they move with the tag.
      if (q.meta.flags & PacketMeta::kCsumPartial) q.meta.csum_start = uint16_t(q.meta.csum_start + kTagLen);
      if (q.meta.gso_type) q.meta.hdr_len = uint16_t(q.meta.hdr_len + kTagLen);
    } else {
      emit_spans(b, p, 0, kMacsLen, w.out);
      emit_spans(b, p, kMacsLen + kTagLen, p.len, w.out);
      q.len = p.len - kTagLen;
      if ((q.meta.flags & PacketMeta::kCsumPartial) && q.meta.csum_start >= kEthHeader + kTagLen)
        q.meta.csum_start = uint16_t(q.meta.csum_start - kTagLen);
      if (q.meta.gso_type && q.meta.hdr_len >= kEthHeader + kTagLen)
        q.meta.hdr_len = uint16_t(q.meta.hdr_len - kTagLen);
    }
    q.nseg = uint16_t(w.out.nspans - q.first);
    w.out.pkt[w.out.n++] = q;
  }
  flush();
}

}  // namespace vw
