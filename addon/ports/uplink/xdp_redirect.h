// What steers an interface's frames into an uplink's AF_XDP sockets: one XSKMAP keyed by receive queue
// index, one few-instruction XDP program that redirects each frame to the socket of its queue, attached
// through a bpf_link, and the packet socket whose membership keeps the interface promiscuous. One per
// uplink in bypass mode, shared by the AF_XDP sockets of all its queues (an interface takes one XDP
// program through a link); each socket puts itself in the map at its queue (af_xdp.h).
//
//   frame on queue q --program: bpf_redirect_map(xsks, q, XDP_PASS)--> the socket in slot q, if any
//                                                                  --> else the kernel's stack
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace vw {

class XdpRedirect {
 public:
  // Creates the map with slots for queues [0, queue_end), loads the program and attaches it to ifname
  // (native mode, else generic). null and *err (which step failed and what to do) on failure.
  static std::unique_ptr<XdpRedirect> open(const std::string& ifname, uint32_t queue_end, std::string* err);
  // Closes the link first: the kernel detaches the program, and the interface is as we found it.
  ~XdpRedirect();
  XdpRedirect(const XdpRedirect&) = delete;
  XdpRedirect& operator=(const XdpRedirect&) = delete;

  int map_fd() const { return map_; }
  // "native" (the driver runs the program) or "generic" (the kernel runs it on socket buffers).
  const char* attach_mode() const { return native_ ? "native" : "generic"; }

 private:
  XdpRedirect() = default;
  bool setup(const std::string& ifname, uint32_t queue_end, std::string* err);

  int map_ = -1, prog_ = -1, link_ = -1;
  int promisc_ = -1;
  bool native_ = false;
};

}  // namespace vw
