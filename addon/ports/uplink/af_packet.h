// A host uplink's queue through the kernel stack: an AF_PACKET socket bound to one interface (one of a
// hash fanout group when the uplink has several queues), with a TPACKET_V3 receive ring (or, with
// tpacket=v2, a TPACKET_V2 one) and a transmit ring in one mapping shared with the kernel. Kernel mode's
// uplink driver.
//
// Receive, TPACKET_V3: the kernel fills blocks in ring order and hands each one over whole (block_status
// TP_STATUS_USER) when it is full or its retire timer fires; rx_burst lends the frames of the blocks it
// was handed, in order, as views into the ring, and a block goes back to the kernel (TP_STATUS_KERNEL)
// once no lent frame points into it. Everything a block says (its header, every packet header) comes
// from the kernel and is checked by BlockWalker before anything is read through it. Small frames pack
// densely, but a lone frame waits for the retire timer (1 ms at least): a round trip through two V3
// uplinks takes about 2 ms.
//
// Receive, TPACKET_V2: one fixed slot per frame, each handed over (tp_status TP_STATUS_USER) as soon as
// the kernel wrote it, so a lone frame waits for nothing; a slot must hold a 64 KiB super-frame, so the
// ring holds fewer frames for its memory. SlotReader checks each slot's header as BlockWalker checks a
// packet's; the slots a burst lent go back on release().
//
// Transmit: fixed-size frames; tx_burst copies each packet into the next frame the kernel has given back,
// marks it TP_STATUS_SEND_REQUEST and asks the kernel to send once per burst.
//
// Offloads (PACKET_VNET_HDR, set before the rings exist, as the kernel requires): every frame either way
// carries a 10-byte virtio_net_hdr in front of it. The kernel's says what a received frame still needs
// (a GRO'd or locally sent super-frame, a partial checksum) and is checked by core/offload like a guest's;
// ours tells the kernel to segment and complete what we send it (or its device's TSO, or the veth peer's
// stack, which takes them as they are).
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
#include "core/offload.h"
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
// type field, inside that frame's own slot (over the virtio_net_hdr, which is copied out first).
class BlockWalker {
 public:
  // Also what SlotReader::read says of a TPACKET_V2 slot (never kEnd).
  enum class Step {
    kFrame,      // *frame is the next frame, inside the block
    kTruncated,  // a frame the kernel cut short (tp_snaplen < tp_len): drop it
    kTooBig,     // a frame longer than kMaxFrame: drop it
    kInvalid,    // a header points outside the block or contradicts itself: the rest of the block is skipped
    kEnd,        // no more frames in this block
  };

  // Whether the kernel has handed the block over (acquire: its contents are complete when this is true).
  static bool ready(const uint8_t* block);

  // Starts on a block the kernel handed over; size is the ring's block size. vnet: the socket has
  // PACKET_VNET_HDR, so the kernel wrote a virtio_net_hdr in the 10 bytes before each frame.
  void start(uint8_t* block, uint32_t size, bool vnet);
  // The next step; after kInvalid or kEnd, always kEnd.
  Step next(Span* frame);
  // After kFrame on a vnet socket: the frame's virtio_net_hdr as the kernel wrote it (zero otherwise),
  // offsets counted from the frame's start before its tag was put back, and whether one was (tagged()).
  const virtio_net_hdr_mrg_rxbuf& vnet() const { return vnet_; }
  bool tagged() const { return tagged_; }

 private:
  uint8_t* block_ = nullptr;
  uint32_t valid_ = 0;  // blk_len once checked: bytes of the block the kernel wrote
  uint64_t off_ = 0;    // offset of the next packet header
  uint32_t left_ = 0;   // packets not yet read
  bool bad_ = false;    // the block header was invalid: next() says so once
  bool has_vnet_ = false;
  bool tagged_ = false;
  virtio_net_hdr_mrg_rxbuf vnet_ = {};
};

// One TPACKET_V2 receive slot, read as BlockWalker reads a block's packet: pure, fuzzed the same way
// (fuzz/tpacket_fuzz.cc), its header copied once and checked before use; the only write is the VLAN tag
// put back inside the slot's frame.
class SlotReader {
 public:
  // Whether the kernel has handed the slot over (acquire: its contents are complete when this is true).
  static bool ready(const uint8_t* slot);
  // Reads a slot the kernel handed over; size is the ring's slot size. vnet as BlockWalker::start.
  BlockWalker::Step read(uint8_t* slot, uint32_t size, bool vnet, Span* frame);
  const virtio_net_hdr_mrg_rxbuf& vnet() const { return vnet_; }
  bool tagged() const { return tagged_; }

 private:
  bool tagged_ = false;
  virtio_net_hdr_mrg_rxbuf vnet_ = {};
};

// The receive ring of one socket, as --uplink's tpacket=, block-size=, blocks=, retire-ms= and frames= set
// it; TypeScript checks them against the limits below (src/ports/uplink.ts).
struct TpacketRing {
  // One block holds the largest frame we forward (kMaxFrame) after the block header and the kernel's
  // per-packet offset (tp_mac: 92 bytes on Ethernet with the virtio_net_hdr, 4 more for a VLAN tag put
  // back), so nothing we could forward arrives cut short: 68 KiB at least. 256 KiB by default, 64 pages:
  // GRO and a local stack's TSO hand over 64 KiB super-frames, and the kernel closes a block early when
  // the next frame does not fit, so a 128 KiB block would hold one and waste half; 256 KiB holds three.
  // The kernel falls back to vmalloc when it cannot find the pages contiguous.
  static constexpr uint32_t kMinBlockSize = 68 << 10, kMaxBlockSize = 16 << 20, kDefaultBlockSize = 256 << 10;
  // 32 blocks, 8 MiB, by default: about 96 super-frames, 5,000 full-size or 54,000 minimum-size frames,
  // many milliseconds of a 10 Gb/s link, where a sleeping kernel-mode PMD takes tens of microseconds to
  // wake up. The kernel hands blocks over one at a time, so fewer than 2 would stall it on every block.
  static constexpr uint32_t kMinBlocks = 2, kMaxBlocks = 4096, kDefaultBlocks = 32;
  // The most one socket's receive ring may take; the whole ring is mapped and pinned by the kernel.
  static constexpr uint64_t kMaxBytes = uint64_t(1) << 30;
  // A block that is not yet full goes to user space this long after the kernel opened it: the delay a
  // lone frame (a ping, an ARP request) can see. Idle costs nothing: the kernel never hands over an empty
  // block.
  static constexpr uint32_t kMinRetireMs = 1, kMaxRetireMs = 1000, kDefaultRetireMs = 1;
  static_assert(kMinBlockSize >= kMaxFrame + 4 + 92 + 48, "a block must hold the largest frame and its headers");

  // TPACKET_V2 (tpacket=v2): slots of kV2Slot bytes, kV2SlotsPerBlock to a 1 MiB block (as the transmit
  // ring's), frames= rounded up to whole blocks. 240 by default: 16 MiB, a burst's worth of super-frames
  // several times over, as many as a NIC's receive ring.
  static constexpr uint32_t kV2Slot = (128 + kMaxFrame + 15) & ~15u;
  static constexpr uint32_t kV2Block = 1 << 20;
  static constexpr uint32_t kV2SlotsPerBlock = kV2Block / kV2Slot;
  static constexpr uint32_t kMinFrames = 16, kMaxFrames = 4096, kDefaultFrames = 240;
  static_assert(uint64_t(kMaxFrames + kV2SlotsPerBlock) / kV2SlotsPerBlock * kV2Block <= kMaxBytes,
                "v2 ring under the cap");

  uint32_t version = 3;  // TPACKET_V3 or TPACKET_V2
  uint32_t block_size = kDefaultBlockSize;
  uint32_t blocks = kDefaultBlocks;
  uint32_t retire_ms = kDefaultRetireMs;
  uint32_t frames = kDefaultFrames;  // v2 only

  uint32_t v2_blocks() const { return (frames + kV2SlotsPerBlock - 1) / kV2SlotsPerBlock; }
  uint32_t v2_slots() const { return v2_blocks() * kV2SlotsPerBlock; }
  uint64_t rx_bytes() const { return version == 2 ? uint64_t(v2_blocks()) * kV2Block : uint64_t(blocks) * block_size; }
};

class AfPacketPort : public Port {
 public:
  // Every offload the kernel takes through a virtio_net_hdr: what tx_offloads() says unless withheld.
  static constexpr uint32_t kOffloads = kOffloadAll;

  // Opens one socket of the uplink on interface ifname. fanout: null for a lone socket; else the hash
  // fanout group to join, -1 for a new one (then set to the new group's id for the next sockets).
  // offloads: what we may send the kernel as it is (kOffloads, or 0 when the user withheld them: every
  // frame then goes out plain, completed and segmented in software on the way). counters and kernel
  // belong to the caller, outlive the port, and are only added to (the caller publishes them). nullptr and
  // *err (one sentence naming the interface) on failure.
  static std::unique_ptr<AfPacketPort> open(const std::string& name, const std::string& ifname, const TpacketRing& ring,
                                            uint32_t offloads, int* fanout, QueueCounters* counters,
                                            KernelDrops* kernel, std::string* err);
  ~AfPacketPort() override;

  uint16_t queue_pairs() const override { return 1; }
  uint16_t rx_burst(uint16_t qp, Burst& b) override;
  uint16_t tx_burst(uint16_t qp, const Burst& b) override;
  void release(uint16_t qp, Burst& b) override;
  uint32_t tx_offloads() const override { return offloads_; }
  // Adds the kernel's drops since the last read, at most every kKernelStatsEveryNs.
  void publish_counters() override;
  bool arm_wakeup(std::vector<pollfd>& fds) override;

 private:
  AfPacketPort(const std::string& name, const TpacketRing& ring, uint32_t offloads, QueueCounters* counters,
               KernelDrops* kernel);
  bool setup(const std::string& ifname, int* fanout, std::string* err);
  bool join_fanout(int* group);
  bool read_kernel_stats(tpacket_stats_v3* st) const;

  uint8_t* rx_block(uint32_t i) const;
  uint8_t* rx_slot(uint32_t i) const;
  uint16_t rx_burst_v2(Burst& b);
  bool take(Burst& b, const Span& f, const virtio_net_hdr_mrg_rxbuf& h, bool tagged, uint32_t cookie);
  uint8_t* tx_frame(uint32_t i) const;
  // A transmit slot's header fields, in the socket's TPACKET version's layout.
  uint32_t* tx_status(uint8_t* frame) const;
  void set_tx_len(uint8_t* frame, uint32_t len) const;
  void give_back(uint32_t block);
  bool fits_link(const uint8_t* frame, uint32_t len);
  bool refresh_mtu();
  QueueCounter read_vnet_header(const virtio_net_hdr_mrg_rxbuf& h, bool tagged, uint32_t len, PacketMeta* m) const;
  void flush_tx();
  bool reap_tx();
  void drop_refused_frame();
  void reclaim_tx();

  QueueCounters* counters_;
  KernelDrops* kernel_;
  const TpacketRing ring_;
  const uint32_t offloads_;
  int fd_ = -1;
  int ifindex_ = 0;
  uint8_t* map_ = nullptr;
  size_t map_len_ = 0;
  uint32_t mtu_ = 0;        // the interface's MTU when last read
  bool mtu_fresh_ = false;  // read during the current tx_burst
  uint64_t mtu_read_ns_ = 0;

  // Receive: rx_cur_ is the block being read (walking_) or the next one the kernel will hand over.
  BlockWalker walker_;
  bool walking_ = false;
  bool lent_from_cur_ = false;  // the current burst lent frames of block rx_cur_
  uint32_t rx_cur_ = 0;
  uint32_t done_[kBurst] = {};  // finished blocks that frames of the current burst point into
  uint32_t ndone_ = 0;
  // TPACKET_V2: slots [rx_from_, rx_head_) were read by the current burst and go back on release().
  SlotReader slot_reader_;
  uint32_t rx_head_ = 0, rx_from_ = 0;
  uint32_t tx_data_ = 0;  // where a transmit slot's bytes start: after the version's aligned header

  // Transmit: frames [tx_tail_, tx_head_) (tx_pending_ of them, in ring order) were handed to the kernel
  // and not yet seen taken; the kernel works through them in that order.
  uint32_t tx_head_ = 0, tx_tail_ = 0, tx_pending_ = 0;
  std::vector<uint32_t> tx_len_;  // our own record of each frame's length
};

}  // namespace vw
