// A learning bridge: many ports on one L2 segment, with 802.1Q VLANs, port security and per-port flags.
// Per burst: each frame's MACs and tag are read from its spans (checked against the frame's length), the
// source is learned, the destination looked up (fdb.h), and the burst's packets are grouped per
// destination so each destination's tx_burst runs once per burst. A flooded frame is in several groups:
// each destination copies it straight from the source's memory, which the PMD releases only after
// forward() returns. A VLAN tag is pushed or popped by rewriting the spans handed to the destination (the
// 4 tag bytes come from a buffer of the bridge's), so the destination's one copy writes the final frame.
//
// Flood lists are built per (VLAN, ingress port) when membership changes, never per packet.
//
// Several PMD threads: when every member spreads its queues (vhost-user ports), queue pair q of each
// member is served by the q-th PMD, as a wire's are, and forward() runs on those PMDs at once. Each PMD
// then has its own burst scratch and its own share of the counters (Work; the control path reads their
// sums), destinations lock the receive rings they share (Port::spreads), and the MAC table is learned and
// looked up under a spinlock taken once per run of equal frames (a burst is mostly one run), never while
// guest memory is read; its one writer of aging is the first of the PMDs. A bridge with a member that does
// not spread (an uplink, a gen, a sink) runs on one PMD and takes no lock.
#pragma once

#include <array>
#include <atomic>
#include <bitset>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/queue_lock.h"
#include "forward/fdb.h"
#include "forward/forwarder.h"

namespace vw {

// A member's VLAN mode and flags, already validated in TypeScript.
struct BridgePortConfig {
  // vlan: access port (frames untagged inside, in this VLAN on the bridge). trunk: tagged frames of the
  // VLANs in `trunk`, untagged ones in `native` (0: none admitted). Neither: VLAN-unaware, every frame
  // passes as it is, in the bridge's untagged segment (VLAN 0).
  uint16_t vlan = 0;
  bool is_trunk = false;
  std::bitset<4096> trunk;
  uint16_t native = 0;
  bool has_mac = false;
  uint64_t mac = 0;  // port security: the only source admitted
  bool learning = true;
  bool flood_unknown = true;    // unknown unicast is flooded out of this port
  bool flood_multicast = true;  // broadcast and multicast are flooded out of this port
  bool isolated = false;        // reaches only ports that are not isolated
};

struct BridgeOptions {
  uint32_t max_macs = 8192;
  uint32_t max_macs_per_port = 8192;
  uint64_t ageing_s = 300;
};

// What happened to one member's frames. Written by the PMD, read with it paused.
struct BridgePortStats {
  uint64_t rx = 0, tx = 0;
  uint64_t drop_runt = 0;      // shorter than an Ethernet (or 802.1Q) header
  uint64_t drop_vlan = 0;      // a VLAN (or untagged) the port does not carry
  uint64_t drop_spoofed = 0;   // a source MAC other than the port's mac=
  uint64_t drop_local = 0;     // destination learned on the port it came in on
  uint64_t drop_isolated = 0;  // isolated to isolated
  uint64_t drop_no_room = 0;   // sent to this port, not taken (full ring, not connected)
  // Another PMD's share, added in (a bridge spread over PMDs counts per PMD).
  BridgePortStats& operator+=(const BridgePortStats& o) {
    rx += o.rx;
    tx += o.tx;
    drop_runt += o.drop_runt;
    drop_vlan += o.drop_vlan;
    drop_spoofed += o.drop_spoofed;
    drop_local += o.drop_local;
    drop_isolated += o.drop_isolated;
    drop_no_room += o.drop_no_room;
    return *this;
  }
};

struct BridgeStats {
  FdbStats fdb;
  uint32_t size = 0;
  uint64_t flooded = 0, flood_copies = 0;
};

class Bridge final : public Forwarder {
 public:
  Bridge(std::string name, const BridgeOptions& o);

  const char* kind() const override { return "bridge"; }
  const std::vector<Port*>& members() const override { return members_; }
  bool accepts_from(Port& in) override;
  void forward(Port& in, uint16_t qp, Burst& b, Transmit& tx) override;
  void tick(uint64_t now) override;
  bool spreads() const override { return true; }
  void set_threads(const std::vector<uint32_t>& pmds) override;

  // Control path, with the PMD paused.
  void add_member(Port& p, const BridgePortConfig& c);
  void remove_member(const Port& p);
  bool has_member(const Port& p) const { return index_of(&p) != Fdb::kNoPort; }
  bool add_static(uint16_t vlan, uint64_t mac, const Port& p);
  const Fdb& fdb() const { return fdb_; }
  BridgeStats stats() const;
  // Frames dropped on the way in (VLAN not carried, spoofed source, local destination, isolated) by the
  // VLAN they were in: each VLAN some member carries (0: the VLAN-unaware segment), then kUntagged
  // (untagged frames a port does not admit) and kOther (a VID no member carries). The labels are bounded
  // by configuration, never by what a guest sends. A destination's no_room drops are its port's.
  static constexpr int kUntagged = -1, kOther = -2;
  std::vector<std::pair<int, uint64_t>> vlan_drops() const;
  BridgePortStats port_stats(const Port& p) const;
  const BridgePortConfig& port_config(const Port& p) const { return m_[index_of(&p)].cfg; }
  const BridgeOptions& options() const { return opts_; }

 private:
  struct Member {
    BridgePortConfig cfg;
  };
  static constexpr size_t kUntaggedSlot = 4096, kOtherSlot = 4097;
  // What one PMD thread works with in forward(): the burst's scratch and its share of the counters.
  struct Work {
    // Each packet's bridge VLAN and whether it came tagged, the tag bytes a push inserts, and the packets
    // grouped per destination.
    uint16_t pkt_vlan[kBurst];
    bool pkt_tagged[kBurst];
    uint8_t tags[kBurst][4];
    std::vector<std::array<uint8_t, kBurst>> pending;
    std::vector<uint8_t> pending_n;
    std::vector<uint16_t> touched;
    bool lone = true;
    uint16_t lone_dst = 0;
    uint8_t lone_n = 0;
    uint16_t vlans = 0;  // the OR of the burst's bridge VLANs: 0, none is retagged anywhere
    Burst out;
    std::vector<BridgePortStats> stats;  // per member
    uint64_t flooded = 0, flood_copies = 0;
    std::array<uint64_t, 4098> vlan_drops{};
  };
  // The calling thread's: each PMD's own, or the first one's on any other thread (tests, benchmarks).
  Work& work() const {
    const uint32_t k = t_pmd_index < work_.size() && work_[t_pmd_index] ? t_pmd_index : first_;
    return *work_[k];
  }
  // The MAC table's lock, with several threads; a no-op with one.
  void lock_fdb() const {
    if (spread_) fdb_lock_.lock();
  }
  void unlock_fdb() const {
    if (spread_) fdb_lock_.unlock();
  }
  uint16_t index_of(const Port* p) const {
    for (size_t i = 0; i < members_.size(); i++)
      if (members_[i] == p) return uint16_t(i);
    return Fdb::kNoPort;
  }
  bool carries(const BridgePortConfig& c, uint16_t vlan) const;
  // The bridge VLAN of a frame from member m (tagged: its VID), or -1 when m does not admit it.
  int classify(const BridgePortConfig& c, bool tagged, uint16_t vid) const;
  void rebuild();
  const std::vector<uint16_t>& flood_list(bool multicast, uint16_t vlan, uint16_t in) const;
  // Packet pkt of the burst goes to member dest. While every packet so far went to one destination, once
  // each and in order (a unicast stream, or a bridge of two), nothing is written: packets [0, lone_n_) go
  // to lone_dst_. The first packet that breaks the pattern writes the lists out (spill) and is listed.
  static void enqueue(Work& w, uint16_t dest, uint8_t pkt) {
    if (w.lone && pkt == w.lone_n && (w.lone_n == 0 || dest == w.lone_dst)) {
      w.lone_dst = dest;
      w.lone_n++;
      return;
    }
    if (w.lone) spill(w);
    if (w.pending_n[dest] == 0) w.touched.push_back(dest);
    w.pending[dest][w.pending_n[dest]++] = pkt;
  }
  static void spill(Work& w);
  // The whole burst to dest as it came, as a wire sends it.
  void send_all(Work& w, uint16_t dest, uint16_t qp, const Burst& b, Transmit& tx);
  // Touches the table slots the burst will look up, ahead of the pass that uses them. Below
  // kPrefetchAbove entries the table stays in cache and the extra pass would only cost. Returns where
  // the first frame's run of equal headers ends (0: its header is not in its first span).
  static constexpr uint32_t kPrefetchAbove = 4096;
  uint16_t prefetch(const Member& m, const Burst& b) const;
  void deliver(Work& w, uint16_t dest, uint16_t qp, const Burst& b, Transmit& tx);

  BridgeOptions opts_;
  Fdb fdb_;
  std::vector<Port*> members_;
  std::vector<Member> m_;
  // VLAN to its row in the flood tables (kNoVlan: no member carries it), and per (row, ingress) the
  // members to flood to: [0] unknown unicast, [1] broadcast and multicast.
  static constexpr uint16_t kNoVlan = 0xffff;
  std::array<uint16_t, 4096> vlan_row_;
  std::vector<std::vector<uint16_t>> flood_[2];
  // When the next aging step is due, and the spacing of steps (see kAgeSlotsPerTick).
  uint64_t next_age_ns_ = 0, age_every_ns_ = 0;

  // By PMD index (null: a PMD that does not run the bridge); never shrinks, so no PMD's counts are lost.
  std::vector<std::unique_ptr<Work>> work_;
  uint32_t first_ = 0;  // the first PMD running it: the one that ages the table
  bool spread_ = false;
  mutable QueueLock fdb_lock_;
  // fdb_.size() as of the last change, readable without the lock.
  std::atomic<uint32_t> fdb_size_{0};
};

}  // namespace vw
