#include "core/udp_frame.h"

#include <algorithm>
#include <cstring>

namespace vw {

uint16_t ip_checksum(const uint8_t* p, uint32_t len) {
  uint32_t sum = 0;
  for (uint32_t i = 0; i + 1 < len; i += 2) sum += uint32_t(p[i]) << 8 | p[i + 1];
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return uint16_t(~sum);
}

void build_udp_frame(uint8_t* f, uint32_t size) {
  memset(f, 0, size);
  const uint8_t eth[14] = {2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00};
  memcpy(f, eth, sizeof(eth));
  uint8_t* ip = f + 14;
  // A frame beyond what IPv4 can describe still goes out; its length field says the most it can.
  uint16_t ip_len = uint16_t(std::min<uint32_t>(size - 14, 0xffff));
  ip[0] = 0x45;
  ip[2] = uint8_t(ip_len >> 8);
  ip[3] = uint8_t(ip_len);
  ip[8] = 64;
  ip[9] = 17;
  const uint8_t addrs[8] = {198, 18, 0, 1, 198, 18, 0, 2};
  memcpy(ip + 12, addrs, sizeof(addrs));
  uint16_t c = ip_checksum(ip, 20);
  ip[10] = uint8_t(c >> 8);
  ip[11] = uint8_t(c);
  uint8_t* udp = ip + 20;
  uint16_t udp_len = uint16_t(ip_len - 20);
  udp[0] = 0x04;
  udp[2] = 0x04;
  udp[4] = uint8_t(udp_len >> 8);
  udp[5] = uint8_t(udp_len);
  for (uint32_t i = 42; i < size; i++) f[i] = uint8_t(i);
}

}  // namespace vw
