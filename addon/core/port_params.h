// What a port is created from: the parameters its kind takes, by name.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <variant>

namespace vw {

// A port's parameters as JavaScript handed them over: strings, numbers and booleans by name. The getters
// keep a wrong call from reaching a port (a missing or mistyped value is an error naming the key), they
// do not replace the validation of user input in TypeScript.
class PortParams {
 public:
  using Value = std::variant<bool, double, std::string>;
  void set(const std::string& key, Value v) { values_[key] = std::move(v); }

  bool str(const char* key, std::string* out, std::string* err) const;
  // A whole number in [min, max]; def when absent.
  bool num(const char* key, uint64_t def, uint64_t min, uint64_t max, uint64_t* out, std::string* err) const;
  bool flag(const char* key, bool* out, std::string* err) const;
  bool has(const char* key) const { return values_.count(key) != 0; }

 private:
  std::map<std::string, Value> values_;
};

}  // namespace vw
