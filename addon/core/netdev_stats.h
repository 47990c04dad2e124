// The kernel's own counters for one network interface, asked of the kernel directly rather than by running
// `ethtool` or reading sysfs: the standard statistics every driver keeps (rtnetlink RTM_GETLINK,
// IFLA_STATS64) and the driver's private ones (SIOCETHTOOL: ETHTOOL_GSSET_INFO, ETHTOOL_GSTRINGS,
// ETHTOOL_GSTATS). A few system calls in all; the netlink answer is awaited at most kNetdevStatsTimeoutMs,
// so a scrape that asks for every uplink stays bounded.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace vw {

constexpr int kNetdevStatsTimeoutMs = 500;

struct NetdevStats {
  // False: there is no interface by that name in this process's network namespace; nothing else is set.
  bool exists = false;
  // IFLA_STATS64, named as /sys/class/net/IF/statistics names them (rx_packets, tx_dropped, ...).
  std::vector<std::pair<std::string, uint64_t>> link;
  // Why `link` is empty, when it is ("" otherwise).
  std::string link_error;
  // The driver's statistics in the driver's order and names, as `ethtool -S` shows them.
  std::vector<std::pair<std::string, uint64_t>> ethtool;
  // Why `ethtool` is empty: the driver has none (veth does; many virtual devices do not), or the ioctl
  // failed ("" when it was read).
  std::string ethtool_error;
};

// Never throws; every failure is a sentence in the result. Blocking (netlink round trip): call it off the
// JS thread.
NetdevStats read_netdev_stats(const std::string& ifname);

}  // namespace vw
