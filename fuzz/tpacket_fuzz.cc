// Structure-aware fuzzer for BlockWalker (addon/af_packet.cc), the reader of the TPACKET_V3 receive
// blocks the kernel hands an AF_PACKET uplink, and for SlotReader, its reader of a TPACKET_V2 slot
// (flags bit 2; see fuzz_slot below).
//
// Each input builds a block as the kernel lays one out (block header, then packets of the given sizes
// at 8-byte aligned offsets, each with its header, address and frame at tp_mac = 82; VLAN tags taken out
// into the header, some frames cut short), then mutates header fields and offsets, and walks it. The
// block sits at the end of a mapping whose next page is PROT_NONE, and its first page follows another,
// so any read or write outside it faults (ASan does not watch mmap'd memory).
//
// Oracles, besides ASan/UBSan and the guard pages (docs/security.md, uplink rows):
//   - every lent frame lies inside the block and the bytes the kernel said it wrote (blk_len), is not
//     empty and is no longer than kMaxFrame;
//   - frames, truncated and too-big steps together never exceed the block's num_pkts; kInvalid comes at
//     most once; after kInvalid or kEnd only kEnd;
//   - the walker changes no byte outside the frames it lent (the VLAN tag goes back inside the frame);
//   - an unmutated block gives back exactly what was built: every frame, byte for byte, with its tag,
//     and on a vnet socket the virtio_net_hdr the kernel put before it.
//
// Input (read front to back; missing bytes read as 0):
//   u8 pages (block = 1 + pages % 40 pages), u8 packets (% 64), u8 flags (bit 0: not handed over,
//   bit 1: a PACKET_VNET_HDR socket, each frame's 10 bytes before tp_mac its virtio_net_hdr, bit 2: a V2
//   slot of that many pages instead, read as fuzz_slot says),
//   per packet: u16 frame length, u8 kind (bit 0: cut short, bit 1: VLAN tag, bit 2: tag with TPID),
//   then mutations to the end: u8 field, u8 packet, u32 value.
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "ports/uplink/af_packet.h"

using namespace vw;

namespace {

constexpr uint32_t kPage = 4096;
constexpr uint32_t kFirst = 48;  // BLK_PLUS_PRIV(0): the block header, 8-byte aligned
constexpr uint32_t kMac = 82;    // where the kernel puts an Ethernet frame after a packet's header

[[noreturn]] void die(const char* what) {
  fprintf(stderr, "tpacket_fuzz: invariant broken: %s\n", what);
  abort();
}

struct Reader {
  const uint8_t* p;
  size_t n;
  bool empty() const { return n == 0; }
  uint8_t u8() {
    if (!n) return 0;
    n--;
    return *p++;
  }
  uint16_t u16() { return uint16_t(u8() | u8() << 8); }
  uint32_t u32() { return uint32_t(u16()) | uint32_t(u16()) << 16; }
};

uint32_t align8(uint32_t v) { return (v + 7) & ~7u; }

// A value near one that matters: exact, a little above or below, wrapped around, or anything.
uint32_t near(uint32_t v, uint32_t around) {
  const int32_t small = int8_t(v >> 8);
  switch (v & 7) {
    case 0: return around;
    case 1:
    case 2: return around + uint32_t(small);
    case 3: return ~0u - uint32_t(v >> 8 & 0xff);
    case 4: return uint32_t(small) & ~7u;
    case 5: return around & ~7u;
    default: return v >> 3;
  }
}

struct Built {
  uint32_t off;   // offset of the packet header
  uint32_t snap;  // bytes of frame in the block (tag taken out)
  bool truncated, vlan;
  uint16_t tpid, tci;
};

// The frame the kernel received, as it should come out of the walker.
std::vector<uint8_t> frame_bytes(uint32_t i, const Built& b) {
  std::vector<uint8_t> f;
  for (uint32_t k = 0; k < b.snap; k++) f.push_back(uint8_t(i * 31 + k * 7 + 1));
  if (b.vlan) {
    const uint8_t tag[4] = {uint8_t(b.tpid >> 8), uint8_t(b.tpid), uint8_t(b.tci >> 8), uint8_t(b.tci)};
    f.insert(f.begin() + 2 * ETH_ALEN, tag, tag + 4);
  }
  return f;
}

struct Mapping {
  uint8_t* base = nullptr;
  size_t len = 0;
  uint8_t* block = nullptr;
  Mapping(uint32_t size) {
    // [guard][block][guard]: the block ends where the second guard starts.
    len = size + 2 * kPage;
    void* m = mmap(nullptr, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) abort();
    base = static_cast<uint8_t*>(m);
    block = base + kPage;
    if (mprotect(block, size, PROT_READ | PROT_WRITE) != 0) abort();
  }
  ~Mapping() { munmap(base, len); }
};

// A TPACKET_V2 slot of `pages` pages as the kernel writes one (header, the virtio_net_hdr on a vnet
// socket, the frame at tp_mac = 76, the kernel's offset with PACKET_VNET_HDR), then mutated, then read.
// Oracles as for a block: a lent frame lies inside the slot and the bytes the kernel said it wrote, is not
// empty and at most kMaxFrame; nothing outside it changes; an unmutated slot gives back its frame and
// header exactly (or says truncated or too big, as built). Input after the block's three bytes: u16 frame
// length, u8 kind (bits as a block's packet), then u8 field, u32 value mutations to the end.
int fuzz_slot(Reader& in, uint32_t ssize, uint8_t flags) {
  constexpr uint32_t kMacV2 = 76;
  Mapping m(ssize);
  uint8_t* slot = m.block;
  const bool vnet = flags & 2;
  const uint32_t snap = std::min<uint32_t>(in.u16(), ssize - kMacV2);
  const uint8_t kind = in.u8();
  const Built b{0,   snap, bool(kind & 1), (kind & 2) && snap >= 2 * ETH_ALEN, uint16_t(kind & 4 ? 0x88a8 : 0x8100),
                1234};
  auto* h = reinterpret_cast<tpacket2_hdr*>(slot);
  h->tp_status = (flags & 1) ? TP_STATUS_KERNEL : TP_STATUS_USER;
  h->tp_snaplen = snap;
  h->tp_len = snap + (b.truncated ? 7 : 0);
  h->tp_mac = kMacV2;
  h->tp_net = kMacV2 + ETH_HLEN;
  if (b.vlan) {
    h->tp_status |= TP_STATUS_VLAN_VALID | ((kind & 4) ? TP_STATUS_VLAN_TPID_VALID : 0);
    h->tp_vlan_tci = b.tci;
    h->tp_vlan_tpid = (kind & 4) ? b.tpid : 0;
  }
  const std::vector<uint8_t> built = frame_bytes(0, Built{0, snap, false, false, 0, 0});
  if (snap) memcpy(slot + kMacV2, built.data(), snap);
  for (uint32_t k = 0; k < 10; k++) slot[kMacV2 - 10 + k] = uint8_t(k + 1);
  bool mutated = false;
  while (!in.empty()) {
    const uint8_t field = in.u8();
    const uint32_t v = in.u32();
    mutated = true;
    switch (field % 6) {
      // clang-format off
      case 0: h->tp_status = near(v, TP_STATUS_USER); break;
      case 1: h->tp_mac = uint16_t(near(v, h->tp_mac)); break;
      case 2: h->tp_snaplen = near(v, field & 0x10 ? ssize - h->tp_mac : h->tp_snaplen); break;
      case 3: h->tp_len = near(v, h->tp_snaplen); break;
      case 4: h->tp_status ^= v & (TP_STATUS_VLAN_VALID | TP_STATUS_VLAN_TPID_VALID); break;
      case 5: h->tp_vlan_tpid = uint16_t(v); break;
        // clang-format on
    }
  }
  const std::vector<uint8_t> before(slot, slot + ssize);
  const uint32_t status = h->tp_status;
  const bool ready = SlotReader::ready(slot);
  if (ready != bool(status & TP_STATUS_USER)) die("SlotReader::ready() disagrees with tp_status");
  if (!ready) return 0;
  SlotReader r;
  Span s{};
  const BlockWalker::Step st = r.read(slot, ssize, vnet, &s);
  if (st == BlockWalker::Step::kEnd) die("a slot read as kEnd");
  uint32_t from = 0, to = 0;  // the lent frame's bytes
  if (st == BlockWalker::Step::kFrame) {
    const uint64_t valid = std::min<uint64_t>(uint64_t(h->tp_mac) + h->tp_snaplen, ssize);
    if (s.p < slot || s.len == 0 || uint64_t(s.p - slot) + s.len > valid)
      die("a lent frame is outside the slot's valid bytes");
    if (s.len > kMaxFrame) die("a lent frame is longer than kMaxFrame");
    from = uint32_t(s.p - slot);
    to = from + s.len;
  }
  if (memcmp(slot, before.data(), from) != 0 || memcmp(slot + to, before.data() + to, ssize - to) != 0)
    die("the slot reader wrote outside the frame it lent");
  if (mutated) return 0;
  if (snap == 0 && !b.truncated) {
    if (st != BlockWalker::Step::kInvalid) die("an empty frame was not refused");
    return 0;
  }
  const uint32_t out_len = snap + (b.vlan ? 4 : 0);
  const BlockWalker::Step expect = b.truncated           ? BlockWalker::Step::kTruncated
                                   : out_len > kMaxFrame ? BlockWalker::Step::kTooBig
                                                         : BlockWalker::Step::kFrame;
  if (st != expect) die("a valid slot was misread");
  if (st != BlockWalker::Step::kFrame) return 0;
  const std::vector<uint8_t> want = frame_bytes(0, b);
  if (s.len != want.size() || memcmp(s.p, want.data(), want.size()) != 0) die("a valid slot's frame came out changed");
  uint8_t want_hdr[10] = {};
  if (vnet)
    for (uint32_t k = 0; k < 10; k++) want_hdr[k] = uint8_t(k + 1);
  if (memcmp(&r.vnet(), want_hdr, 10) != 0) die("a valid slot's virtio_net_hdr came out changed");
  return 0;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Reader in{data, size};
  const uint32_t bsize = (1 + in.u8() % 40) * kPage;
  const uint32_t want = in.u8() % 64;
  const uint8_t flags = in.u8();
  if (flags & 4) return fuzz_slot(in, std::max<uint32_t>(bsize, 2 * kPage), flags);
  Mapping m(bsize);
  uint8_t* blk = m.block;

  // ---- a block as the kernel writes it ----
  std::vector<Built> pkts;
  uint32_t at = kFirst;
  for (uint32_t i = 0; i < want; i++) {
    const uint32_t snap = in.u16();
    const uint8_t kind = in.u8();
    // The kernel starts a new block unless a packet fits with room to spare (curr + len < end).
    if (uint64_t(at) + align8(kMac + snap) >= bsize) break;
    Built b{at,
            snap,
            bool(kind & 1),
            (kind & 2) && snap >= 2 * ETH_ALEN,
            uint16_t(kind & 4 ? 0x88a8 : 0x8100),
            uint16_t(i * 97 + 3)};
    auto* h = reinterpret_cast<tpacket3_hdr*>(blk + at);
    h->tp_next_offset = align8(kMac + snap);
    h->tp_snaplen = snap;
    h->tp_len = snap + (b.truncated ? 1 + i : 0);
    h->tp_mac = kMac;
    h->tp_net = kMac + ETH_HLEN;
    h->tp_status = TP_STATUS_USER;
    if (b.vlan) {
      h->tp_status |= TP_STATUS_VLAN_VALID | ((kind & 4) ? TP_STATUS_VLAN_TPID_VALID : 0);
      h->hv1.tp_vlan_tci = b.tci;
      h->hv1.tp_vlan_tpid = (kind & 4) ? b.tpid : 0;
    }
    std::vector<uint8_t> f = frame_bytes(i, Built{b.off, snap, false, false, 0, 0});
    if (snap) memcpy(blk + at + kMac, f.data(), snap);
    for (uint32_t k = 0; k < 10; k++) blk[at + kMac - 10 + k] = uint8_t(i * 5 + k);
    at += align8(kMac + snap);
    pkts.push_back(b);
  }
  if (!pkts.empty()) reinterpret_cast<tpacket3_hdr*>(blk + pkts.back().off)->tp_next_offset = 0;
  auto* bd = reinterpret_cast<tpacket_block_desc*>(blk);
  bd->version = TPACKET_V3;
  bd->offset_to_priv = kFirst;
  bd->hdr.bh1.block_status = (flags & 1) ? TP_STATUS_KERNEL : TP_STATUS_USER;
  bd->hdr.bh1.num_pkts = uint32_t(pkts.size());
  bd->hdr.bh1.offset_to_first_pkt = kFirst;
  bd->hdr.bh1.blk_len = at;

  // ---- what the kernel should never write ----
  bool mutated = false;
  while (!in.empty()) {
    const uint8_t field = in.u8();
    const uint32_t target = pkts.empty() ? 0 : in.u8() % pkts.size();
    const uint32_t v = in.u32();
    mutated = true;
    tpacket_hdr_v1& bh = bd->hdr.bh1;
    tpacket3_hdr* h = pkts.empty() ? nullptr : reinterpret_cast<tpacket3_hdr*>(blk + pkts[target].off);
    switch (field % 10) {
      // Kept by hand as a table (one line per mutated field); clang-format would reflow it.
      // clang-format off
      case 0: bh.block_status = near(v, TP_STATUS_USER); break;
      case 1: bh.num_pkts = near(v, bh.num_pkts); break;
      case 2: bh.offset_to_first_pkt = near(v, bh.offset_to_first_pkt); break;
      case 3: bh.blk_len = near(v, field & 0x10 ? bsize : bh.blk_len); break;
      case 4: if (h) h->tp_next_offset = near(v, h->tp_next_offset); break;
      case 5: if (h) h->tp_mac = uint16_t(near(v, h->tp_mac)); break;
      case 6: if (h) h->tp_snaplen = near(v, field & 0x10 ? bh.blk_len - pkts[target].off - h->tp_mac : h->tp_snaplen); break;
      case 7: if (h) h->tp_len = near(v, h->tp_snaplen); break;
      case 8: if (h) h->tp_status ^= v & (TP_STATUS_VLAN_VALID | TP_STATUS_VLAN_TPID_VALID); break;
      case 9: if (h) h->hv1.tp_vlan_tpid = uint16_t(v); break;
        // clang-format on
    }
  }

  // ---- walk it ----
  const std::vector<uint8_t> before(blk, blk + bsize);
  const tpacket_hdr_v1 bh = bd->hdr.bh1;
  const bool ready = BlockWalker::ready(blk);
  if (ready != bool(bh.block_status & TP_STATUS_USER)) die("ready() disagrees with block_status");
  if (!ready) return 0;
  BlockWalker w;
  const bool vnet = flags & 2;
  w.start(blk, bsize, vnet);
  struct Lent {
    uint8_t* p;
    uint32_t len;
  };
  std::vector<Lent> lent;
  std::vector<virtio_net_hdr_mrg_rxbuf> hdrs;
  std::vector<BlockWalker::Step> steps;
  const uint64_t valid_end = std::min<uint64_t>(bh.blk_len, bsize);
  for (;;) {
    Span s{};
    const BlockWalker::Step st = w.next(&s);
    if (st == BlockWalker::Step::kEnd) break;
    steps.push_back(st);
    if (steps.size() > uint64_t(bh.num_pkts) + 1) die("more steps than packets");
    if (st == BlockWalker::Step::kFrame) {
      if (s.p < blk || s.len == 0 || uint64_t(s.p - blk) + s.len > valid_end)
        die("a lent frame is outside the block's valid bytes");
      if (s.len > kMaxFrame) die("a lent frame is longer than kMaxFrame");
      lent.push_back({s.p, s.len});
      hdrs.push_back(w.vnet());
    }
    if (st == BlockWalker::Step::kInvalid) {
      Span again{};
      for (int k = 0; k < 3; k++)
        if (w.next(&again) != BlockWalker::Step::kEnd) die("a step after kInvalid");
      break;
    }
  }
  for (int k = 0; k < 3; k++) {
    Span again{};
    if (w.next(&again) != BlockWalker::Step::kEnd) die("a step after kEnd");
  }
  size_t packets = 0;
  for (auto st : steps) packets += st != BlockWalker::Step::kInvalid;
  if (packets > bh.num_pkts) die("more packets than num_pkts");

  // Outside the lent frames (sorted, then the gaps between them), the block is as it was.
  std::vector<Lent> sorted = lent;
  std::sort(sorted.begin(), sorted.end(), [](const Lent& x, const Lent& y) { return x.p < y.p; });
  uint32_t from = 0;
  for (const Lent& l : sorted) {
    const uint32_t start = uint32_t(l.p - blk);
    if (start > from && memcmp(blk + from, before.data() + from, start - from) != 0)
      die("the walker wrote outside the frames it lent");
    from = std::max(from, start + l.len);
  }
  if (memcmp(blk + from, before.data() + from, bsize - from) != 0) die("the walker wrote outside the frames it lent");

  if (!mutated) {
    // Exactly what the kernel wrote comes out.
    size_t frame = 0;
    for (size_t i = 0; i < pkts.size(); i++) {
      if (i >= steps.size()) die("a valid block was not read in full");
      const Built& b = pkts[i];
      if (b.snap == 0 && !b.truncated) {
        // tp_len 0: the kernel never writes an empty frame; the walker refuses it and the rest.
        if (steps[i] != BlockWalker::Step::kInvalid) die("an empty frame was not refused");
        return 0;
      }
      const uint32_t out_len = b.snap + (b.vlan ? 4 : 0);
      const BlockWalker::Step expect = b.truncated           ? BlockWalker::Step::kTruncated
                                       : out_len > kMaxFrame ? BlockWalker::Step::kTooBig
                                                             : BlockWalker::Step::kFrame;
      if (steps[i] != expect) die("a valid packet was misread");
      if (expect != BlockWalker::Step::kFrame) continue;
      const std::vector<uint8_t> f = frame_bytes(uint32_t(i), b);
      const Lent& l = lent.at(frame);
      if (l.len != f.size() || memcmp(l.p, f.data(), f.size()) != 0) die("a valid frame came out changed");
      uint8_t want_hdr[10] = {};
      if (vnet)
        for (uint32_t k = 0; k < 10; k++) want_hdr[k] = uint8_t(i * 5 + k);
      if (memcmp(&hdrs.at(frame), want_hdr, 10) != 0) die("a valid frame's virtio_net_hdr came out changed");
      frame++;
    }
    if (steps.size() != pkts.size()) die("a valid block gave more steps than packets");
  }
  return 0;
}
