// Tells an uplink when something happened to a network interface: a NETLINK_ROUTE socket subscribed to
// link notifications (RTMGRP_LINK), watched by the control thread. The messages themselves are not read
// for their contents: any link message (or a lost one, ENOBUFS) makes the uplink look at its interface
// again through if_indextoname/SIOCGIFFLAGS, so nothing the kernel writes is parsed, and a burst of
// changes is one look. Rare by nature; each uplink has its own socket.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "runtime/reactor.h"

namespace vw {

class LinkMonitor {
 public:
  // changed runs on the control thread, with the engine lock held, after each batch of link messages.
  // null and *err on failure.
  static std::unique_ptr<LinkMonitor> open(Reactor& reactor, std::function<void()> changed, std::string* err);
  ~LinkMonitor();
  LinkMonitor(const LinkMonitor&) = delete;
  LinkMonitor& operator=(const LinkMonitor&) = delete;

  // The interface's flags (IFF_UP, IFF_RUNNING...) by name; false when it cannot be read (gone).
  bool flags(const std::string& ifname, unsigned* out) const;

 private:
  LinkMonitor(Reactor& reactor, std::function<void()> changed) : reactor_(reactor), changed_(std::move(changed)) {}
  void drain();

  Reactor& reactor_;
  std::function<void()> changed_;
  int fd_ = -1;
};

}  // namespace vw
