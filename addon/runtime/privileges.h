// Least privilege after setup: the process switches to an unprivileged user (optionally) and keeps only
// the capabilities its ports still need, on every one of its threads, with no_new_privs set.
//
// Credentials are per thread in Linux, and by the time setup is done Node, V8, libuv and our engine
// have started threads of their own, so each part of the change is made to reach all of them:
//   - user, group and supplementary groups: glibc's setgroups/setresgid/setresuid, which glibc applies
//     to every thread (its internal SIGSETXID broadcast, which no thread can block);
//   - the bounding set, the ambient set, the capability sets and PR_SET_KEEPCAPS: run by each thread on
//     itself, from a real-time signal sent to it with tgkill. A thread that blocks that signal (Node's
//     SIGUSR1 watchdog blocks every signal) cannot be reached this way; the user change still clears
//     its capabilities (the kernel does that when a thread without KEEPCAPS leaves uid 0), and the
//     final check refuses the result if it kept any capability beyond the kept set;
//   - no_new_privs: set on the calling thread, then copied to every thread by installing a seccomp
//     filter with SECCOMP_FILTER_FLAG_TSYNC (the kernel syncs no_new_privs along with the filter; the
//     filter itself allows every system call).
// Afterwards every thread's /proc/self/task/TID/status is read back and checked. Nothing here talks to
// JavaScript; binding.cc wraps it.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace vw {

/** The user to become, already resolved (names to numbers) and checked by the caller. */
struct Account {
  uid_t uid = 0;
  gid_t gid = 0;
  /** supplementary groups, the primary group included */
  std::vector<gid_t> groups;
};

struct PrivilegeReport {
  /** capabilities kept (bit n = capability n): what was asked for, as far as the process had them */
  uint64_t kept = 0;
  /** the bounding set was cut to `kept` on every reachable thread (needs CAP_SETPCAP) */
  bool bounding_dropped = false;
  /** threads that made the change themselves (the calling thread included) */
  int threads = 0;
  /** threads that block the signal: only the user change and no_new_privs reached them */
  std::vector<pid_t> unreachable;
};

/**
 * Becomes `account` (if not null) and keeps only the capabilities in `keep` that the calling thread
 * has, on every thread; sets no_new_privs everywhere. On failure the process may be half way and must
 * not carry on: the caller exits.
 */
bool drop_privileges(const Account* account, uint64_t keep, PrivilegeReport* report, std::string* err);

}  // namespace vw
