#include "core/netdev_stats.h"

#include <errno.h>
#include <linux/ethtool.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstring>
#include <memory>

namespace vw {
namespace {

// More strings than any driver has (mlx5 has a few thousand); a count above it is not believed.
constexpr uint32_t kMaxEthtoolStats = 1 << 16;

struct Fd {
  int fd;
  explicit Fd(int f) : fd(f) {}
  ~Fd() {
    if (fd >= 0) close(fd);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
};

std::string errno_text(const char* what, int err) { return std::string(what) + ": " + strerror(err); }

// rtnl_link_stats64 in field order, with the names sysfs gives them; the kernel may send a shorter struct
// (an older kernel) or a longer one (a newer), so only the fields wholly present are read.
constexpr const char* kLinkStatNames[] = {
    "rx_packets",       "tx_packets",        "rx_bytes",          "tx_bytes",        "rx_errors",
    "tx_errors",        "rx_dropped",        "tx_dropped",        "multicast",       "collisions",
    "rx_length_errors", "rx_over_errors",    "rx_crc_errors",     "rx_frame_errors", "rx_fifo_errors",
    "rx_missed_errors", "tx_aborted_errors", "tx_carrier_errors", "tx_fifo_errors",  "tx_heartbeat_errors",
    "tx_window_errors", "rx_compressed",     "tx_compressed",     "rx_nohandler",    "rx_otherhost_dropped",
};
static_assert(sizeof(kLinkStatNames) / sizeof(kLinkStatNames[0]) * sizeof(uint64_t) <= sizeof(rtnl_link_stats64),
              "every name must be a field of rtnl_link_stats64");

void read_link(unsigned ifindex, NetdevStats& out) {
  Fd s(socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
  if (s.fd < 0) {
    out.link_error = errno_text("rtnetlink socket", errno);
    return;
  }
  timeval tv{0, kNetdevStatsTimeoutMs * 1000};
  setsockopt(s.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  struct {
    nlmsghdr h;
    ifinfomsg i;
  } req{};
  req.h.nlmsg_len = sizeof req;
  req.h.nlmsg_type = RTM_GETLINK;
  req.h.nlmsg_flags = NLM_F_REQUEST;
  req.h.nlmsg_seq = 1;
  req.i.ifi_family = AF_UNSPEC;
  req.i.ifi_index = int(ifindex);
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  if (sendto(s.fd, &req, sizeof req, 0, reinterpret_cast<sockaddr*>(&kernel), sizeof kernel) < 0) {
    out.link_error = errno_text("RTM_GETLINK", errno);
    return;
  }
  // One RTM_NEWLINK: a few KiB with every attribute; u64 words keep nlmsghdr aligned.
  constexpr size_t kAnswerBytes = 64 * 1024;
  std::unique_ptr<uint64_t[]> words(new uint64_t[kAnswerBytes / sizeof(uint64_t)]);
  char* buf = reinterpret_cast<char*>(words.get());
  ssize_t n = recv(s.fd, buf, kAnswerBytes, 0);
  if (n < 0) {
    out.link_error = errno == EAGAIN ? "the kernel did not answer RTM_GETLINK within the time allowed"
                                     : errno_text("RTM_GETLINK answer", errno);
    return;
  }
  // The answer is the kernel's, but parsed as if it were not: every length is checked against what arrived.
  size_t len = size_t(n);
  for (auto* h = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
    if (h->nlmsg_type == NLMSG_ERROR) {
      const auto* e = static_cast<const nlmsgerr*>(NLMSG_DATA(h));
      if (h->nlmsg_len >= NLMSG_LENGTH(sizeof *e))
        out.link_error = errno_text("RTM_GETLINK", -e->error);
      else
        out.link_error = "RTM_GETLINK: a truncated error answer";
      return;
    }
    if (h->nlmsg_type != RTM_NEWLINK || h->nlmsg_len < NLMSG_LENGTH(sizeof(ifinfomsg))) continue;
    auto* ifi = static_cast<ifinfomsg*>(NLMSG_DATA(h));
    int alen = int(h->nlmsg_len - NLMSG_LENGTH(sizeof *ifi));
    for (auto* a = IFLA_RTA(ifi); RTA_OK(a, alen); a = RTA_NEXT(a, alen)) {
      if (a->rta_type != IFLA_STATS64) continue;
      size_t have = RTA_PAYLOAD(a) / sizeof(uint64_t);
      const char* p = static_cast<const char*>(RTA_DATA(a));
      for (size_t f = 0; f < have && f < sizeof(kLinkStatNames) / sizeof(kLinkStatNames[0]); f++) {
        uint64_t v;
        memcpy(&v, p + f * sizeof v, sizeof v);
        out.link.emplace_back(kLinkStatNames[f], v);
      }
      return;
    }
    out.link_error = "the kernel's RTM_NEWLINK answer has no IFLA_STATS64";
    return;
  }
  out.link_error = "no RTM_NEWLINK in the kernel's answer";
}

// The stats count: ETHTOOL_GSSET_INFO, or ETHTOOL_GDRVINFO's n_stats for drivers without it. 0 with
// out.ethtool_error set when there is none.
uint32_t ethtool_count(int fd, ifreq& ifr, NetdevStats& out) {
  // The header, then one u32 per string set asked for (one here).
  alignas(ethtool_sset_info) char sbuf[sizeof(ethtool_sset_info) + sizeof(uint32_t)] = {};
  auto* sset = reinterpret_cast<ethtool_sset_info*>(sbuf);
  sset->cmd = ETHTOOL_GSSET_INFO;
  sset->sset_mask = 1ull << ETH_SS_STATS;
  ifr.ifr_data = sbuf;
  if (ioctl(fd, SIOCETHTOOL, &ifr) == 0) {
    uint32_t count;
    memcpy(&count, sbuf + sizeof(ethtool_sset_info), sizeof count);
    if (!(sset->sset_mask & (1ull << ETH_SS_STATS)) || count == 0) {
      out.ethtool_error = "no ethtool statistics on this interface (its driver keeps none)";
      return 0;
    }
    return count;
  }
  if (errno != EOPNOTSUPP) {
    out.ethtool_error = errno_text("SIOCETHTOOL ETHTOOL_GSSET_INFO", errno);
    return 0;
  }
  ethtool_drvinfo drv{};
  drv.cmd = ETHTOOL_GDRVINFO;
  ifr.ifr_data = reinterpret_cast<char*>(&drv);
  if (ioctl(fd, SIOCETHTOOL, &ifr) != 0 || drv.n_stats == 0) {
    out.ethtool_error = "no ethtool statistics on this interface (its driver keeps none)";
    return 0;
  }
  return drv.n_stats;
}

void read_ethtool(const std::string& ifname, NetdevStats& out) {
  Fd s(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (s.fd < 0) {
    out.ethtool_error = errno_text("socket for SIOCETHTOOL", errno);
    return;
  }
  ifreq ifr{};
  memcpy(ifr.ifr_name, ifname.data(), ifname.size());  // size < IFNAMSIZ, checked by the caller
  uint32_t count = ethtool_count(s.fd, ifr, out);
  if (count == 0) return;
  if (count > kMaxEthtoolStats) {
    out.ethtool_error = "the driver reports " + std::to_string(count) + " ethtool statistics, more than the " +
                        std::to_string(kMaxEthtoolStats) + " believed";
    return;
  }
  // The kernel writes as many entries as the driver has at the time of each call, whatever length we
  // pass: a driver reconfigured between the calls (more channels) would write past a buffer sized
  // exactly. Room for twice the count keeps such a race inside our buffers; a mismatch is then refused.
  const size_t room = size_t(count) * 2 + 64;
  std::unique_ptr<char[]> sbuf(new char[sizeof(ethtool_gstrings) + room * ETH_GSTRING_LEN]());
  auto* gs = reinterpret_cast<ethtool_gstrings*>(sbuf.get());
  gs->cmd = ETHTOOL_GSTRINGS;
  gs->string_set = ETH_SS_STATS;
  gs->len = count;
  ifr.ifr_data = sbuf.get();
  if (ioctl(s.fd, SIOCETHTOOL, &ifr) != 0) {
    out.ethtool_error = errno_text("SIOCETHTOOL ETHTOOL_GSTRINGS", errno);
    return;
  }
  std::unique_ptr<uint64_t[]> vbuf(new uint64_t[sizeof(ethtool_stats) / sizeof(uint64_t) + room]());
  auto* st = reinterpret_cast<ethtool_stats*>(vbuf.get());
  st->cmd = ETHTOOL_GSTATS;
  st->n_stats = count;
  ifr.ifr_data = reinterpret_cast<char*>(vbuf.get());
  if (ioctl(s.fd, SIOCETHTOOL, &ifr) != 0) {
    out.ethtool_error = errno_text("SIOCETHTOOL ETHTOOL_GSTATS", errno);
    return;
  }
  if (gs->len != count || st->n_stats != count) {
    out.ethtool_error = "the driver's ethtool statistics changed in number while being read; ask again";
    return;
  }
  out.ethtool.reserve(count);
  for (uint32_t i = 0; i < count; i++) {
    const char* name = reinterpret_cast<const char*>(gs->data) + size_t(i) * ETH_GSTRING_LEN;
    out.ethtool.emplace_back(std::string(name, strnlen(name, ETH_GSTRING_LEN)), st->data[i]);
  }
}

}  // namespace

NetdevStats read_netdev_stats(const std::string& ifname) {
  NetdevStats out;
  if (ifname.empty() || ifname.size() >= IFNAMSIZ || ifname.find('\0') != std::string::npos) return out;
  unsigned ifindex = if_nametoindex(ifname.c_str());
  if (ifindex == 0) return out;
  out.exists = true;
  read_link(ifindex, out);
  read_ethtool(ifname, out);
  return out;
}

}  // namespace vw
