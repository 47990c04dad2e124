// One queue of the AF_XDP uplink: an XDP socket (AF_XDP) bound to one receive queue of a host interface,
// in copy mode, set up with raw setsockopt/mmap/bpf() calls only (no libbpf or libxdp). The uplink's
// XdpRedirect (xdp_redirect.h) steers the queue's frames to it.
//
//   interface queue q --XDP program: bpf_redirect_map(xsks, rx_queue_index, XDP_PASS)--> RX ring
//   fill ring   <- frames we give the kernel to receive into       (we produce, the kernel consumes)
//   RX ring     -> received frames: (UMEM address, length)          (the kernel produces)
//   TX ring     <- frames to send: (UMEM address, length)           (we produce)
//   completion  -> addresses of frames the kernel has sent          (the kernel produces)
//
// Everything the kernel writes into the rings is untrusted: XskRings checks every index and entry
// against its own table of who holds each UMEM frame before it reads or lends any memory.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/port.h"
#include "ports/uplink/kernel_drops.h"

struct xdp_statistics;

namespace vw {

// One ring shared with the kernel: where its producer, consumer, flags and entries are. Entries are u64
// UMEM addresses (fill, completion) or xdp_desc (RX, TX). size is a power of two.
struct XskRing {
  uint32_t* producer;
  uint32_t* consumer;
  uint32_t* flags;
  void* desc;
  uint32_t size;
};

// How a UMEM is cut up. Frames [0, rx_frames) receive, the following tx_frames transmit.
struct XskGeometry {
  uint32_t frame_size;  // power of two, 2048..4096 (aligned-chunk mode)
  uint32_t rx_frames;
  uint32_t tx_frames;
};

// The kernel writes received data this far into a frame at the earliest (XDP_PACKET_HEADROOM; we
// register no UMEM headroom of our own), so a received frame is at most frame_size - 256 bytes.
constexpr uint32_t kXskRxHeadroom = 256;

// Our side of the four rings of one AF_XDP socket, and the owner of every UMEM frame. Works over plain
// memory: AfXdpPort maps the kernel's rings into it, the fuzzer lays out its own and plays the kernel.
// Single-threaded: the thread running the port's data path calls everything but the constructor.
class XskRings {
 public:
  enum Owner : uint8_t {
    kFree,  // ours, on free_rx() or free_tx()
    kFill,  // given to the kernel on the fill ring, not yet back through the RX ring
    kLent,  // received, lent in a burst until release()
    kTx,    // on the TX ring, not yet back through the completion ring
  };

  // Puts every receive frame on the fill ring. counters must outlive this object.
  XskRings(const XskGeometry& g, uint8_t* umem, const XskRing& fill, const XskRing& comp, const XskRing& rx,
           const XskRing& tx, QueueCounters* counters);

  // Reads up to kBurst RX descriptors and lends the valid ones as one span each (cookie: frame index).
  uint16_t rx(Burst& b);
  // Takes back the frames rx() lent in b and puts them on the fill ring.
  void release(Burst& b);
  // Reaps completions, then copies each packet of b into a free transmit frame and posts it on the TX
  // ring. Returns the number posted; the rest are dropped and counted.
  uint16_t tx(const Burst& b);
  // tx() was cut short by a fault while copying from the source: the frame it was filling is free
  // again, and the packets copied before it are posted.
  void abort_tx();
  // Takes back the frames of sent packets from the completion ring.
  void reap();

  bool rx_empty();
  bool fill_needs_wakeup() const { return __atomic_load_n(fill_.flags, __ATOMIC_RELAXED) & 1u; }
  bool tx_needs_wakeup() const { return __atomic_load_n(tx_.flags, __ATOMIC_RELAXED) & 1u; }
  // Whether the kernel has not yet taken every descriptor we posted on the TX ring.
  bool tx_pending() const { return __atomic_load_n(tx_.consumer, __ATOMIC_ACQUIRE) != tx_prod_; }

  uint32_t frames() const { return uint32_t(owner_.size()); }
  Owner owner(uint32_t frame) const { return Owner(owner_[frame]); }
  const std::vector<uint32_t>& free_rx() const { return free_rx_; }
  const std::vector<uint32_t>& free_tx() const { return free_tx_; }

 private:
  // The last out-of-range index seen on a ring, so that a kernel index stuck at a bad value is counted
  // once, not at every poll.
  struct BadIndex {
    bool active = false;
    uint32_t value = 0;
    bool note(uint32_t v);  // true when v is a new bad value
  };
  // Entries the kernel's producer index says are ready on a ring it produces, or -1 (counted) when it
  // claims more than the ring holds.
  int64_t available(const XskRing& r, uint32_t cons, BadIndex& bad);
  // Free slots on a ring we produce, or 0 (counted) when the kernel's consumer index is ahead of our
  // producer or more than a ring behind it.
  uint32_t room(const XskRing& r, uint32_t prod, BadIndex& bad);
  void refill();

  XskGeometry g_;
  uint32_t shift_;  // log2(frame_size)
  uint8_t* umem_;
  uint64_t umem_len_;
  XskRing fill_, comp_, rx_, tx_;
  QueueCounters* c_;
  // Our own copies of the indices we advance; the shared ones are written, never read back.
  uint32_t fill_prod_ = 0, comp_cons_ = 0, rx_cons_ = 0, tx_prod_ = 0;
  BadIndex bad_fill_, bad_comp_, bad_rx_, bad_tx_;
  std::vector<uint8_t> owner_;
  std::vector<uint32_t> free_rx_, free_tx_;
  int64_t filling_ = -1;  // the frame tx() is copying into, for abort_tx()
};

// One socket's UMEM and rings, as --uplink's frame-size= and ring-size= set them; TypeScript checks them
// against these limits (src/ports/uplink.ts).
struct XskParams {
  // Frames are chunks of the aligned UMEM mode: 2048 or 4096 bytes, so no frame straddles a page. A
  // received frame can be up to frame_size - 256 bytes (3840 by default, an MTU of 3826); the kernel drops
  // larger ones (counted in its XDP_STATISTICS rx_dropped), as for any socket bound without XDP_USE_SG. A
  // frame to send can use the whole frame.
  static constexpr uint32_t kMinFrameSize = 2048, kMaxFrameSize = 4096, kDefaultFrameSize = 4096;
  // Entries of each of the four rings, a power of two; the UMEM has ring_size frames to receive into and
  // as many to send from, so every ring holds all the frames that can be on it (the kernel never finds
  // the fill ring short of slots for frames we have, nor the completion ring short of slots for frames we
  // sent). 2048 by default: at the ~0.75 Mpps AF_XDP reaches over veth here, about 2.7 ms of traffic
  // waits in them for a stalled PMD before the kernel drops, and 64 full bursts can be in flight to send.
  // 16 MiB per socket by default, pinned by the kernel.
  static constexpr uint32_t kMinRingSize = 64, kMaxRingSize = 16384, kDefaultRingSize = 2048;

  uint32_t frame_size = kDefaultFrameSize;
  uint32_t ring_size = kDefaultRingSize;
};

class AfXdpPort : public Port {
 public:
  // Opens an AF_XDP socket on receive queue `queue` of ifname and puts it in slot `queue` of the XSKMAP
  // xsk_map (the uplink's XdpRedirect, which must outlive the socket's use of it). counters are owned by
  // the caller, outlive the port, and are only added to. On failure returns null and says in *err which
  // interface, queue and step failed.
  // XDP_ZEROCOPY is asked for first; a driver without it (veth, generic XDP) gets the socket in copy mode.
  static std::unique_ptr<AfXdpPort> open(const std::string& name, const std::string& ifname, uint32_t queue,
                                         const XskParams& params, int xsk_map, QueueCounters* counters,
                                         KernelDrops* kernel, std::string* err);
  ~AfXdpPort() override;

  uint16_t queue_pairs() const override { return 1; }
  uint16_t rx_burst(uint16_t qp, Burst& b) override;
  uint16_t tx_burst(uint16_t qp, const Burst& b) override;
  void release(uint16_t qp, Burst& b) override;
  // Adds the kernel's XDP_STATISTICS since the last read, at most every kKernelStatsEveryNs.
  void publish_counters() override;
  void abort_tx(uint16_t qp) override;
  bool arm_wakeup(std::vector<pollfd>& fds) override;

  // Whether the kernel took the socket in zero-copy mode (the driver's own buffers are the UMEM's frames).
  bool zero_copy() const { return zero_copy_; }

 private:
  AfXdpPort(const std::string& name, const std::string& ifname, uint32_t queue, const XskParams& params, int xsk_map,
            QueueCounters* counters, KernelDrops* kernel);
  // The socket's counts grow from zero for its whole life: each read adds what grew since the last.
  void read_kernel_stats(bool closing);
  bool setup(std::string* err);
  void kick_tx();

  std::string ifname_;
  uint32_t queue_;
  const XskParams params_;
  int xsk_map_;
  bool zero_copy_ = false;
  QueueCounters* counters_;
  KernelDrops* kernel_;
  uint64_t kernel_seen_[6] = {};  // XDP_STATISTICS as last read
  unsigned ifindex_ = 0;
  int sock_ = -1;
  uint8_t* umem_ = nullptr;
  size_t umem_len_ = 0;
  struct Mapping {
    void* p = nullptr;
    size_t len = 0;
  } maps_[4];  // fill, completion, RX, TX
  std::unique_ptr<XskRings> rings_;
};

}  // namespace vw
