// How the front end reports a failure: false (or null) to the caller, one sentence in *err.
#pragma once

#include <errno.h>

#include <cstring>
#include <string>

namespace vw {

inline bool fail(std::string* err, std::string msg) {
  if (err) *err = std::move(msg);
  return false;
}

inline std::string sys_error(const std::string& what) { return what + ": " + strerror(errno); }

}  // namespace vw
