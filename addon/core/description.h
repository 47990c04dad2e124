// What a port says about itself for people and tools (GET /api/ports, `vhostwire stats`): a small tree
// of named values that the N-API layer turns into a plain JavaScript object without knowing the port's
// kind. Built on the control side, never on the data path.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace vw {

class Description {
 public:
  struct Value {
    enum class Type { kString, kNumber, kBool, kU64, kList } type;
    std::string s;
    double d = 0;
    bool b = false;
    uint64_t u = 0;  // kU64: given to JavaScript as a BigInt (feature bits)
    std::vector<Description> list;
  };

  void set(const std::string& key, const std::string& v) { add(key, Value{Value::Type::kString, v}); }
  void set(const std::string& key, const char* v) { set(key, std::string(v)); }
  void set(const std::string& key, double v) { add(key, Value{Value::Type::kNumber, {}, v}); }
  void set(const std::string& key, int v) { set(key, double(v)); }
  void set(const std::string& key, unsigned v) { set(key, double(v)); }
  void set(const std::string& key, bool v) { add(key, Value{Value::Type::kBool, {}, 0, v}); }
  void set_u64(const std::string& key, uint64_t v) { add(key, Value{Value::Type::kU64, {}, 0, false, v}); }
  // A list of objects under key; returns it to be filled.
  std::vector<Description>& list(const std::string& key) {
    add(key, Value{Value::Type::kList});
    return fields_.back().second.list;
  }

  const std::vector<std::pair<std::string, Value>>& fields() const { return fields_; }

 private:
  void add(const std::string& key, Value v) { fields_.emplace_back(key, std::move(v)); }
  std::vector<std::pair<std::string, Value>> fields_;
};

}  // namespace vw
