#include "runtime/port_kind.h"

namespace vw {

// Every port kind, one line each: the PortKind object its folder under ports/ defines.
#define VW_PORT_KINDS(X) \
  X(kVhostUserKind)      \
  X(kUplinkKind)         \
  X(kSinkKind)           \
  X(kGenKind)

#define VW_DECLARE(k) extern const PortKind k;
VW_PORT_KINDS(VW_DECLARE)
#undef VW_DECLARE

namespace {
#define VW_ENTRY(k) &k,
const PortKind* const kKinds[] = {VW_PORT_KINDS(VW_ENTRY)};
#undef VW_ENTRY
}  // namespace

const PortKind* find_port_kind(const std::string& name) {
  for (const PortKind* k : kKinds)
    if (name == k->name) return k;
  return nullptr;
}

}  // namespace vw
