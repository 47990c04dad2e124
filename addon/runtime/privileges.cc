#include "runtime/privileges.h"

#include <dirent.h>
#include <errno.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>

namespace vw {
namespace {

// What each thread does to itself in one broadcast. Applied in this order: the bounding set first,
// while CAP_SETPCAP is still effective.
struct Step {
  bool drop_bounding = false;  // PR_CAPBSET_DROP every capability outside keep
  bool clear_ambient = false;
  int keepcaps = -1;      // -1: leave it; 0 or 1: PR_SET_KEEPCAPS
  bool set_caps = false;  // capset: permitted = effective = keep, inheritable = none
  uint64_t keep = 0;
  int last_cap = 0;
};

struct Ack {
  pid_t tid;
  int err;
  const char* what;
};

constexpr int kMaxThreads = 512;
constexpr int kAnswerMs = 2000;

std::atomic<const Step*> g_step{nullptr};
std::atomic<int> g_slot{0};
std::atomic<int> g_done{0};
Ack g_ack[kMaxThreads];

pid_t self_tid() { return pid_t(syscall(SYS_gettid)); }

std::string errno_text(int e) {
  return std::string(strerrorname_np(e) ? strerrorname_np(e) : "errno") + " (" + strerror(e) + ")";
}

// Runs inside a signal handler: raw system calls only, errno reported rather than kept.
int apply(const Step& s, const char** what) {
  if (s.drop_bounding) {
    for (int c = 0; c <= s.last_cap; c++) {
      if (s.keep >> c & 1) continue;
      if (prctl(PR_CAPBSET_DROP, c, 0, 0, 0) != 0) {
        *what = "prctl(PR_CAPBSET_DROP)";
        return errno;
      }
    }
  }
  if (s.clear_ambient && prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0) {
    *what = "prctl(PR_CAP_AMBIENT_CLEAR_ALL)";
    return errno;
  }
  if (s.keepcaps == 1 && prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0) {
    *what = "prctl(PR_SET_KEEPCAPS, 1)";
    return errno;
  }
  if (s.set_caps) {
    __user_cap_header_struct h{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct d[2] = {};
    d[0].permitted = d[0].effective = uint32_t(s.keep);
    d[1].permitted = d[1].effective = uint32_t(s.keep >> 32);
    if (syscall(SYS_capset, &h, d) != 0) {
      *what = "capset";
      return errno;
    }
  }
  if (s.keepcaps == 0 && prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) != 0) {
    *what = "prctl(PR_SET_KEEPCAPS, 0)";
    return errno;
  }
  return 0;
}

void on_signal(int) {
  const int saved = errno;
  const char* what = "";
  const Step* s = g_step.load(std::memory_order_acquire);
  const int e = apply(*s, &what);
  const int slot = g_slot.fetch_add(1);
  if (slot < kMaxThreads) g_ack[slot] = {self_tid(), e, what};
  g_done.fetch_add(1, std::memory_order_release);
  errno = saved;
}

// The fields of /proc/self/task/TID/status this file cares about.
struct ThreadStatus {
  pid_t tid = 0;
  std::string name;
  uid_t uid[4] = {};  // real, effective, saved, filesystem
  gid_t gid[4] = {};
  uint64_t prm = 0, eff = 0, bnd = 0, amb = 0, sigblk = 0;
  int nnp = -1;
};

bool read_status(pid_t tid, ThreadStatus* st) {
  char path[64];
  snprintf(path, sizeof path, "/proc/self/task/%d/status", int(tid));
  FILE* f = fopen(path, "re");
  if (!f) return false;
  st->tid = tid;
  char line[512];
  while (fgets(line, sizeof line, f)) {
    unsigned long long v;
    unsigned a, b, c, d;
    char name[256];
    // Kept by hand as a table (one line per /proc/<pid>/status field); clang-format would reflow it.
    // clang-format off
    if (sscanf(line, "Name:\t%255[^\n]", name) == 1) st->name = name;
    else if (sscanf(line, "Uid:\t%u\t%u\t%u\t%u", &a, &b, &c, &d) == 4) st->uid[0] = a, st->uid[1] = b, st->uid[2] = c, st->uid[3] = d;
    else if (sscanf(line, "Gid:\t%u\t%u\t%u\t%u", &a, &b, &c, &d) == 4) st->gid[0] = a, st->gid[1] = b, st->gid[2] = c, st->gid[3] = d;
    else if (sscanf(line, "CapPrm:\t%llx", &v) == 1) st->prm = v;
    else if (sscanf(line, "CapEff:\t%llx", &v) == 1) st->eff = v;
    else if (sscanf(line, "CapBnd:\t%llx", &v) == 1) st->bnd = v;
    else if (sscanf(line, "CapAmb:\t%llx", &v) == 1) st->amb = v;
    else if (sscanf(line, "SigBlk:\t%llx", &v) == 1) st->sigblk = v;
    else if (sscanf(line, "NoNewPrivs:\t%u", &a) == 1) st->nnp = int(a);
    // clang-format on
  }
  fclose(f);
  return true;
}

std::vector<pid_t> list_threads() {
  std::vector<pid_t> tids;
  DIR* d = opendir("/proc/self/task");
  if (!d) return tids;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    tids.push_back(pid_t(atoi(e->d_name)));
  }
  closedir(d);
  return tids;
}

std::string thread_name(const ThreadStatus& st) { return "thread " + std::to_string(st.tid) + " (" + st.name + ")"; }

// capabilities(7)'s names, by number.
// Kept by hand as a table (laid out by capability number, several a line); clang-format would reflow it.
// clang-format off
const char* const kCapNames[] = {"cap_chown", "cap_dac_override", "cap_dac_read_search", "cap_fowner", "cap_fsetid",
                                 "cap_kill", "cap_setgid", "cap_setuid", "cap_setpcap", "cap_linux_immutable",
                                 "cap_net_bind_service", "cap_net_broadcast", "cap_net_admin", "cap_net_raw",
                                 "cap_ipc_lock", "cap_ipc_owner", "cap_sys_module", "cap_sys_rawio", "cap_sys_chroot",
                                 "cap_sys_ptrace", "cap_sys_pacct", "cap_sys_admin", "cap_sys_boot", "cap_sys_nice",
                                 "cap_sys_resource", "cap_sys_time", "cap_sys_tty_config", "cap_mknod", "cap_lease",
                                 "cap_audit_write", "cap_audit_control", "cap_setfcap", "cap_mac_override",
                                 "cap_mac_admin", "cap_syslog", "cap_wake_alarm", "cap_block_suspend",
                                 "cap_audit_read", "cap_perfmon", "cap_bpf", "cap_checkpoint_restore"};
// clang-format on

std::string cap_list(uint64_t mask) {
  if (!mask) return "none";
  std::string s;
  for (int c = 0; c < 64; c++) {
    if (!(mask >> c & 1)) continue;
    s += s.empty() ? "" : ",";
    s += c < int(sizeof kCapNames / sizeof *kCapNames) ? kCapNames[c] : "cap_" + std::to_string(c);
  }
  return s;
}

// Every thread in `tids` and the calling thread run `step` on themselves; false with the first failure.
bool broadcast(int sig, const Step& step, const std::vector<pid_t>& tids, std::string* err) {
  g_step.store(&step, std::memory_order_release);
  g_slot.store(0);
  g_done.store(0);
  const pid_t pid = getpid();
  int sent = 0;
  for (pid_t tid : tids) {
    if (syscall(SYS_tgkill, pid, tid, sig) == 0) {
      sent++;
    } else if (errno != ESRCH) {  // ESRCH: the thread ended meanwhile, nothing left to change
      *err = "signalling thread " + std::to_string(tid) + ": " + errno_text(errno);
      return false;
    }
  }
  if (sent > kMaxThreads) {
    *err = std::to_string(sent) + " threads: more than the " + std::to_string(kMaxThreads) + " this can follow";
    return false;
  }
  const char* what = "";
  if (int e = apply(step, &what)) {
    *err = "the calling thread: " + std::string(what) + ": " + errno_text(e);
    return false;
  }
  for (int waited = 0; g_done.load(std::memory_order_acquire) < sent; waited++) {
    if (waited >= kAnswerMs) {
      *err = std::to_string(sent - g_done.load()) + " of " + std::to_string(sent) +
             " threads did not run the change within " + std::to_string(kAnswerMs) + " ms";
      return false;
    }
    timespec ms{0, 1000000};
    nanosleep(&ms, nullptr);
  }
  for (int i = 0; i < sent; i++) {
    if (g_ack[i].err) {
      *err = "thread " + std::to_string(g_ack[i].tid) + ": " + g_ack[i].what + ": " + errno_text(g_ack[i].err);
      return false;
    }
  }
  return true;
}

// Any free real-time signal: one nobody has a handler for.
int pick_signal(std::string* err) {
  for (int sig = SIGRTMIN + 2; sig <= SIGRTMAX; sig++) {
    struct sigaction old;
    if (sigaction(sig, nullptr, &old) == 0 && !(old.sa_flags & SA_SIGINFO) && old.sa_handler == SIG_DFL) return sig;
  }
  *err = "no free real-time signal to reach the other threads with";
  return -1;
}

bool change_user(const Account& a, std::string* err) {
  // glibc applies each of these to every thread of the process.
  if (setgroups(a.groups.size(), a.groups.data()) != 0) {
    *err = "setgroups: " + errno_text(errno);
    return false;
  }
  if (setresgid(a.gid, a.gid, a.gid) != 0) {
    *err = "setresgid(" + std::to_string(a.gid) + "): " + errno_text(errno);
    return false;
  }
  if (setresuid(a.uid, a.uid, a.uid) != 0) {
    *err = "setresuid(" + std::to_string(a.uid) + "): " + errno_text(errno);
    return false;
  }
  return true;
}

bool no_new_privs_everywhere(std::string* err) {
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    *err = "prctl(PR_SET_NO_NEW_PRIVS): " + errno_text(errno);
    return false;
  }
  sock_filter allow_all[] = {BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)};
  sock_fprog prog{1, allow_all};
  const long rc = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &prog);
  if (rc < 0) {
    *err = "seccomp(SECCOMP_FILTER_FLAG_TSYNC), which sets no_new_privs on every thread: " + errno_text(errno);
    return false;
  }
  if (rc > 0) {
    *err = "seccomp(SECCOMP_FILTER_FLAG_TSYNC): thread " + std::to_string(rc) + " has a seccomp filter of its own";
    return false;
  }
  return true;
}

// The promise, read back from the kernel for every thread that exists now.
bool verify(const Account* account, uint64_t keep, std::string* err) {
  for (pid_t tid : list_threads()) {
    ThreadStatus st;
    if (!read_status(tid, &st)) continue;  // ended since the listing
    const std::string who = thread_name(st);
    if (account) {
      for (int i = 0; i < 4; i++) {
        if (st.uid[i] != account->uid || st.gid[i] != account->gid) {
          *err = who + " still has uid " + std::to_string(st.uid[i]) + " gid " + std::to_string(st.gid[i]);
          return false;
        }
      }
    }
    if (st.nnp != 1) {
      *err = who + ": no_new_privs is not set";
      return false;
    }
    // Ambient capabilities are cleared on every thread the broadcast reached; one it could not reach
    // keeps what it was started with, which is acceptable only within the kept set.
    if (const uint64_t extra = (st.prm | st.eff | st.amb) & ~keep) {
      *err = who + " still has " + cap_list(extra) + ", beyond what is kept (" + cap_list(keep) + ")" +
             (st.sigblk ? ": it blocks signals, so it keeps what the process was started with; grant the process "
                          "only what it keeps, or start it as root and change user"
                        : "");
      return false;
    }
  }
  return true;
}

}  // namespace

bool drop_privileges(const Account* account, uint64_t keep, PrivilegeReport* report, std::string* err) {
  Step first;
  FILE* f = fopen("/proc/sys/kernel/cap_last_cap", "re");
  if (!f || fscanf(f, "%d", &first.last_cap) != 1 || first.last_cap < 0 || first.last_cap > 63) {
    if (f) fclose(f);
    *err = "cannot read /proc/sys/kernel/cap_last_cap";
    return false;
  }
  fclose(f);

  ThreadStatus me;
  if (!read_status(self_tid(), &me)) {
    *err = "cannot read this thread's /proc status";
    return false;
  }
  keep &= me.prm;
  first.keep = keep;
  // Without CAP_SETPCAP the bounding set cannot shrink; no_new_privs makes it moot for what runs later.
  first.drop_bounding = me.eff >> CAP_SETPCAP & 1;
  first.clear_ambient = true;
  // Changing user: every reachable thread keeps its permitted set across setresuid, cut down below.
  first.keepcaps = account ? 1 : -1;
  first.set_caps = account == nullptr;

  const int sig = pick_signal(err);
  if (sig < 0) return false;
  const pid_t tid = self_tid();
  std::vector<pid_t> reachable;
  for (pid_t t : list_threads()) {
    ThreadStatus st;
    if (t == tid || !read_status(t, &st)) continue;
    if (st.sigblk >> (sig - 1) & 1)
      report->unreachable.push_back(t);
    else
      reachable.push_back(t);
  }

  struct sigaction sa, old;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sa.sa_flags = SA_RESTART;
  sigfillset(&sa.sa_mask);
  if (sigaction(sig, &sa, &old) != 0) {
    *err = "sigaction: " + errno_text(errno);
    return false;
  }
  bool ok = broadcast(sig, first, reachable, err);
  if (ok && account) {
    ok = change_user(*account, err);
    Step second;
    second.keep = keep;
    second.set_caps = true;
    second.keepcaps = 0;
    ok = ok && broadcast(sig, second, reachable, err);
  }
  // SIG_IGN first: it discards an instance still pending on a thread that blocked it meanwhile.
  struct sigaction ign;
  memset(&ign, 0, sizeof ign);
  ign.sa_handler = SIG_IGN;
  sigaction(sig, &ign, nullptr);
  sigaction(sig, &old, nullptr);
  if (!ok) return false;

  if (!no_new_privs_everywhere(err) || !verify(account, keep, err)) return false;
  report->kept = keep;
  report->bounding_dropped = first.drop_bounding;
  report->threads = int(reachable.size()) + 1;
  return true;
}

}  // namespace vw
