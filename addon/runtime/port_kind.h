// Port kinds, registered once (port_kinds.cc). The engine creates ports by kind name from a flat set of
// parameters that TypeScript has already validated (src/ports/<kind>.ts), so neither the engine nor the
// N-API layer knows what kinds exist; adding one is a folder under ports/ and one line in port_kinds.cc.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "core/counters.h"
#include "core/mode.h"
#include "core/port.h"
#include "core/port_params.h"
#include "runtime/reactor.h"

namespace vw {

// What a kind may use to build a port.
struct PortContext {
  CounterBlock& counters;
  Reactor& reactor;  // the control thread's event loop
  EventSink events;
  Mode mode;  // the switch's mode now
};

struct PortKind {
  const char* name;  // as TypeScript and the API spell it: "vhost-user", "uplink", ...
  std::unique_ptr<Port> (*create)(const std::string& name, const PortParams& params, PortContext& ctx,
                                  std::string* err);
};

// The registered kind called name, or null.
const PortKind* find_port_kind(const std::string& name);

}  // namespace vw
