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
  slots_ = map_table<Slot>(cap);
  links_ = map_table<Links>(cap);
  for (uint32_t i = 0; i < cap; i++) slots_[i] = Slot{0, 0, kNoPort, false}, links_[i] = Links{kNil, kNil};
  mask_ = cap - 1;
  // Ageing beyond 2^32 ticks could not be told from a wrapped clock; the options never ask for that much.
  age_ticks_ = uint32_t(std::min<uint64_t>(age_ns_ >> 20, UINT32_MAX / 2));
}

template <class T>
std::unique_ptr<T[], Fdb::Unmap> Fdb::map_table(uint32_t n) {
  constexpr size_t kHuge = 2u << 20;
  const size_t bytes = (size_t(n) * sizeof(T) + kHuge - 1) & ~(kHuge - 1);
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  // Only a hint: without transparent huge pages the table works the same, slower when it is large.
  madvise(p, bytes, MADV_HUGEPAGE);
  return std::unique_ptr<T[], Unmap>(static_cast<T*>(p), Unmap{bytes});
}

void Fdb::Unmap::operator()(void* p) const { munmap(p, bytes); }

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
  Links& s = links_[i];
  PortList& l = per_port_[slots_[i].port];
  s.prev = l.tail;
  s.next = kNil;
  if (l.tail != kNil)
    links_[l.tail].next = i;
  else
    l.head = i;
  l.tail = i;
  l.count++;
}

void Fdb::unlink(uint32_t i) {
  Links& s = links_[i];
  PortList& l = per_port_[slots_[i].port];
  if (s.prev != kNil)
    links_[s.prev].next = s.next;
  else
    l.head = s.next;
  if (s.next != kNil)
    links_[s.next].prev = s.prev;
  else
    l.tail = s.prev;
  s.prev = s.next = kNil;
  l.count--;
}

void Fdb::relocate(uint32_t from, uint32_t to) {
  slots_[to] = slots_[from];
  links_[to] = links_[from];
  const Links& s = links_[to];
  if (!slots_[to].is_static) {
    PortList& l = per_port_[slots_[to].port];
    if (s.prev != kNil)
      links_[s.prev].next = to;
    else
      l.head = to;
    if (s.next != kNil)
      links_[s.next].prev = to;
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
    s.last_seen = ticks(now);
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
  slots_[j] = Slot{k, ticks(now), port, false};
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
  slots_[j] = Slot{k, 0, port, true};
  links_[j] = Links{kNil, kNil};
  size_++;
  return true;
}

void Fdb::age_step(uint64_t now, uint32_t budget) {
  if (size_ == 0) return;
  const uint32_t t = ticks(now);
  for (uint32_t n = 0; n < budget; n++) {
    const uint32_t i = age_cursor_;
    const Slot& s = slots_[i];
    if (s.port != kNoPort && !s.is_static && uint32_t(t - s.last_seen) > age_ticks_) {
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

std::vector<FdbEntry> Fdb::entries(uint64_t now) const {
  const uint32_t t = ticks(now);
  std::vector<FdbEntry> out;
  out.reserve(size_);
  for (uint32_t i = 0; i <= mask_; i++)
    if (const Slot& s = slots_[i]; s.port != kNoPort)
      out.push_back(FdbEntry{s.key & 0xffffffffffffull, uint16_t(s.key >> 48), s.port, s.is_static,
                             s.is_static ? 0 : uint64_t(uint32_t(t - s.last_seen)) << 20});
  return out;
}

}  // namespace vw
