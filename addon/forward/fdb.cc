#include "forward/fdb.h"

#include <sys/mman.h>

#include <algorithm>
#include <new>

namespace vw {

Fdb::Fdb(uint32_t max_entries, uint32_t max_per_port, uint64_t age_ns)
    : max_entries_(std::clamp<uint32_t>(max_entries, 1, kMaxEntries)),
      max_per_port_(std::clamp<uint32_t>(max_per_port, 1, max_entries_)),
      age_ns_(age_ns) {
  // At least twice the entries: the table is at most half full, which keeps probe runs short.
  uint32_t cap = 16;
  while (cap < 2 * max_entries_) cap <<= 1;
  constexpr size_t kHuge = 2u << 20;
  const size_t bytes = (size_t(cap) * sizeof(Slot) + kHuge - 1) & ~(kHuge - 1);
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  // Only a hint: without transparent huge pages the table works the same, slower when it is large.
  madvise(p, bytes, MADV_HUGEPAGE);
  slots_ = std::unique_ptr<Slot[], Unmap>(static_cast<Slot*>(p), Unmap{bytes});
  for (uint32_t i = 0; i < cap; i++) slots_[i] = Slot{0, 0, kNil, kNil, kNoPort, false};
  mask_ = cap - 1;
}

void Fdb::Unmap::operator()(Slot* p) const { munmap(p, bytes); }

uint32_t Fdb::find(uint64_t k) const {
  for (uint32_t i = hash(k) & mask_;; i = (i + 1) & mask_) {
    if (slots_[i].port == kNoPort) return kNil;
    if (slots_[i].key == k) return i;
  }
}

uint32_t Fdb::free_slot(uint64_t k) const {
  uint32_t i = hash(k) & mask_;
  while (slots_[i].port != kNoPort) i = (i + 1) & mask_;
  return i;
}

void Fdb::ensure_port(uint16_t port) {
  if (port >= per_port_.size()) per_port_.resize(size_t(port) + 1);
}

void Fdb::link(uint32_t i) {
  Slot& s = slots_[i];
  PortList& l = per_port_[s.port];
  s.prev = l.tail;
  s.next = kNil;
  if (l.tail != kNil)
    slots_[l.tail].next = i;
  else
    l.head = i;
  l.tail = i;
  l.count++;
}

void Fdb::unlink(uint32_t i) {
  Slot& s = slots_[i];
  PortList& l = per_port_[s.port];
  if (s.prev != kNil)
    slots_[s.prev].next = s.next;
  else
    l.head = s.next;
  if (s.next != kNil)
    slots_[s.next].prev = s.prev;
  else
    l.tail = s.prev;
  s.prev = s.next = kNil;
  l.count--;
}

void Fdb::relocate(uint32_t from, uint32_t to) {
  slots_[to] = slots_[from];
  Slot& s = slots_[to];
  if (!s.is_static) {
    PortList& l = per_port_[s.port];
    if (s.prev != kNil)
      slots_[s.prev].next = to;
    else
      l.head = to;
    if (s.next != kNil)
      slots_[s.next].prev = to;
    else
      l.tail = to;
  }
  slots_[from].port = kNoPort;
}

void Fdb::erase(uint32_t i) {
  if (!slots_[i].is_static) unlink(i);
  slots_[i].port = kNoPort;
  size_--;
  // Backward-shift deletion: an entry further along the run moves into the hole unless its home slot
  // lies cyclically after the hole (then it is reachable without passing it).
  uint32_t hole = i;
  for (uint32_t j = (i + 1) & mask_; slots_[j].port != kNoPort; j = (j + 1) & mask_) {
    const uint32_t home = hash(slots_[j].key) & mask_;
    const bool stays = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
    if (stays) continue;
    relocate(j, hole);
    hole = j;
  }
}

bool Fdb::evict_one() {
  uint16_t victim = kNoPort;
  uint32_t most = 0;
  for (uint16_t p = 0; p < per_port_.size(); p++)
    if (per_port_[p].count > most) most = per_port_[p].count, victim = p;
  if (victim == kNoPort) return false;
  erase(per_port_[victim].head);
  stats_.evicted++;
  return true;
}

void Fdb::learn(uint16_t vlan, uint64_t mac, uint16_t port, uint64_t now) {
  const uint64_t k = key(vlan, mac);
  const uint32_t i = find(k);
  if (i != kNil) {
    Slot& s = slots_[i];
    if (s.is_static) return;
    if (s.port != port) {
      // The MAC moved (a VM migrated, or a loop): it follows, within the new port's limit.
      if (per_port_[port].count >= max_per_port_) {
        stats_.refused_port_limit++;
        return;
      }
      unlink(i);
      s.port = port;
      link(i);
      stats_.moved++;
    }
    s.last_seen_ns = now;
    return;
  }
  if (per_port_[port].count >= max_per_port_) {
    stats_.refused_port_limit++;
    return;
  }
  if (size_ >= max_entries_ && !evict_one()) {
    stats_.refused_table_full++;
    return;
  }
  const uint32_t j = free_slot(k);
  slots_[j] = Slot{k, now, kNil, kNil, port, false};
  link(j);
  size_++;
  stats_.learned++;
}

bool Fdb::add_static(uint16_t vlan, uint64_t mac, uint16_t port) {
  const uint64_t k = key(vlan, mac);
  const uint32_t i = find(k);
  if (i != kNil) erase(i);
  if (size_ >= max_entries_ && !evict_one()) return false;
  const uint32_t j = free_slot(k);
  slots_[j] = Slot{k, 0, kNil, kNil, port, true};
  size_++;
  return true;
}

void Fdb::age_step(uint64_t now, uint32_t budget) {
  if (size_ == 0) return;
  for (uint32_t n = 0; n < budget; n++) {
    const uint32_t i = age_cursor_;
    const Slot& s = slots_[i];
    if (s.port != kNoPort && !s.is_static && now - s.last_seen_ns > age_ns_) {
      erase(i);
      stats_.aged++;
      // The shift may have moved an entry not yet examined into slot i: look at it again.
      continue;
    }
    age_cursor_ = (age_cursor_ + 1) & mask_;
  }
}

void Fdb::remove_port(uint16_t port) {
  // Erasing shifts entries back, possibly across the wrap: repeat the pass until nothing of port is left,
  // then renumber the ports after it.
  for (bool again = true; again;) {
    again = false;
    for (uint32_t i = 0; i <= mask_; i++) {
      if (slots_[i].port == port) {
        erase(i);
        again = true;
        if (slots_[i].port == port) i--;
      }
    }
  }
  for (uint32_t i = 0; i <= mask_; i++)
    if (slots_[i].port != kNoPort && slots_[i].port > port) slots_[i].port--;
  if (port < per_port_.size()) per_port_.erase(per_port_.begin() + port);
}

std::vector<FdbEntry> Fdb::entries() const {
  std::vector<FdbEntry> out;
  out.reserve(size_);
  for (uint32_t i = 0; i <= mask_; i++)
    if (const Slot& s = slots_[i]; s.port != kNoPort)
      out.push_back(FdbEntry{s.key & 0xffffffffffffull, uint16_t(s.key >> 48), s.port, s.is_static, s.last_seen_ns});
  return out;
}

}  // namespace vw
