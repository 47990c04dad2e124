// What both addons' N-API surfaces (binding.cc, frontend.cc) need: errors with a code, and numbers from
// JavaScript checked before they reach C++.
#pragma once

#include <napi.h>

#include <cstdint>
#include <string>

namespace vw::napi {

inline Napi::Error make_error(Napi::Env env, const std::string& msg, const char* code = "ERR_VHOSTWIRE") {
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("code", Napi::String::New(env, code));
  return e;
}

inline uint32_t u32(const Napi::Value& v, const char* what) {
  if (!v.IsNumber()) throw make_error(v.Env(), std::string(what) + " must be a number", "ERR_INVALID_ARG_TYPE");
  double d = v.As<Napi::Number>().DoubleValue();
  if (d < 0 || d > 4294967295.0 || d != double(uint64_t(d)))
    throw make_error(v.Env(), std::string(what) + " must be a whole number from 0 to 2^32-1", "ERR_OUT_OF_RANGE");
  return uint32_t(d);
}

// A bigint as it is, or a number that is a safe integer.
inline uint64_t u64(const Napi::Value& v, const char* what) {
  if (v.IsBigInt()) {
    bool lossless;
    return v.As<Napi::BigInt>().Uint64Value(&lossless);
  }
  if (!v.IsNumber()) throw make_error(v.Env(), std::string(what) + " must be a number", "ERR_INVALID_ARG_TYPE");
  double d = v.As<Napi::Number>().DoubleValue();
  if (d < 0 || d > 9007199254740991.0 || d != double(uint64_t(d)))
    throw make_error(v.Env(), std::string(what) + " must be a whole number >= 0", "ERR_OUT_OF_RANGE");
  return uint64_t(d);
}

}  // namespace vw::napi
