// One vhost-user socket and the front end connected to it: the protocol side of a VM's port. In server
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
#include <vector>

#include "core/counters.h"
#include "runtime/reactor.h"
#include "ports/vhost_user/virtio_net.h"

namespace vw {

struct VhostUserInfo {
  bool connected = false;
  uint64_t features = 0;
  uint64_t protocol_features = 0;
  uint16_t mtu = 0;
  uint32_t mem_regions = 0;
  struct Vring {
    uint16_t size;
    bool started, enabled, broken;
  };
  std::vector<Vring> vrings;  // 2 * queue pairs entries
};

class VhostUserPort {
 public:
  VhostUserPort(std::string name, std::string path, bool client, uint16_t queue_pairs, Reactor& reactor,
                CounterBlock& counters, EventSink events);
  // Closes the connection and every fd it holds, removes the socket file we created (server mode).
  ~VhostUserPort();

  // Server: binds and listens (a stale socket file nobody listens on is replaced; a live one is an
  // error). Client: connects now, or keeps retrying every second. false and *err on failure.
  bool start(std::string* err);
  VirtioNetDevice& device() { return *device_; }
  VhostUserInfo info() const;

 private:
  struct Impl;
  std::unique_ptr<VirtioNetDevice> device_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace vw
