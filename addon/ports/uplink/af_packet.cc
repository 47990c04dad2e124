#include "ports/uplink/af_packet.h"

#include <arpa/inet.h>
#include <linux/filter.h>
#include <linux/if_ether.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "core/clock.h"

namespace vw {

namespace {

// TPACKET_V3 packs frames of any size into a block; the kernel only checks that frames per block times
// blocks adds up to the frame count it is given.
constexpr uint32_t kRxFrameSize = 2048;

// The virtio_net_hdr in front of every frame either way (PACKET_VNET_HDR: the 10-byte header, without
// num_buffers).
constexpr uint32_t kVnetLen = 10;

// The kernel reads a frame's bytes right after the aligned header (tp_mac only counts with
// PACKET_TX_HAS_OFF, which we do not set). Slots are sized for V3's header, the larger.
constexpr uint32_t kTxData = TPACKET_ALIGN(sizeof(tpacket3_hdr));
constexpr uint32_t kTxDataV2 = TPACKET_ALIGN(sizeof(tpacket2_hdr));
static_assert(kTxDataV2 <= kTxData, "a V2 slot's bytes start no later than a V3 slot's");
// Transmit ring: a slot holds its header, the virtio_net_hdr and a 64 KiB super-frame (the kernel's
// tp_len limit is the slot less its header, not the MTU, once the socket has PACKET_VNET_HDR), 16-byte
// aligned as the kernel wants. 15 slots to a 1 MiB block (94% used; a block of one 64 KiB slot would
// be an order-5, 128 KiB allocation, half wasted), 16 blocks: 240 slots, seven and a half bursts, as
// many as a NIC's transmit ring, 16 MiB.
constexpr uint32_t kTxFrameSize = (kTxData + kVnetLen + kMaxFrame + 15) & ~15u;
constexpr uint32_t kTxBlockSize = 1 << 20;
constexpr uint32_t kTxFramesPerBlock = kTxBlockSize / kTxFrameSize;
constexpr uint32_t kTxBlocks = 16;
constexpr uint32_t kTxFrames = kTxFramesPerBlock * kTxBlocks;
constexpr uint32_t kTxMaxLen = kTxFrameSize - kTxData - kVnetLen;
static_assert(kTxMaxLen >= kMaxFrame, "a transmit slot holds the largest frame we forward");
// A slot is ours again only when none of these is set (the kernel may add timestamp bits).
constexpr uint32_t kTxBusy = TP_STATUS_SEND_REQUEST | TP_STATUS_SENDING | TP_STATUS_WRONG_FORMAT;

constexpr uint32_t kV3Align = 8;  // packets in a block start on 8-byte boundaries
constexpr uint32_t kVlanLen = 4;

// The kernel does not write a block while we own it, but nothing it wrote is trusted: each header is
// copied once, and clobbering memory afterwards keeps the compiler from reading the ring again in place
// of the copy, so what we checked is what we use.
template <class T>
inline T read_once(const uint8_t* p) {
  T v;
  memcpy(&v, p, sizeof v);
  asm volatile("" : : "r"(&v) : "memory");
  return v;
}

// One packet's header fields, from a V3 packet header or a V2 slot header.
struct FrameInfo {
  uint32_t mac, snaplen, len, status;
  uint16_t tci, tpid;
};

// Whether the frame h describes lies inside the room bytes from its header (of hdr_size bytes) and says
// nothing contradictory: what both readers check before they read through it.
bool frame_fits(const FrameInfo& h, uint64_t room, uint32_t hdr_size, bool vnet) {
  const uint64_t end = uint64_t(h.mac) + h.snaplen;
  // The virtio_net_hdr sits right before the frame, after the packet's header.
  bool ok = h.mac >= hdr_size + (vnet ? kVnetLen : 0) && end <= room && h.snaplen <= h.len && h.len > 0;
  // The tag goes back in front of the type field: the two addresses move 4 bytes down, into the gap
  // the kernel leaves between a packet's header and its frame.
  if (h.status & TP_STATUS_VLAN_VALID) ok = ok && h.mac >= hdr_size + kVlanLen && h.snaplen >= 2 * ETH_ALEN;
  return ok;
}

// Lends the frame of a packet that frame_fits() passed: its virtio_net_hdr copied out, its VLAN tag put
// back.
BlockWalker::Step lend_frame(uint8_t* pkt, const FrameInfo& h, bool vnet, Span* frame, virtio_net_hdr_mrg_rxbuf* vh,
                             bool* tagged) {
  const bool vlan = h.status & TP_STATUS_VLAN_VALID;
  if (h.snaplen < h.len) return BlockWalker::Step::kTruncated;
  const uint32_t len = h.snaplen + (vlan ? kVlanLen : 0);
  if (len > kMaxFrame) return BlockWalker::Step::kTooBig;
  uint8_t* p = pkt + h.mac;
  *vh = {};
  *tagged = vlan;
  // Copied out before the tag may move the addresses over it.
  if (vnet) memcpy(vh, p - kVnetLen, kVnetLen);
  asm volatile("" : : "r"(vh) : "memory");
  if (vlan) {
    const uint16_t tpid = (h.status & TP_STATUS_VLAN_TPID_VALID) ? h.tpid : ETH_P_8021Q;
    p -= kVlanLen;
    memmove(p, p + kVlanLen, 2 * ETH_ALEN);
    const uint8_t tag[kVlanLen] = {uint8_t(tpid >> 8), uint8_t(tpid), uint8_t(h.tci >> 8), uint8_t(h.tci)};
    memcpy(p + 2 * ETH_ALEN, tag, kVlanLen);
  }
  *frame = Span{p, len};
  return BlockWalker::Step::kFrame;
}

}  // namespace

// ---- BlockWalker --------------------------------------------------------------------------------

bool BlockWalker::ready(const uint8_t* block) {
  const auto* d = reinterpret_cast<const tpacket_block_desc*>(block);
  return __atomic_load_n(&d->hdr.bh1.block_status, __ATOMIC_ACQUIRE) & TP_STATUS_USER;
}

void BlockWalker::start(uint8_t* block, uint32_t size, bool vnet) {
  has_vnet_ = vnet;
  block_ = block;
  valid_ = 0;
  off_ = 0;
  left_ = 0;
  bad_ = true;
  if (size < sizeof(tpacket_block_desc)) return;
  const tpacket_hdr_v1 h = read_once<tpacket_block_desc>(block).hdr.bh1;
  const uint32_t first = h.offset_to_first_pkt;
  if (h.blk_len > size || first < sizeof(tpacket_block_desc) || first > h.blk_len || first % kV3Align) return;
  // Every packet takes at least its header: a count that cannot fit is a lie.
  if (h.num_pkts > (h.blk_len - first) / sizeof(tpacket3_hdr)) return;
  bad_ = false;
  valid_ = h.blk_len;
  off_ = first;
  left_ = h.num_pkts;
}

BlockWalker::Step BlockWalker::next(Span* frame) {
  if (bad_) {
    bad_ = false;
    return Step::kInvalid;
  }
  if (!left_) return Step::kEnd;
  // off_ < valid_ here: the block header or the previous packet's next offset was checked against it.
  const uint64_t room = valid_ - off_;
  if (room < sizeof(tpacket3_hdr)) {
    left_ = 0;
    return Step::kInvalid;
  }
  uint8_t* const pkt = block_ + off_;
  const tpacket3_hdr h = read_once<tpacket3_hdr>(pkt);
  const FrameInfo fi{h.tp_mac, h.tp_snaplen, h.tp_len, h.tp_status, uint16_t(h.hv1.tp_vlan_tci), h.hv1.tp_vlan_tpid};
  const uint64_t end = uint64_t(h.tp_mac) + h.tp_snaplen;
  bool ok = frame_fits(fi, room, sizeof(tpacket3_hdr), has_vnet_);
  // Every packet but the last names the next one: past this frame, aligned, inside the block.
  if (left_ > 1) ok = ok && h.tp_next_offset >= end && h.tp_next_offset % kV3Align == 0 && h.tp_next_offset < room;
  if (!ok) {
    left_ = 0;
    return Step::kInvalid;
  }
  --left_;
  off_ += h.tp_next_offset;
  return lend_frame(pkt, fi, has_vnet_, frame, &vnet_, &tagged_);
}

// ---- SlotReader ---------------------------------------------------------------------------------

bool SlotReader::ready(const uint8_t* slot) {
  return __atomic_load_n(&reinterpret_cast<const tpacket2_hdr*>(slot)->tp_status, __ATOMIC_ACQUIRE) & TP_STATUS_USER;
}

BlockWalker::Step SlotReader::read(uint8_t* slot, uint32_t size, bool vnet, Span* frame) {
  if (size < sizeof(tpacket2_hdr)) return BlockWalker::Step::kInvalid;
  const tpacket2_hdr h = read_once<tpacket2_hdr>(slot);
  const FrameInfo fi{h.tp_mac, h.tp_snaplen, h.tp_len, h.tp_status, h.tp_vlan_tci, h.tp_vlan_tpid};
  if (!frame_fits(fi, size, sizeof(tpacket2_hdr), vnet)) return BlockWalker::Step::kInvalid;
  return lend_frame(slot, fi, vnet, frame, &vnet_, &tagged_);
}

// ---- AfPacketPort -------------------------------------------------------------------------------

AfPacketPort::AfPacketPort(const std::string& name, const TpacketRing& ring, uint32_t offloads, QueueCounters* counters,
                           KernelDrops* kernel)
    : Port(name),
      counters_(counters),
      kernel_(kernel),
      ring_(ring),
      offloads_(offloads),
      tx_data_(ring.version == 2 ? kTxDataV2 : kTxData),
      tx_len_(kTxFrames, 0) {}

AfPacketPort::~AfPacketPort() {
  // What the kernel dropped since the data path last asked would otherwise close with the socket.
  tpacket_stats_v3 st;
  if (kernel_ && read_kernel_stats(&st)) {
    kernel_->leave(KERNEL_DROP_PACKET_DROPS, st.tp_drops);
    kernel_->leave(KERNEL_EVENT_PACKET_FREEZE_Q_CNT, st.tp_freeze_q_cnt);
  }
  if (map_) munmap(map_, map_len_);
  // Closing the socket also drops its promiscuous membership.
  if (fd_ >= 0) close(fd_);
}

std::unique_ptr<AfPacketPort> AfPacketPort::open(const std::string& name, const std::string& ifname,
                                                 const TpacketRing& ring, uint32_t offloads, int* fanout,
                                                 QueueCounters* counters, KernelDrops* kernel, std::string* err) {
  std::unique_ptr<AfPacketPort> p(new AfPacketPort(name, ring, offloads, counters, kernel));
  if (!p->setup(ifname, fanout, err)) return nullptr;
  return p;
}

bool AfPacketPort::setup(const std::string& ifname, int* fanout, std::string* err) {
  const std::string where = "interface \"" + ifname + "\"";
  auto fail = [&](const std::string& what) {
    const int e = errno;
    *err = what + ": " + strerror(e);
    if (e == EPERM) *err += " (AF_PACKET sockets need CAP_NET_RAW, promiscuous mode CAP_NET_ADMIN)";
    return false;
  };
  if (ifname.empty() || ifname.size() >= IFNAMSIZ) {
    *err = where + " is not a valid interface name (1 to " + std::to_string(IFNAMSIZ - 1) + " bytes)";
    return false;
  }
  ifindex_ = int(if_nametoindex(ifname.c_str()));
  if (!ifindex_) {
    if (errno == ENODEV || errno == ENXIO) {
      *err = where + " does not exist";
      return false;
    }
    return fail("cannot look up " + where);
  }
  const long page = sysconf(_SC_PAGESIZE);
  if (page > 0 && ring_.block_size % uint32_t(page)) {
    *err = where + ": a receive block of " + std::to_string(ring_.block_size) + " bytes is not a whole number of " +
           std::to_string(page) + "-byte pages";
    return false;
  }
  // Protocol 0: the socket receives nothing until bind(), after its rings exist.
  fd_ = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd_ < 0) return fail("cannot open an AF_PACKET socket for " + where);
  auto opt = [&](int level, int name, const void* v, socklen_t len) {
    return setsockopt(fd_, level, name, v, len) == 0;
  };
  const int version = ring_.version == 2 ? TPACKET_V2 : TPACKET_V3, one = 1;
  if (!opt(SOL_PACKET, PACKET_VERSION, &version, sizeof version))
    return fail("cannot use TPACKET_V" + std::to_string(ring_.version) + " on " + where);
  // Before the rings (the kernel refuses it after, EBUSY): whether offloads are withheld or not, a
  // received super-frame or partial checksum must say so, or it would go on as a corrupt frame.
  if (!opt(SOL_PACKET, PACKET_VNET_HDR, &one, sizeof one))
    return fail("cannot ask for virtio-net headers (PACKET_VNET_HDR) on " + where);
  // A V2 socket reads only the first four fields, which tpacket_req3 shares with tpacket_req.
  tpacket_req3 rx = {};
  if (ring_.version == 2) {
    rx.tp_block_size = TpacketRing::kV2Block;
    rx.tp_block_nr = ring_.v2_blocks();
    rx.tp_frame_size = TpacketRing::kV2Slot;
    rx.tp_frame_nr = ring_.v2_slots();
  } else {
    rx.tp_block_size = ring_.block_size;
    rx.tp_block_nr = ring_.blocks;
    rx.tp_frame_size = kRxFrameSize;
    rx.tp_frame_nr = ring_.block_size / kRxFrameSize * ring_.blocks;
    rx.tp_retire_blk_tov = ring_.retire_ms;
  }
  if (!opt(SOL_PACKET, PACKET_RX_RING, &rx, sizeof rx)) return fail("cannot set up the receive ring of " + where);
  tpacket_req3 tx = {};
  tx.tp_block_size = kTxBlockSize;
  tx.tp_block_nr = kTxBlocks;
  tx.tp_frame_size = kTxFrameSize;
  tx.tp_frame_nr = kTxFrames;
  if (!opt(SOL_PACKET, PACKET_TX_RING, &tx, sizeof tx)) return fail("cannot set up the transmit ring of " + where);
  // Both rings in one mapping, receive first, as the kernel lays them out.
  map_len_ = size_t(ring_.rx_bytes()) + size_t(kTxBlocks) * kTxBlockSize;
  void* m = mmap(nullptr, map_len_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd_, 0);
  if (m == MAP_FAILED) return fail("cannot map the rings of " + where);
  map_ = static_cast<uint8_t*>(m);
  // Our own transmissions must not come back as received frames: a switch would loop them.
  if (!opt(SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof one))
    return fail("cannot ignore outgoing frames on " + where);
  // Frames go straight to the driver, not through the qdisc: a switch port has its own queues and
  // the qdisc's lock and copy cost a large share of the transmit rate.
  if (!opt(SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof one)) return fail("cannot bypass the qdisc of " + where);
  // Room in the send buffer for a full transmit ring, so that the kernel takes every queued frame in one
  // send(). Best effort: without CAP_NET_ADMIN the default applies and frames it has no room for wait
  // for the next send().
  const int sndbuf = int(kTxFrames * kTxFrameSize);
  opt(SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof sndbuf);
  if (!add_promiscuous_membership(fd_, ifindex_)) return fail("cannot put " + where + " in promiscuous mode");
  if (!refresh_mtu()) return fail("cannot read the MTU of " + where);
  // A socket of a fanout group would see every frame of the interface between bind() and joining the
  // group, copies of what the group's sockets get: it takes nothing until it has joined.
  sock_filter drop_all = {BPF_RET | BPF_K, 0, 0, 0};
  const sock_fprog drop_prog = {1, &drop_all};
  if (fanout && !opt(SOL_SOCKET, SO_ATTACH_FILTER, &drop_prog, sizeof drop_prog))
    return fail("cannot attach a filter to " + where);
  sockaddr_ll sll = {};
  sll.sll_family = AF_PACKET;
  sll.sll_protocol = htons(ETH_P_ALL);
  sll.sll_ifindex = ifindex_;
  if (bind(fd_, reinterpret_cast<sockaddr*>(&sll), sizeof sll) < 0) return fail("cannot bind to " + where);
  if (fanout && !join_fanout(fanout)) return fail("cannot join the fanout group of " + where);
  if (fanout && !opt(SOL_SOCKET, SO_DETACH_FILTER, &one, sizeof one))
    return fail("cannot detach the filter of " + where);
  return true;
}

// Hash fanout: the kernel spreads the interface's frames over the group's sockets by flow hash, so one
// flow's frames stay on one socket, in order. The first socket asks the kernel for an id no other group
// in the namespace uses; the others join it. IP fragments are not reassembled (PACKET_FANOUT_FLAG_DEFRAG):
// a switch forwards frames as they came.
bool AfPacketPort::join_fanout(int* group) {
  const bool first = *group < 0;
  const int arg = (first ? 0 : *group) | (PACKET_FANOUT_HASH | (first ? PACKET_FANOUT_FLAG_UNIQUEID : 0)) << 16;
  if (setsockopt(fd_, SOL_PACKET, PACKET_FANOUT, &arg, sizeof arg) != 0) return false;
  if (!first) return true;
  int got = 0;
  socklen_t len = sizeof got;
  if (getsockopt(fd_, SOL_PACKET, PACKET_FANOUT, &got, &len) != 0) return false;
  *group = got & 0xffff;
  return true;
}

uint8_t* AfPacketPort::rx_block(uint32_t i) const { return map_ + size_t(i) * ring_.block_size; }

// Slots are laid out block by block, in both rings: those that do not fill a block leave its tail unused.
uint8_t* AfPacketPort::rx_slot(uint32_t i) const {
  using R = TpacketRing;
  return map_ + size_t(i / R::kV2SlotsPerBlock) * R::kV2Block + size_t(i % R::kV2SlotsPerBlock) * R::kV2Slot;
}

uint8_t* AfPacketPort::tx_frame(uint32_t i) const {
  return map_ + size_t(ring_.rx_bytes()) + size_t(i / kTxFramesPerBlock) * kTxBlockSize +
         size_t(i % kTxFramesPerBlock) * kTxFrameSize;
}

uint32_t* AfPacketPort::tx_status(uint8_t* f) const {
  return ring_.version == 2 ? &reinterpret_cast<tpacket2_hdr*>(f)->tp_status
                            : &reinterpret_cast<tpacket3_hdr*>(f)->tp_status;
}

void AfPacketPort::set_tx_len(uint8_t* f, uint32_t len) const {
  if (ring_.version == 2) {
    auto* h = reinterpret_cast<tpacket2_hdr*>(f);
    h->tp_len = h->tp_snaplen = len;
  } else {
    auto* h = reinterpret_cast<tpacket3_hdr*>(f);
    h->tp_next_offset = 0;
    h->tp_len = h->tp_snaplen = len;
  }
}

void AfPacketPort::give_back(uint32_t block) {
  auto* d = reinterpret_cast<tpacket_block_desc*>(rx_block(block));
  __atomic_store_n(&d->hdr.bh1.block_status, uint32_t(TP_STATUS_KERNEL), __ATOMIC_RELEASE);
}

// By index, not name: the interface may have been renamed since we opened it.
bool AfPacketPort::refresh_mtu() {
  ifreq ifr = {};
  ifr.ifr_ifindex = ifindex_;
  if (ioctl(fd_, SIOCGIFNAME, &ifr) < 0 || ioctl(fd_, SIOCGIFMTU, &ifr) < 0) return false;
  mtu_ = uint32_t(ifr.ifr_mtu);
  return true;
}

// A frame longer than the device MTU plus the Ethernet header, plus a VLAN tag when the frame carries
// one, would be dropped unseen past the driver: the kernel checks no MTU for a socket with
// PACKET_VNET_HDR. A frame over our last reading of the MTU makes us read it again, once per burst,
// since it may have been raised; a lowered one is seen within kMtuEveryNs (tx_burst reads it again).
constexpr uint64_t kMtuEveryNs = 100'000'000;

bool AfPacketPort::fits_link(const uint8_t* frame, uint32_t len) {
  const bool tagged = len >= ETH_HLEN && frame[12] == (ETH_P_8021Q >> 8) && frame[13] == (ETH_P_8021Q & 0xff);
  const uint32_t extra = ETH_HLEN + (tagged ? kVlanLen : 0);
  if (uint64_t(len) <= uint64_t(mtu_) + extra) return true;
  if (mtu_fresh_) return false;
  mtu_fresh_ = true;
  return refresh_mtu() && uint64_t(len) <= uint64_t(mtu_) + extra;
}

// The kernel's virtio_net_hdr of the frame the walker or slot reader just lent, checked by the rules a guest's is (it
// is no more trusted than a guest's), against the frame as the kernel described it: its offsets count
// from the frame's start without the VLAN tag the walker put back, and move with it.
QueueCounter AfPacketPort::read_vnet_header(const virtio_net_hdr_mrg_rxbuf& h, bool tagged, uint32_t len,
                                            PacketMeta* m) const {
  *m = PacketMeta{};
  if (h.flags == 0 && h.gso_type == VIRTIO_NET_HDR_GSO_NONE) return kQueueCounterCount;
  const uint32_t tag = tagged ? kVlanLen : 0;
  const QueueCounter why = read_offloads(h, len - tag, kOffloads, m);
  if (why != kQueueCounterCount || !tag) return why;
  if (m->flags & PacketMeta::kCsumPartial) m->csum_start = uint16_t(m->csum_start + tag);
  if (m->gso_type) m->hdr_len = uint16_t(m->hdr_len + tag);
  return why;
}

// Puts a lent frame into b once its kernel header passed, counted; false (the drop counted) otherwise.
bool AfPacketPort::take(Burst& b, const Span& f, const virtio_net_hdr_mrg_rxbuf& h, bool tagged, uint32_t cookie) {
  PacketMeta meta;
  if (const QueueCounter why = read_vnet_header(h, tagged, f.len, &meta); why != kQueueCounterCount) {
    counters_->add(why);
    return false;
  }
  b.span[b.nspans] = f;
  b.pkt[b.n] = PacketView{f.len, b.nspans, 1, cookie, meta};
  b.n++;
  b.nspans++;
  if (meta.gso_type) counters_->add(RX_SUPER_FRAMES);
  counters_->add(RX_PACKETS);
  counters_->add(RX_BYTES, f.len);
  counters_->add(RX_SIZE_64 + size_bin(f.len));
  return true;
}

uint16_t AfPacketPort::rx_burst(uint16_t, Burst& b) {
  b.clear();
  // Frames the kernel had no send-buffer room for in the last burst.
  if (tx_pending_) flush_tx();
  if (ring_.version == 2) return rx_burst_v2(b);
  // The previous burst was released: none of its frames is still lent.
  lent_from_cur_ = false;
  while (b.n < kBurst) {
    if (!walking_) {
      uint8_t* blk = rx_block(rx_cur_);
      if (!BlockWalker::ready(blk)) break;
      walker_.start(blk, ring_.block_size, true);
      walking_ = true;
    }
    Span f;
    switch (walker_.next(&f)) {
      case BlockWalker::Step::kFrame:
        if (take(b, f, walker_.vnet(), walker_.tagged(), rx_cur_)) lent_from_cur_ = true;
        break;
      case BlockWalker::Step::kTruncated: counters_->add(DROP_RX_TRUNCATED); break;
      case BlockWalker::Step::kTooBig: counters_->add(DROP_RX_TOO_BIG); break;
      case BlockWalker::Step::kInvalid: counters_->add(INVALID_KERNEL_ENTRY); break;
      case BlockWalker::Step::kEnd:
        // A block none of this burst's frames points into goes back at once; the others on release().
        walking_ = false;
        if (lent_from_cur_)
          done_[ndone_++] = rx_cur_;
        else
          give_back(rx_cur_);
        lent_from_cur_ = false;
        rx_cur_ = (rx_cur_ + 1) % ring_.blocks;
        break;
    }
  }
  return b.n;
}

// Every slot the burst read goes back, lent or dropped: the kernel only looks at the slot at its head, so
// the order they go back in does not matter to it.
uint16_t AfPacketPort::rx_burst_v2(Burst& b) {
  const uint32_t slots = ring_.v2_slots();
  rx_from_ = rx_head_;
  for (uint32_t read = 0; b.n < kBurst && read < slots; read++) {
    uint8_t* slot = rx_slot(rx_head_);
    if (!SlotReader::ready(slot)) break;
    const uint32_t at = rx_head_;
    rx_head_ = (rx_head_ + 1) % slots;
    Span f;
    switch (slot_reader_.read(slot, TpacketRing::kV2Slot, true, &f)) {
      case BlockWalker::Step::kFrame: take(b, f, slot_reader_.vnet(), slot_reader_.tagged(), at); break;
      case BlockWalker::Step::kTruncated: counters_->add(DROP_RX_TRUNCATED); break;
      case BlockWalker::Step::kTooBig: counters_->add(DROP_RX_TOO_BIG); break;
      case BlockWalker::Step::kInvalid:
      case BlockWalker::Step::kEnd: counters_->add(INVALID_KERNEL_ENTRY); break;
    }
  }
  return b.n;
}

void AfPacketPort::release(uint16_t, Burst&) {
  if (ring_.version == 2) {
    const uint32_t slots = ring_.v2_slots();
    for (uint32_t s = rx_from_; s != rx_head_; s = (s + 1) % slots)
      __atomic_store_n(&reinterpret_cast<tpacket2_hdr*>(rx_slot(s))->tp_status, uint32_t(TP_STATUS_KERNEL),
                       __ATOMIC_RELEASE);
    rx_from_ = rx_head_;
    return;
  }
  for (uint32_t i = 0; i < ndone_; i++) give_back(done_[i]);
  ndone_ = 0;
}

uint16_t AfPacketPort::tx_burst(uint16_t, const Burst& b) {
  uint16_t taken = 0;
  uint32_t super_frames = 0;
  mtu_fresh_ = false;
  if (const uint64_t now = now_ns(); now - mtu_read_ns_ > kMtuEveryNs) {
    mtu_read_ns_ = now;
    refresh_mtu();
  }
  for (uint16_t i = 0; i < b.n; i++) {
    const PacketView& p = b.pkt[i];
    if (p.len > kTxMaxLen) {
      counters_->add(DROP_TX_TOO_BIG);
      continue;
    }
    uint8_t* f = tx_frame(tx_head_);
    if (tx_pending_ == kTxFrames || (__atomic_load_n(tx_status(f), __ATOMIC_ACQUIRE) & kTxBusy)) {
      counters_->add(DROP_TX_NO_BUFFER, b.n - i);
      break;
    }
    // What the packet still needs is what we said the kernel takes (OffloadFallback did the rest).
    virtio_net_hdr_mrg_rxbuf vh = {};
    if (p.meta.flags & PacketMeta::kCsumPartial) {
      vh.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
      vh.csum_start = p.meta.csum_start;
      vh.csum_offset = p.meta.csum_offset;
    }
    if (p.meta.gso_type) {
      vh.gso_type = p.meta.gso_type;
      vh.gso_size = p.meta.gso_size;
      vh.hdr_len = p.meta.hdr_len;
    }
    memcpy(f + tx_data_, &vh, kVnetLen);
    uint8_t* d = f + tx_data_ + kVnetLen;
    uint32_t at = 0;
    for (uint16_t s = 0; s < p.nseg && at < p.len; s++) {
      const Span& sp = b.span[p.first + s];
      const uint32_t n = std::min(sp.len, p.len - at);
      memcpy(d + at, sp.p, n);
      at += n;
    }
    // A super-frame goes out as segments of gso_size; the kernel checks them against the MTU itself.
    if (!p.meta.gso_type && !fits_link(d, p.len)) {
      counters_->add(DROP_TX_TOO_BIG);
      continue;
    }
    if (p.meta.gso_type) super_frames++;
    set_tx_len(f, kVnetLen + p.len);
    tx_len_[tx_head_] = p.len;
    __atomic_store_n(tx_status(f), uint32_t(TP_STATUS_SEND_REQUEST), __ATOMIC_RELEASE);
    tx_head_ = (tx_head_ + 1) % kTxFrames;
    tx_pending_++;
    taken++;
  }
  if (tx_pending_) flush_tx();
  counters_->add(TX_SUPER_FRAMES, super_frames);
  return taken;
}

// One send() hands the kernel every queued frame; it works through them in ring order within the call.
void AfPacketPort::flush_tx() {
  // A round ends the loop or removes one frame the kernel refused: at most a ring's worth of rounds.
  for (uint32_t round = 0; round <= kTxFrames && tx_pending_; round++) {
    if (::send(fd_, nullptr, 0, MSG_DONTWAIT) < 0 && (errno == ENETDOWN || errno == ENXIO)) {
      reclaim_tx();
      return;
    }
    if (!reap_tx()) return;
  }
}

// Counts the frames the kernel has taken, oldest first. true when it dropped a frame the kernel refused
// and the kernel must be asked again for the ones behind it.
bool AfPacketPort::reap_tx() {
  while (tx_pending_) {
    const uint32_t st = __atomic_load_n(tx_status(tx_frame(tx_tail_)), __ATOMIC_ACQUIRE);
    if (st & TP_STATUS_WRONG_FORMAT) {
      drop_refused_frame();
      return true;
    }
    if (st & TP_STATUS_SEND_REQUEST) return false;
    counters_->add(TX_PACKETS);
    counters_->add(TX_BYTES, tx_len_[tx_tail_]);
    counters_->add(TX_SIZE_64 + size_bin(tx_len_[tx_tail_]));
    tx_tail_ = (tx_tail_ + 1) % kTxFrames;
    tx_pending_--;
  }
  return false;
}

// The kernel refuses a frame for its length: above the device MTU, which must have been lowered since we
// read it (or, without CAP_SYS_RAWIO, shorter than an Ethernet header); or, rarely, for a virtio_net_hdr
// its own checks find wrong for the frame's protocol headers (ours passed core/offload's rules). It then stops at that
// slot and looks no further until the slot holds a send request again, so every later request moves back one slot, in
// order, and the last slot of the queue is ours again.
void AfPacketPort::drop_refused_frame() {
  counters_->add(DROP_TX_TOO_BIG);
  refresh_mtu();
  uint32_t dst = tx_tail_;
  for (uint32_t k = 1; k < tx_pending_; k++) {
    const uint32_t src = (tx_tail_ + k) % kTxFrames;
    uint8_t* d = tx_frame(dst);
    memcpy(d + tx_data_, tx_frame(src) + tx_data_, kVnetLen + tx_len_[src]);
    set_tx_len(d, kVnetLen + tx_len_[src]);
    tx_len_[dst] = tx_len_[src];
    __atomic_store_n(tx_status(d), uint32_t(TP_STATUS_SEND_REQUEST), __ATOMIC_RELEASE);
    dst = src;
  }
  __atomic_store_n(tx_status(tx_frame(dst)), uint32_t(TP_STATUS_AVAILABLE), __ATOMIC_RELEASE);
  tx_head_ = dst;
  tx_pending_--;
}

// The interface is down or gone and the kernel took nothing: the queued frames are dropped, as a NIC
// without link drops them, rather than sent stale when the link returns.
void AfPacketPort::reclaim_tx() {
  counters_->add(DROP_TX_NOT_READY, tx_pending_);
  for (; tx_pending_; tx_pending_--) {
    __atomic_store_n(tx_status(tx_frame(tx_tail_)), uint32_t(TP_STATUS_AVAILABLE), __ATOMIC_RELEASE);
    tx_tail_ = (tx_tail_ + 1) % kTxFrames;
  }
  tx_head_ = tx_tail_;
}

// The kernel's counts start again from zero at every read (32 bits cannot wrap in 100 ms of frames):
// each read is the next delta, and the socket has no other reader. A V2 socket fills in the first two
// fields only (tpacket_stats): no freezes to count.
bool AfPacketPort::read_kernel_stats(tpacket_stats_v3* st) const {
  memset(st, 0, sizeof *st);
  socklen_t len = sizeof *st;
  return fd_ >= 0 && getsockopt(fd_, SOL_PACKET, PACKET_STATISTICS, st, &len) == 0;
}

void AfPacketPort::publish_counters() {
  tpacket_stats_v3 st;
  if (!kernel_ || !kernel_->due(now_ns()) || !read_kernel_stats(&st)) return;
  kernel_->add(KERNEL_DROP_PACKET_DROPS, st.tp_drops);
  kernel_->add(KERNEL_EVENT_PACKET_FREEZE_Q_CNT, st.tp_freeze_q_cnt);
}

bool AfPacketPort::arm_wakeup(std::vector<pollfd>& fds) {
  if (ring_.version == 2 ? SlotReader::ready(rx_slot(rx_head_)) : walking_ || BlockWalker::ready(rx_block(rx_cur_)))
    return false;
  // A socket error (ENETDOWN when the interface goes down) makes poll() return at once until it is read.
  int e = 0;
  socklen_t len = sizeof e;
  getsockopt(fd_, SOL_SOCKET, SO_ERROR, &e, &len);
  fds.push_back({fd_, POLLIN, 0});
  return true;
}

bool add_promiscuous_membership(int fd, int ifindex) {
  packet_mreq mr = {};
  mr.mr_ifindex = ifindex;
  mr.mr_type = PACKET_MR_PROMISC;
  return setsockopt(fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mr, sizeof mr) == 0;
}

}  // namespace vw
