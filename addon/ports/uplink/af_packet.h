// A host uplink's queue through the kernel stack: an AF_PACKET socket bound to one interface (one of a
// hash fanout group when the uplink has several queues), with a TPACKET_V3 receive ring and a transmit
// ring in one mapping shared with the kernel. Kernel mode's uplink driver.
//
// Receive: the kernel fills blocks in ring order and hands each one over whole (block_status
// TP_STATUS_USER) when it is full or its retire timer fires; rx_burst lends the frames of the blocks it
// was handed, in order, as views into the ring, and a block goes back to the kernel (TP_STATUS_KERNEL)
// once no lent frame points into it. Everything a block says (its header, every packet header) comes
// from the kernel and is checked by BlockWalker before anything is read through it.
//
// Transmit: fixed-size frames; tx_burst copies each packet into the next frame the kernel has given back,
// marks it TP_STATUS_SEND_REQUEST and asks the kernel to send once per burst.
//
// Frames that arrive while every block is still ours are dropped by the kernel, which counts them in
// PACKET_STATISTICS; publish_counters() reads that into kernel_drops.h's counters.
#pragma once

#include <linux/if_packet.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/counters.h"
#include "core/port.h"
#include "ports/uplink/kernel_drops.h"

namespace vw {

// Makes ifindex promiscuous for as long as packet socket fd is open (the kernel drops the membership
// with the socket, also when the process dies, so an interface is never left promiscuous). A switch
// uplink carries frames for its VMs' addresses, which a NIC would otherwise filter out. false and errno
// on failure.
bool add_promiscuous_membership(int fd, int ifindex);

// The frames of one TPACKET_V3 receive block, read in order. Pure: it touches nothing but the block, so a
// fuzzer can drive it over any bytes. Header fields are copied out once and checked before use; the only
// write is the VLAN tag the kernel took out of a frame (TP_STATUS_VLAN_VALID), put back in front of its
// type field, inside that frame's own slot.
class BlockWalker {
 public:
  enum class Step {
    kFrame,      // *frame is the next frame, inside the block
    kTruncated,  // a frame the kernel cut short (tp_snaplen < tp_len): drop it
    kTooBig,     // a frame longer than kMaxFrame: drop it
    kInvalid,    // a header points outside the block or contradicts itself: the rest of the block is skipped
    kEnd,        // no more frames in this block
  };

  // Whether the kernel has handed the block over (acquire: its contents are complete when this is true).
  static bool ready(const uint8_t* block);

  // Starts on a block the kernel handed over; size is the ring's block size.
  void start(uint8_t* block, uint32_t size);
  // The next step; after kInvalid or kEnd, always kEnd.
  Step next(Span* frame);

 private:
  uint8_t* block_ = nullptr;
  uint32_t valid_ = 0;  // blk_len once checked: bytes of the block the kernel wrote
  uint64_t off_ = 0;    // offset of the next packet header
  uint32_t left_ = 0;   // packets not yet read
  bool bad_ = false;    // the block header was invalid: next() says so once
};

class AfPacketPort : public Port {
 public:
  // Opens one socket of the uplink on interface ifname. fanout: null for a lone socket; else the hash
  // fanout group to join, -1 for a new one (then set to the new group's id for the next sockets).
  // counters and kernel belong to the caller, outlive the port, and are only added to (the caller
  // publishes them). nullptr and *err (one sentence naming the interface) on failure.
  static std::unique_ptr<AfPacketPort> open(const std::string& name, const std::string& ifname, int* fanout,
                                            QueueCounters* counters, KernelDrops* kernel, std::string* err);
  ~AfPacketPort() override;

  uint16_t queue_pairs() const override { return 1; }
  uint16_t rx_burst(uint16_t qp, Burst& b) override;
  uint16_t tx_burst(uint16_t qp, const Burst& b) override;
  void release(uint16_t qp, Burst& b) override;
  // Adds the kernel's drops since the last read, at most every kKernelStatsEveryNs.
  void publish_counters() override;
  bool arm_wakeup(std::vector<pollfd>& fds) override;

 private:
  AfPacketPort(const std::string& name, QueueCounters* counters, KernelDrops* kernel);
  bool setup(const std::string& ifname, int* fanout, std::string* err);
  bool join_fanout(int* group);
  bool read_kernel_stats(tpacket_stats_v3* st) const;

  uint8_t* rx_block(uint32_t i) const;
  uint8_t* tx_frame(uint32_t i) const;
  void give_back(uint32_t block);
  bool fits_link(const uint8_t* frame, uint32_t len);
  bool refresh_mtu();
  void flush_tx();
  bool reap_tx();
  void drop_refused_frame();
  void reclaim_tx();

  QueueCounters* counters_;
  KernelDrops* kernel_;
  int fd_ = -1;
  int ifindex_ = 0;
  uint8_t* map_ = nullptr;
  size_t map_len_ = 0;
  uint32_t mtu_ = 0;        // the interface's MTU when last read
  bool mtu_fresh_ = false;  // read during the current tx_burst

  // Receive: rx_cur_ is the block being read (walking_) or the next one the kernel will hand over.
  BlockWalker walker_;
  bool walking_ = false;
  bool lent_from_cur_ = false;  // the current burst lent frames of block rx_cur_
  uint32_t rx_cur_ = 0;
  uint32_t done_[kBurst] = {};  // finished blocks that frames of the current burst point into
  uint32_t ndone_ = 0;

  // Transmit: frames [tx_tail_, tx_head_) (tx_pending_ of them, in ring order) were handed to the kernel
  // and not yet seen taken; the kernel works through them in that order.
  uint32_t tx_head_ = 0, tx_tail_ = 0, tx_pending_ = 0;
  std::vector<uint32_t> tx_len_;  // our own record of each frame's length
};

}  // namespace vw
