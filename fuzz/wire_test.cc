// Regression tests for the vhost-user wire layer (addon/vhost_user_wire.cc) that need control over
// what recvmsg() returns, which no real peer has, and of MessageReader's reassembly: built and run by
// fuzz/build.sh and fuzz/run.sh.
//
// recvmsg is interposed here (this executable's definition wins over libc's for the code linked into
// it). By default it is the real system call; a test can make it fail the way the kernel does, leaving
// the caller's control buffer as it was.
#include <errno.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "ports/vhost_user/vhost_user_wire.h"

using namespace vw;

namespace {
int g_fail_errno = 0;   // nonzero: the next recvmsg fails with it
int g_planted_fd = -1;  // and leaves a well-formed SCM_RIGHTS message naming this fd in the buffer
int passed = 0, failed = 0;

void check(bool ok, const char* what) {
  printf("%s %d - %s\n", ok ? "ok" : "not ok", passed + failed + 1, what);
  (ok ? passed : failed)++;
}

bool fd_open(int fd) { return fcntl(fd, F_GETFD) != -1; }

int count_fds() {
  int n = 0;
  for (int fd = 0; fd < 1024; fd++) n += fd_open(fd);
  return n;
}
}  // namespace

extern "C" ssize_t recvmsg(int fd, struct msghdr* mh, int flags) {
  if (g_fail_errno) {
    // What a stack buffer may hold from an earlier message: a valid-looking cmsg with an fd number
    // that now belongs to someone else. The kernel writes nothing into it on failure.
    if (g_planted_fd >= 0 && mh->msg_controllen >= CMSG_SPACE(sizeof(int))) {
      cmsghdr* c = reinterpret_cast<cmsghdr*>(mh->msg_control);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int));
      memcpy(CMSG_DATA(c), &g_planted_fd, sizeof(int));
    }
    errno = g_fail_errno;
    g_fail_errno = 0;
    return -1;
  }
  return syscall(SYS_recvmsg, fd, mh, flags);
}

int main() {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return 2;

  {
    // A failed recvmsg (ECONNRESET: the front end hung up with our reply unread) must not be taken for
    // a message: before the fix the stale control buffer was parsed and the fd it named was closed,
    // although it belonged to another connection or to a mapping.
    int victim = eventfd(0, EFD_CLOEXEC);
    g_planted_fd = victim;
    g_fail_errno = ECONNRESET;
    VhostUserMsg m;
    int fds[kVhostUserMaxFds];
    size_t nfds = 99;
    WireResult r = vhost_user_recv(sv[0], &m, fds, kVhostUserMaxFds, &nfds);
    check(r == WireResult::kError && errno == ECONNRESET, "a failed recvmsg is an error that keeps its errno");
    check(nfds == 0, "a failed recvmsg yields no fds");
    check(fd_open(victim), "a failed recvmsg closes no fd named by stale control data");
    close(victim);
    g_planted_fd = -1;
  }

  {
    // A well-formed message with two fds.
    VhostUserMsg m = {};
    m.hdr = {VHOST_USER_SET_VRING_CALL, VHOST_USER_VERSION, 8};
    int e[2] = {eventfd(0, EFD_CLOEXEC), eventfd(0, EFD_CLOEXEC)};
    check(vhost_user_send(sv[1], m, e, 2), "send a message with two fds");
    close(e[0]);
    close(e[1]);
    VhostUserMsg got;
    int fds[kVhostUserMaxFds];
    size_t nfds = 0;
    WireResult r = vhost_user_recv(sv[0], &got, fds, kVhostUserMaxFds, &nfds);
    check(r == WireResult::kOk && nfds == 2 && got.hdr.request == VHOST_USER_SET_VRING_CALL,
          "it arrives with both fds");
    for (size_t i = 0; i < nfds; i++) close(fds[i]);
  }

  {
    // More fds than the caller accepts: refused, and every fd that arrived is closed.
    VhostUserMsg m = {};
    m.hdr = {VHOST_USER_SET_MEM_TABLE, VHOST_USER_VERSION, 0};
    int e[3];
    for (int& x : e) x = eventfd(0, EFD_CLOEXEC);
    vhost_user_send(sv[1], m, e, 3);
    for (int x : e) close(x);
    const int before = count_fds();
    VhostUserMsg got;
    int fds[kVhostUserMaxFds];
    size_t nfds = 0;
    WireResult r = vhost_user_recv(sv[0], &got, fds, 2, &nfds);
    check(r == WireResult::kError && nfds == 0, "too many fds is an error");
    check(count_fds() == before, "the received fds were closed");
  }

  {
    // A payload size larger than any message: refused from the header, its fd closed.
    VhostUserMsg m = {};
    m.hdr = {VHOST_USER_SET_FEATURES, VHOST_USER_VERSION, 0};
    int e = eventfd(0, EFD_CLOEXEC);
    vhost_user_send(sv[1], m, &e, 1);
    close(e);
    // Rewrite the size the peer sees: send the header by hand.
    VhostUserHeader h = {VHOST_USER_SET_FEATURES, VHOST_USER_VERSION, 100000};
    VhostUserMsg got;
    int fds[kVhostUserMaxFds];
    size_t nfds = 0;
    vhost_user_recv(sv[0], &got, fds, kVhostUserMaxFds, &nfds);  // the first one, fine
    for (size_t i = 0; i < nfds; i++) close(fds[i]);
    int e2 = eventfd(0, EFD_CLOEXEC);
    msghdr mh = {};
    iovec iov = {&h, sizeof h};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
    mh.msg_control = control;
    mh.msg_controllen = sizeof control;
    cmsghdr* c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &e2, sizeof(int));
    sendmsg(sv[1], &mh, 0);
    close(e2);
    const int before = count_fds();
    WireResult r = vhost_user_recv(sv[0], &got, fds, kVhostUserMaxFds, &nfds);
    check(r == WireResult::kError && nfds == 0, "an oversized payload is an error");
    check(count_fds() == before, "its fd was closed");
  }

  {
    // MessageReader, the backend's: a message sent a byte at a time, its fd on the first byte, is
    // pending until its last byte and then whole; the next message's fd is not taken with it.
    int nb[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, nb) != 0) return 2;
    VhostUserMsg m = {};
    m.hdr = {VHOST_USER_SET_VRING_CALL, VHOST_USER_VERSION, 8};
    m.payload.u64 = 1;
    int e = eventfd(0, EFD_CLOEXEC);
    const auto* bytes = reinterpret_cast<const uint8_t*>(&m);
    const size_t len = kVhostUserHeaderSize + 8;
    MessageReader reader;
    VhostUserMsg got;
    int fds[kVhostUserMaxFds];
    size_t nfds = 9;
    std::string why;
    bool pending_until_last = true;
    for (size_t i = 0; i < len; i++) {
      iovec iov = {const_cast<uint8_t*>(bytes + i), 1};
      msghdr mh = {};
      mh.msg_iov = &iov;
      mh.msg_iovlen = 1;
      alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
      if (i == 0) attach_fds(&mh, control, &e, 1);
      sendmsg(nb[1], &mh, 0);
      if (i + 1 < len)
        pending_until_last &= reader.read(nb[0], &got, fds, &nfds, &why) == MessageReader::Result::kPending;
    }
    check(pending_until_last && reader.in_message(),
          "a message dripped a byte at a time is pending until its last byte");
    // The next message, with an fd of its own, already waiting behind it.
    int e2 = eventfd(0, EFD_CLOEXEC);
    vhost_user_send(nb[1], m, &e2, 1);
    const MessageReader::Result r = reader.read(nb[0], &got, fds, &nfds, &why);
    check(r == MessageReader::Result::kMessage && got.hdr.request == VHOST_USER_SET_VRING_CALL &&
              got.payload.u64 == 1 && nfds == 1 && fd_open(fds[0]),
          "then it is whole, with the fd that came on its first byte");
    if (nfds == 1) close(fds[0]);
    nfds = 9;
    const MessageReader::Result r2 = reader.read(nb[0], &got, fds, &nfds, &why);
    check(r2 == MessageReader::Result::kMessage && nfds == 1, "the next message keeps its own fd");
    if (r2 == MessageReader::Result::kMessage && nfds == 1) close(fds[0]);
    // Half a header, then the peer hangs up: an error, and the fd received with it closed.
    iovec iov = {const_cast<uint8_t*>(bytes), 6};
    msghdr mh = {};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
    attach_fds(&mh, control, &e2, 1);
    sendmsg(nb[1], &mh, 0);
    close(nb[1]);
    const int before = count_fds();  // the fd in flight is in no table yet
    check(reader.read(nb[0], &got, fds, &nfds, &why) == MessageReader::Result::kError,
          "half a header then a hang-up is an error");
    check(count_fds() == before && why == "the front end hung up in the middle of a message",
          "its fd is closed and the reason says so");
    close(e);
    close(e2);
    close(nb[0]);
  }

  close(sv[0]);
  close(sv[1]);
  printf("# wire_test\n%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
