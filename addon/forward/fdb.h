// The learning bridge's MAC table: (VLAN, MAC) to member port, VPP's l2_fib idea of one 64-bit key and
// OVS's mac-learning fairness. Open addressing with linear probing over a power-of-two table allocated
// once, at most half full, so a lookup is a hash and a few adjacent probes whether it holds 2 entries or
// 100,000, and nothing is allocated per packet. Deletion shifts the following run back (no tombstones), so
// probe lengths do not grow with churn.
//
// Fairness under a MAC flood: each port may hold at most max_per_port entries (further ones are refused
// and counted) and when the whole table is full a new entry takes the oldest learned entry of the port
// holding the most, so a guest sending random source MACs evicts mostly itself. Learned entries of a port
// are kept on an intrusive list in learning order for that eviction. Static entries never age, move or
// get evicted.
//
// Single writer: the PMD thread running the bridge; the control thread reads or changes it only with that
// PMD paused.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace vw {

struct FdbStats {
  uint64_t learned = 0, aged = 0, moved = 0, evicted = 0;
  uint64_t refused_table_full = 0, refused_port_limit = 0;
};

struct FdbEntry {
  uint64_t mac;  // 48 bits, first byte on the wire in the most significant position
  uint16_t vlan;
  uint16_t port;
  bool is_static;
  uint64_t age_ns;  // since the entry was last learned or refreshed; 0 for static entries
};

class Fdb {
 public:
  static constexpr uint16_t kNoPort = 0xffff;
  static constexpr uint32_t kMaxEntries = 1u << 20;

  // max_entries in [1, kMaxEntries], max_per_port in [1, max_entries]; ports: member slots in use.
  Fdb(uint32_t max_entries, uint32_t max_per_port, uint64_t age_ns);

  // The port (vlan, mac) was learned on, or kNoPort.
  uint16_t lookup(uint16_t vlan, uint64_t mac) const {
    const uint64_t k = key(vlan, mac);
    for (uint32_t i = hash(k) & mask_;; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (s.port == kNoPort) return kNoPort;
      if (s.key == k) return s.port;
    }
  }
  // Starts loading the slot a lookup or learn of (vlan, mac) will probe first. A burst's slots requested
  // together before any is used overlap their cache and TLB misses, which is what keeps a table far
  // larger than the caches nearly as fast as a small one.
  void prefetch(uint16_t vlan, uint64_t mac) const { __builtin_prefetch(&slots_[hash(key(vlan, mac)) & mask_], 1); }
  // A frame from `mac` in `vlan` arrived on `port` at `now`: refresh, move or insert.
  void learn(uint16_t vlan, uint64_t mac, uint16_t port, uint64_t now);
  // Adds or replaces a static entry; false when the table is full of static entries.
  bool add_static(uint16_t vlan, uint64_t mac, uint16_t port);
  // Examines up to `budget` slots from where the last call stopped and removes the learned entries idle
  // for longer than the age: aging in small steps, never a sweep that holds up forwarding.
  void age_step(uint64_t now, uint32_t budget);
  // A member left: its entries go and the members after it move down one slot (control path: one pass).
  void remove_port(uint16_t port);
  // Room for member slot `port` (ports are numbered densely from 0).
  void ensure_port(uint16_t port);

  uint32_t size() const { return size_; }
  uint32_t capacity() const { return mask_ + 1; }
  uint32_t max_entries() const { return max_entries_; }
  uint32_t max_per_port() const { return max_per_port_; }
  uint64_t age_ns() const { return age_ns_; }
  uint32_t port_entries(uint16_t port) const { return port < per_port_.size() ? per_port_[port].count : 0; }
  const FdbStats& stats() const { return stats_; }
  std::vector<FdbEntry> entries(uint64_t now) const;

 private:
  static constexpr uint32_t kNil = 0xffffffffu;
  // What a lookup or a refresh touches, 16 bytes so four share a cache line: a table of 100,000 entries
  // has half the footprint it would with the eviction links beside it. Time is kept in ticks of 2^20 ns
  // (about a millisecond): 32 bits last 52 days, longer than any entry lives (ageing is at most 10^6 s and
  // a pass of the ager at most 10 s), and differences are taken modulo 2^32.
  struct Slot {
    uint64_t key;
    uint32_t last_seen;  // ticks
    uint16_t port;       // kNoPort: empty
    bool is_static;
  };
  static_assert(sizeof(Slot) == 16);
  // The port's list of learned entries, oldest first, kNil at the ends: touched only when an entry is
  // added, moved or removed.
  struct Links {
    uint32_t prev, next;
  };
  static uint32_t ticks(uint64_t ns) { return uint32_t(ns >> 20); }
  struct PortList {
    uint32_t head = kNil, tail = kNil;
    uint32_t count = 0;  // learned entries (static ones are not limited)
  };

  static uint64_t key(uint16_t vlan, uint64_t mac) { return uint64_t(vlan & 0xfff) << 48 | (mac & 0xffffffffffffull); }
  static uint32_t hash(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    return uint32_t(k);
  }
  uint32_t find(uint64_t k) const;
  // An empty slot for k (which is absent); the table is never full (at most half the slots are used).
  uint32_t free_slot(uint64_t k) const;
  void link(uint32_t i);
  void unlink(uint32_t i);
  // Empties slot i and shifts the run after it back so no probe sequence breaks.
  void erase(uint32_t i);
  // Moves the entry in slot from to the empty slot to, keeping its list neighbours pointing at it.
  void relocate(uint32_t from, uint32_t to);
  // Takes the oldest learned entry of the port with the most; false when there is none.
  bool evict_one();

  struct Unmap {
    size_t bytes;
    void operator()(void* p) const;
  };
  // Mapped on their own, asking for transparent huge pages: a table for 200,000 entries spans 8 MB, and
  // with 4 KB pages nearly every lookup would also miss the TLB (a two-level walk under virtualisation).
  template <class T>
  static std::unique_ptr<T[], Unmap> map_table(uint32_t n);
  std::unique_ptr<Slot[], Unmap> slots_;
  std::unique_ptr<Links[], Unmap> links_;
  uint32_t age_ticks_;
  uint32_t mask_;
  uint32_t size_ = 0;
  uint32_t max_entries_, max_per_port_;
  uint64_t age_ns_;
  uint32_t age_cursor_ = 0;
  std::vector<PortList> per_port_;
  FdbStats stats_;
};

}  // namespace vw
