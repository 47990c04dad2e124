#include "ports/uplink/xdp_redirect.h"

#include <linux/bpf.h>
#include <linux/if_link.h>
#include <net/if.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>

#include "ports/uplink/af_packet.h"

namespace vw {

namespace {

const char kCaps[] = "needs root, or CAP_NET_ADMIN, CAP_NET_RAW, CAP_BPF and CAP_IPC_LOCK";

long sys_bpf(int cmd, bpf_attr* attr) { return syscall(__NR_bpf, cmd, attr, sizeof(*attr)); }

// Object names are 15 characters and a NUL; attr is zeroed, so the NUL is already there.
void set_name(char (&dst)[BPF_OBJ_NAME_LEN], const char* name) {
  memcpy(dst, name, std::min(strlen(name), sizeof dst - 1));
}

bpf_insn insn(uint8_t code, uint8_t dst, uint8_t src, int16_t off, int32_t imm) {
  bpf_insn i;
  memset(&i, 0, sizeof i);
  i.code = code;
  i.dst_reg = dst & 0xf;
  i.src_reg = src & 0xf;
  i.off = off;
  i.imm = imm;
  return i;
}

}  // namespace

std::unique_ptr<XdpRedirect> XdpRedirect::open(const std::string& ifname, uint32_t queue_end, std::string* err) {
  std::unique_ptr<XdpRedirect> r(new XdpRedirect());
  std::string why;
  if (!r->setup(ifname, queue_end, &why)) {
    *err = "AF_XDP on interface " + ifname + ": " + why;
    return nullptr;
  }
  return r;
}

XdpRedirect::~XdpRedirect() {
  if (link_ >= 0) close(link_);
  if (promisc_ >= 0) close(promisc_);
  if (prog_ >= 0) close(prog_);
  if (map_ >= 0) close(map_);
}

bool XdpRedirect::setup(const std::string& ifname, uint32_t queue_end, std::string* err) {
  auto fail = [&](const std::string& step, int e, const std::string& hint = "") {
    *err = step + ": " + strerror(e) + (hint.empty() ? "" : " (" + hint + ")");
    return false;
  };
  if (ifname.empty() || ifname.size() >= IFNAMSIZ) return fail("bad interface name", EINVAL);
  const unsigned ifindex = if_nametoindex(ifname.c_str());
  if (!ifindex) return fail("looking up the interface", errno, "no such interface in this network namespace");

  // An XSKMAP: key = receive queue index, value = the socket bound to that queue.
  bpf_attr a;
  memset(&a, 0, sizeof a);
  a.map_type = BPF_MAP_TYPE_XSKMAP;
  a.key_size = sizeof(uint32_t);
  a.value_size = sizeof(uint32_t);
  a.max_entries = queue_end;
  set_name(a.map_name, "vw_xsks");
  map_ = int(sys_bpf(BPF_MAP_CREATE, &a));
  if (map_ < 0) {
    const int e = errno;
    return fail("creating the XSKMAP", e, e == EPERM ? kCaps : "");
  }

  // return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS): a frame of a queue with a socket in
  // the map goes to it; any other queue's (and every frame before the sockets are in) go on to the
  // kernel's stack.
  const bpf_insn prog[] = {
      insn(BPF_LDX | BPF_MEM | BPF_W, BPF_REG_2, BPF_REG_1, int16_t(offsetof(xdp_md, rx_queue_index)), 0),
      // A 64-bit immediate spans two instructions; the kernel replaces the map's fd with the map.
      insn(BPF_LD | BPF_DW | BPF_IMM, BPF_REG_1, BPF_PSEUDO_MAP_FD, 0, map_),
      insn(0, 0, 0, 0, 0),
      insn(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_3, 0, 0, XDP_PASS),
      insn(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_redirect_map),
      insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0),
  };
  // bpf_redirect_map is not GPL-only, so the program can carry the project's licence.
  static const char license[] = "MIT";
  auto load = [&](char* log, uint32_t log_size) {
    memset(&a, 0, sizeof a);
    a.prog_type = BPF_PROG_TYPE_XDP;
    a.expected_attach_type = BPF_XDP;
    a.insns = reinterpret_cast<uint64_t>(prog);
    a.insn_cnt = sizeof prog / sizeof prog[0];
    a.license = reinterpret_cast<uint64_t>(license);
    a.log_buf = reinterpret_cast<uint64_t>(log);
    a.log_size = log_size;
    a.log_level = log ? 1 : 0;
    set_name(a.prog_name, "vw_xsk_redirect");
    return int(sys_bpf(BPF_PROG_LOAD, &a));
  };
  prog_ = load(nullptr, 0);
  if (prog_ < 0) {
    const int e = errno;
    // Load once more with the verifier's log, for the error message.
    std::string log(4096, '\0');
    const int again = load(&log[0], uint32_t(log.size()));
    if (again >= 0) close(again);
    log.resize(strlen(log.c_str()));
    std::replace(log.begin(), log.end(), '\n', ' ');
    return fail("loading the XDP program", e, e == EPERM ? kCaps : log.empty() ? "" : "verifier: " + log);
  }

  // A bpf_link, not a netlink attachment: the kernel detaches the program when the last fd of the link
  // is closed, also when the process dies, so a crash leaves nothing on the interface. Native mode
  // first (the driver runs the program on its own buffers); generic mode (on socket buffers, after the
  // driver) works on every interface.
  auto attach = [&](uint32_t mode) {
    memset(&a, 0, sizeof a);
    a.link_create.prog_fd = uint32_t(prog_);
    a.link_create.target_ifindex = ifindex;
    a.link_create.attach_type = BPF_XDP;
    a.link_create.flags = mode;
    return int(sys_bpf(BPF_LINK_CREATE, &a));
  };
  link_ = attach(XDP_FLAGS_DRV_MODE);
  native_ = link_ >= 0;
  if (link_ < 0) {
    const int native_err = errno;
    link_ = attach(XDP_FLAGS_SKB_MODE);
    if (link_ < 0) {
      const int e = errno;
      const bool taken = e == EBUSY || e == EEXIST || native_err == EBUSY || native_err == EEXIST;
      *err = std::string("attaching the XDP program: native mode: ") + strerror(native_err) +
             ", generic mode: " + strerror(e);
      if (taken)
        *err += " (another XDP program is attached to the interface, see ip link show " + ifname +
                "; detach it or use an AF_PACKET uplink)";
      else if (e == EPERM)
        *err += std::string(" (") + kCaps + ")";
      return false;
    }
  }

  // XDP sees only what the NIC lets in, so the interface is made promiscuous as an AF_PACKET uplink makes
  // it: through a packet socket's membership (protocol 0: this socket receives nothing).
  promisc_ = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
  if (promisc_ < 0) return fail("opening a packet socket for promiscuous mode", errno, errno == EPERM ? kCaps : "");
  if (!add_promiscuous_membership(promisc_, int(ifindex)))
    return fail("putting the interface in promiscuous mode", errno, errno == EPERM ? kCaps : "");
  return true;
}

}  // namespace vw
