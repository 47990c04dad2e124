#include "core/guest_fault.h"

#include <signal.h>

#include <atomic>
#include <cstdint>
#include <mutex>

namespace vw {

namespace {

// Read from the signal handler, so plain atomics in static storage: no locks, no allocation. A slot is
// free when its base is 0; len is written before base is published and cleared after it is withdrawn.
std::atomic<uintptr_t> g_base[kMaxGuestMappings];
std::atomic<size_t> g_len[kMaxGuestMappings];

// initial-exec: the handler must not be the first to touch this variable on a thread (a dynamic TLS
// access may allocate, which a signal handler must not).
__attribute__((tls_model("initial-exec"))) thread_local FaultJump* t_jump = nullptr;

struct sigaction g_previous;

bool in_guest_memory(uintptr_t a) {
  for (size_t i = 0; i < kMaxGuestMappings; i++) {
    const uintptr_t b = g_base[i].load(std::memory_order_acquire);
    if (b && a - b < g_len[i].load(std::memory_order_relaxed)) return true;
  }
  return false;
}

void on_sigbus(int sig, siginfo_t* si, void* ctx) {
  FaultJump* j = t_jump;
  // si_code > 0: raised by the kernel for a faulting access, not sent by kill().
  if (j && si && si->si_code > 0 && in_guest_memory(reinterpret_cast<uintptr_t>(si->si_addr))) {
    j->addr = si->si_addr;
    siglongjmp(j->env, 1);
  }
  if (g_previous.sa_flags & SA_SIGINFO) {
    if (g_previous.sa_sigaction) {
      g_previous.sa_sigaction(sig, si, ctx);
      return;
    }
  } else if (g_previous.sa_handler != SIG_DFL && g_previous.sa_handler != SIG_IGN) {
    g_previous.sa_handler(sig);
    return;
  }
  // Default action: restore it and return; the faulting access runs again and the kernel delivers it.
  struct sigaction dfl = {};
  dfl.sa_handler = SIG_DFL;
  sigaction(SIGBUS, &dfl, nullptr);
  if (si && si->si_code <= 0) raise(sig);
}

void install_handler() {
  struct sigaction sa = {};
  sa.sa_sigaction = on_sigbus;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_SIGINFO | SA_NODEFER;
  sigaction(SIGBUS, &sa, &g_previous);
}

}  // namespace

FaultJump*& current_fault_jump() { return t_jump; }

bool register_guest_mapping(const void* base, size_t len) {
  static std::once_flag once;
  std::call_once(once, install_handler);
  // Registration is rare and on control threads, so slots are claimed under a lock; the handler only reads.
  static std::mutex mu;
  std::lock_guard<std::mutex> l(mu);
  for (size_t i = 0; i < kMaxGuestMappings; i++) {
    if (g_base[i].load(std::memory_order_relaxed)) continue;
    g_len[i].store(len, std::memory_order_relaxed);
    g_base[i].store(reinterpret_cast<uintptr_t>(base), std::memory_order_release);
    return true;
  }
  return false;
}

void unregister_guest_mapping(const void* base) {
  const uintptr_t b = reinterpret_cast<uintptr_t>(base);
  for (size_t i = 0; i < kMaxGuestMappings; i++) {
    if (g_base[i].load(std::memory_order_relaxed) != b) continue;
    g_base[i].store(0, std::memory_order_release);
    g_len[i].store(0, std::memory_order_relaxed);
    return;
  }
}

}  // namespace vw
