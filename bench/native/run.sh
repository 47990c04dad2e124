#!/usr/bin/env bash
# Builds and runs the stage benchmark (stages.cc) against the addon's C++ core, compiled as the addon is
# (-O2), into bench/native/out/. With --callgrind, runs it under valgrind's callgrind instead and prints
# instructions per packet for each data-path function: counts that do not depend on how busy the
# machine is. Other arguments go to the benchmark (--size, --bursts, --queue-size, --mrg, --event-idx).
#   bash bench/native/run.sh [--callgrind] [stage options]
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=bench/native/out
mkdir -p "$OUT"
CORE="addon/core/counters.cc addon/core/guest_fault.cc addon/core/guest_memory.cc addon/core/offload.cc addon/core/checksum.cc \
  addon/core/segment.cc addon/forward/offload_fallback.cc addon/virtio/split_ring.cc addon/ports/vhost_user/virtio_net.cc \
  addon/forward/bridge.cc addon/forward/fdb.cc"
g++ -std=gnu++17 -O2 -g -D_GNU_SOURCE -Iaddon -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers \
  bench/native/stages.cc $CORE -o "$OUT/stages" -lpthread

if [ "${1:-}" = "--callgrind" ]; then
  shift
  command -v valgrind >/dev/null || { echo "run.sh: valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
  bursts=20000
  valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out" "$OUT/stages" --bursts $bursts "$@" 2>/dev/null | head -1
  # Inclusive instructions of each stage's function, per packet (per chain for pop_simple, which rx_burst
  # and tx_burst call once per burst of 32 chains each; per burst for flush, called three times per burst).
  # pop itself is inlined and shows in its callers.
  callgrind_annotate --inclusive=yes "$OUT/callgrind.out" 2>/dev/null | awk -v b=$bursts '
    function show(what, per) { gsub(",", "", $1); printf "%-44s %8.1f instructions\n", what, $1 / per }
    /VirtioNetDevice::rx_burst\(/ && !rx++ { show("rx_burst, per packet", b * 32) }
    /VirtioNetDevice::tx_burst\(/ && !tx++ { show("tx_burst, per packet", b * 32) }
    /Bridge::forward\(/ && !fw++ { show("bridge forward (tx_burst included), per packet", b * 32) }
    /VirtioNetDevice::release\(/ && !rel++ { show("release, per packet", b * 32) }
    /SplitRing::pop_simple\(/ && !pop++ { show("split ring pop_simple, per chain", b * 64) }
    /SplitRing::flush\(/ && !fl++ { show("split ring flush, per burst", b * 3) }'
else
  "$OUT/stages" "$@"
fi
