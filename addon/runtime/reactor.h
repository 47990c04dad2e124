// The control thread's event loop as ports see it: watch an fd, get a callback on the control thread
// when it is readable (or hung up). Callbacks run with the engine lock held, so port control code and
// calls from JavaScript never run at the same time; for the same reason a callback must never wait on
// its fd (or anything a peer controls): every other port's sockets, /metrics and the API would wait
// with it. Timeouts are timerfds watched like any other fd.
#pragma once

#include <cstdint>
#include <functional>

namespace vw {

class Reactor {
 public:
  virtual ~Reactor() = default;
  // Level-triggered; events are EPOLLIN/EPOLLHUP/EPOLLERR bits. The callback may unwatch its own fd.
  virtual void watch(int fd, std::function<void(uint32_t events)> cb) = 0;
  virtual void unwatch(int fd) = 0;
};

}  // namespace vw
