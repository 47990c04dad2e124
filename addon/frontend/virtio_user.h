// Our own vhost-user front end: the driver side, as DPDK's virtio-user. It owns shared memory (memfd),
// negotiates with a backend over the socket, lays out split rings in that memory and transmits and
// receives frames. It is the peer the tests use, the load generator of the benchmarks, and, through its
// raw methods, the hostile guest of the validation tests. Its parts: guest_ram (the shared memory),
// vhost_user_client (the socket), driver_ring (each vring), traffic and racer (its two threads).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "frontend/racer.h"
#include "frontend/traffic.h"

namespace vw {

struct VirtioUserOptions {
  std::string path;
  bool server = false;        // listen on path and wait for the backend to connect (backend in client mode)
  uint16_t queue_pairs = 1;   // asks for MQ when > 1
  uint16_t queue_size = 256;  // power of two, <= kMaxQueueSize
  bool mrg_rxbuf = true;      // accept these features when the backend offers them
  bool indirect = true;
  bool event_idx = true;
  bool tx_indirect = false;      // put every transmitted frame behind an indirect table (needs indirect)
  bool interrupts = false;       // ask the backend for call notifications instead of polling
  uint32_t mem_regions = 1;      // regions sent with SET_MEM_TABLE (1..8)
  uint64_t mem_size = 32 << 20;  // total shared memory, split evenly between the regions
  uint32_t rx_buf_size = 2048;   // bytes per posted receive buffer (without MRG_RXBUF: at least 12 + frame)
  uint32_t mtu = 0;              // sends NET_SET_MTU when non-zero and the backend offers MTU
  // Accept the checksum and TCP segmentation offloads the backend offers (CSUM, GUEST_CSUM, HOST_TSO4/6,
  // HOST_ECN, GUEST_TSO4/6, GUEST_ECN): frames may then be sent and received with offload headers.
  bool offloads = false;
  int timeout_ms = 5000;  // for connecting (or being connected to) and for every reply
};

struct VirtioUserStats {
  // tx_ring_full: send() calls refused for a full ring, plus the times the traffic thread filled a ring.
  uint64_t tx_packets = 0, tx_bytes = 0, tx_ring_full = 0;
  uint64_t rx_packets = 0, rx_bytes = 0;
  uint64_t kicks = 0, calls = 0;
};

struct RawDesc {
  uint64_t addr;
  uint32_t len;
  uint16_t flags;
  uint16_t next;
};

// One guest memory region as the backend was told it (gpa, size, user address, offset in the memfd).
struct RegionInfo {
  uint64_t gpa, size, uaddr, offset;
  bool removed;
};

// Guest physical addresses of a vring's three parts.
struct RingAddrs {
  uint64_t desc, avail, used;
};

class VirtioUser {
 public:
  // Connects (or, with options.server, waits to be connected to), negotiates features and protocol
  // features, sends the memory table and sets up and enables every vring. Blocking, bounded by
  // options.timeout_ms. Null and *err on failure.
  static std::unique_ptr<VirtioUser> create(const VirtioUserOptions& options, std::string* err);
  ~VirtioUser();  // stops traffic, closes the socket and every fd, unmaps memory

  uint64_t features() const;           // negotiated virtio features
  uint64_t protocol_features() const;  // negotiated protocol features
  bool connected() const;              // false once the backend hung up

  // ---- frames (not while traffic runs) ----
  // Queues one frame on queue pair qp's transmit ring and kicks if the backend wants it. false if full,
  // or if the frame exceeds a transmit buffer (the largest of 1518, rx_buf_size - 12 and mtu + 18 bytes).
  // hdr: the virtio-net header to send with it (the first 10 bytes are used; null: all zero).
  bool send(uint16_t qp, const uint8_t* frame, uint32_t len, const uint8_t* hdr = nullptr);
  // Reaps received frames from queue pair qp (joining MRG_RXBUF buffers, stripping the header unless
  // with_header) and posts the buffers again.
  std::vector<std::vector<uint8_t>> receive(uint16_t qp, size_t max, bool with_header = false);

  // ---- traffic thread ----
  bool start_traffic(const TrafficOptions& t, std::string* err);
  void stop_traffic();
  VirtioUserStats stats() const;

  // ---- raw access, for hostile tests (do not mix with send/receive on the same vring) ----
  uint64_t alloc(uint64_t len);  // guest address of len fresh bytes from a scratch area; 0 when exhausted
  bool mem_write(uint64_t gpa, const uint8_t* p, uint64_t len);
  bool mem_read(uint64_t gpa, uint8_t* p, uint64_t len) const;
  uint64_t mem_size() const;  // guest space from GuestRam::kGuestBase to the end of the last region, removed or not
  void raw_desc(uint16_t vring, uint16_t idx, const RawDesc& d);
  void raw_avail_push(uint16_t vring, uint16_t head);  // writes head at avail idx, then advances avail idx
  void raw_set_avail_idx(uint16_t vring, uint16_t idx);
  uint16_t raw_used_idx(uint16_t vring) const;
  void raw_used_elem(uint16_t vring, uint16_t pos, uint32_t* id, uint32_t* len) const;
  void kick(uint16_t vring);
  // Waits up to timeout_ms for a call on vring; true if one arrived (and consumes it).
  bool wait_call(uint16_t vring, int timeout_ms);
  // Sends one arbitrary message; when want_reply, waits for and returns the reply payload in *reply.
  bool raw_message(uint32_t request, uint32_t flags, const uint8_t* payload, uint32_t len, const int* fds, size_t nfds,
                   bool want_reply, std::vector<uint8_t>* reply, std::string* err);
  // Adds a region of len bytes after the last one (ADD_MEM_REG) / removes region i (REM_MEM_REG).
  bool add_region(uint64_t len, std::string* err);
  bool remove_region(uint32_t i, std::string* err);

  // ---- more raw access, for the survival suite ----
  std::vector<RegionInfo> regions() const;
  int mem_fd() const;  // the memfd behind every region (ours: do not close)
  bool ring_addrs(uint16_t vring, RingAddrs* out) const;
  // Our ends of vring's eventfds (ours: do not close); err is -1 until set_vring_err.
  bool vring_fds(uint16_t vring, int* kick, int* call, int* err) const;
  // Registers a fresh err eventfd for vring (SET_VRING_ERR), replacing and closing the previous one.
  bool set_vring_err(uint16_t vring, std::string* err);
  // Reads and resets vring's err eventfd: how often the backend signalled it since the last read; 0 when
  // it did not, -1 when no err fd is registered.
  int64_t read_err(uint16_t vring);
  // Stops vring (GET_VRING_BASE) and starts it again at the base the backend returned (SET_VRING_BASE,
  // SET_VRING_KICK with our kick fd, SET_VRING_ENABLE): brings a broken ring back. *base: that base.
  bool restart_vring(uint16_t vring, uint16_t* base, std::string* err);
  // Sends len arbitrary bytes (a header that lies about its size, part of a message...) with up to 253
  // fds attached to the first byte. Nothing is checked.
  bool raw_bytes(const uint8_t* p, size_t len, const int* fds, size_t nfds, std::string* err);
  // A new fd for hostile messages, owned by the caller: kind "memfd" (size bytes), "eventfd", or
  // "blocking-eventfd" (no O_NONBLOCK, counter at its maximum: a write blocks until it is read).
  static int make_fd(const std::string& kind, uint64_t size, std::string* err);
  // Starts the racer on this front end's memory; do not use the raw ring methods on that vring, nor
  // send/receive, until stop_racer.
  bool start_racer(const RacerOptions& o, std::string* err);
  RacerStats stop_racer();  // joins the racer; harmless when none runs

 private:
  struct Impl;
  explicit VirtioUser(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace vw
