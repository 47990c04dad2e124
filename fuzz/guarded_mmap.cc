// Guard pages around every guest memory mapping, for the fuzzers only.
//
// fuzz/build.sh compiles addon/guest_memory.cc with -Dmmap=vw_guarded_mmap -Dmunmap=vw_guarded_munmap,
// so the mappings GuestMemory makes of the front end's fds come from here: each one is placed between
// two PROT_NONE pages. ASan does not see mmap'd memory, so without them a read or write just past a
// region would land silently in whatever mapping happens to be next; with them it is a SIGSEGV that
// libFuzzer reports as a crash.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>

extern "C" {

void* vw_guarded_mmap(void* addr, size_t len, int prot, int flags, int fd, off_t off) {
  const size_t pg = size_t(sysconf(_SC_PAGESIZE));
  if (addr != nullptr || (flags & MAP_FIXED) || len % pg) return mmap(addr, len, prot, flags, fd, off);
  // Reserve [guard][len][guard] as inaccessible, then map the fd over the middle.
  uint8_t* r =
      static_cast<uint8_t*>(mmap(nullptr, len + 2 * pg, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
  if (r == MAP_FAILED) return MAP_FAILED;
  void* p = mmap(r + pg, len, prot, flags | MAP_FIXED, fd, off);
  if (p == MAP_FAILED) {
    munmap(r, len + 2 * pg);
    return MAP_FAILED;
  }
  return p;
}

int vw_guarded_munmap(void* addr, size_t len) {
  const size_t pg = size_t(sysconf(_SC_PAGESIZE));
  if (len % pg) return munmap(addr, len);
  return munmap(static_cast<uint8_t*>(addr) - pg, len + 2 * pg);
}

}  // extern "C"
