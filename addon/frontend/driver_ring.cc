#include "frontend/driver_ring.h"

#include <unistd.h>

#include <algorithm>

namespace vw {

DriverRing::~DriverRing() {
  if (kick_fd >= 0) close(kick_fd);
  if (call_fd >= 0) close(call_fd);
  if (err_fd >= 0) close(err_fd);
}

void DriverRing::set_up(const GuestRam& ram, uint16_t n, uint64_t desc_gpa, uint64_t avail_gpa, uint64_t used_gpa) {
  num = n;
  mask = uint16_t(n - 1);
  desc = reinterpret_cast<vring_desc*>(ram.host(desc_gpa, 1));
  avail = reinterpret_cast<vring_avail*>(ram.host(avail_gpa, 1));
  used = reinterpret_cast<vring_used*>(ram.host(used_gpa, 1));
  used_event = &avail->ring[n];
  avail_event = reinterpret_cast<uint16_t*>(&used->ring[n]);
  hdr.resize(n);
  outstanding.assign(n, 0);
  if (!rx && indirect) indirect_table.resize(n);
  for (uint32_t s = 0; s < n; s++) {
    const uint64_t at = slot(uint16_t(s));
    hdr[s] = ram.host(at, kNetHdrSize);
    if (rx) {
      desc[s] = {at, buf_size, VRING_DESC_F_WRITE, 0};
    } else if (indirect) {
      const uint64_t table = indirect_gpa + uint64_t(s) * kIndirectTable;
      indirect_table[s] = reinterpret_cast<vring_desc*>(ram.host(table, kIndirectTable));
      indirect_table[s][0] = {at, kNetHdrSize, VRING_DESC_F_NEXT, 1};
      indirect_table[s][1] = {at + kNetHdrSize, 0, 0, 0};
      desc[s] = {table, kIndirectTable, VRING_DESC_F_INDIRECT, 0};
    } else {
      desc[s] = {at, kNetHdrSize, 0, 0};
    }
  }
  if (rx) {
    seg_id.resize(n);
    seg_len.resize(n);
    for (uint32_t s = 0; s < n; s++) {
      avail->ring[s] = uint16_t(s);
      outstanding[s] = 1;
    }
    avail_idx = n;
    store_release(&avail->idx, avail_idx);
  } else {
    free_ids.resize(n);
    for (uint32_t s = 0; s < n; s++) free_ids[s] = uint16_t(n - 1 - s);
  }
}

void DriverRing::kick() {
  uint64_t one = 1;
  // A full eventfd counter already means "kicked", so a failed write loses nothing.
  if (write(kick_fd, &one, sizeof(one)) == sizeof(one)) add(stats->kicks, 1);
}

void DriverRing::publish() {
  store_release(&avail->idx, avail_idx);
  notify();
}

void DriverRing::notify() {
  // The index store must be visible before we read whether the backend wants a kick, or both sides
  // could decide the other will act.
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  bool need = event_idx ? vring_need_event(load_relaxed(avail_event), avail_idx, checked_idx)
                        : !(load_relaxed(&used->flags) & VRING_USED_F_NO_NOTIFY);
  checked_idx = avail_idx;
  if (need) kick();
}

void DriverRing::consumed_used() {
  if (want_calls) store_relaxed(used_event, used_seen);
}

uint32_t DriverRing::tx_reclaim() {
  const uint16_t used_idx = load_acquire(&used->idx);
  if (used_idx == used_seen) return uint32_t(free_ids.size());
  while (used_seen != used_idx) {
    const uint32_t id = used->ring[used_seen & mask].id;
    // A backend returning a descriptor it does not hold must not make us post it twice.
    if (id < num && outstanding[id]) {
      outstanding[id] = 0;
      free_ids.push_back(uint16_t(id));
    }
    used_seen++;
  }
  consumed_used();
  return uint32_t(free_ids.size());
}

void DriverRing::tx_post(uint32_t frame_len) {
  const uint16_t id = free_ids.back();
  free_ids.pop_back();
  if (indirect)
    indirect_table[id][1].len = frame_len;
  else
    desc[id].len = kNetHdrSize + frame_len;
  outstanding[id] = 1;
  avail->ring[avail_idx++ & mask] = id;
}

uint64_t DriverRing::frame_bytes(const uint32_t* lens, uint32_t n) {
  uint64_t b = 0;
  for (uint32_t k = 0; k < n; k++) b += lens[k];
  return b - std::min(lens[0], kNetHdrSize);
}

}  // namespace vw
