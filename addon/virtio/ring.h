// What the virtio-net device needs from a ring, whatever its layout: the interface a split ring
// (split_ring.h) implements and a packed ring would implement beside it. The device's data path is
// written against these members only (ports/vhost_user/virtio_net.cc), so a second ring layout is a
// second class with the same members, chosen once per burst, not a branch per descriptor.
//
//   bool attach(uint16_t size, void* desc, void* driver, void* device, bool device_writes, const char** why)
//   void set_features(bool event_idx, bool indirect)
//   void start(uint16_t base)            take the ring over at the front end's index
//   uint16_t last_avail() const          where the next pop() reads (GET_VRING_BASE's answer)
//   bool primed()                        the driver has made buffers available since start()
//   int pop(const GuestMemory&, Span*, uint32_t max_spans, Chain*, QueueCounter* why)
//                                        1: *Chain filled; 0: empty; -1: a ring rule broken (*why)
//   uint16_t pop_simple(const GuestMemory&, uint16_t max, uint32_t min_len, uint32_t max_len, SimpleChain*)
//                                        up to max one-buffer chains in a row, each fully checked; stops,
//                                        taking nothing, at the first other chain (pop() then reads it)
//   void unpop(uint16_t n)               give the last n popped chains back, in order
//   void push_n(uint16_t n, Entry entry)   n chains at once, entry(i) the i-th vring_used_elem
//   void push(uint16_t head, uint32_t len), bool flush(bool* saved)
//                                        return chains; publish them (true: notify the guest; *saved:
//                                        EVENT_IDX spared a notification)
//   uint16_t waiting() const             chains available and not yet taken, as last read
//   bool enable_notify(), void disable_notify()
//
// Every chain is read once into private memory, its descriptors checked, its buffers translated through
// the guest memory table, and its length bounded by kChainBudget descriptors; see split_ring.h.
#pragma once

#include <cstdint>

namespace vw {

// What pop() found: the chain's head and its buffers, translated to host spans.
struct Chain {
  uint16_t head;
  uint16_t descriptors;  // descriptors read, counting indirect entries and zero-length ones
  uint32_t nspans;       // spans stored
  uint64_t len;          // bytes in the stored spans
  // The chain was cut short: its buffers needed more spans than the caller had room for, or it ran past
  // kChainBudget descriptors. Nothing past the cut is stored, or read.
  bool truncated;
  bool over_budget;  // the cut was the descriptor budget
};

// What pop_simple() found: a chain of one descriptor, its buffer translated to one host span.
struct SimpleChain {
  uint8_t* p;
  uint64_t gpa;
  uint32_t len;
  uint16_t head;
};

// Descriptors one chain may use (indirect table entries and zero-length descriptors included). The most
// any driver needs (Linux: MAX_SKB_FRAGS + 2 for a transmit chain; DPDK's vhost keeps 256 buffer
// vectors) and a bound on the work a hostile chain costs, whatever the queue size.
constexpr uint16_t kChainBudget = 256;

// Descriptors one burst may read in either direction, re-reads of chains given back included: 16 chains
// at the chain budget, or 32 packets of 64 KiB in 1 KiB merged buffers, while an ordinary burst reads 32 to
// 64. With it, the work of one burst no longer grows with the queue size (a ring of 32768 would otherwise
// let a guest make one burst read 32 x 32768 descriptors), and the device ends a burst at the first chain
// that could take it past the budget.
constexpr uint32_t kBurstBudget = 4096;

}  // namespace vw
