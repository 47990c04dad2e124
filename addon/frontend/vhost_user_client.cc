#include "frontend/vhost_user_client.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>

#include "frontend/errors.h"

namespace vw {

// Each name is spelled once, as the request's identifier in vhost_user_wire.h.
// Kept by hand as a table (a grid of requests, not one a line); clang-format would reflow it.
// clang-format off
#define VW_REQUEST(r) {#r, VHOST_USER_##r}
const std::vector<std::pair<const char*, uint32_t>>& vhost_user_requests() {
  static const std::vector<std::pair<const char*, uint32_t>> kRequests = {
      VW_REQUEST(GET_FEATURES),        VW_REQUEST(SET_FEATURES),          VW_REQUEST(SET_OWNER),
      VW_REQUEST(RESET_OWNER),         VW_REQUEST(SET_MEM_TABLE),         VW_REQUEST(SET_LOG_BASE),
      VW_REQUEST(SET_LOG_FD),          VW_REQUEST(SET_VRING_NUM),         VW_REQUEST(SET_VRING_ADDR),
      VW_REQUEST(SET_VRING_BASE),      VW_REQUEST(GET_VRING_BASE),        VW_REQUEST(SET_VRING_KICK),
      VW_REQUEST(SET_VRING_CALL),      VW_REQUEST(SET_VRING_ERR),         VW_REQUEST(GET_PROTOCOL_FEATURES),
      VW_REQUEST(SET_PROTOCOL_FEATURES), VW_REQUEST(GET_QUEUE_NUM),       VW_REQUEST(SET_VRING_ENABLE),
      VW_REQUEST(SEND_RARP),           VW_REQUEST(NET_SET_MTU),           VW_REQUEST(GET_MAX_MEM_SLOTS),
      VW_REQUEST(ADD_MEM_REG),         VW_REQUEST(REM_MEM_REG),
      // clang-format on
  };
  return kRequests;
}
#undef VW_REQUEST

namespace {

std::string request_name(uint32_t req) {
  for (const auto& [name, number] : vhost_user_requests())
    if (number == req) return name;
  return "an unknown request";
}

}  // namespace

VhostUserClient::~VhostUserClient() {
  if (sock_ >= 0) close(sock_);
}

bool VhostUserClient::connect(const sockaddr_un& sa, const std::string& path, bool server, int timeout_ms,
                              std::string* err) {
  timeout_ms_ = timeout_ms;
  return server ? accept_one(sa, path, err) : connect_to(sa, path, err);
}

bool VhostUserClient::connected() const {
  if (sock_ < 0 || hung_up_) return false;
  pollfd p = {sock_, POLLRDHUP, 0};
  if (poll(&p, 1, 0) < 0) return true;
  return !(p.revents & (POLLHUP | POLLRDHUP | POLLERR | POLLNVAL));
}

bool VhostUserClient::set_timeouts(int fd, std::string* err) {
  if (timeout_ms_ <= 0) return true;
  timeval tv = {timeout_ms_ / 1000, (timeout_ms_ % 1000) * 1000};
  if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
      setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0)
    return fail(err, sys_error("setting socket timeouts"));
  return true;
}

bool VhostUserClient::connect_to(const sockaddr_un& sa, const std::string& path, std::string* err) {
  // The backend may still be starting: a missing or not yet listening socket is retried until the
  // timeout.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(std::max(timeout_ms_, 0));
  for (;;) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return fail(err, sys_error("socket"));
    if (!set_timeouts(fd, err)) {
      close(fd);
      return false;
    }
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&sa), sizeof(sa)) == 0) {
      sock_ = fd;
      return true;
    }
    int e = errno;
    close(fd);
    bool retry = e == ENOENT || e == ECONNREFUSED || e == EAGAIN || e == EINTR;
    if (!retry || (timeout_ms_ > 0 && std::chrono::steady_clock::now() >= deadline)) {
      errno = e;
      return fail(err, sys_error("connecting to " + path));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

bool VhostUserClient::accept_one(const sockaddr_un& sa, const std::string& path, std::string* err) {
  struct stat st;
  if (lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) return fail(err, path + " exists and is not a socket");
    unlink(path.c_str());
  }
  int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (lfd < 0) return fail(err, sys_error("socket"));
  bool ok = false;
  if (bind(lfd, reinterpret_cast<const sockaddr*>(&sa), sizeof(sa)) < 0) {
    fail(err, sys_error("binding " + path));
  } else {
    if (listen(lfd, 1) < 0) {
      fail(err, sys_error("listening on " + path));
    } else {
      pollfd p = {lfd, POLLIN, 0};
      int r;
      do {
        r = poll(&p, 1, timeout_ms_ > 0 ? timeout_ms_ : -1);
      } while (r < 0 && errno == EINTR);
      if (r < 0) {
        fail(err, sys_error("waiting for a backend on " + path));
      } else if (r == 0) {
        fail(err, "no backend connected to " + path + " within " + std::to_string(timeout_ms_) + " ms");
      } else {
        int fd = accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd < 0) {
          fail(err, sys_error("accepting on " + path));
        } else if (!set_timeouts(fd, err)) {
          close(fd);
        } else {
          sock_ = fd;
          ok = true;
        }
      }
    }
    // One connection is all we take: the path would only mislead a later backend.
    unlink(path.c_str());
  }
  close(lfd);
  return ok;
}

bool VhostUserClient::send(uint32_t req, uint32_t flags, const void* payload, uint32_t size, const int* fds,
                           size_t nfds, std::string* err) {
  VhostUserMsg msg = {};
  msg.hdr = {req, flags, size};
  if (size) memcpy(&msg.payload, payload, size);
  if (!vhost_user_send(sock_, msg, fds, nfds)) {
    if (errno == EPIPE || errno == ECONNRESET) hung_up_ = true;
    return fail(err, sys_error("sending " + request_name(req)));
  }
  return true;
}

bool VhostUserClient::receive(uint32_t req, VhostUserMsg* msg, std::string* err) {
  int fds[kVhostUserMaxFds];
  size_t nfds = 0;
  WireResult r = vhost_user_recv(sock_, msg, fds, kVhostUserMaxFds, &nfds);
  for (size_t i = 0; i < nfds; i++) close(fds[i]);
  const std::string what = "the reply to " + request_name(req);
  if (r == WireResult::kClosed) {
    hung_up_ = true;
    return fail(err, "backend hung up instead of sending " + what);
  }
  if (r == WireResult::kError) {
    if (errno == EAGAIN || errno == EWOULDBLOCK)
      return fail(err, "timed out after " + std::to_string(timeout_ms_) + " ms waiting for " + what);
    if (errno == ECONNRESET) hung_up_ = true;
    return fail(err, sys_error("receiving " + what));
  }
  return true;
}

bool VhostUserClient::receive_reply(uint32_t req, VhostUserMsg* msg, std::string* err) {
  if (!receive(req, msg, err)) return false;
  if (msg->hdr.request != req || !(msg->hdr.flags & VHOST_USER_REPLY_MASK))
    return fail(err, "backend answered " + request_name(req) + " with request " + std::to_string(msg->hdr.request) +
                         ", flags " + std::to_string(msg->hdr.flags));
  return true;
}

bool VhostUserClient::request(uint32_t req, const void* payload, uint32_t size, const int* fds, size_t nfds,
                              std::string* err) {
  uint32_t flags = VHOST_USER_VERSION | (reply_ack_ ? VHOST_USER_NEED_REPLY_MASK : 0);
  if (!send(req, flags, payload, size, fds, nfds, err)) return false;
  if (!reply_ack_) return true;
  VhostUserMsg reply;
  if (!receive_reply(req, &reply, err)) return false;
  if (reply.hdr.size != sizeof(uint64_t))
    return fail(err, "backend acknowledged " + request_name(req) + " with " + std::to_string(reply.hdr.size) +
                         " bytes instead of 8");
  if (reply.payload.u64 != 0)
    return fail(err, "backend refused " + request_name(req) + " (status " + std::to_string(reply.payload.u64) + ")");
  return true;
}

bool VhostUserClient::request_u64(uint32_t req, uint64_t v, std::string* err) {
  return request(req, &v, sizeof(v), nullptr, 0, err);
}

bool VhostUserClient::request_state(uint32_t req, uint32_t index, uint32_t num, std::string* err) {
  VhostUserVringState s = {index, num};
  return request(req, &s, sizeof(s), nullptr, 0, err);
}

bool VhostUserClient::get_u64(uint32_t req, uint64_t* v, std::string* err) {
  if (!send(req, VHOST_USER_VERSION, nullptr, 0, nullptr, 0, err)) return false;
  VhostUserMsg reply;
  if (!receive_reply(req, &reply, err)) return false;
  if (reply.hdr.size != sizeof(uint64_t))
    return fail(err, "backend replied to " + request_name(req) + " with " + std::to_string(reply.hdr.size) +
                         " bytes instead of 8");
  *v = reply.payload.u64;
  return true;
}

bool VhostUserClient::send_bytes(const uint8_t* p, size_t len, const int* fds, size_t nfds, std::string* err) {
  constexpr size_t kMaxScmFds = 253;  // SCM_MAX_FD
  if (nfds > kMaxScmFds) return fail(err, "at most 253 fds");
  if (len == 0) return fail(err, "nothing to send");
  // cmsghdr-aligned room for up to SCM_MAX_FD fds.
  std::vector<cmsghdr> control(CMSG_SPACE(sizeof(int) * (nfds ? nfds : 1)) / sizeof(cmsghdr) + 1);
  iovec iov = {const_cast<uint8_t*>(p), len};
  msghdr mh = {};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  if (nfds) attach_fds(&mh, control.data(), fds, nfds);
  ssize_t r;
  do {
    r = sendmsg(sock_, &mh, MSG_NOSIGNAL);
  } while (r < 0 && errno == EINTR);
  if (r < 0) {
    if (errno == EPIPE || errno == ECONNRESET) hung_up_ = true;
    return fail(err, sys_error("sending raw bytes"));
  }
  for (size_t done = size_t(r); done < len;) {
    ssize_t w = ::send(sock_, p + done, len - done, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return fail(err, sys_error("sending raw bytes"));
    done += size_t(w);
  }
  return true;
}

}  // namespace vw
