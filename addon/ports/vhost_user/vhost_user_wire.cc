#include "ports/vhost_user/vhost_user_wire.h"

#include <errno.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <cstring>
#include <string>

namespace vw {

namespace {

void close_all(int* fds, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (fds[i] >= 0) close(fds[i]);
}

// Reads exactly len bytes (no fds expected); false on EOF or error. The socket's receive timeout bounds
// the whole read, not each recv(): a peer dripping a byte per timeout must not hold us longer.
bool read_full(int sock, void* buf, size_t len) {
  timeval tv = {};
  socklen_t tl = sizeof(tv);
  int64_t timeout_ms = -1;
  if (getsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &tv, &tl) == 0 && (tv.tv_sec || tv.tv_usec))
    timeout_ms = int64_t(tv.tv_sec) * 1000 + tv.tv_usec / 1000;
  timespec t0;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  auto* p = static_cast<uint8_t*>(buf);
  while (len) {
    if (timeout_ms >= 0) {
      timespec now;
      clock_gettime(CLOCK_MONOTONIC, &now);
      const int64_t left = timeout_ms - ((now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000);
      pollfd pf = {sock, POLLIN, 0};
      const int pr = left > 0 ? poll(&pf, 1, int(left)) : 0;
      if (pr < 0 && errno == EINTR) continue;
      if (pr <= 0) {
        if (pr == 0) errno = EAGAIN;
        return false;
      }
    }
    // With a deadline, poll() above waits and recv() must not; without one, recv() blocks as usual.
    ssize_t r = recv(sock, p, len, timeout_ms >= 0 ? MSG_DONTWAIT : 0);
    if (r < 0 && (errno == EINTR || (timeout_ms >= 0 && errno == EAGAIN))) continue;
    if (r <= 0) {
      if (r == 0) errno = ECONNRESET;
      return false;
    }
    p += r;
    len -= size_t(r);
  }
  return true;
}

}  // namespace

WireResult vhost_user_recv(int sock, VhostUserMsg* msg, int* fds, size_t max_fds, size_t* nfds) {
  *nfds = 0;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kVhostUserMaxFds * 2)];
  iovec iov = {&msg->hdr, kVhostUserHeaderSize};
  msghdr mh = {};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  mh.msg_control = control;
  mh.msg_controllen = sizeof(control);
  ssize_t r;
  do {
    r = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC | MSG_WAITALL);
  } while (r < 0 && errno == EINTR);
  if (r == 0) return WireResult::kClosed;
  // A failed recvmsg (ECONNRESET when the front end hung up with our reply unread, EAGAIN on the
  // timeout) delivers no fds and writes nothing back: control still holds whatever the stack held,
  // possibly an earlier message's fd numbers, which must not be parsed and closed.
  if (r < 0) return WireResult::kError;

  // Collect every fd that arrived before judging anything, so that each is closed on every error path.
  int got[kVhostUserMaxFds * 2];
  size_t ngot = 0;
  for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < n && ngot < kVhostUserMaxFds * 2; i++)
      memcpy(&got[ngot++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
  }
  bool truncated = (mh.msg_flags & MSG_CTRUNC) != 0;
  if (r < 0 || size_t(r) != kVhostUserHeaderSize || truncated || ngot > max_fds ||
      msg->hdr.size > kVhostUserMaxPayload) {
    close_all(got, ngot);
    if (r >= 0) errno = EPROTO;
    return WireResult::kError;
  }
  if (msg->hdr.size && !read_full(sock, &msg->payload, msg->hdr.size)) {
    close_all(got, ngot);
    return WireResult::kError;
  }
  for (size_t i = 0; i < ngot; i++) fds[i] = got[i];
  *nfds = ngot;
  return WireResult::kOk;
}

int64_t monotonic_ms() {
  timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return int64_t(t.tv_sec) * 1000 + t.tv_nsec / 1000000;
}

void MessageReader::reset() {
  close_all(fds_, nfds_);
  nfds_ = 0;
  got_ = 0;
}

MessageReader::Result MessageReader::read(int sock, VhostUserMsg* msg, int* fds, size_t* nfds, std::string* why) {
  *nfds = 0;
  for (;;) {
    const size_t want =
        got_ < kVhostUserHeaderSize ? kVhostUserHeaderSize - got_ : kVhostUserHeaderSize + msg_.hdr.size - got_;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kVhostUserMaxFds * 2)];
    iovec iov = {reinterpret_cast<uint8_t*>(&msg_) + got_, want};
    msghdr mh = {};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = control;
    mh.msg_controllen = sizeof(control);
    const ssize_t r = recvmsg(sock, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return Result::kPending;
    // As in vhost_user_recv: a failed recvmsg wrote no control data, so none is parsed.
    if (r < 0) {
      *why = strerror(errno);
      reset();
      return Result::kError;
    }
    if (r == 0) {
      if (!in_message()) return Result::kClosed;
      *why = "the front end hung up in the middle of a message";
      reset();
      return Result::kError;
    }
    if (!in_message()) started_ms_ = monotonic_ms();
    bool too_many = false;
    for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      const size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < n; i++) {
        int fd;
        memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        if (nfds_ < kVhostUserMaxFds)
          fds_[nfds_++] = fd;
        else {
          close(fd);
          too_many = true;
        }
      }
    }
    got_ += size_t(r);
    if (too_many || (mh.msg_flags & MSG_CTRUNC)) {
      *why = "it carries more than " + std::to_string(kVhostUserMaxFds) + " file descriptors";
      reset();
      return Result::kError;
    }
    if (got_ < kVhostUserHeaderSize) continue;
    if (msg_.hdr.size > kVhostUserMaxPayload) {
      *why = "its payload of " + std::to_string(msg_.hdr.size) + " bytes is over the maximum of " +
             std::to_string(kVhostUserMaxPayload);
      reset();
      return Result::kError;
    }
    if (got_ < kVhostUserHeaderSize + msg_.hdr.size) continue;
    memcpy(msg, &msg_, got_);
    memcpy(fds, fds_, nfds_ * sizeof(int));
    *nfds = nfds_;
    nfds_ = 0;
    got_ = 0;
    return Result::kMessage;
  }
}

void attach_fds(msghdr* mh, void* control, const int* fds, size_t nfds) {
  mh->msg_control = control;
  mh->msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
  cmsghdr* c = CMSG_FIRSTHDR(mh);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
  memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
}

bool vhost_user_send(int sock, const VhostUserMsg& msg, const int* fds, size_t nfds) {
  if (msg.hdr.size > kVhostUserMaxPayload || nfds > kVhostUserMaxFds) {
    errno = EINVAL;
    return false;
  }
  iovec iov = {const_cast<VhostUserMsg*>(&msg), kVhostUserHeaderSize + msg.hdr.size};
  msghdr mh = {};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kVhostUserMaxFds)];
  if (nfds) attach_fds(&mh, control, fds, nfds);
  size_t want = iov.iov_len;
  ssize_t r;
  do {
    r = sendmsg(sock, &mh, MSG_NOSIGNAL);
  } while (r < 0 && errno == EINTR);
  if (r < 0) return false;
  if (size_t(r) != want) {
    // Stream socket: finish the payload without resending the fds.
    auto* p = reinterpret_cast<const uint8_t*>(&msg) + r;
    size_t left = want - size_t(r);
    while (left) {
      ssize_t w = send(sock, p, left, MSG_NOSIGNAL);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) return false;
      p += w;
      left -= size_t(w);
    }
  }
  return true;
}

}  // namespace vw
