#!/usr/bin/env bash
# Builds the libFuzzer harnesses with ASan and UBSan into fuzz/out/ (or $FUZZ_OUT).
# Needs clang and its runtimes (Debian 12: apt-get install clang libclang-rt-14-dev).
# The C++ core of the addon compiles without N-API headers, so only the core sources are linked.
set -euo pipefail
cd "$(dirname "$0")/.."

CXX=${CXX_FUZZ:-$(command -v clang++-14 || command -v clang++)}
OUT=${FUZZ_OUT:-fuzz/out}
mkdir -p "$OUT/obj"

SAN="-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined"
FLAGS="-std=gnu++17 -g -O1 -D_GNU_SOURCE -Iaddon -fno-omit-frame-pointer -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers"
# Core objects are built with fuzzer instrumentation but without libFuzzer's main.
CORE_SAN="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined"

compile() {  # src obj extra-flags...
  local src=$1 obj=$2
  shift 2
  $CXX $FLAGS $CORE_SAN "$@" -c "$src" -o "$obj"
}

# guest_memory.cc maps the front end's fds through fuzz/guarded_mmap.cc, which puts PROT_NONE pages
# around every mapping (ASan does not watch mmap'd memory).
compile addon/core/guest_memory.cc "$OUT/obj/guest_memory.o" -Dmmap=vw_guarded_mmap -Dmunmap=vw_guarded_munmap
compile fuzz/guarded_mmap.cc "$OUT/obj/guarded_mmap.o"
for f in ports/uplink/af_packet ports/uplink/af_xdp core/counters core/guest_fault core/port_params virtio/split_ring \
  core/checksum core/offload core/segment forward/offload_fallback \
  ports/vhost_user/virtio_net ports/vhost_user/vhost_user ports/vhost_user/vhost_user_wire; do
  compile "addon/$f.cc" "$OUT/obj/$(basename "$f").o"
done

CORE="$OUT/obj/guest_memory.o $OUT/obj/guarded_mmap.o $OUT/obj/guest_fault.o $OUT/obj/counters.o $OUT/obj/split_ring.o $OUT/obj/virtio_net.o \
  $OUT/obj/offload.o $OUT/obj/checksum.o $OUT/obj/segment.o $OUT/obj/offload_fallback.o"
$CXX $FLAGS $SAN fuzz/virtqueue_fuzz.cc $CORE -o "$OUT/virtqueue_fuzz" -lpthread
$CXX $FLAGS $SAN fuzz/vhost_user_fuzz.cc $CORE "$OUT/obj/vhost_user.o" "$OUT/obj/vhost_user_wire.o" "$OUT/obj/port_params.o" \
  -o "$OUT/vhost_user_fuzz" -lpthread
# The TPACKET_V3 block walker reads only the block it is given: the fuzzer maps it between guard pages.
$CXX $FLAGS $SAN fuzz/tpacket_fuzz.cc "$OUT/obj/af_packet.o" "$OUT/obj/offload.o" -o "$OUT/tpacket_fuzz"
# The AF_XDP ring readers over rings and a UMEM the fuzzer maps itself between guard pages; guest_fault
# for copies from guest memory that faults in the middle of tx_burst.
$CXX $FLAGS $SAN fuzz/xdp_fuzz.cc "$OUT/obj/af_xdp.o" "$OUT/obj/af_packet.o" "$OUT/obj/offload.o" "$OUT/obj/counters.o" "$OUT/obj/guarded_mmap.o" "$OUT/obj/guest_fault.o" \
  -o "$OUT/xdp_fuzz"
source fuzz/fuzzers.sh
echo "fuzzers built in $OUT: ${FUZZERS[*]}"

# Unit regressions for the wire layer; no sanitizer runtime, since the test interposes recvmsg.
$CXX -std=gnu++17 -g -O1 -D_GNU_SOURCE -Iaddon -Wall fuzz/wire_test.cc addon/ports/vhost_user/vhost_user_wire.cc -o "$OUT/wire_test"
echo "regression test built: $OUT/wire_test"
