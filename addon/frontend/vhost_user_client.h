// The driver's end of the vhost-user socket: connects to a backend (or waits for one to connect), sends
// requests and checks their replies, acknowledged ones (REPLY_ACK) included. Every error names the
// request it concerns.
#pragma once

#include <sys/un.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "ports/vhost_user/vhost_user_wire.h"

namespace vw {

// Every request our front end knows, by name (VHOST_USER_GET_FEATURES: "GET_FEATURES"), in number order.
const std::vector<std::pair<const char*, uint32_t>>& vhost_user_requests();

class VhostUserClient {
 public:
  VhostUserClient() = default;
  VhostUserClient(const VhostUserClient&) = delete;
  VhostUserClient& operator=(const VhostUserClient&) = delete;
  ~VhostUserClient();

  // Connects to path (sa), retrying while the backend is not listening yet; with server, listens there
  // for one backend instead and removes the path again. Both bounded by timeout_ms, which also bounds
  // every later send and reply.
  bool connect(const sockaddr_un& sa, const std::string& path, bool server, int timeout_ms, std::string* err);
  // false once the backend hung up; looks without reading, so a queued message stays queued.
  bool connected() const;
  // Whether request() asks for and checks an ack (REPLY_ACK negotiated).
  void set_reply_ack(bool on) { reply_ack_ = on; }

  bool send(uint32_t req, uint32_t flags, const void* payload, uint32_t size, const int* fds, size_t nfds,
            std::string* err);
  // Receives one message, closing any fds that came with it (no reply of ours carries any).
  bool receive(uint32_t req, VhostUserMsg* msg, std::string* err);
  // receive, and the message must be the reply to req.
  bool receive_reply(uint32_t req, VhostUserMsg* msg, std::string* err);
  // A request without a reply of its own: acknowledged (and the ack checked) with REPLY_ACK.
  bool request(uint32_t req, const void* payload, uint32_t size, const int* fds, size_t nfds, std::string* err);
  bool request_u64(uint32_t req, uint64_t v, std::string* err);
  bool request_state(uint32_t req, uint32_t index, uint32_t num, std::string* err);
  // GET_FEATURES, GET_PROTOCOL_FEATURES, GET_QUEUE_NUM: a u64 reply of their own.
  bool get_u64(uint32_t req, uint64_t* v, std::string* err);
  // len arbitrary bytes with up to 253 fds attached to the first; nothing is checked.
  bool send_bytes(const uint8_t* p, size_t len, const int* fds, size_t nfds, std::string* err);

 private:
  bool set_timeouts(int fd, std::string* err);
  bool connect_to(const sockaddr_un& sa, const std::string& path, std::string* err);
  bool accept_one(const sockaddr_un& sa, const std::string& path, std::string* err);

  int sock_ = -1;
  int timeout_ms_ = 0;
  bool reply_ack_ = false;
  bool hung_up_ = false;
};

}  // namespace vw
