// The engine: owns every port, wire and PMD thread, and runs the control thread, an epoll loop over
// the vhost-user sockets (the Reactor ports see). One lock, the engine lock, is held by the control
// thread while it handles an event and by every call from JavaScript, so control code never races
// itself; the data path runs in the PMD threads, changed only while they are paused. Nothing done under
// the lock waits for a peer (Reactor): a front end can never hold the lock.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/counters.h"
#include "core/mode.h"
#include "core/port.h"
#include "forward/forwarder.h"
#include "runtime/pmd.h"
#include "runtime/port_kind.h"
#include "runtime/reactor.h"

namespace vw {

struct PortSummary {
  std::string name, kind;
  std::string forwarder;  // the wire or bridge it is in, or ""
  uint16_t queue_pairs = 0;
  int counter_set = -1;
  int pmd = -1;
  Description description;  // what the port says about itself (Port::describe)
};

struct ForwarderSummary {
  std::string kind, name;
  int pmd;
  std::vector<std::string> members;
};

class Engine : public Reactor {
 public:
  // Queue counter sets and PMD counter sets the shared block has room for: 256 ports with 8 queue pairs
  // each (vhost-user's most) fit, for about 700 KiB; a port beyond that is refused with this number.
  static constexpr uint32_t kQueueSets = 2048;
  static constexpr uint32_t kPmdSets = 64;

  Engine(Mode mode, EventSink events);
  ~Engine() override;

  // Starts the control thread and one PMD thread per entry of pmd_cores (a CPU, or -1 for unpinned).
  bool start(const std::vector<int>& pmd_cores, std::string* err);
  // Stops and joins every thread, destroys every port (sockets removed). Idempotent.
  void close();

  // A port of the registered kind (runtime/port_kind.h) from its parameters.
  bool add_port(const std::string& kind, const std::string& name, const PortParams& params, std::string* err);
  bool remove_port(const std::string& name, std::string* err);
  // Joins a and b in both directions, served by the PMD thread with the fewest receive queues; *pmd says
  // which.
  bool wire(const std::string& a, const std::string& b, uint32_t* pmd, std::string* err);
  bool unwire(const std::string& a, std::string* err);
  // Switches the PMDs' wait policy and every port's part of the mode (an uplink's driver). Every port
  // prepares first: if one cannot, nothing changes and *err says which.
  bool set_mode(Mode m, std::string* err);
  std::vector<PortSummary> ports();
  std::vector<ForwarderSummary> forwarders();
  // Shared with JavaScript: the block outlives the engine for as long as a view of it exists.
  std::shared_ptr<CounterBlock> counters() const { return block_; }

  // Reactor: called with the engine lock held.
  void watch(int fd, std::function<void(uint32_t)> cb) override;
  void unwatch(int fd) override;

 private:
  struct Entry {
    std::string kind;
    std::unique_ptr<Port> port;
    Forwarder* fwd = nullptr;  // the forwarder it is a member of
  };
  struct Watch {
    uint32_t gen;
    std::function<void(uint32_t)> cb;
  };

  // A forwarder and the PMD thread that runs it (all its members' receive queues).
  struct Placed {
    std::unique_ptr<Forwarder> fwd;
    Pmd* pmd;
  };

  bool check_new_name(const std::string& name, std::string* err) const;
  // Puts fwd on the least-loaded PMD, serving every member's queues; engine lock held.
  Pmd& place(std::unique_ptr<Forwarder> fwd);
  // Takes the forwarder port e is in off its PMD and destroys it; engine lock held.
  void unplace(Entry& e);
  void control_loop();

  std::mutex mu_;
  Mode mode_;
  EventSink events_;
  std::shared_ptr<CounterBlock> block_;
  std::map<std::string, Entry> ports_;
  std::map<std::string, Placed> forwarders_;
  std::vector<std::unique_ptr<Pmd>> pmds_;
  std::map<int, Watch> watches_;
  uint32_t watch_gen_ = 0;
  int epfd_ = -1;
  int stop_fd_ = -1;
  std::thread control_;
  bool closed_ = false;
};

}  // namespace vw
