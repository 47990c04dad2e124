// One vhost-user socket and the front end connected to it: a VM's port, the virtio-net device it drives
// (virtio_net.h) plus the protocol session. In server
// mode we listen on the path and serve one front end at a time, accepting again after it leaves; in
// client mode we connect to a front end that listens (QEMU with server=on) and reconnect every second
// while it is away. Messages are handled by a table, one handler per request, which also says how many
// fds a request carries and whether it always replies.
//
// All methods run on the control thread or on the JavaScript thread with the engine lock held.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "core/counters.h"
#include "runtime/reactor.h"
#include "ports/vhost_user/virtio_net.h"

namespace vw {

class VhostUserPort final : public VirtioNetDevice {
 public:
  VhostUserPort(std::string name, std::string path, bool client, uint16_t queue_pairs, Reactor& reactor,
                CounterBlock& counters, EventSink events);
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
