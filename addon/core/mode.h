// The switch's mode, as users choose it. bypass: PMD threads spin and uplinks run on AF_XDP, the kernel
// stack out of the way; kernel: idle PMD threads sleep and uplinks are AF_PACKET sockets served by the
// kernel stack. The engine keeps the mode; each PMD keeps the wait policy it implies (engine.cc) and each
// uplink the driver it implies (uplink.cc), both set from it in Engine::set_mode.
#pragma once

namespace vw {

enum class Mode { kBypass, kKernel };

inline const char* mode_name(Mode m) { return m == Mode::kBypass ? "bypass" : "kernel"; }

// A port's part of a mode switch, prepared while the old mode still runs (Port::prepare_mode) and made
// current by commit() once every port has prepared its own; destroying it uncommitted undoes the
// preparation.
class ModeChange {
 public:
  virtual ~ModeChange() = default;
  virtual void commit() = 0;
};

}  // namespace vw
