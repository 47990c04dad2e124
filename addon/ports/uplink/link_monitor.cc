#include "ports/uplink/link_monitor.h"

#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace vw {

std::unique_ptr<LinkMonitor> LinkMonitor::open(Reactor& reactor, std::function<void()> changed, std::string* err) {
  std::unique_ptr<LinkMonitor> m(new LinkMonitor(reactor, std::move(changed)));
  m->fd_ = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_ROUTE);
  sockaddr_nl sa = {};
  sa.nl_family = AF_NETLINK;
  sa.nl_groups = RTMGRP_LINK;
  if (m->fd_ < 0 || bind(m->fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    *err = std::string("cannot listen for link changes (rtnetlink): ") + strerror(errno);
    return nullptr;
  }
  LinkMonitor* self = m.get();
  reactor.watch(m->fd_, [self](uint32_t) { self->drain(); });
  return m;
}

LinkMonitor::~LinkMonitor() {
  if (fd_ < 0) return;
  reactor_.unwatch(fd_);
  close(fd_);
}

void LinkMonitor::drain() {
  // Read until empty. ENOBUFS: the kernel dropped messages for a full socket; the look that follows
  // covers whatever they said.
  char buf[8192];
  for (int i = 0; i < 1024; i++) {
    const ssize_t n = recv(fd_, buf, sizeof buf, MSG_DONTWAIT);
    if (n < 0 && errno == ENOBUFS) continue;
    if (n <= 0) break;
  }
  changed_();
}

bool LinkMonitor::flags(const std::string& ifname, unsigned* out) const {
  ifreq ifr = {};
  if (ifname.empty() || ifname.size() >= IFNAMSIZ) return false;
  memcpy(ifr.ifr_name, ifname.data(), ifname.size());
  if (ioctl(fd_, SIOCGIFFLAGS, &ifr) != 0) return false;
  *out = unsigned(ifr.ifr_flags) & 0xffff;
  return true;
}

}  // namespace vw
