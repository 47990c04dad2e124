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
#include "forward/bridge.h"
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
  std::vector<int> queue_pmds;  // the PMD serving each receive queue pair, when it is in a forwarder
  Description description;      // what the port says about itself (Port::describe)
};

struct ForwarderSummary {
  std::string kind, name;
  int pmd;
  std::vector<std::string> members;
};

struct BridgeMember {
  std::string port;
  BridgePortConfig cfg;
};

struct StaticMac {
  std::string port;
  uint16_t vlan;
  uint64_t mac;
};

struct FdbRow {
  uint64_t mac;
  uint16_t vlan;
  std::string port;
  double age_s;
  bool is_static;
};

struct BridgeSummary {
  std::string name;
  int pmd;
  BridgeOptions options;
  BridgeStats stats;
  struct Member {
    std::string port;
    BridgePortConfig cfg;
    BridgePortStats stats;
    uint32_t entries;
  };
  std::vector<Member> members;
  std::vector<std::pair<int, uint64_t>> vlan_drops;  // Bridge::vlan_drops()
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
  // A learning bridge over the given ports, with static MAC entries, on the PMD serving the fewest
  // receive queues (the whole bridge on that one PMD: see forward/bridge.h).
  bool add_bridge(const std::string& name, const BridgeOptions& o, const std::vector<BridgeMember>& members,
                  const std::vector<StaticMac>& statics, uint32_t* pmd, std::string* err);
  bool remove_bridge(const std::string& name, std::string* err);
  // One member joins or leaves a running bridge: its PMD pauses while the flood lists are rebuilt.
  bool bridge_add_port(const std::string& bridge, const BridgeMember& m, std::string* err);
  bool bridge_remove_port(const std::string& bridge, const std::string& port, std::string* err);
  // The MAC table, copied with the bridge's PMD paused (a pause of about a microsecond per 1,000 entries).
  bool fdb(const std::string& bridge, std::vector<FdbRow>* out, std::string* err);
  // Every bridge with its counters, read with each bridge's PMD paused for the copy.
  std::vector<BridgeSummary> bridges();
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

  // A forwarder and the PMD threads that run it. Most run on one (`pmd`, all its members' receive
  // queues); a wire of ports that spread runs queue pair q of each member on lanes[q], and on every PMD
  // of `pmds`.
  struct Placed {
    std::unique_ptr<Forwarder> fwd;
    Pmd* pmd;
    std::vector<Pmd*> pmds;
    std::vector<Pmd*> lanes;
    Pmd* queue_pmd(uint16_t q) const { return lanes.empty() ? pmd : lanes[q % lanes.size()]; }
  };

  bool check_new_name(const std::string& name, std::string* err) const;
  // Puts fwd on the least-loaded PMD (lay_out); returns the PMD of queue pair 0. Engine lock held.
  Pmd& place(std::unique_ptr<Forwarder> fwd);
  // Takes the forwarder's members off the PMDs they are on and puts them back as they are now: every
  // member's queues on pl.pmd or, when the forwarder and all its members spread and there are several
  // PMDs, queue pair q of each member on the q-th PMD from pl.pmd (so queue pair q of one side and the
  // queue pair it feeds on the other share a PMD when the sides have as many). Every PMD paused.
  void lay_out(Placed& pl);
  // Forwarders move between PMDs rarely (placement, membership): every PMD is paused for it (all_pmds),
  // so none can be left serving a queue another has taken.
  std::vector<Pmd*> all_pmds() const;
  // Takes the forwarder named so off its PMDs and destroys it; engine lock held.
  void unplace(std::string name);
  // Member e leaves bridge pl, which is laid out again; every PMD paused.
  void leave_bridge(Placed& pl, Entry& e);
  // The bridge named so, or null with *err set.
  Placed* find_bridge(const std::string& name, std::string* err);
  // The port may join a forwarder: it exists and is in none.
  Entry* free_port(const std::string& port, std::string* err);
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
