// The frame our generators send (the gen port kind and the test front end's traffic thread): one
// Ethernet/IPv4/UDP frame between RFC 2544 benchmarking addresses, so a capture shows where it came from.
#pragma once

#include <cstdint>

namespace vw {

// The Internet checksum (RFC 1071) of len bytes, ready to store big-endian.
uint16_t ip_checksum(const uint8_t* p, uint32_t len);

// Writes size (>= 42) bytes at f: 02:00:00:00:00:01 -> 02:00:00:00:00:02, 198.18.0.1 -> 198.18.0.2,
// UDP 1024 -> 1024 without a checksum (legal on IPv4), then a payload of counting bytes.
void build_udp_frame(uint8_t* f, uint32_t size);

}  // namespace vw
