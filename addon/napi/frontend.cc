// The N-API surface of the test front end (addon/frontend), built as its own addon (vhostwire_frontend)
// so the production addon carries no hostile-guest surface. Loaded only by the tests and the `peer`
// command; declared for TypeScript in src/harness/frontend-native.ts.
#include <napi.h>

#include <memory>

#include "frontend/guest_ram.h"
#include "frontend/vhost_user_client.h"
#include "frontend/virtio_user.h"
#include "napi/convert.h"

namespace {

using vw::VirtioUser;
using vw::napi::make_error;
using vw::napi::u32;
using vw::napi::u64;

class VirtioUserWrap : public Napi::ObjectWrap<VirtioUserWrap> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "VirtioUser",
                       {
                           InstanceMethod<&VirtioUserWrap::Features>("features"),
                           InstanceMethod<&VirtioUserWrap::ProtocolFeatures>("protocolFeatures"),
                           InstanceMethod<&VirtioUserWrap::Connected>("connected"),
                           InstanceMethod<&VirtioUserWrap::Send>("send"),
                           InstanceMethod<&VirtioUserWrap::Receive>("receive"),
                           InstanceMethod<&VirtioUserWrap::StartTraffic>("startTraffic"),
                           InstanceMethod<&VirtioUserWrap::StopTraffic>("stopTraffic"),
                           InstanceMethod<&VirtioUserWrap::Stats>("stats"),
                           InstanceMethod<&VirtioUserWrap::Alloc>("alloc"),
                           InstanceMethod<&VirtioUserWrap::MemWrite>("memWrite"),
                           InstanceMethod<&VirtioUserWrap::MemRead>("memRead"),
                           InstanceMethod<&VirtioUserWrap::MemSize>("memSize"),
                           InstanceMethod<&VirtioUserWrap::RawDesc>("rawDesc"),
                           InstanceMethod<&VirtioUserWrap::RawAvailPush>("rawAvailPush"),
                           InstanceMethod<&VirtioUserWrap::RawSetAvailIdx>("rawSetAvailIdx"),
                           InstanceMethod<&VirtioUserWrap::RawUsedIdx>("rawUsedIdx"),
                           InstanceMethod<&VirtioUserWrap::RawUsedElem>("rawUsedElem"),
                           InstanceMethod<&VirtioUserWrap::Kick>("kick"),
                           InstanceMethod<&VirtioUserWrap::WaitCall>("waitCall"),
                           InstanceMethod<&VirtioUserWrap::RawMessage>("rawMessage"),
                           InstanceMethod<&VirtioUserWrap::AddRegion>("addRegion"),
                           InstanceMethod<&VirtioUserWrap::RemoveRegion>("removeRegion"),
                           InstanceMethod<&VirtioUserWrap::Regions>("regions"),
                           InstanceMethod<&VirtioUserWrap::MemFd>("memFd"),
                           InstanceMethod<&VirtioUserWrap::RingAddrs>("ringAddrs"),
                           InstanceMethod<&VirtioUserWrap::VringFds>("vringFds"),
                           InstanceMethod<&VirtioUserWrap::SetVringErr>("setVringErr"),
                           InstanceMethod<&VirtioUserWrap::ReadErr>("readErr"),
                           InstanceMethod<&VirtioUserWrap::RestartVring>("restartVring"),
                           InstanceMethod<&VirtioUserWrap::RawBytes>("rawBytes"),
                           InstanceMethod<&VirtioUserWrap::MakeFd>("makeFd"),
                           InstanceMethod<&VirtioUserWrap::StartRacer>("startRacer"),
                           InstanceMethod<&VirtioUserWrap::StopRacer>("stopRacer"),
                           InstanceMethod<&VirtioUserWrap::Close>("close"),
                       });
  }

  explicit VirtioUserWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<VirtioUserWrap>(info) {
    Napi::Env env = info.Env();
    if (!info[0].IsObject()) throw make_error(env, "VirtioUser options must be an object", "ERR_INVALID_ARG_TYPE");
    Napi::Object o = info[0].As<Napi::Object>();
    vw::VirtioUserOptions opt;
    opt.path = o.Get("path").ToString();
    auto flag = [&](const char* k, bool& dst) {
      Napi::Value v = o.Get(k);
      if (!v.IsUndefined()) dst = v.ToBoolean();
    };
    auto num = [&](const char* k, auto& dst) {
      Napi::Value v = o.Get(k);
      if (!v.IsUndefined()) dst = decltype(dst + 0)(u64(v, k));
    };
    flag("server", opt.server);
    flag("mrgRxbuf", opt.mrg_rxbuf);
    flag("indirect", opt.indirect);
    flag("eventIdx", opt.event_idx);
    flag("txIndirect", opt.tx_indirect);
    flag("interrupts", opt.interrupts);
    flag("offloads", opt.offloads);
    num("queuePairs", opt.queue_pairs);
    num("queueSize", opt.queue_size);
    num("memRegions", opt.mem_regions);
    num("memSize", opt.mem_size);
    num("rxBufSize", opt.rx_buf_size);
    num("mtu", opt.mtu);
    num("timeoutMs", opt.timeout_ms);
    std::string err;
    vu_ = VirtioUser::create(opt, &err);
    if (!vu_) throw make_error(env, opt.path + ": " + err, "ERR_VHOST_USER_CONNECT");
  }

 private:
  VirtioUser& vu(Napi::Env env) {
    if (!vu_) throw make_error(env, "the front end is closed", "ERR_CLOSED");
    return *vu_;
  }

  Napi::Value Features(const Napi::CallbackInfo& info) {
    return Napi::BigInt::New(info.Env(), vu(info.Env()).features());
  }
  Napi::Value ProtocolFeatures(const Napi::CallbackInfo& info) {
    return Napi::BigInt::New(info.Env(), vu(info.Env()).protocol_features());
  }
  Napi::Value Connected(const Napi::CallbackInfo& info) {
    return Napi::Boolean::New(info.Env(), vu_ && vu_->connected());
  }
  Napi::Value Send(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!info[1].IsBuffer()) throw make_error(env, "frame must be a Buffer", "ERR_INVALID_ARG_TYPE");
    auto b = info[1].As<Napi::Buffer<uint8_t>>();
    const uint8_t* hdr = nullptr;
    if (!info[2].IsUndefined()) {
      if (!info[2].IsBuffer() || info[2].As<Napi::Buffer<uint8_t>>().Length() < 10)
        throw make_error(env, "header must be a Buffer of at least 10 bytes", "ERR_INVALID_ARG_TYPE");
      hdr = info[2].As<Napi::Buffer<uint8_t>>().Data();
    }
    return Napi::Boolean::New(env, vu(env).send(uint16_t(u32(info[0], "qp")), b.Data(), uint32_t(b.Length()), hdr));
  }
  Napi::Value Receive(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto frames = vu(env).receive(uint16_t(u32(info[0], "qp")), u32(info[1], "max"), info[2].ToBoolean());
    Napi::Array out = Napi::Array::New(env, frames.size());
    for (size_t i = 0; i < frames.size(); i++)
      out.Set(uint32_t(i), Napi::Buffer<uint8_t>::Copy(env, frames[i].data(), frames[i].size()));
    return out;
  }
  Napi::Value StartTraffic(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    vw::TrafficOptions t;
    if (info[0].IsObject()) {
      Napi::Object o = info[0].As<Napi::Object>();
      if (!o.Get("txSize").IsUndefined()) t.tx_size = u32(o.Get("txSize"), "txSize");
      if (!o.Get("txCount").IsUndefined()) t.tx_count = u64(o.Get("txCount"), "txCount");
      if (!o.Get("txRate").IsUndefined()) t.tx_rate = o.Get("txRate").ToNumber().DoubleValue();
      if (!o.Get("rx").IsUndefined()) t.rx = o.Get("rx").ToBoolean();
    }
    std::string err;
    if (!vu(env).start_traffic(t, &err)) throw make_error(env, err);
    return env.Undefined();
  }
  Napi::Value StopTraffic(const Napi::CallbackInfo& info) {
    vu(info.Env()).stop_traffic();
    return info.Env().Undefined();
  }
  Napi::Value Stats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    vw::VirtioUserStats s = vu(env).stats();
    Napi::Object o = Napi::Object::New(env);
    o.Set("txPackets", double(s.tx_packets));
    o.Set("txBytes", double(s.tx_bytes));
    o.Set("txRingFull", double(s.tx_ring_full));
    o.Set("rxPackets", double(s.rx_packets));
    o.Set("rxBytes", double(s.rx_bytes));
    o.Set("kicks", double(s.kicks));
    o.Set("calls", double(s.calls));
    return o;
  }
  Napi::Value Alloc(const Napi::CallbackInfo& info) {
    return Napi::BigInt::New(info.Env(), vu(info.Env()).alloc(u64(info[0], "len")));
  }
  Napi::Value MemWrite(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!info[1].IsBuffer()) throw make_error(env, "data must be a Buffer", "ERR_INVALID_ARG_TYPE");
    auto b = info[1].As<Napi::Buffer<uint8_t>>();
    return Napi::Boolean::New(env, vu(env).mem_write(u64(info[0], "gpa"), b.Data(), b.Length()));
  }
  Napi::Value MemRead(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint32_t len = u32(info[1], "len");
    std::vector<uint8_t> buf(len);
    if (!vu(env).mem_read(u64(info[0], "gpa"), buf.data(), len)) return env.Null();
    return Napi::Buffer<uint8_t>::Copy(env, buf.data(), len);
  }
  Napi::Value MemSize(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), double(vu(info.Env()).mem_size()));
  }
  Napi::Value RawDesc(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!info[2].IsObject()) throw make_error(env, "descriptor must be an object", "ERR_INVALID_ARG_TYPE");
    Napi::Object d = info[2].As<Napi::Object>();
    vw::RawDesc rd{u64(d.Get("addr"), "addr"), u32(d.Get("len"), "len"), uint16_t(u32(d.Get("flags"), "flags")),
                   uint16_t(u32(d.Get("next"), "next"))};
    vu(env).raw_desc(uint16_t(u32(info[0], "vring")), uint16_t(u32(info[1], "idx")), rd);
    return env.Undefined();
  }
  Napi::Value RawAvailPush(const Napi::CallbackInfo& info) {
    vu(info.Env()).raw_avail_push(uint16_t(u32(info[0], "vring")), uint16_t(u32(info[1], "head")));
    return info.Env().Undefined();
  }
  Napi::Value RawSetAvailIdx(const Napi::CallbackInfo& info) {
    vu(info.Env()).raw_set_avail_idx(uint16_t(u32(info[0], "vring")), uint16_t(u32(info[1], "idx")));
    return info.Env().Undefined();
  }
  Napi::Value RawUsedIdx(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), vu(info.Env()).raw_used_idx(uint16_t(u32(info[0], "vring"))));
  }
  Napi::Value RawUsedElem(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint32_t id = 0, len = 0;
    vu(env).raw_used_elem(uint16_t(u32(info[0], "vring")), uint16_t(u32(info[1], "pos")), &id, &len);
    Napi::Object o = Napi::Object::New(env);
    o.Set("id", id);
    o.Set("len", len);
    return o;
  }
  Napi::Value Kick(const Napi::CallbackInfo& info) {
    vu(info.Env()).kick(uint16_t(u32(info[0], "vring")));
    return info.Env().Undefined();
  }
  Napi::Value WaitCall(const Napi::CallbackInfo& info) {
    return Napi::Boolean::New(
        info.Env(), vu(info.Env()).wait_call(uint16_t(u32(info[0], "vring")), int(u32(info[1], "timeoutMs"))));
  }
  Napi::Value RawMessage(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!info[2].IsBuffer() || !info[3].IsArray())
      throw make_error(env, "rawMessage(request, flags, payload: Buffer, fds: number[], wantReply)",
                       "ERR_INVALID_ARG_TYPE");
    auto payload = info[2].As<Napi::Buffer<uint8_t>>();
    Napi::Array fa = info[3].As<Napi::Array>();
    std::vector<int> fds;
    for (uint32_t i = 0; i < fa.Length(); i++) fds.push_back(fa.Get(i).As<Napi::Number>().Int32Value());
    bool want = info[4].ToBoolean();
    std::vector<uint8_t> reply;
    std::string err;
    if (!vu(env).raw_message(u32(info[0], "request"), u32(info[1], "flags"), payload.Data(), uint32_t(payload.Length()),
                             fds.data(), fds.size(), want, &reply, &err))
      throw make_error(env, err);
    if (!want) return env.Null();
    return Napi::Buffer<uint8_t>::Copy(env, reply.data(), reply.size());
  }
  Napi::Value AddRegion(const Napi::CallbackInfo& info) {
    std::string err;
    if (!vu(info.Env()).add_region(u64(info[0], "len"), &err)) throw make_error(info.Env(), err);
    return info.Env().Undefined();
  }
  Napi::Value RemoveRegion(const Napi::CallbackInfo& info) {
    std::string err;
    if (!vu(info.Env()).remove_region(u32(info[0], "index"), &err)) throw make_error(info.Env(), err);
    return info.Env().Undefined();
  }
  Napi::Value Regions(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto rs = vu(env).regions();
    Napi::Array out = Napi::Array::New(env, rs.size());
    for (size_t i = 0; i < rs.size(); i++) {
      Napi::Object o = Napi::Object::New(env);
      o.Set("gpa", Napi::BigInt::New(env, rs[i].gpa));
      o.Set("size", Napi::BigInt::New(env, rs[i].size));
      o.Set("uaddr", Napi::BigInt::New(env, rs[i].uaddr));
      o.Set("offset", Napi::BigInt::New(env, rs[i].offset));
      o.Set("removed", rs[i].removed);
      out.Set(uint32_t(i), o);
    }
    return out;
  }
  Napi::Value MemFd(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), vu(info.Env()).mem_fd()); }
  Napi::Value RingAddrs(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    vw::RingAddrs a;
    if (!vu(env).ring_addrs(uint16_t(u32(info[0], "vring")), &a))
      throw make_error(env, "no such vring", "ERR_OUT_OF_RANGE");
    Napi::Object o = Napi::Object::New(env);
    o.Set("desc", Napi::BigInt::New(env, a.desc));
    o.Set("avail", Napi::BigInt::New(env, a.avail));
    o.Set("used", Napi::BigInt::New(env, a.used));
    return o;
  }
  Napi::Value VringFds(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int kick, call, err;
    if (!vu(env).vring_fds(uint16_t(u32(info[0], "vring")), &kick, &call, &err))
      throw make_error(env, "no such vring", "ERR_OUT_OF_RANGE");
    Napi::Object o = Napi::Object::New(env);
    o.Set("kick", kick);
    o.Set("call", call);
    o.Set("err", err);
    return o;
  }
  Napi::Value SetVringErr(const Napi::CallbackInfo& info) {
    std::string err;
    if (!vu(info.Env()).set_vring_err(uint16_t(u32(info[0], "vring")), &err)) throw make_error(info.Env(), err);
    return info.Env().Undefined();
  }
  Napi::Value ReadErr(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), double(vu(info.Env()).read_err(uint16_t(u32(info[0], "vring")))));
  }
  Napi::Value RestartVring(const Napi::CallbackInfo& info) {
    std::string err;
    uint16_t base = 0;
    if (!vu(info.Env()).restart_vring(uint16_t(u32(info[0], "vring")), &base, &err)) throw make_error(info.Env(), err);
    return Napi::Number::New(info.Env(), base);
  }
  static std::vector<int> fd_list(const Napi::Value& v) {
    std::vector<int> fds;
    if (!v.IsArray()) return fds;
    Napi::Array a = v.As<Napi::Array>();
    for (uint32_t i = 0; i < a.Length(); i++) fds.push_back(a.Get(i).As<Napi::Number>().Int32Value());
    return fds;
  }
  Napi::Value RawBytes(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!info[0].IsBuffer()) throw make_error(env, "rawBytes(data: Buffer, fds?: number[])", "ERR_INVALID_ARG_TYPE");
    auto b = info[0].As<Napi::Buffer<uint8_t>>();
    std::vector<int> fds = fd_list(info[1]);
    std::string err;
    if (!vu(env).raw_bytes(b.Data(), b.Length(), fds.data(), fds.size(), &err)) throw make_error(env, err);
    return env.Undefined();
  }
  Napi::Value MakeFd(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string err;
    uint64_t size = info[1].IsUndefined() ? 0 : u64(info[1], "size");
    int fd = VirtioUser::make_fd(info[0].ToString(), size, &err);
    if (fd < 0) throw make_error(env, err);
    return Napi::Number::New(env, fd);
  }
  Napi::Value StartRacer(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!info[0].IsObject()) throw make_error(env, "racer options must be an object", "ERR_INVALID_ARG_TYPE");
    Napi::Object o = info[0].As<Napi::Object>();
    vw::RacerOptions ro;
    ro.vring = uint16_t(u32(o.Get("vring"), "vring"));
    Napi::Value hv = o.Get("heads");
    if (hv.IsArray()) {
      Napi::Array ha = hv.As<Napi::Array>();
      for (uint32_t i = 0; i < ha.Length(); i++) ro.heads.push_back(uint16_t(u32(ha.Get(i), "head")));
    }
    ro.restart = o.Get("restart").ToBoolean();
    Napi::Value tv = o.Get("targets");
    if (!tv.IsArray()) throw make_error(env, "targets must be an array", "ERR_INVALID_ARG_TYPE");
    Napi::Array ta = tv.As<Napi::Array>();
    for (uint32_t i = 0; i < ta.Length(); i++) {
      if (!ta.Get(i).IsObject()) throw make_error(env, "a target must be an object", "ERR_INVALID_ARG_TYPE");
      Napi::Object t = ta.Get(i).As<Napi::Object>();
      vw::RacerTarget rt;
      rt.gpa = u64(t.Get("gpa"), "gpa");
      Napi::Value vv = t.Get("values");
      if (!vv.IsArray()) throw make_error(env, "values must be an array of Buffers", "ERR_INVALID_ARG_TYPE");
      Napi::Array va = vv.As<Napi::Array>();
      for (uint32_t k = 0; k < va.Length(); k++) {
        if (!va.Get(k).IsBuffer()) throw make_error(env, "values must be an array of Buffers", "ERR_INVALID_ARG_TYPE");
        auto b = va.Get(k).As<Napi::Buffer<uint8_t>>();
        rt.values.emplace_back(b.Data(), b.Data() + b.Length());
      }
      ro.targets.push_back(std::move(rt));
    }
    std::string err;
    if (!vu(env).start_racer(ro, &err)) throw make_error(env, err);
    return env.Undefined();
  }
  Napi::Value StopRacer(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    vw::RacerStats s = vu(env).stop_racer();
    Napi::Object o = Napi::Object::New(env);
    o.Set("rounds", double(s.rounds));
    o.Set("posted", double(s.posted));
    o.Set("restarts", double(s.restarts));
    o.Set("failedRestarts", double(s.failed_restarts));
    return o;
  }
  Napi::Value Close(const Napi::CallbackInfo& info) {
    vu_.reset();
    return info.Env().Undefined();
  }

  std::unique_ptr<VirtioUser> vu_;
};

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("VirtioUser", VirtioUserWrap::Init(env));
  exports.Set("guestBase", Napi::BigInt::New(env, uint64_t(vw::GuestRam::kGuestBase)));
  Napi::Object requests = Napi::Object::New(env);
  for (const auto& [name, number] : vw::vhost_user_requests()) requests.Set(name, number);
  exports.Set("requests", requests);
  // What a test needs to write vhost-user messages byte by byte (test/support/vhost-user-wire.ts).
  Napi::Object wire = Napi::Object::New(env);
  wire.Set("version", vw::VHOST_USER_VERSION);
  wire.Set("needReply", vw::VHOST_USER_NEED_REPLY_MASK);
  wire.Set("vringNoFd", uint32_t(vw::VHOST_USER_VRING_NOFD_MASK));
  wire.Set("headerSize", uint32_t(vw::kVhostUserHeaderSize));
  wire.Set("maxPayload", uint32_t(vw::kVhostUserMaxPayload));
  wire.Set("maxFds", vw::kVhostUserMaxFds);
  exports.Set("wire", wire);
  return exports;
}

}  // namespace

NODE_API_MODULE(vhostwire_frontend, Init)
