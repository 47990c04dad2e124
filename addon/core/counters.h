// Every counter vhostwire exposes is named exactly once, in the tables below. The same table generates
// the C++ indices, the schema handed to TypeScript and the Prometheus family names and labels.
//
// Direction is always written from the backend's side: "receive" is what the backend took from a port
// (for a VM: what the guest transmitted), "transmit" is what the backend put into a port (for a VM: what
// the guest received).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace vw {

// X(ID, prometheus family without the vhostwire_ prefix, extra labels, help)
// Counters whose id ends in _NS and whose family ends in _seconds or _seconds_total are kept in
// nanoseconds and exported in seconds, the Prometheus base unit.
// Kept by hand as a table (one row per counter, its columns aligned); clang-format would reflow it.
// clang-format off
#define VW_QUEUE_COUNTERS(X)                                                                              \
  X(RX_PACKETS, "port_receive_packets_total", "", "Packets the backend received from the port")           \
  X(RX_BYTES, "port_receive_bytes_total", "", "Bytes the backend received from the port, without headers") \
  X(TX_PACKETS, "port_transmit_packets_total", "", "Packets the backend transmitted into the port")       \
  X(TX_BYTES, "port_transmit_bytes_total", "", "Bytes the backend transmitted into the port")             \
  X(DROP_TX_NO_BUFFER, "port_drops_total", "direction=\"transmit\",reason=\"no_buffer\"",                 \
    "Packets dropped because the port had no free receive buffer")                                        \
  X(DROP_TX_TOO_BIG, "port_drops_total", "direction=\"transmit\",reason=\"too_big\"",                     \
    "Packets dropped because they did not fit the buffers the port offered")                              \
  X(DROP_TX_NOT_READY, "port_drops_total", "direction=\"transmit\",reason=\"not_ready\"",                 \
    "Packets dropped because the port (or its queue) was not connected or not enabled")                   \
  X(DROP_RX_BAD_HEADER, "port_drops_total", "direction=\"receive\",reason=\"bad_header\"",                \
    "Packets dropped because their virtio-net header was short or asked for offloads not negotiated")     \
  X(DROP_RX_TOO_BIG, "port_drops_total", "direction=\"receive\",reason=\"too_big\"",                      \
    "Packets dropped because they were larger than the largest frame the backend forwards")               \
  X(DROP_RX_TOO_MANY_SEGMENTS, "port_drops_total", "direction=\"receive\",reason=\"too_many_segments\"",  \
    "Packets dropped because they were scattered over more memory segments than one burst can hold")      \
  X(DROP_RX_TOO_MANY_DESCRIPTORS, "port_drops_total", "direction=\"receive\",reason=\"too_many_descriptors\"", \
    "Packets dropped because their descriptor chain ran past the 256 descriptors one chain may use")      \
  X(DROP_TX_BUDGET, "port_drops_total", "direction=\"transmit\",reason=\"budget\"",                     \
    "Packets dropped because the port's receive buffers took more descriptor reads than one burst may make") \
  X(BUDGET_CUTS_CHAIN, "port_budget_cuts_total", "budget=\"chain\"",                                     \
    "Descriptor chains cut at the 256 descriptors one chain may use")                                     \
  X(BUDGET_CUTS_BURST, "port_budget_cuts_total", "budget=\"burst\"",                                     \
    "Bursts ended early because they had read the 4096 descriptors one burst may read")                   \
  X(DROP_RX_TRUNCATED, "port_drops_total", "direction=\"receive\",reason=\"truncated\"",                \
    "Frames dropped because the kernel delivered them cut short (longer than the uplink's ring frames)") \
  X(INVALID_BAD_ADDRESS, "port_invalid_descriptors_total", "reason=\"bad_address\"",                      \
    "Descriptors whose address and length are not inside guest memory")                                   \
  X(INVALID_BAD_NEXT, "port_invalid_descriptors_total", "reason=\"bad_next\"",                            \
    "Descriptors whose next index is not below the queue size")                                           \
  X(INVALID_CHAIN_TOO_LONG, "port_invalid_descriptors_total", "reason=\"chain_too_long\"",                \
    "Descriptor chains longer than the queue (or indirect table) allows, including loops")                \
  X(INVALID_INDIRECT_LENGTH, "port_invalid_descriptors_total", "reason=\"bad_indirect_length\"",          \
    "Indirect tables whose length is zero or not a multiple of 16 bytes")                                 \
  X(INVALID_INDIRECT_NESTED, "port_invalid_descriptors_total", "reason=\"nested_indirect\"",              \
    "Indirect descriptors found inside an indirect table")                                                \
  X(INVALID_INDIRECT_WITH_NEXT, "port_invalid_descriptors_total", "reason=\"indirect_with_next\"",        \
    "Indirect descriptors that also carry the NEXT flag")                                                 \
  X(INVALID_INDIRECT_NOT_NEGOTIATED, "port_invalid_descriptors_total", "reason=\"indirect_not_negotiated\"", \
    "Indirect descriptors used although INDIRECT_DESC was not negotiated")                                \
  X(INVALID_WRITABLE_ON_TX, "port_invalid_descriptors_total", "reason=\"writable_on_tx\"",                \
    "Device-writable descriptors on a queue the guest transmits on")                                      \
  X(INVALID_READONLY_ON_RX, "port_invalid_descriptors_total", "reason=\"readonly_on_rx\"",                \
    "Read-only descriptors on a queue the guest receives on")                                             \
  X(INVALID_AVAIL_AHEAD, "port_invalid_descriptors_total", "reason=\"avail_index_ahead\"",                \
    "Avail indices that ran more than a queue's worth ahead of the backend")                              \
  X(INVALID_BAD_HEAD, "port_invalid_descriptors_total", "reason=\"bad_head\"",                            \
    "Avail ring entries whose head index is not below the queue size")                                    \
  X(INVALID_HEAD_IN_FLIGHT, "port_invalid_descriptors_total", "reason=\"head_in_flight\"",                \
    "Avail ring entries naming a head the backend had taken and not yet returned")                        \
  X(INVALID_MEMORY_GONE, "port_invalid_descriptors_total", "reason=\"memory_gone\"",                      \
    "Guest memory accesses that faulted because the front end truncated the file behind it")              \
  X(INVALID_KERNEL_ENTRY, "port_invalid_descriptors_total", "reason=\"bad_kernel_entry\"",               \
    "Uplink ring entries from the kernel (AF_PACKET blocks, AF_XDP descriptors) that point outside their ring or memory; skipped") \
  X(KERNEL_DROP_PACKET_DROPS, "uplink_kernel_drops_total", "reason=\"packet_drops\"",                     \
    "Frames the kernel dropped because every block of the AF_PACKET receive ring was still ours (PACKET_STATISTICS tp_drops)") \
  X(KERNEL_DROP_XDP_RX_DROPPED, "uplink_kernel_drops_total", "reason=\"xdp_rx_dropped\"",                \
    "Frames the kernel dropped before the AF_XDP RX ring: no frame on the fill ring to copy into, or larger than a UMEM frame (XDP_STATISTICS rx_dropped)") \
  X(KERNEL_DROP_XDP_RX_RING_FULL, "uplink_kernel_drops_total", "reason=\"xdp_rx_ring_full\"",            \
    "Frames the kernel dropped because the AF_XDP RX ring was full (XDP_STATISTICS rx_ring_full)")        \
  X(KERNEL_DROP_XDP_TX_INVALID_DESCS, "uplink_kernel_drops_total", "reason=\"xdp_tx_invalid_descs\"",    \
    "Frames posted on the AF_XDP TX ring that the kernel discarded as invalid descriptors (XDP_STATISTICS tx_invalid_descs)") \
  X(KERNEL_EVENT_PACKET_FREEZE_Q_CNT, "uplink_kernel_ring_events_total", "event=\"packet_freeze_q_cnt\"", \
    "Times the kernel found the AF_PACKET receive ring full and froze it until a block came back (PACKET_STATISTICS tp_freeze_q_cnt); the frames it lost are in packet_drops") \
  X(KERNEL_EVENT_XDP_RX_INVALID_DESCS, "uplink_kernel_ring_events_total", "event=\"xdp_rx_invalid_descs\"", \
    "Fill ring entries the kernel discarded as invalid (XDP_STATISTICS rx_invalid_descs); no frame is lost with them") \
  X(KERNEL_EVENT_XDP_FILL_RING_EMPTY, "uplink_kernel_ring_events_total", "event=\"xdp_fill_ring_empty\"", \
    "Times the kernel wanted a frame to receive into and found the AF_XDP fill ring empty (XDP_STATISTICS rx_fill_ring_empty_descs); a frame lost then is in xdp_rx_dropped") \
  X(KERNEL_EVENT_XDP_TX_RING_EMPTY, "uplink_kernel_ring_events_total", "event=\"xdp_tx_ring_empty\"",    \
    "Times the kernel looked for frames to send and found the AF_XDP TX ring empty (XDP_STATISTICS tx_ring_empty_descs); not a loss") \
  X(RINGS_BROKEN, "port_rings_broken_total", "", "Rings stopped because the guest broke a ring rule")     \
  X(GUEST_KICKS, "port_guest_kicks_total", "", "Notifications (kicks) the guest sent the backend")        \
  X(GUEST_NOTIFICATIONS, "port_guest_notifications_total", "", "Notifications the backend sent the guest") \
  X(LONGEST_BURST_DESCRIPTORS, "port_longest_burst_descriptors", "",                                     \
    "The most descriptors one burst has read on this queue pair, either direction (a high-water mark; bounded by the burst budget)") \
  X(RX_SIZE_64, "port_packets_by_size_total", "direction=\"receive\",size=\"0-64\"",               \
    "Frames of 64 bytes or less (without virtio-net header or FCS) the backend received from the port")                 \
  X(RX_SIZE_127, "port_packets_by_size_total", "direction=\"receive\",size=\"65-127\"",               \
    "Frames of 65 to 127 bytes (without virtio-net header or FCS) the backend received from the port")                 \
  X(RX_SIZE_255, "port_packets_by_size_total", "direction=\"receive\",size=\"128-255\"",               \
    "Frames of 128 to 255 bytes (without virtio-net header or FCS) the backend received from the port")                 \
  X(RX_SIZE_511, "port_packets_by_size_total", "direction=\"receive\",size=\"256-511\"",               \
    "Frames of 256 to 511 bytes (without virtio-net header or FCS) the backend received from the port")                 \
  X(RX_SIZE_1023, "port_packets_by_size_total", "direction=\"receive\",size=\"512-1023\"",               \
    "Frames of 512 to 1023 bytes (without virtio-net header or FCS) the backend received from the port")                 \
  X(RX_SIZE_1518, "port_packets_by_size_total", "direction=\"receive\",size=\"1024-1518\"",               \
    "Frames of 1024 to 1518 bytes (without virtio-net header or FCS) the backend received from the port")                 \
  X(RX_SIZE_LARGER, "port_packets_by_size_total", "direction=\"receive\",size=\"1519-max\"",               \
    "Frames of 1519 bytes or more (without virtio-net header or FCS) the backend received from the port")                 \
  X(TX_SIZE_64, "port_packets_by_size_total", "direction=\"transmit\",size=\"0-64\"",               \
    "Frames of 64 bytes or less (without virtio-net header or FCS) the backend transmitted into the port")                 \
  X(TX_SIZE_127, "port_packets_by_size_total", "direction=\"transmit\",size=\"65-127\"",               \
    "Frames of 65 to 127 bytes (without virtio-net header or FCS) the backend transmitted into the port")                 \
  X(TX_SIZE_255, "port_packets_by_size_total", "direction=\"transmit\",size=\"128-255\"",               \
    "Frames of 128 to 255 bytes (without virtio-net header or FCS) the backend transmitted into the port")                 \
  X(TX_SIZE_511, "port_packets_by_size_total", "direction=\"transmit\",size=\"256-511\"",               \
    "Frames of 256 to 511 bytes (without virtio-net header or FCS) the backend transmitted into the port")                 \
  X(TX_SIZE_1023, "port_packets_by_size_total", "direction=\"transmit\",size=\"512-1023\"",               \
    "Frames of 512 to 1023 bytes (without virtio-net header or FCS) the backend transmitted into the port")                 \
  X(TX_SIZE_1518, "port_packets_by_size_total", "direction=\"transmit\",size=\"1024-1518\"",               \
    "Frames of 1024 to 1518 bytes (without virtio-net header or FCS) the backend transmitted into the port")                 \
  X(TX_SIZE_LARGER, "port_packets_by_size_total", "direction=\"transmit\",size=\"1519-max\"",               \
    "Frames of 1519 bytes or more (without virtio-net header or FCS) the backend transmitted into the port")                 \
  X(GUEST_NOTIFICATIONS_SAVED, "port_guest_notifications_saved_total", "",                               \
    "Used-ring updates published without notifying the guest because its used_event (EVENT_IDX) said it needed none") \
  X(RING_FILL_RX, "port_ring_fill_descriptors", "direction=\"receive\"",                                   \
    "Chains the guest had made available on the queue the backend receives from and the backend had not yet taken, after the last burst (the avail index as last read)") \
  X(RING_FILL_TX, "port_ring_fill_descriptors", "direction=\"transmit\"",                                  \
    "Receive buffers the guest had made available on the queue the backend transmits into and the backend had not yet taken, after the last burst (the avail index as last read)") \
  X(DROP_RX_BAD_GSO_TYPE, "port_drops_total", "direction=\"receive\",reason=\"bad_gso_type\"",             \
    "Super-frames dropped because their gso_type is unknown, or UFO, which is never offered")            \
  X(DROP_RX_BAD_GSO_SIZE, "port_drops_total", "direction=\"receive\",reason=\"bad_gso_size\"",             \
    "Super-frames dropped because their gso_size is 0 or would cut the frame into more than 1024 segments") \
  X(DROP_RX_BAD_HDR_LEN, "port_drops_total", "direction=\"receive\",reason=\"bad_hdr_len\"",               \
    "Super-frames dropped because their hdr_len runs past the end of the frame")                          \
  X(DROP_RX_BAD_CSUM_OFFSET, "port_drops_total", "direction=\"receive\",reason=\"bad_csum_offset\"",       \
    "Frames dropped because the checksum they ask to be completed (csum_start + csum_offset + 2) runs past the end of the frame") \
  X(DROP_RX_ECN_WITHOUT_TSO, "port_drops_total", "direction=\"receive\",reason=\"ecn_without_tso\"",       \
    "Frames dropped because their header has the ECN bit without a TCP segmentation type")                \
  X(DROP_RX_GSO_WITHOUT_CSUM, "port_drops_total", "direction=\"receive\",reason=\"gso_without_csum\"",     \
    "Super-frames dropped because their header does not ask for the checksum to be completed (NEEDS_CSUM), as virtio requires") \
  X(DROP_TX_BAD_GSO, "port_drops_total", "direction=\"transmit\",reason=\"bad_gso_headers\"",              \
    "Super-frames dropped because the port does not take them and their Ethernet, IP and TCP or UDP headers could not be parsed to segment them (IPv6 extension headers, IPv4 fragments, a protocol other than the gso_type)") \
  X(DROP_TX_SEGMENT_BUDGET, "port_drops_total", "direction=\"transmit\",reason=\"segment_budget\"",        \
    "Super-frames dropped because segmenting them would have made more than 2048 segments for the port in one burst") \
  X(RX_SUPER_FRAMES, "port_super_frames_total", "direction=\"receive\"",                                   \
    "Super-frames (a virtio-net header with a gso_type) the backend received from the port")             \
  X(TX_SUPER_FRAMES, "port_super_frames_total", "direction=\"transmit\"",                                  \
    "Super-frames the backend transmitted into the port as one frame with its header, not segmented")    \
  X(TX_CSUM_COMPLETED, "port_offload_fallbacks_total", "work=\"checksums\"",                                \
    "Partial checksums the backend completed in software because the port does not take them (frames not segmented)") \
  X(TX_SEGMENTED, "port_offload_fallbacks_total", "work=\"segmented_frames\"",                              \
    "Super-frames the backend segmented in software because the port does not take them")                \
  X(TX_SEGMENTS, "port_offload_fallbacks_total", "work=\"segments\"",                                       \
    "Segments software segmentation made for the port, each with its checksums filled")

#define VW_PMD_COUNTERS(X)                                                                                \
  X(BUSY_ITERATIONS, "pmd_iterations_total", "state=\"busy\"", "PMD loop iterations that moved packets") \
  X(IDLE_ITERATIONS, "pmd_iterations_total", "state=\"idle\"", "PMD loop iterations that found no work") \
  X(SLEEPS, "pmd_sleeps_total", "", "Times an idle PMD in kernel mode went to sleep on its wakeup fds") \
  X(TIME_BUDGET_CUTS, "pmd_time_budget_cuts_total", "",                                                  \
    "Iterations ended before serving every queue because they ran past the time budget; the next starts with the queue after") \
  X(LONGEST_STEP_NS, "pmd_longest_step_seconds", "",                                                     \
    "The longest one queue's step (receive, forward, transmit, release) has taken (a high-water mark)") \
  X(BUSY_NS, "pmd_time_seconds_total", "state=\"busy\"",                                                 \
    "Time the PMD spent in loop iterations that moved packets") \
  X(IDLE_NS, "pmd_time_seconds_total", "state=\"idle\"",                                                 \
    "Time the PMD spent in loop iterations that found no work, sleeps included (paused time is in neither)")
// clang-format on

#define VW_ENUM(id, family, labels, help) id,
enum QueueCounter : uint32_t { VW_QUEUE_COUNTERS(VW_ENUM) kQueueCounterCount };
enum PmdCounter : uint32_t { VW_PMD_COUNTERS(VW_ENUM) kPmdCounterCount };
#undef VW_ENUM

struct CounterInfo {
  const char* id;
  const char* family;
  const char* labels;
  const char* help;
};
extern const CounterInfo kQueueCounterInfo[kQueueCounterCount];
extern const CounterInfo kPmdCounterInfo[kPmdCounterCount];

// The reason string of an INVALID_* counter ("bad_next", ...), used in ring-broken events.
const char* invalid_reason(QueueCounter c);

// One contiguous block of 64-bit counters shared with JavaScript, which reads it as a BigUint64Array
// without copying. Laid out as fixed-size sets: queue sets first, then PMD sets.
class CounterBlock {
 public:
  CounterBlock(uint32_t queue_sets, uint32_t pmd_sets);
  ~CounterBlock();
  CounterBlock(const CounterBlock&) = delete;
  CounterBlock& operator=(const CounterBlock&) = delete;

  uint64_t* data() { return data_; }
  size_t bytes() const { return size_t(total_words_) * 8; }
  uint32_t queue_sets() const { return queue_sets_; }
  uint32_t pmd_sets() const { return pmd_sets_; }

  // Reserves n consecutive queue sets (zeroed); returns the first set index or -1 when full.
  int alloc_queue_sets(uint32_t n);
  void free_queue_sets(int first, uint32_t n);
  uint64_t* queue_set(uint32_t i) { return data_ + size_t(i) * kQueueCounterCount; }
  uint64_t* pmd_set(uint32_t i) {
    return data_ + size_t(queue_sets_) * kQueueCounterCount + size_t(i) * kPmdCounterCount;
  }
  // Word offset of a set inside the block, as JavaScript indexes it.
  size_t queue_set_offset(uint32_t i) const { return size_t(i) * kQueueCounterCount; }
  size_t pmd_set_offset(uint32_t i) const {
    return size_t(queue_sets_) * kQueueCounterCount + size_t(i) * kPmdCounterCount;
  }

 private:
  uint32_t queue_sets_, pmd_sets_, total_words_;
  uint64_t* data_;
  std::mutex mu_;
  std::vector<bool> used_;
};

// The queue counter sets of one port, n consecutive sets, given back when the port goes. first() is -1
// when the block had no room.
class CounterSets {
 public:
  CounterSets(CounterBlock& block, uint32_t n) : block_(block), n_(n), first_(block.alloc_queue_sets(n)) {}
  ~CounterSets() {
    if (first_ >= 0) block_.free_queue_sets(first_, n_);
  }
  CounterSets(const CounterSets&) = delete;
  CounterSets& operator=(const CounterSets&) = delete;
  int first() const { return first_; }
  // Queue set i of the port's, or null when the block had no room.
  uint64_t* set(uint32_t i) const { return first_ < 0 ? nullptr : block_.queue_set(uint32_t(first_) + i); }

 private:
  CounterBlock& block_;
  uint32_t n_;
  int first_;
};

// How a counter's private copies combine in the shared block. Most are sums; a few are gauges (the latest
// value any copy set) and high-water marks (the largest any copy saw).
enum class CounterKind : uint8_t { kSum, kGauge, kMax };
constexpr CounterKind queue_counter_kind(uint32_t id) {
  return id == RING_FILL_RX || id == RING_FILL_TX ? CounterKind::kGauge
         : id == LONGEST_BURST_DESCRIPTORS        ? CounterKind::kMax
                                                  : CounterKind::kSum;
}
constexpr CounterKind pmd_counter_kind(uint32_t id) {
  return id == LONGEST_STEP_NS ? CounterKind::kMax : CounterKind::kSum;
}

// Private counters of one writer thread, published to the shared block with relaxed atomics so the hot
// loop never writes a cache line another thread reads (Snabb's counter.lua does the same). A shared set
// may have several private copies, one per thread that writes it (a port whose queues are spread over
// PMD threads): each copy publishes only what changed since its last publish, a sum as the difference
// added, so the copies add up and no copy overwrites another's counts.
template <uint32_t N, CounterKind (*Kind)(uint32_t)>
struct PrivateCounters {
  uint64_t v[N] = {};
  uint64_t* shared = nullptr;
  void add(uint32_t id, uint64_t n = 1) { v[id] += n; }
  // For high-water marks.
  void raise(uint32_t id, uint64_t x) {
    if (x > v[id]) v[id] = x;
  }
  // For gauges: the latest value.
  void set(uint32_t id, uint64_t x) { v[id] = x; }
  void publish() {
    if (!shared) return;
    for (uint32_t i = 0; i < N; i++) {
      if (v[i] == sent_[i]) continue;
      switch (Kind(i)) {
        case CounterKind::kSum:
          // Unsigned wrap-around makes a gauge-like set() of a lower value come out right too.
          __atomic_fetch_add(&shared[i], v[i] - sent_[i], __ATOMIC_RELAXED);
          break;
        case CounterKind::kGauge: __atomic_store_n(&shared[i], v[i], __ATOMIC_RELAXED); break;
        case CounterKind::kMax: {
          uint64_t cur = __atomic_load_n(&shared[i], __ATOMIC_RELAXED);
          while (cur < v[i] &&
                 !__atomic_compare_exchange_n(&shared[i], &cur, v[i], true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
          }
          break;
        }
      }
      sent_[i] = v[i];
    }
  }

 private:
  uint64_t sent_[N] = {};  // what this copy has published
};
using QueueCounters = PrivateCounters<kQueueCounterCount, queue_counter_kind>;
using PmdCounters = PrivateCounters<kPmdCounterCount, pmd_counter_kind>;

// The frame-size bin of a frame of len bytes, 0 to 6, in DPDK vhost's xstats bins: up to 64, 65-127,
// 128-255, 256-511, 512-1023, 1024-1518, 1519 and up. Added to RX_SIZE_64 or TX_SIZE_64, which the table
// keeps in this order.
inline uint32_t size_bin(uint64_t len) {
  if (len <= 64) return 0;
  if (len >= 1519) return 6;
  if (len >= 1024) return 5;
  // 65..1023: the bit length of len picks the power-of-two bin (65..127 -> 7 bits -> bin 1).
  return uint32_t(64 - __builtin_clzll(len)) - 6;
}
static_assert(RX_SIZE_LARGER == RX_SIZE_64 + 6 && TX_SIZE_LARGER == TX_SIZE_64 + 6, "size bins in table order");

}  // namespace vw
