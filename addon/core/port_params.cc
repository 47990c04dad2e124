#include "core/port_params.h"

#include <cmath>

namespace vw {

bool PortParams::str(const char* key, std::string* out, std::string* err) const {
  auto it = values_.find(key);
  if (it == values_.end() || !std::holds_alternative<std::string>(it->second)) {
    *err = std::string("parameter ") + key + " must be a string";
    return false;
  }
  *out = std::get<std::string>(it->second);
  return true;
}

bool PortParams::num(const char* key, uint64_t def, uint64_t min, uint64_t max, uint64_t* out, std::string* err) const {
  auto it = values_.find(key);
  if (it == values_.end()) {
    *out = def;
    return true;
  }
  const double* d = std::get_if<double>(&it->second);
  if (!d || !(*d >= double(min) && *d <= double(max)) || std::floor(*d) != *d) {
    *err = std::string("parameter ") + key + " must be a whole number from " + std::to_string(min) + " to " +
           std::to_string(max);
    return false;
  }
  *out = uint64_t(*d);
  return true;
}

bool PortParams::flag(const char* key, bool* out, std::string* err) const {
  auto it = values_.find(key);
  if (it == values_.end()) {
    *out = false;
    return true;
  }
  const bool* b = std::get_if<bool>(&it->second);
  if (!b) {
    *err = std::string("parameter ") + key + " must be true or false";
    return false;
  }
  *out = *b;
  return true;
}

}  // namespace vw
