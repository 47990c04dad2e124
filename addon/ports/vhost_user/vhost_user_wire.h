// The vhost-user wire format (../shared/ref/vhost-user.rst): message header, payloads and the sending
// and receiving of messages with ancillary file descriptors. Shared by the backend (vhost_user.cc) and
// our own front end (virtio_user.cc).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include <sys/socket.h>

namespace vw {

enum VhostUserRequest : uint32_t {
  VHOST_USER_GET_FEATURES = 1,
  VHOST_USER_SET_FEATURES = 2,
  VHOST_USER_SET_OWNER = 3,
  VHOST_USER_RESET_OWNER = 4,
  VHOST_USER_SET_MEM_TABLE = 5,
  VHOST_USER_SET_LOG_BASE = 6,
  VHOST_USER_SET_LOG_FD = 7,
  VHOST_USER_SET_VRING_NUM = 8,
  VHOST_USER_SET_VRING_ADDR = 9,
  VHOST_USER_SET_VRING_BASE = 10,
  VHOST_USER_GET_VRING_BASE = 11,
  VHOST_USER_SET_VRING_KICK = 12,
  VHOST_USER_SET_VRING_CALL = 13,
  VHOST_USER_SET_VRING_ERR = 14,
  VHOST_USER_GET_PROTOCOL_FEATURES = 15,
  VHOST_USER_SET_PROTOCOL_FEATURES = 16,
  VHOST_USER_GET_QUEUE_NUM = 17,
  VHOST_USER_SET_VRING_ENABLE = 18,
  VHOST_USER_SEND_RARP = 19,
  VHOST_USER_NET_SET_MTU = 20,
  VHOST_USER_GET_MAX_MEM_SLOTS = 36,
  VHOST_USER_ADD_MEM_REG = 37,
  VHOST_USER_REM_MEM_REG = 38,
  VHOST_USER_REQUEST_MAX = 64,
};

constexpr uint64_t VHOST_USER_F_PROTOCOL_FEATURES = 30;

enum : uint32_t {
  VHOST_USER_PROTOCOL_F_MQ = 0,
  VHOST_USER_PROTOCOL_F_LOG_SHMFD = 1,
  VHOST_USER_PROTOCOL_F_REPLY_ACK = 3,
  VHOST_USER_PROTOCOL_F_MTU = 4,
  VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS = 15,
};

constexpr uint32_t VHOST_USER_VERSION = 0x1;
constexpr uint32_t VHOST_USER_VERSION_MASK = 0x3;
constexpr uint32_t VHOST_USER_REPLY_MASK = 0x1 << 2;
constexpr uint32_t VHOST_USER_NEED_REPLY_MASK = 0x1 << 3;

constexpr uint64_t VHOST_USER_VRING_IDX_MASK = 0xff;
constexpr uint64_t VHOST_USER_VRING_NOFD_MASK = 0x1 << 8;

constexpr uint32_t kVhostUserMaxFds = 8;  // VHOST_MEMORY_BASELINE_NREGIONS, the most fds one message carries

#pragma pack(push, 1)
struct VhostUserMemRegion {
  uint64_t guest_phys_addr;
  uint64_t memory_size;
  uint64_t userspace_addr;
  uint64_t mmap_offset;
};
struct VhostUserMemory {
  uint32_t nregions;
  uint32_t padding;
  VhostUserMemRegion regions[kVhostUserMaxFds];
};
struct VhostUserMemRegMsg {  // ADD_MEM_REG / REM_MEM_REG
  uint64_t padding;
  VhostUserMemRegion region;
};
struct VhostUserVringState {
  uint32_t index;
  uint32_t num;
};
struct VhostUserVringAddr {
  uint32_t index;
  uint32_t flags;
  uint64_t desc_user_addr;
  uint64_t used_user_addr;
  uint64_t avail_user_addr;
  uint64_t log_guest_addr;
};
struct VhostUserHeader {
  uint32_t request;
  uint32_t flags;
  uint32_t size;  // payload bytes that follow
};
struct VhostUserMsg {
  VhostUserHeader hdr;
  union {
    uint64_t u64;
    VhostUserVringState state;
    VhostUserVringAddr addr;
    VhostUserMemory memory;
    VhostUserMemRegMsg memreg;
    uint8_t raw[256];  // anything larger than we understand is refused before it is read here
  } payload;
};
#pragma pack(pop)

constexpr size_t kVhostUserHeaderSize = sizeof(VhostUserHeader);
constexpr size_t kVhostUserMaxPayload = sizeof(VhostUserMsg::payload);

enum class WireResult { kOk, kClosed, kError };

// Receives one message. On kOk, *nfds fds are stored in fds (the caller owns them). Rejects (kError,
// with every received fd closed) a payload larger than kVhostUserMaxPayload or more than max_fds fds.
// kClosed when the peer hung up cleanly before a header. Blocking on fd; EINTR is retried.
WireResult vhost_user_recv(int sock, VhostUserMsg* msg, int* fds, size_t max_fds, size_t* nfds);
// Reassembles messages from a non-blocking stream socket, read by read by, so that a front end sending
// a byte at a time costs the control thread one short recvmsg per byte and never a wait: the header,
// payload and SCM_RIGHTS fds received so far stay here until the message is whole. It never reads past
// the message it is assembling, so fds of the next message (they ride on its first byte) are not taken
// early. Used by the backend; our front end waits for replies and uses vhost_user_recv.
class MessageReader {
 public:
  enum class Result { kMessage, kPending, kClosed, kError };

  MessageReader() = default;
  MessageReader(const MessageReader&) = delete;
  MessageReader& operator=(const MessageReader&) = delete;
  ~MessageReader() { reset(); }

  // Reads what has arrived. kMessage: a whole message is in *msg and its *nfds fds in fds (the caller
  // owns them; the reader starts on the next message). kPending: the socket has nothing more for now.
  // kClosed: the peer hung up between messages. kError: *why says what was wrong (a hang-up mid-message,
  // a payload over kVhostUserMaxPayload, more than kVhostUserMaxFds fds); every fd is closed.
  Result read(int sock, VhostUserMsg* msg, int* fds, size_t* nfds, std::string* why);
  // Whether part of a message has arrived, and since when (CLOCK_MONOTONIC, ms).
  bool in_message() const { return got_ > 0 || nfds_ > 0; }
  int64_t message_started_ms() const { return started_ms_; }
  // Forgets the partial message and closes the fds it brought.
  void reset();

 private:
  VhostUserMsg msg_ = {};
  size_t got_ = 0;
  int fds_[kVhostUserMaxFds];
  size_t nfds_ = 0;
  int64_t started_ms_ = 0;
};

int64_t monotonic_ms();

// Sends header plus hdr.size bytes of payload and nfds fds. Returns false (errno set) on failure.
bool vhost_user_send(int sock, const VhostUserMsg& msg, const int* fds, size_t nfds);
// Attaches nfds (> 0) fds to mh as one SCM_RIGHTS message built in control, which must hold at least
// CMSG_SPACE(sizeof(int) * nfds) bytes aligned for cmsghdr.
void attach_fds(msghdr* mh, void* control, const int* fds, size_t nfds);

}  // namespace vw
