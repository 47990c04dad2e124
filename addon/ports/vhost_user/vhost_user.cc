#include "ports/vhost_user/vhost_user.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <map>
#include <vector>

#include "core/guest_memory.h"
#include "core/hex.h"
#include "core/port.h"
#include "ports/vhost_user/vhost_user_wire.h"
#include "runtime/port_kind.h"
#include "virtio/virtio_spec.h"

namespace vw {

namespace {

constexpr uint64_t bit(uint32_t n) { return uint64_t(1) << n; }

// IN_ORDER: every vring returns chains in the order they were made available (virtio_net.cc keeps to
// it), which lets a driver reclaim descriptors by counting instead of walking its free list. DPDK's
// virtio PMD switches to its cheaper in-order paths when it is offered.
constexpr uint64_t kOfferedFeatures =
    bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_NET_F_MRG_RXBUF) | bit(VIRTIO_RING_F_INDIRECT_DESC) |
    bit(VIRTIO_RING_F_EVENT_IDX) | bit(VIRTIO_NET_F_MTU) | bit(VIRTIO_F_IN_ORDER) | bit(VHOST_USER_F_PROTOCOL_FEATURES);
// Checksum and TCP segmentation offloads both ways (core/offload.h), unless the port withholds them.
// GUEST_ANNOUNCE needs a control queue, which we do not have; UFO is obsolete, and USO is not in the
// kernel headers we build with (UDP super-frames from a kernel uplink are segmented for guests).
constexpr uint64_t kOffloadFeatures = bit(VIRTIO_NET_F_CSUM) | bit(VIRTIO_NET_F_GUEST_CSUM) |
                                      bit(VIRTIO_NET_F_HOST_TSO4) | bit(VIRTIO_NET_F_HOST_TSO6) |
                                      bit(VIRTIO_NET_F_HOST_ECN) | bit(VIRTIO_NET_F_GUEST_TSO4) |
                                      bit(VIRTIO_NET_F_GUEST_TSO6) | bit(VIRTIO_NET_F_GUEST_ECN);
// LOG_SHMFD is deliberately absent: without dirty logging a front end must not migrate with us.
constexpr uint64_t kOfferedProtocolFeatures = bit(VHOST_USER_PROTOCOL_F_MQ) | bit(VHOST_USER_PROTOCOL_F_REPLY_ACK) |
                                              bit(VHOST_USER_PROTOCOL_F_MTU) |
                                              bit(VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS);

constexpr uint32_t kMinMtu = 68, kMaxMtu = 65535;
constexpr uint32_t kMemTableHeader = offsetof(VhostUserMemory, regions);
constexpr int64_t kReconnectMs = 1000;
// How long the listener is left alone after accept() ran out of fds.
constexpr int64_t kAcceptBackoffMs = 100;
// Messages handled per readable event: a front end streaming messages gives the control thread back
// to the other ports' sockets in between (level-triggered epoll brings it back).
constexpr int kMessagesPerWakeup = 8;

std::string errno_text(int e) { return std::string(strerror(e)); }

void close_fd(int& fd) {
  if (fd >= 0) close(fd);
  fd = -1;
}

bool make_address(const std::string& path, sockaddr_un* sa, std::string* err) {
  memset(sa, 0, sizeof(*sa));
  sa->sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(sa->sun_path)) {
    *err =
        "socket path \"" + path + "\" is empty or longer than " + std::to_string(sizeof(sa->sun_path) - 1) + " bytes";
    return false;
  }
  memcpy(sa->sun_path, path.c_str(), path.size() + 1);
  return true;
}

// A received message and the fds that came with it. Handlers take ownership of an fd by setting its
// slot to -1; the dispatcher closes whatever is left, so no error path can leak one.
struct Message {
  VhostUserMsg msg = {};
  int fds[kVhostUserMaxFds];
  size_t nfds = 0;
  VhostUserMsg reply = {};  // filled by handlers whose request has a reply of its own
};

enum class SizeRule { kExact, kAtLeast };
enum class FdRule {
  kNone,
  kOne,
  kOneUnlessNofd,  // KICK/CALL/ERR: one fd, or none when the NOFD bit is set
  kPerRegion,      // SET_MEM_TABLE: one per region
  kOptional,       // REM_MEM_REG: tolerated for old front ends, closed unused
};

}  // namespace

struct VhostUserPort::Impl {
  using HandlerFn = bool (Impl::*)(Message&, std::string*);
  struct Handler {
    VhostUserRequest request;
    const char* name;
    uint32_t size;
    SizeRule size_rule;
    FdRule fds;
    uint64_t needs_protocol;  // protocol feature bits that must be negotiated first (0: none)
    HandlerFn fn;
    bool has_reply;
  };
  static const Handler kHandlers[];

  // Queue pairs come from the device, which caps them at what it can serve.
  Impl(VirtioNetDevice& dev, std::string path, bool client, Reactor& reactor, EventSink events, VhostUserOptions opt)
      : dev_(dev),
        path_(std::move(path)),
        client_(client),
        queue_pairs_(dev.queue_pairs()),
        reactor_(reactor),
        events_(std::move(events)),
        opt_(std::move(opt)) {}

  ~Impl() {
    close_connection();
    if (listen_fd_ >= 0) {
      reactor_.unwatch(listen_fd_);
      close_fd(listen_fd_);
      unlink_own_socket();
    }
    for (int* fd : {&timer_fd_, &deadline_fd_}) {
      if (*fd < 0) continue;
      reactor_.unwatch(*fd);
      close_fd(*fd);
    }
  }

  // ---- connection management ----

  bool start(std::string* err) {
    if (listen_fd_ >= 0 || timer_fd_ >= 0) {
      *err = "port " + dev_.name() + " is already started";
      return false;
    }
    if (!make_address(path_, &addr_, err)) return false;
    timer_fd_ = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    deadline_fd_ = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    if (timer_fd_ < 0 || deadline_fd_ < 0) {
      *err = "timerfd_create for " + path_ + " failed: " + errno_text(errno);
      return false;
    }
    reactor_.watch(timer_fd_, [this](uint32_t) { on_timer(); });
    reactor_.watch(deadline_fd_, [this](uint32_t) { on_deadline(); });
    return client_ ? start_client(err) : start_server(err);
  }

  // A world-writable directory without the sticky bit lets any user rename our socket away and put
  // their own in its place, which the front end would then connect to.
  bool check_directory(std::string* err) const {
    const size_t slash = path_.rfind('/');
    const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path_.substr(0, slash);
    struct stat st;
    if (stat(dir.c_str(), &st) < 0) {
      *err = "cannot inspect the socket's directory " + dir + ": " + errno_text(errno);
      return false;
    }
    if ((st.st_mode & S_IWOTH) && !(st.st_mode & S_ISVTX)) {
      *err = "the socket's directory " + dir +
             " is writable by every user and has no sticky bit, so anyone could replace the socket: put it in "
             "a directory only trusted users can write, or set the sticky bit (chmod +t " +
             dir + ")";
      return false;
    }
    return true;
  }

  // The socket gets its mode on the fd before bind (bind applies the umask on top, so the file is never
  // more open than asked), then exactly that mode and its owner by path, all before listen(): until
  // then a connect is refused, so no front end reaches a socket whose permissions are not final.
  bool start_server(std::string* err) {
    if (!check_directory(err) || !remove_stale_socket(err)) return false;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
      *err = "socket() for " + path_ + " failed: " + errno_text(errno);
      return false;
    }
    const mode_t mode = mode_t(opt_.socket_mode);
    const char* step = "set its mode";
    bool ok = fchmod(fd, mode) == 0;
    if (ok && !(ok = bind(fd, reinterpret_cast<const sockaddr*>(&addr_), sizeof(addr_)) == 0)) step = "bind";
    struct stat st;
    if (ok && !(ok = stat(path_.c_str(), &st) == 0)) step = "inspect it";
    if (ok) {
      sock_dev_ = st.st_dev;
      sock_ino_ = st.st_ino;
      bound_ = true;
    }
    if (ok && !(ok = chmod(path_.c_str(), mode) == 0)) step = "set its mode";
    if (ok && (opt_.socket_owner != VhostUserOptions::kNoId || opt_.socket_group != VhostUserOptions::kNoId) &&
        !(ok = lchown(path_.c_str(), opt_.socket_owner, opt_.socket_group) == 0))
      step = "set its owner";
    if (ok && !(ok = listen(fd, 8) == 0)) step = "listen";
    if (!ok) {
      const int e = errno;
      close(fd);
      unlink_own_socket();
      *err = "cannot " + std::string(step) + " on " + path_ + ": " + errno_text(e);
      return false;
    }
    listen_fd_ = fd;
    watch_listener();
    return true;
  }

  void watch_listener() {
    reactor_.watch(listen_fd_, [this](uint32_t) { on_accept(); });
  }

  // A socket file nobody listens on is left over from a process that died; a live one belongs to
  // someone else and must not be taken over.
  bool remove_stale_socket(std::string* err) {
    struct stat st;
    if (lstat(path_.c_str(), &st) < 0) {
      if (errno == ENOENT) return true;
      *err = "cannot inspect " + path_ + ": " + errno_text(errno);
      return false;
    }
    if (!S_ISSOCK(st.st_mode)) {
      *err = "path " + path_ + " exists and is not a socket";
      return false;
    }
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (probe < 0) {
      *err = "socket() for " + path_ + " failed: " + errno_text(errno);
      return false;
    }
    int rc = connect(probe, reinterpret_cast<const sockaddr*>(&addr_), sizeof(addr_));
    int e = errno;
    close(probe);
    if (rc == 0 || e == EAGAIN) {
      *err = "path " + path_ + " is in use by another process";
      return false;
    }
    if (e != ECONNREFUSED) {
      *err = "cannot probe " + path_ + ": " + errno_text(e);
      return false;
    }
    if (unlink(path_.c_str()) < 0 && errno != ENOENT) {
      *err = "cannot remove stale socket " + path_ + ": " + errno_text(errno);
      return false;
    }
    return true;
  }

  // Removes the socket file only if it is still the one we bound, not one another process put there.
  void unlink_own_socket() {
    struct stat st;
    if (bound_ && lstat(path_.c_str(), &st) == 0 && st.st_dev == sock_dev_ && st.st_ino == sock_ino_)
      unlink(path_.c_str());
  }

  bool uid_allowed(uint32_t uid) const {
    if (uid == 0 || uid == uint32_t(geteuid()) || uid == opt_.socket_owner) return true;
    for (uint32_t u : opt_.allow_uids)
      if (u == uid) return true;
    return false;
  }

  // The group of the socket file we bound, as it is now (serve --user hands the file to its user after
  // we made it), so that its members pass as the kernel's own permission check let them through.
  uint32_t socket_file_gid() const {
    struct stat st;
    if (client_ || !bound_ || lstat(path_.c_str(), &st) < 0 || st.st_dev != sock_dev_ || st.st_ino != sock_ino_)
      return VhostUserOptions::kNoId;
    return uint32_t(st.st_gid);
  }

  bool gid_allowed(uint32_t gid, uint32_t file_gid) const {
    if (file_gid != VhostUserOptions::kNoId && gid == file_gid) return true;
    for (uint32_t g : opt_.allow_gids)
      if (g == gid) return true;
    return false;
  }

  bool peer_allowed(int fd, std::string* who) const {
    ucred cr = {};
    socklen_t len = sizeof(cr);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0) {
      *who = "its credentials cannot be read (" + errno_text(errno) + ")";
      return false;
    }
    const uint32_t file_gid = socket_file_gid();
    if (uid_allowed(cr.uid) || gid_allowed(cr.gid, file_gid)) return true;
    // Supplementary groups too, as the kernel's own check of the socket file's group does.
    gid_t groups[256];
    socklen_t glen = sizeof(groups);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &glen) == 0)
      for (size_t i = 0; i < glen / sizeof(gid_t); i++)
        if (gid_allowed(groups[i], file_gid)) return true;
    *who = "process " + std::to_string(cr.pid) + " runs as uid " + std::to_string(cr.uid) + ", gid " +
           std::to_string(cr.gid) +
           ", and none of its groups are allowed (allow them with the port's allow-uid or allow-gid)";
    return false;
  }

  void on_accept() {
    int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) {
      // Out of fds the listener stays readable: level-triggered epoll would call us again at once, for
      // as long as the shortage lasts. Stop watching it for a moment instead.
      if (errno == EMFILE || errno == ENFILE) {
        const int e = errno;
        reactor_.unwatch(listen_fd_);
        arm_timer(timer_fd_, kAcceptBackoffMs, false);
        refuse("accept_backoff", "cannot accept a front end on " + path_ + ": " + errno_text(e) +
                                     "; not accepting for " + std::to_string(kAcceptBackoffMs) + " ms");
      }
      return;  // otherwise the peer left before we got to it
    }
    if (conn_fd_ >= 0) {
      close(fd);
      refuse("busy", "front end refused: port " + dev_.name() + " already has one");
      return;
    }
    std::string who;
    if (!peer_allowed(fd, &who)) {
      close(fd);
      refuse("peer_credentials", "front end refused on " + path_ + ": " + who);
      return;
    }
    adopt(fd);
  }

  bool start_client(std::string*) {
    if (!try_connect()) arm_timer(timer_fd_, kReconnectMs, true);
    return true;
  }

  void arm_timer(int fd, int64_t ms, bool repeat) {
    itimerspec its = {};
    its.it_value.tv_sec = ms / 1000;
    its.it_value.tv_nsec = (ms % 1000) * 1000000;
    if (repeat) its.it_interval = its.it_value;
    timerfd_settime(fd, 0, &its, nullptr);
  }

  void on_timer() {
    uint64_t expirations;
    if (read(timer_fd_, &expirations, sizeof(expirations)) < 0) return;
    if (!client_) {
      watch_listener();  // the accept back-off is over
      return;
    }
    if (conn_fd_ < 0 && try_connect()) arm_timer(timer_fd_, 0, false);
  }

  // A listener we connect to becomes this port's front end, with access to everything the port
  // forwards: one that another user put at the path is refused, by the file's owner before connecting
  // and by the peer's credentials after. A refusal is reported once until the situation changes.
  bool try_connect() {
    struct stat st;
    std::string why;
    if (lstat(path_.c_str(), &st) < 0) return false;  // QEMU is not there yet
    if (!S_ISSOCK(st.st_mode))
      why = path_ + " is not a socket";
    else if (!uid_allowed(st.st_uid))
      why = "the listener " + path_ + " is owned by uid " + std::to_string(st.st_uid) +
            ", not by us, root or an allowed uid (allow-uid): not connecting to it";
    if (!why.empty()) {
      refuse_once("listener_owner", why);
      return false;
    }
    // Non-blocking so a listener with a full backlog cannot stall the control thread.
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return false;
    if (connect(fd, reinterpret_cast<const sockaddr*>(&addr_), sizeof(addr_)) < 0) {
      close(fd);
      return false;
    }
    if (!peer_allowed(fd, &why)) {
      close(fd);
      refuse_once("peer_credentials", "the listener at " + path_ + " refused: " + why);
      return false;
    }
    last_refusal_.clear();
    adopt(fd);
    return true;
  }

  void adopt(int fd) {
    conn_fd_ = fd;
    connected_ms_ = monotonic_ms();
    messages_ = rejected_ = 0;
    reactor_.watch(conn_fd_, [this](uint32_t) { on_readable(); });
    update_deadline();
    emit("connected", "");
  }

  void close_connection() {
    if (conn_fd_ < 0) return;
    reactor_.unwatch(conn_fd_);
    close_fd(conn_fd_);
    reader_.reset();
    if (deadline_fd_ >= 0) arm_timer(deadline_fd_, 0, false);
    reset_session();
    protocol_features_ = 0;
    mtu_ = 0;
  }

  void disconnect(const std::string& reason) {
    close_connection();
    emit("disconnected", reason);
    if (client_) arm_timer(timer_fd_, kReconnectMs, true);
  }

  // The one deadline a connection has, if any: its first message within the idle timeout of connecting,
  // and every message within the idle timeout of its first byte. A connection between messages after
  // that has none: QEMU says nothing while its guest boots, for as long as that takes.
  void update_deadline() {
    int64_t at = 0;
    if (messages_ == 0)
      at = connected_ms_ + int64_t(opt_.idle_timeout_ms);
    else if (reader_.in_message())
      at = reader_.message_started_ms() + int64_t(opt_.idle_timeout_ms);
    if (at == 0) {
      arm_timer(deadline_fd_, 0, false);
      return;
    }
    // A deadline already past still fires: a zero it_value would disarm the timer instead.
    arm_timer(deadline_fd_, std::max<int64_t>(at - monotonic_ms(), 1), false);
  }

  void on_deadline() {
    uint64_t expirations;
    if (read(deadline_fd_, &expirations, sizeof(expirations)) < 0 || conn_fd_ < 0) return;
    const std::string secs = std::to_string(opt_.idle_timeout_ms) + " ms";
    if (messages_ == 0) {
      count("handshake_timeout");
      disconnect("the front end sent no complete message within " + secs + " of connecting");
    } else {
      count("message_timeout");
      disconnect("the front end left a message unfinished for " + secs);
    }
  }

  // Every refused connection and every connection closed for misbehaving is counted by reason (shown by
  // describe()) and reported.
  void count(const std::string& reason) { refusals_[reason]++; }

  void refuse(const std::string& reason, const std::string& text) {
    count(reason);
    emit("error", text);
  }

  void refuse_once(const std::string& reason, const std::string& text) {
    count(reason);
    if (text == last_refusal_) return;
    last_refusal_ = text;
    emit("error", text);
  }
  // ---- session state ----

  // Stops every ring and returns the device to its initial state, then closes the fds we held for it.
  // The device forgets the fds first so that it never holds a number the kernel may hand out again.
  void reset_session() {
    std::vector<int> fds;
    // Held past the pause: the last reference to a memory table unmaps the guest's memory, which takes
    // long enough (page tables torn down, every CPU's TLB flushed) to stall every port of the PMD.
    std::shared_ptr<const GuestMemory> old = dev_.memory();
    {
      DatapathPause pause(dev_);
      for (uint16_t i = 0; i < dev_.vring_count(); i++)
        for (int fd : {dev_.vring(i).kick, dev_.vring(i).call, dev_.vring(i).err})
          if (fd >= 0) fds.push_back(fd);
      dev_.reset();
    }
    for (int fd : fds) close(fd);
    features_ = 0;
  }

  // A stopped ring does not keep its kick fd: the next start brings a new one. Data path paused.
  void drop_kick(uint16_t idx) { close_fd(dev_.vring(idx).kick); }

  // Restarts ring idx in place (new addresses or new memory). On failure it stays stopped. Data path
  // paused.
  bool restart_ring(uint16_t idx, std::string* err) {
    dev_.stop_vring(idx);
    if (dev_.start_vring(idx, err)) return true;
    drop_kick(idx);
    return false;
  }

  // Swaps in a whole new memory table. Running rings hold translations into the old table, whose
  // mappings may go away with it, so they are restarted against the new one at the same position.
  bool swap_memory(std::shared_ptr<const GuestMemory> mem, std::string* err) {
    // The old table is unmapped after the pause, not in it (see reset_session).
    std::shared_ptr<const GuestMemory> old = dev_.memory();
    DatapathPause pause(dev_);
    std::vector<uint16_t> running;
    for (uint16_t i = 0; i < dev_.vring_count(); i++)
      if (dev_.vring(i).started) {
        dev_.stop_vring(i);
        running.push_back(i);
      }
    dev_.set_memory(std::move(mem));
    bool ok = true;
    for (uint16_t i : running) {
      std::string e;
      if (dev_.start_vring(i, &e)) continue;
      drop_kick(i);
      if (ok) *err = "the new table no longer holds vring " + std::to_string(i) + " (" + e + ")";
      ok = false;
    }
    return ok;
  }

  bool protocol_negotiated(uint32_t f) const { return (protocol_features_ & bit(f)) != 0; }

  bool check_vring(uint32_t idx, std::string* err) const {
    if (idx < dev_.vring_count()) return true;
    *err = "vring index " + std::to_string(idx) + " is out of range (the port has " +
           std::to_string(dev_.vring_count()) + " vrings)";
    return false;
  }

  // ---- handlers ----

  uint64_t offered_features() const {
    return kOfferedFeatures | (queue_pairs_ > 1 ? bit(VIRTIO_NET_F_MQ) : 0) | (opt_.offloads ? kOffloadFeatures : 0);
  }

  bool get_features(Message& m, std::string*) {
    set_reply_u64(m, offered_features());
    return true;
  }

  bool set_features(Message& m, std::string* err) {
    uint64_t f = m.msg.payload.u64;
    const uint64_t offered = offered_features();
    if (f & ~offered) {
      *err = "features " + hex(f & ~offered) + " were not offered";
      return false;
    }
    features_ = f;
    DatapathPause pause(dev_);
    dev_.set_features(f);
    return true;
  }

  bool get_protocol_features(Message& m, std::string*) {
    set_reply_u64(m, kOfferedProtocolFeatures);
    return true;
  }

  bool set_protocol_features(Message& m, std::string* err) {
    uint64_t f = m.msg.payload.u64;
    if (f & ~kOfferedProtocolFeatures) {
      *err = "protocol features " + hex(f & ~kOfferedProtocolFeatures) + " were not offered";
      return false;
    }
    protocol_features_ = f;
    return true;
  }

  // One connection is one owner, so there is no session to begin beyond the connection itself.
  bool set_owner(Message&, std::string*) { return true; }

  // Deprecated; the spec allows treating it as "disable all rings". We reset the device (rings, memory,
  // features) but keep what was negotiated for the connection itself, which front ends send only once.
  bool reset_owner(Message&, std::string*) {
    reset_session();
    return true;
  }

  bool set_mem_table(Message& m, std::string* err) {
    const VhostUserMemory& t = m.msg.payload.memory;
    if (t.nregions < 1 || t.nregions > kVhostUserMaxFds) {
      *err = "region count " + std::to_string(t.nregions) + " is not between 1 and " + std::to_string(kVhostUserMaxFds);
      return false;
    }
    if (m.msg.hdr.size < kMemTableHeader + t.nregions * sizeof(VhostUserMemRegion)) {
      *err = "a payload of " + std::to_string(m.msg.hdr.size) + " bytes cannot hold " + std::to_string(t.nregions) +
             " regions";
      return false;
    }
    auto mem = std::make_shared<const GuestMemory>();
    for (uint32_t i = 0; i < t.nregions; i++) {
      const VhostUserMemRegion& r = t.regions[i];
      int fd = m.fds[i];
      m.fds[i] = -1;  // with_region owns it from here on, whatever happens
      std::string e;
      mem = mem->with_region(fd, r.guest_phys_addr, r.memory_size, r.userspace_addr, r.mmap_offset, &e);
      if (!mem) {
        *err = "region " + std::to_string(i) + " is unusable: " + e;
        return false;
      }
    }
    return swap_memory(std::move(mem), err);
  }

  bool get_max_mem_slots(Message& m, std::string*) {
    set_reply_u64(m, kMaxMemRegions);
    return true;
  }

  bool add_mem_reg(Message& m, std::string* err) {
    const VhostUserMemRegion& r = m.msg.payload.memreg.region;
    int fd = m.fds[0];
    m.fds[0] = -1;
    const GuestMemory empty;
    const GuestMemory& cur = dev_.memory() ? *dev_.memory() : empty;
    // QEMU before 8.2 sends ADD_MEM_REG once per queue pair: the same region again is not an error.
    for (const MemRegion& x : cur.regions()) {
      if (x.gpa == r.guest_phys_addr && x.size == r.memory_size && x.uaddr == r.userspace_addr &&
          x.mmap_offset == r.mmap_offset) {
        close(fd);
        return true;
      }
    }
    if (cur.regions().size() >= kMaxMemRegions) {
      close(fd);
      *err = "the table already holds the maximum of " + std::to_string(kMaxMemRegions) + " regions";
      return false;
    }
    std::string e;
    auto mem = cur.with_region(fd, r.guest_phys_addr, r.memory_size, r.userspace_addr, r.mmap_offset, &e);
    if (!mem) {
      *err = "the region is unusable: " + e;
      return false;
    }
    return swap_memory(std::move(mem), err);
  }

  bool rem_mem_reg(Message& m, std::string* err) {
    const VhostUserMemRegion& r = m.msg.payload.memreg.region;
    const auto& cur = dev_.memory();
    // QEMU before 8.2 also repeats REM_MEM_REG per queue pair: a range nothing is mapped at any more has
    // nothing to remove. A range that only partly matches a mapped region is still refused.
    bool overlaps = false;
    if (cur) {
      for (const MemRegion& x : cur->regions())
        if (r.guest_phys_addr < x.gpa + x.size && x.gpa < r.guest_phys_addr + r.memory_size) overlaps = true;
    }
    if (!overlaps) return true;
    std::string e;
    auto mem = cur->without_region(r.guest_phys_addr, r.memory_size, r.userspace_addr, &e);
    if (!mem) {
      *err = "no region matches guest address " + hex(r.guest_phys_addr) + ", size " + hex(r.memory_size) +
             " and user address " + hex(r.userspace_addr);
      return false;
    }
    return swap_memory(std::move(mem), err);
  }

  // SET_VRING_NUM/BASE describe a ring the front end is about to start; changing them under a running
  // ring would desynchronise both sides, so that is refused.
  bool check_stopped(uint32_t idx, std::string* err) const {
    if (!dev_.vring(uint16_t(idx)).started) return true;
    *err = "vring " + std::to_string(idx) + " is running (stop it with VHOST_USER_GET_VRING_BASE first)";
    return false;
  }

  bool set_vring_num(Message& m, std::string* err) {
    const VhostUserVringState& s = m.msg.payload.state;
    if (!check_vring(s.index, err) || !check_stopped(s.index, err)) return false;
    if (s.num < 1 || s.num > kMaxQueueSize || (s.num & (s.num - 1))) {
      *err = "vring " + std::to_string(s.index) + " size " + std::to_string(s.num) +
             " is not a power of two between 1 and " + std::to_string(kMaxQueueSize);
      return false;
    }
    dev_.vring(uint16_t(s.index)).setup.num = uint16_t(s.num);
    return true;
  }

  bool set_vring_addr(Message& m, std::string* err) {
    const VhostUserVringAddr& a = m.msg.payload.addr;
    if (!check_vring(a.index, err)) return false;
    if (a.flags) {
      *err =
          "vring " + std::to_string(a.index) + " asks for flags " + hex(a.flags) + " (dirty logging is not supported)";
      return false;
    }
    const uint16_t idx = uint16_t(a.index);
    Vring& v = dev_.vring(idx);
    v.setup.desc_uaddr = a.desc_user_addr;
    v.setup.avail_uaddr = a.avail_user_addr;
    v.setup.used_uaddr = a.used_user_addr;
    v.has_addr = true;
    if (!v.started) return true;
    DatapathPause pause(dev_);
    std::string e;
    if (restart_ring(idx, &e)) return true;
    *err = "vring " + std::to_string(idx) + " cannot use the new addresses: " + e;
    return false;
  }

  bool set_vring_base(Message& m, std::string* err) {
    const VhostUserVringState& s = m.msg.payload.state;
    if (!check_vring(s.index, err) || !check_stopped(s.index, err)) return false;
    if (s.num > 0xffff) {
      *err = "vring " + std::to_string(s.index) + " base " + std::to_string(s.num) + " does not fit 16 bits";
      return false;
    }
    dev_.vring(uint16_t(s.index)).setup.base = uint16_t(s.num);
    return true;
  }

  bool get_vring_base(Message& m, std::string* err) {
    const VhostUserVringState& s = m.msg.payload.state;
    if (!check_vring(s.index, err)) return false;
    const uint16_t idx = uint16_t(s.index);
    Vring& v = dev_.vring(idx);
    {
      DatapathPause pause(dev_);
      if (v.started) {
        dev_.stop_vring(idx);
        drop_kick(idx);
      }
      // A stopped ring is initially disabled again when it is next started (see SET_VRING_KICK).
      v.enabled = false;
    }
    m.reply.hdr.size = sizeof(VhostUserVringState);
    m.reply.payload.state = {s.index, v.setup.base};
    return true;
  }

  // KICK/CALL/ERR fds are read and written by the PMD threads: they must be eventfds (a regular file
  // always polls readable and keeps a sleeping PMD awake) and non-blocking (a blocking eventfd at its
  // maximum, or a full pipe, would block the PMD's write forever).
  static bool check_vring_fd(const Message& m, std::string* err) {
    if (m.nfds == 0) return true;
    const int fd = m.fds[0];
    char path[40], link[64];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    const ssize_t n = readlink(path, link, sizeof(link));
    if (n < 0 || std::string(link, size_t(n)) != "anon_inode:[eventfd]") {
      *err = "its file descriptor is not an eventfd";
      return false;
    }
    const int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)) {
      *err = "its eventfd cannot be made non-blocking: " + errno_text(errno);
      return false;
    }
    return true;
  }

  // Checks a KICK/CALL/ERR message: its u64 holds a vring index, the NOFD bit and nothing else, and its
  // fd (if any) passes check_vring_fd.
  bool check_vring_file(const Message& m, uint32_t* idx, std::string* err) const {
    uint64_t u = m.msg.payload.u64;
    if (u & ~(VHOST_USER_VRING_IDX_MASK | VHOST_USER_VRING_NOFD_MASK)) {
      *err = "payload " + hex(u) + " has bits set besides the vring index and the no-fd flag";
      return false;
    }
    *idx = uint32_t(u & VHOST_USER_VRING_IDX_MASK);
    return check_vring(*idx, err) && check_vring_fd(m, err);
  }

  // The fd of a KICK/CALL/ERR message, taken over from the message; -1 when NOFD was set.
  static int take_vring_fd(Message& m) {
    if (m.nfds == 0) return -1;
    int fd = m.fds[0];
    m.fds[0] = -1;
    return fd;
  }

  bool set_vring_kick(Message& m, std::string* err) {
    uint32_t i;
    if (!check_vring_file(m, &i, err)) return false;
    const uint16_t idx = uint16_t(i);
    Vring& v = dev_.vring(idx);
    if (v.started) {
      int fd = take_vring_fd(m);
      {
        DatapathPause pause(dev_);
        std::swap(v.kick, fd);
      }
      close_fd(fd);
      return true;
    }
    if (!v.setup.num || !v.has_addr || !dev_.memory() || dev_.memory()->regions().empty()) {
      *err = "vring " + std::to_string(idx) + " cannot start before its size, addresses and the memory table are set";
      return false;
    }
    DatapathPause pause(dev_);
    v.kick = take_vring_fd(m);
    // Without protocol features there is no SET_VRING_ENABLE, so the ring is enabled as it starts.
    if (!(features_ & bit(VHOST_USER_F_PROTOCOL_FEATURES))) v.enabled = true;
    std::string e;
    if (dev_.start_vring(idx, &e)) return true;
    drop_kick(idx);
    *err = "cannot start " + e;  // e names the vring
    return false;
  }

  bool set_vring_call(Message& m, std::string* err) { return replace_vring_fd(m, err, &Vring::call); }

  bool set_vring_err(Message& m, std::string* err) { return replace_vring_fd(m, err, &Vring::err); }

  // CALL and ERR: swap the new fd in with the data path paused, then close the old one.
  bool replace_vring_fd(Message& m, std::string* err, int Vring::*slot) {
    uint32_t idx;
    if (!check_vring_file(m, &idx, err)) return false;
    int fd = take_vring_fd(m);
    {
      DatapathPause pause(dev_);
      std::swap(dev_.vring(uint16_t(idx)).*slot, fd);
    }
    close_fd(fd);
    return true;
  }

  bool set_vring_enable(Message& m, std::string* err) {
    const VhostUserVringState& s = m.msg.payload.state;
    if (!check_vring(s.index, err)) return false;
    if (s.num > 1) {
      *err = "vring " + std::to_string(s.index) + " enable value " + std::to_string(s.num) + " is not 0 or 1";
      return false;
    }
    // A ring that has not started yet takes the recorded state when it does.
    DatapathPause pause(dev_);
    dev_.vring(uint16_t(s.index)).enabled = s.num == 1;
    return true;
  }

  bool get_queue_num(Message& m, std::string*) {
    set_reply_u64(m, queue_pairs_);
    return true;
  }

  bool net_set_mtu(Message& m, std::string* err) {
    uint64_t mtu = m.msg.payload.u64;
    if (mtu < kMinMtu || mtu > kMaxMtu) {
      *err = "MTU " + std::to_string(mtu) + " is not between " + std::to_string(kMinMtu) + " and " +
             std::to_string(kMaxMtu);
      return false;
    }
    mtu_ = uint16_t(mtu);
    return true;
  }

  // ---- dispatch ----

  static void set_reply_u64(Message& m, uint64_t v) {
    m.reply.hdr.size = sizeof(uint64_t);
    m.reply.payload.u64 = v;
  }

  static const Handler* find_handler(uint32_t request) {
    for (const Handler* h = kHandlers; h->name; h++)
      if (h->request == request) return h;
    return nullptr;
  }

  // Checks what the table says about a request's shape before its handler sees it.
  bool check_shape(const Handler& h, const Message& m, std::string* err) const {
    uint32_t size = m.msg.hdr.size;
    if (h.size_rule == SizeRule::kExact ? size != h.size : size < h.size) {
      *err = "payload is " + std::to_string(size) + " bytes, expected " +
             (h.size_rule == SizeRule::kAtLeast ? "at least " : "") + std::to_string(h.size);
      return false;
    }
    size_t want_min = 0, want_max = 0;
    switch (h.fds) {
      case FdRule::kNone: break;
      case FdRule::kOne: want_min = want_max = 1; break;
      case FdRule::kOneUnlessNofd:
        want_min = want_max = (m.msg.payload.u64 & VHOST_USER_VRING_NOFD_MASK) ? 0 : 1;
        break;
      case FdRule::kPerRegion: want_min = want_max = m.msg.payload.memory.nregions; break;
      case FdRule::kOptional: want_max = 1; break;
    }
    if (m.nfds < want_min || m.nfds > want_max) {
      *err = "it carries " + std::to_string(m.nfds) + " file descriptor(s), expected " +
             (want_min == want_max ? std::to_string(want_min)
                                   : std::to_string(want_min) + " to " + std::to_string(want_max));
      return false;
    }
    if ((protocol_features_ & h.needs_protocol) != h.needs_protocol) {
      *err = "it needs protocol features " + hex(h.needs_protocol) + ", which were not negotiated";
      return false;
    }
    return true;
  }

  void on_readable() {
    for (int i = 0; i < kMessagesPerWakeup && conn_fd_ >= 0; i++) {
      Message m;
      std::string why;
      const MessageReader::Result r = reader_.read(conn_fd_, &m.msg, m.fds, &m.nfds, &why);
      if (r == MessageReader::Result::kPending) break;
      if (r == MessageReader::Result::kClosed) {
        disconnect("the front end hung up");
        return;
      }
      if (r == MessageReader::Result::kError) {
        disconnect("receiving a message failed: " + why);
        return;
      }
      messages_++;
      dispatch(m);
    }
    if (conn_fd_ >= 0) update_deadline();
  }

  void dispatch(Message& m) {
    const VhostUserHeader hdr = m.msg.hdr;
    const Handler* h = find_handler(hdr.request);
    bool ack_before = protocol_negotiated(VHOST_USER_PROTOCOL_F_REPLY_ACK);
    m.reply.hdr = {hdr.request, VHOST_USER_VERSION | VHOST_USER_REPLY_MASK, 0};
    const std::string name = h ? h->name : "request " + std::to_string(hdr.request);
    std::string err;
    bool ok = false;
    if (!h)
      err = "it is not supported";
    else if ((hdr.flags & VHOST_USER_VERSION_MASK) != VHOST_USER_VERSION)
      err = "it has protocol version " + std::to_string(hdr.flags & VHOST_USER_VERSION_MASK) + ", expected 1";
    else if (check_shape(*h, m, &err))
      ok = (this->*h->fn)(m, &err);
    for (size_t i = 0; i < m.nfds; i++) close_fd(m.fds[i]);
    if (!ok) emit("error", name + " was rejected: " + err);
    if (!send_reply(m, h, ok, ack_before, name)) return;
    // After its reply, so that the front end hears of the last rejection too.
    if (!ok && ++rejected_ >= opt_.reject_limit) {
      count("too_many_rejected");
      disconnect(std::to_string(rejected_) + " messages were rejected, the last " + name + ": " + err);
    }
  }

  // The reply a handled message is due, if any; false when sending it cost the connection.
  bool send_reply(Message& m, const Handler* h, bool ok, bool ack_before, const std::string& name) {
    const bool reply_ack = (m.msg.hdr.flags & VHOST_USER_NEED_REPLY_MASK) &&
                           (ack_before || protocol_negotiated(VHOST_USER_PROTOCOL_F_REPLY_ACK));
    if (h && h->has_reply) {
      // An empty reply tells a front end waiting for this answer that it failed, instead of leaving it
      // to time out.
      if (!ok) m.reply.hdr.size = 0;
    } else if (reply_ack) {
      set_reply_u64(m, ok ? 0 : 1);
    } else {
      return true;
    }
    // Replies are sent without waiting too. A reply is at most a few hundred bytes and a front end reads
    // each before its next request, so a socket buffer that cannot take one means the front end stopped
    // reading: holding replies for it would be memory it controls, waiting would be the control thread.
    if (vhost_user_send(conn_fd_, m.reply, nullptr, 0)) return true;
    const bool full = errno == EAGAIN || errno == EWOULDBLOCK;
    if (full) count("replies_unread");
    disconnect("sending the reply to " + name +
               " failed: " + (full ? std::string("the front end is not reading its replies") : errno_text(errno)));
    return false;
  }

  void emit(const char* kind, const std::string& reason) {
    if (!events_) return;
    PortEvent e;
    e.kind = kind;
    e.port = dev_.name();
    e.reason = reason;
    events_(e);
  }

  void describe(Description& d) const {
    d.set("state", conn_fd_ >= 0 ? "connected" : "disconnected");
    d.set("path", path_);
    d.set("client", client_);
    d.set("connected", conn_fd_ >= 0);
    d.set_u64("features", features_);
    d.set_u64("protocolFeatures", protocol_features_);
    d.set("offloads", opt_.offloads);
    d.set("mtu", unsigned(mtu_));
    d.set("memRegions", unsigned(dev_.memory() ? dev_.memory()->regions().size() : 0));
    auto& vrings = d.list("vrings");
    for (uint16_t q = 0; q < dev_.vring_count(); q++) {
      const Vring& v = dev_.vring(q);
      Description vd;
      vd.set("size", unsigned(v.setup.num));
      vd.set("started", v.started);
      vd.set("enabled", v.started && v.enabled);
      vd.set("broken", v.broken);
      vrings.push_back(std::move(vd));
    }
    auto& refusals = d.list("refusals");
    for (const auto& [reason, n] : refusals_) {
      Description rd;
      rd.set("reason", reason);
      rd.set("count", double(n));
      refusals.push_back(std::move(rd));
    }
  }

  VirtioNetDevice& dev_;
  const std::string path_;
  const bool client_;
  const uint16_t queue_pairs_;
  Reactor& reactor_;
  EventSink events_;
  const VhostUserOptions opt_;

  sockaddr_un addr_ = {};
  int listen_fd_ = -1;
  int timer_fd_ = -1;     // client: reconnect; server: the end of an accept back-off
  int deadline_fd_ = -1;  // the connection's deadline (update_deadline)
  int conn_fd_ = -1;
  bool bound_ = false;
  dev_t sock_dev_ = 0;
  ino_t sock_ino_ = 0;

  MessageReader reader_;
  int64_t connected_ms_ = 0;
  uint64_t messages_ = 0;  // complete messages on this connection
  uint32_t rejected_ = 0;  // of them, rejected
  std::map<std::string, uint64_t> refusals_;
  std::string last_refusal_;  // client mode: the refusal already reported

  uint64_t features_ = 0;
  uint64_t protocol_features_ = 0;
  uint16_t mtu_ = 0;
};

// One row per request: its payload size, the fds it carries, the protocol features that must be
// negotiated before it is legal, its handler, and whether it has a reply of its own (otherwise REPLY_ACK
// decides).
constexpr uint64_t kAlways = 0;
constexpr uint64_t kMemSlots = bit(VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS);
constexpr uint64_t kMq = bit(VHOST_USER_PROTOCOL_F_MQ);
constexpr uint64_t kMtu = bit(VHOST_USER_PROTOCOL_F_MTU);
constexpr uint32_t kU64 = sizeof(uint64_t), kState = sizeof(VhostUserVringState), kAddr = sizeof(VhostUserVringAddr),
                   kMemReg = sizeof(VhostUserMemRegMsg);

#define VW_HANDLER(req, size, rule, fds, needs, fn, reply) \
  { VHOST_USER_##req, "VHOST_USER_" #req, size, SizeRule::rule, FdRule::fds, needs, &Impl::fn, reply }

const VhostUserPort::Impl::Handler VhostUserPort::Impl::kHandlers[] = {
    VW_HANDLER(GET_FEATURES, 0, kExact, kNone, kAlways, get_features, true),
    VW_HANDLER(SET_FEATURES, kU64, kExact, kNone, kAlways, set_features, false),
    VW_HANDLER(GET_PROTOCOL_FEATURES, 0, kExact, kNone, kAlways, get_protocol_features, true),
    VW_HANDLER(SET_PROTOCOL_FEATURES, kU64, kExact, kNone, kAlways, set_protocol_features, false),
    VW_HANDLER(SET_OWNER, 0, kExact, kNone, kAlways, set_owner, false),
    VW_HANDLER(RESET_OWNER, 0, kExact, kNone, kAlways, reset_owner, false),
    VW_HANDLER(SET_MEM_TABLE, kMemTableHeader, kAtLeast, kPerRegion, kAlways, set_mem_table, false),
    VW_HANDLER(GET_MAX_MEM_SLOTS, 0, kExact, kNone, kMemSlots, get_max_mem_slots, true),
    VW_HANDLER(ADD_MEM_REG, kMemReg, kExact, kOne, kMemSlots, add_mem_reg, false),
    VW_HANDLER(REM_MEM_REG, kMemReg, kExact, kOptional, kMemSlots, rem_mem_reg, false),
    VW_HANDLER(SET_VRING_NUM, kState, kExact, kNone, kAlways, set_vring_num, false),
    VW_HANDLER(SET_VRING_ADDR, kAddr, kExact, kNone, kAlways, set_vring_addr, false),
    VW_HANDLER(SET_VRING_BASE, kState, kExact, kNone, kAlways, set_vring_base, false),
    VW_HANDLER(GET_VRING_BASE, kState, kExact, kNone, kAlways, get_vring_base, true),
    VW_HANDLER(SET_VRING_KICK, kU64, kExact, kOneUnlessNofd, kAlways, set_vring_kick, false),
    VW_HANDLER(SET_VRING_CALL, kU64, kExact, kOneUnlessNofd, kAlways, set_vring_call, false),
    VW_HANDLER(SET_VRING_ERR, kU64, kExact, kOneUnlessNofd, kAlways, set_vring_err, false),
    VW_HANDLER(SET_VRING_ENABLE, kState, kExact, kNone, kAlways, set_vring_enable, false),
    VW_HANDLER(GET_QUEUE_NUM, 0, kExact, kNone, kMq, get_queue_num, true),
    VW_HANDLER(NET_SET_MTU, kU64, kExact, kNone, kMtu, net_set_mtu, false),
    {VHOST_USER_REQUEST_MAX, nullptr, 0, SizeRule::kExact, FdRule::kNone, kAlways, nullptr, false},
};

#undef VW_HANDLER

VhostUserPort::VhostUserPort(std::string name, std::string path, bool client, uint16_t queue_pairs, Reactor& reactor,
                             CounterBlock& counters, EventSink events, VhostUserOptions options)
    : VirtioNetDevice(std::move(name), queue_pairs, counters, events),
      impl_(std::make_unique<Impl>(*this, std::move(path), client, reactor, std::move(events), std::move(options))) {}

// The session goes first: closing it stops and resets the device, which must still exist.
VhostUserPort::~VhostUserPort() { impl_.reset(); }

bool VhostUserPort::start(std::string* err) { return impl_->start(err); }

void VhostUserPort::describe(Description& d) const { impl_->describe(d); }

namespace {
// "1000,1001": uids or gids as TypeScript checked them; absent is an empty list.
bool id_list(const PortParams& p, const char* key, std::vector<uint32_t>* out, std::string* err) {
  std::string text;
  if (!p.has(key)) return true;
  if (!p.str(key, &text, err)) return false;
  size_t at = 0;
  while (at < text.size()) {
    size_t end = text.find(',', at);
    if (end == std::string::npos) end = text.size();
    const std::string item = text.substr(at, end - at);
    char* stop = nullptr;
    const unsigned long long v = strtoull(item.c_str(), &stop, 10);
    if (item.empty() || *stop || v >= VhostUserOptions::kNoId) {
      *err = std::string("parameter ") + key + " has \"" + item + "\", which is not an id";
      return false;
    }
    out->push_back(uint32_t(v));
    at = end + 1;
  }
  return true;
}

std::unique_ptr<Port> create_vhost_user(const std::string& name, const PortParams& p, PortContext& ctx,
                                        std::string* err) {
  std::string path;
  bool client, withhold_offloads;
  uint64_t queues, mode, owner, group, reject_limit, idle_ms;
  VhostUserOptions o;
  const uint64_t none = VhostUserOptions::kNoId;
  if (!p.str("path", &path, err) || !p.flag("client", &client, err) ||
      !p.flag("withholdOffloads", &withhold_offloads, err) || !p.num("queues", 1, 1, kMaxQueuePairs, &queues, err) ||
      !p.num("socketMode", o.socket_mode, 0, 0777, &mode, err) || !p.num("socketOwner", none, 0, none, &owner, err) ||
      !p.num("socketGroup", none, 0, none, &group, err) ||
      !p.num("rejectLimit", o.reject_limit, 1, 1u << 20, &reject_limit, err) ||
      !p.num("idleTimeoutMs", o.idle_timeout_ms, 100, 3600000, &idle_ms, err) ||
      !id_list(p, "allowUids", &o.allow_uids, err) || !id_list(p, "allowGids", &o.allow_gids, err))
    return nullptr;
  o.socket_mode = uint32_t(mode);
  o.socket_owner = uint32_t(owner);
  o.socket_group = uint32_t(group);
  o.reject_limit = uint32_t(reject_limit);
  o.idle_timeout_ms = uint32_t(idle_ms);
  o.offloads = !withhold_offloads;
  auto port = std::make_unique<VhostUserPort>(name, path, client, uint16_t(queues), ctx.reactor, ctx.counters,
                                              ctx.events, std::move(o));
  if (!port->start(err)) return nullptr;
  return port;
}
}  // namespace

// Registered in runtime/port_kinds.cc (extern: a namespace-scope const is otherwise private to this file).
extern const PortKind kVhostUserKind = {"vhost-user", create_vhost_user};

}  // namespace vw
