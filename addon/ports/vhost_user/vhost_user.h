// One vhost-user socket and the front end connected to it: a VM's port, the virtio-net device it drives
// (virtio_net.h) plus the protocol session. In server
// mode we listen on the path and serve one front end at a time, accepting again after it leaves; in
// client mode we connect to a front end that listens (QEMU with server=on) and reconnect every second
// while it is away. Nothing here blocks: messages are reassembled from non-blocking reads
// (MessageReader), replies are sent without waiting, and timers (timerfds on the reactor) close a
// connection that idles before its first message or stops in the middle of one. Messages are handled by a table, one
// handler per request, which also says how many fds a request carries and whether it always replies.
//
// All methods run on the control thread or on the JavaScript thread with the engine lock held.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/counters.h"
#include "ports/vhost_user/virtio_net.h"
#include "runtime/reactor.h"

namespace vw {

// Who may use the socket and how it is made. Defaults are the safe ones; create_vhost_user fills them
// from the port's parameters (validated in src/ports/vhost-user.ts).
struct VhostUserOptions {
  static constexpr uint32_t kNoId = 0xffffffff;  // (uid_t)-1: leave as created
  uint32_t socket_mode = 0660;                   // server socket's permission bits, whatever the umask
  uint32_t socket_owner = kNoId, socket_group = kNoId;
  // Peers (SO_PEERCRED) allowed besides our own euid, root, socket_owner and members of the socket
  // file's group (server mode); in client mode the uids also say who may own the listener we connect to.
  std::vector<uint32_t> allow_uids, allow_gids;
  // A connection is closed after this many rejected messages.
  uint32_t reject_limit = 16;
  // A front end must send its first message within this long of connecting, and finish every message
  // within this long of its first byte; otherwise it is closed, so an idle connection cannot hold the
  // port (one front end at a time) against the real QEMU. Reading never waits, so a slow front end
  // costs only its own connection this time, never another's.
  uint32_t idle_timeout_ms = 10000;
  // Offer the checksum and segmentation offloads (offloads=off withholds them).
  bool offloads = true;
};

class VhostUserPort final : public VirtioNetDevice {
 public:
  VhostUserPort(std::string name, std::string path, bool client, uint16_t queue_pairs, Reactor& reactor,
                CounterBlock& counters, EventSink events, VhostUserOptions options = {});
  // Closes the connection and every fd it holds, removes the socket file we created (server mode).
  ~VhostUserPort() override;

  // Server: binds and listens (a stale socket file nobody listens on is replaced; a live one is an
  // error). Client: connects now, or keeps retrying every second. false and *err on failure.
  bool start(std::string* err);
  void describe(Description& d) const override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace vw
