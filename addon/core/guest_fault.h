// Faults on guest memory. The front end owns the files behind guest memory and may truncate one after
// handing it to us; the next access to a page past the new end raises SIGBUS in whichever thread makes
// it, and SIGBUS kills the process by default. Every guest memory mapping is registered here, and every
// thread that touches guest memory does so inside guest_access(): a SIGBUS at a registered address
// while one is active returns from guest_access() with false, and the caller stops using that guest's
// rings. Any other SIGBUS (another address, or no guest_access() active on the faulting thread) gets the
// disposition the process had before.
//
// What runs inside guest_access() must own nothing a jump out of it would leak or leave locked: no
// heap-owning locals, no held mutexes across a guest access.
#pragma once

#include <setjmp.h>

#include <cstddef>

namespace vw {

// Registers [base, base + len) as guest memory (and installs the SIGBUS handler the first time). false
// when the process already has kMaxGuestMappings registered.
constexpr size_t kMaxGuestMappings = 4096;
bool register_guest_mapping(const void* base, size_t len);
void unregister_guest_mapping(const void* base);

struct FaultJump {
  sigjmp_buf env;
  const void* addr;  // set by the handler: the faulting address
};
// The innermost active guest_access() of the calling thread, or null.
FaultJump*& current_fault_jump();

// Runs f(); true when it returned, false when it touched a page of guest memory that is no longer there
// (then *fault, when given, is the address it touched).
// The signal mask is not saved: the handler runs with SIGBUS unblocked (SA_NODEFER), so nothing is left
// blocked after the jump, and entering costs no system call.
template <class F>
bool guest_access(F&& f, const void** fault = nullptr) {
  FaultJump j;
  FaultJump* volatile outer = current_fault_jump();
  if (sigsetjmp(j.env, 0) != 0) {
    current_fault_jump() = outer;
    if (fault) *fault = j.addr;
    return false;
  }
  current_fault_jump() = &j;
  f();
  current_fault_jump() = outer;
  return true;
}

}  // namespace vw
