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
// Limit for now: a whole bridge runs on one PMD thread (its members' receive queues and every transmit
// into them), so no transmit queue is shared between threads; spreading a bridge over PMDs comes later.
#pragma once

#include <array>
#include <bitset>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

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
  void tick() override;

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
  const BridgePortStats& port_stats(const Port& p) const { return m_[index_of(&p)].stats; }
  const BridgePortConfig& port_config(const Port& p) const { return m_[index_of(&p)].cfg; }
  const BridgeOptions& options() const { return opts_; }

 private:
  struct Member {
    BridgePortConfig cfg;
    BridgePortStats stats;
  };
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
  void enqueue(uint16_t dest, uint8_t pkt) {
    if (lone_ && pkt == lone_n_ && (lone_n_ == 0 || dest == lone_dst_)) {
      lone_dst_ = dest;
      lone_n_++;
      return;
    }
    if (lone_) spill();
    if (pending_n_[dest] == 0) touched_.push_back(dest);
    pending_[dest][pending_n_[dest]++] = pkt;
  }
  void spill();
  // The whole burst to dest as it came, as a wire sends it.
  void send_all(uint16_t dest, uint16_t qp, const Burst& b, Transmit& tx);
  // Touches the table slots the burst will look up, ahead of the pass that uses them. Below
  // kPrefetchAbove entries the table stays in cache and the extra pass would only cost.
  static constexpr uint32_t kPrefetchAbove = 4096;
  void prefetch(const Member& m, const Burst& b) const;
  void deliver(uint16_t dest, uint16_t qp, const Burst& b, Transmit& tx);

  BridgeOptions opts_;
  Fdb fdb_;
  std::vector<Port*> members_;
  std::vector<Member> m_;
  // VLAN to its row in the flood tables (kNoVlan: no member carries it), and per (row, ingress) the
  // members to flood to: [0] unknown unicast, [1] broadcast and multicast.
  static constexpr uint16_t kNoVlan = 0xffff;
  std::array<uint16_t, 4096> vlan_row_;
  std::vector<std::vector<uint16_t>> flood_[2];
  uint64_t flooded_ = 0, flood_copies_ = 0;
  // When the next aging step is due, and the spacing of steps (see kAgeSlotsPerTick).
  uint64_t next_age_ns_ = 0, age_every_ns_ = 0;

  // Per burst: each packet's bridge VLAN and whether it came tagged, the tag bytes a push inserts, and
  // the packets grouped per destination.
  uint16_t pkt_vlan_[kBurst];
  bool pkt_tagged_[kBurst];
  uint8_t tags_[kBurst][4];
  std::vector<std::array<uint8_t, kBurst>> pending_;
  std::vector<uint8_t> pending_n_;
  std::vector<uint16_t> touched_;
  bool lone_ = true;
  uint16_t lone_dst_ = 0;
  uint8_t lone_n_ = 0;
  uint16_t vlans_ = 0;
  static constexpr size_t kUntaggedSlot = 4096, kOtherSlot = 4097;
  std::array<uint64_t, 4098> vlan_drops_{};  // the OR of the burst's bridge VLANs: 0, none is retagged anywhere
  Burst out_;
};

}  // namespace vw
