#include "forward/offload_fallback.h"

#include <algorithm>

#include "core/checksum.h"
#include "core/offload.h"

namespace vw {

bool OffloadFallback::needed(const Burst& b, uint32_t can) {
  // A guest that took every offload can take any packet as it is: no need to look at each.
  if (!(~can & kOffloadAll)) return false;
  for (uint16_t i = 0; i < b.n; i++) {
    const PacketMeta& m = b.pkt[i].meta;
    if ((m.flags & PacketMeta::kCsumPartial || m.gso_type) && (offloads_needed(m) & ~can)) return true;
  }
  return false;
}

uint16_t OffloadFallback::send(Port& to, uint16_t qp, const Burst& b, uint32_t can) {
  QueueCounters scratch;
  QueueCounters* c = to.tx_counters(qp);
  if (!c) c = &scratch;
  bool lost[kBurst] = {};
  uint32_t segments = 0;
  out_.clear();
  auto flush = [&] {
    if (!out_.n) return;
    // The port drops what does not fit, and does not say which: every packet with a piece in a burst
    // that was not taken whole counts as not delivered.
    if (to.tx_burst(qp, out_) < out_.n)
      for (uint16_t k = 0; k < out_.n; k++) lost[src_[k]] = true;
    out_.clear();
  };
  for (uint16_t i = 0; i < b.n; i++) {
    const PacketView& p = b.pkt[i];
    // A packet adds at most two spans besides its own (a split around its checksum, or a segment's
    // headers); chains are bounded well below a burst's spans, which keeps this local.
    if (uint32_t(p.nseg) + 2 > kBurstSpans) {
      c->add(DROP_TX_TOO_BIG);
      lost[i] = true;
      continue;
    }
    const uint32_t missing = offloads_needed(p.meta) & ~can;
    if (!missing || !p.meta.gso_type) {
      if (out_.n == kBurst || uint32_t(out_.nspans) + p.nseg + 2 > kBurstSpans) flush();
      PacketView& q = out_.pkt[out_.n];
      src_[out_.n++] = uint8_t(i);
      q = p;
      q.first = out_.nspans;
      if (!missing) {
        emit_spans(b, p, 0, p.len, out_);
      } else {
        // The checksum field is replaced by a span of our own: the source's bytes are not written.
        const uint32_t at = uint32_t(p.meta.csum_start) + p.meta.csum_offset;
        const uint16_t sum = complete_partial(b, p);
        uint8_t* s = sums_[out_.n - 1];
        s[0] = uint8_t(sum >> 8);
        s[1] = uint8_t(sum);
        emit_spans(b, p, 0, at, out_);
        out_.span[out_.nspans++] = Span{s, 2, 0};
        emit_spans(b, p, at + 2, p.len, out_);
        q.meta.flags = uint8_t(q.meta.flags & ~PacketMeta::kCsumPartial);
        q.meta.csum_start = q.meta.csum_offset = 0;
        c->add(TX_CSUM_COMPLETED);
      }
      q.nseg = uint16_t(out_.nspans - q.first);
      continue;
    }
    if (!seg_.start(b, p)) {
      c->add(DROP_TX_BAD_GSO);
      lost[i] = true;
      continue;
    }
    if (segments + seg_.count() > kSegmentBudget) {
      c->add(DROP_TX_SEGMENT_BUDGET);
      lost[i] = true;
      continue;
    }
    segments += seg_.count();
    c->add(TX_SEGMENTED);
    c->add(TX_SEGMENTS, seg_.count());
    while (!seg_.done()) {
      if (out_.n == kBurst || uint32_t(out_.nspans) + p.nseg + 1 > kBurstSpans) flush();
      const uint16_t n0 = out_.n;
      seg_.next(out_, hdrs_);
      for (uint16_t k = n0; k < out_.n; k++) src_[k] = uint8_t(i);
    }
  }
  flush();
  uint16_t whole = 0;
  for (uint16_t i = 0; i < b.n; i++) whole += !lost[i];
  return whole;
}

}  // namespace vw
