// What a destination cannot take, done in software on the way to it: a partial checksum completed, a
// super-frame segmented (core/checksum.h, core/segment.h), for a guest that did not accept the offload,
// an uplink, a sink. Frames that need nothing the destination lacks pass as they are, in the same
// bursts, in their order. Nothing is copied: the packets handed on are spans into the source's memory
// plus small pieces of our own (a 2-byte checksum, a segment's rewritten headers).
#pragma once

#include <cstdint>

#include "core/packet.h"
#include "core/port.h"
#include "core/segment.h"

namespace vw {

// Segments one send() may make: the 32 frames of a burst of 64 KB TCP super-frames at a 1448-byte MSS make
// 1440. A guest sending super-frames with tiny gso_sizes cannot make one burst cost the PMD (and every
// other port it serves) more than this many: what would pass it is dropped and counted.
constexpr uint32_t kSegmentBudget = 2048;

class OffloadFallback {
 public:
  // Whether some packet of b needs an offload beyond `can` (to.tx_offloads()).
  static bool needed(const Burst& b, uint32_t can);
  // Transmits b into queue pair qp of `to`, completing and segmenting what `can` does not cover. Returns
  // how many of b's packets were delivered whole (every segment of a super-frame taken).
  uint16_t send(Port& to, uint16_t qp, const Burst& b, uint32_t can);

 private:
  Burst out_;
  uint8_t src_[kBurst];  // which packet of b each packet of out_ came from
  uint8_t hdrs_[kBurst][Segmenter::kMaxHeaders];
  uint8_t sums_[kBurst][2];
  Segmenter seg_;
};

}  // namespace vw
