// The N-API surface of the addon, and nothing else: argument unpacking, errors as JavaScript Errors
// with a code, events marshalled to the JS thread. Arguments arrive already validated by TypeScript
// (src/options.ts); the checks here only keep a wrong call from reaching the core. Declared for
// TypeScript in src/native.ts.
#include <napi.h>

#include <atomic>
#include <memory>

#include "core/counters.h"
#include "core/guest_memory.h"
#include "runtime/engine.h"
#include "frontend/virtio_user.h"
#include "runtime/privileges.h"

namespace {

using vw::Engine;
using vw::PortEvent;
using vw::VirtioUser;

// Events waiting for the JS thread. Each is a few hundred bytes; a front end that floods refusals (or a
// JS thread that is busy) must not grow the queue without end. Beyond this many, events are dropped and
// counted (eventsDropped): a flood loses its repeats. A dropped ring-broken event still shows in the
// port's counters; a dropped refusal only in that count.
constexpr size_t kMaxQueuedEvents = 1024;

Napi::Error make_error(Napi::Env env, const std::string& msg, const char* code = "ERR_VHOSTWIRE") {
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("code", Napi::String::New(env, code));
  return e;
}

Napi::Object counter_info(Napi::Env env, const vw::CounterInfo& c) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("id", c.id);
  o.Set("family", c.family);
  o.Set("labels", c.labels);
  o.Set("help", c.help);
  return o;
}

vw::Mode parse_mode(const Napi::Value& v) {
  std::string m = v.ToString();
  if (m == "bypass") return vw::Mode::kBypass;
  if (m == "kernel") return vw::Mode::kKernel;
  throw make_error(v.Env(), "mode must be \"bypass\" or \"kernel\", not \"" + m + "\"", "ERR_INVALID_ARG_VALUE");
}

uint32_t u32(const Napi::Value& v, const char* what) {
  if (!v.IsNumber()) throw make_error(v.Env(), std::string(what) + " must be a number", "ERR_INVALID_ARG_TYPE");
  double d = v.As<Napi::Number>().DoubleValue();
  if (d < 0 || d > 4294967295.0 || d != double(uint64_t(d)))
    throw make_error(v.Env(), std::string(what) + " must be a whole number from 0 to 2^32-1", "ERR_OUT_OF_RANGE");
  return uint32_t(d);
}

uint64_t u64(const Napi::Value& v, const char* what) {
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

// Copies a port's self-description onto o, whatever its kind.
void set_description(Napi::Object o, const vw::Description& d) {
  Napi::Env env = o.Env();
  for (const auto& [key, v] : d.fields()) {
    using T = vw::Description::Value::Type;
    switch (v.type) {
      case T::kString: o.Set(key, v.s); break;
      case T::kNumber: o.Set(key, v.d); break;
      case T::kBool: o.Set(key, v.b); break;
      case T::kU64: o.Set(key, Napi::BigInt::New(env, v.u)); break;
      case T::kList: {
        Napi::Array a = Napi::Array::New(env, v.list.size());
        for (size_t i = 0; i < v.list.size(); i++) {
          Napi::Object e = Napi::Object::New(env);
          set_description(e, v.list[i]);
          a.Set(uint32_t(i), e);
        }
        o.Set(key, a);
        break;
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------
class EngineWrap : public Napi::ObjectWrap<EngineWrap> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "Engine",
                       {
                           InstanceMethod<&EngineWrap::AddPort>("addPort"),
                           InstanceMethod<&EngineWrap::RemovePort>("removePort"),
                           InstanceMethod<&EngineWrap::Wire>("wire"),
                           InstanceMethod<&EngineWrap::Unwire>("unwire"),
                           InstanceMethod<&EngineWrap::SetMode>("setMode"),
                           InstanceMethod<&EngineWrap::Ports>("ports"),
                           InstanceMethod<&EngineWrap::Forwarders>("forwarders"),
                           InstanceMethod<&EngineWrap::Counters>("counters"),
                           InstanceMethod<&EngineWrap::CounterLayout>("counterLayout"),
                           InstanceMethod<&EngineWrap::EventsDropped>("eventsDropped"),
                           InstanceMethod<&EngineWrap::Close>("close"),
                       });
  }

  explicit EngineWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<EngineWrap>(info) {
    Napi::Env env = info.Env();
    if (!info[0].IsObject()) throw make_error(env, "Engine options must be an object", "ERR_INVALID_ARG_TYPE");
    Napi::Object o = info[0].As<Napi::Object>();
    Napi::Value on_event = o.Get("onEvent");
    if (!on_event.IsFunction()) throw make_error(env, "onEvent must be a function", "ERR_INVALID_ARG_TYPE");
    Napi::Value cores_v = o.Get("pmdCores");
    if (!cores_v.IsArray()) throw make_error(env, "pmdCores must be an array", "ERR_INVALID_ARG_TYPE");
    Napi::Array cores_a = cores_v.As<Napi::Array>();
    std::vector<int> cores;
    for (uint32_t i = 0; i < cores_a.Length(); i++) {
      Napi::Value c = cores_a.Get(i);
      cores.push_back(c.IsNumber() ? c.As<Napi::Number>().Int32Value() : -1);
    }
    // Unlimited here: `queued` below bounds it, and does so before anything is allocated.
    tsfn_ = Napi::ThreadSafeFunction::New(env, on_event.As<Napi::Function>(), "vhostwire events", 0, 1);
    tsfn_open_ = true;
    // Copy the handle: the sink may run on any native thread, including after this wrapper is gone
    // (it is not: close() joins every thread before releasing), and must not touch the wrapper.
    Napi::ThreadSafeFunction tsfn = tsfn_;
    auto dropped = events_dropped_;
    // Events handed to the queue and not yet taken by the JS thread. Checked before the copy is made, so
    // an event beyond the bound costs two atomic operations and no allocation: a flood cannot even churn
    // the allocator.
    auto queued = std::make_shared<std::atomic<size_t>>(0);
    engine_ = std::make_unique<Engine>(parse_mode(o.Get("mode")), [tsfn, dropped, queued](const PortEvent& ev) mutable {
      if (queued->fetch_add(1, std::memory_order_relaxed) >= kMaxQueuedEvents) {
        queued->fetch_sub(1, std::memory_order_relaxed);
        dropped->fetch_add(1, std::memory_order_relaxed);
        return;
      }
      auto* copy = new PortEvent(ev);
      napi_status s = tsfn.NonBlockingCall(copy, [queued](Napi::Env env, Napi::Function cb, PortEvent* e) {
        queued->fetch_sub(1, std::memory_order_relaxed);
        Napi::Object o = Napi::Object::New(env);
        o.Set("kind", e->kind);
        o.Set("port", e->port);
        o.Set("queue", e->queue);
        o.Set("reason", e->reason);
        delete e;
        cb.Call({o});
      });
      // Closing: the event has nowhere to go.
      if (s != napi_ok) {
        delete copy;
        queued->fetch_sub(1, std::memory_order_relaxed);
        dropped->fetch_add(1, std::memory_order_relaxed);
      }
    });
    std::string err;
    if (!engine_->start(cores, &err)) {
      engine_->close();
      Release();
      throw make_error(env, err);
    }
  }

  ~EngineWrap() override {
    if (engine_) engine_->close();
    Release();
  }

 private:
  void Release() {
    if (tsfn_open_) {
      tsfn_open_ = false;
      tsfn_.Release();
    }
  }

  Engine& engine(Napi::Env env) {
    if (!engine_ || closed_) throw make_error(env, "the engine is closed", "ERR_CLOSED");
    return *engine_;
  }

  void Check(Napi::Env env, bool ok, const std::string& err) {
    if (!ok) throw make_error(env, err);
  }

  // addPort(kind, name, params): params is a flat object of strings, numbers and booleans.
  Napi::Value AddPort(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!info[2].IsObject()) throw make_error(env, "port parameters must be an object", "ERR_INVALID_ARG_TYPE");
    Napi::Object o = info[2].As<Napi::Object>();
    vw::PortParams params;
    Napi::Array keys = o.GetPropertyNames();
    for (uint32_t i = 0; i < keys.Length(); i++) {
      const std::string k = keys.Get(i).ToString();
      Napi::Value v = o.Get(k);
      if (v.IsBoolean())
        params.set(k, v.As<Napi::Boolean>().Value());
      else if (v.IsNumber())
        params.set(k, v.As<Napi::Number>().DoubleValue());
      else if (v.IsString())
        params.set(k, v.As<Napi::String>().Utf8Value());
      else if (!v.IsUndefined())
        throw make_error(env, "port parameter " + k + " must be a string, number or boolean", "ERR_INVALID_ARG_TYPE");
    }
    std::string err;
    Check(env, engine(env).add_port(info[0].ToString(), info[1].ToString(), params, &err), err);
    return env.Undefined();
  }
  Napi::Value RemovePort(const Napi::CallbackInfo& info) {
    std::string err;
    Check(info.Env(), engine(info.Env()).remove_port(info[0].ToString(), &err), err);
    return info.Env().Undefined();
  }
  Napi::Value Wire(const Napi::CallbackInfo& info) {
    std::string err;
    uint32_t pmd = 0;
    Check(info.Env(), engine(info.Env()).wire(info[0].ToString(), info[1].ToString(), &pmd, &err), err);
    return Napi::Number::New(info.Env(), pmd);
  }
  Napi::Value Unwire(const Napi::CallbackInfo& info) {
    std::string err;
    Check(info.Env(), engine(info.Env()).unwire(info[0].ToString(), &err), err);
    return info.Env().Undefined();
  }
  Napi::Value SetMode(const Napi::CallbackInfo& info) {
    std::string err;
    Check(info.Env(), engine(info.Env()).set_mode(parse_mode(info[0]), &err), err);
    return info.Env().Undefined();
  }

  Napi::Value Ports(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto ports = engine(env).ports();
    Napi::Array out = Napi::Array::New(env, ports.size());
    for (size_t i = 0; i < ports.size(); i++) {
      const vw::PortSummary& p = ports[i];
      Napi::Object o = Napi::Object::New(env);
      o.Set("name", p.name);
      o.Set("kind", p.kind);
      o.Set("queuePairs", p.queue_pairs);
      o.Set("counterSet", p.counter_set);
      o.Set("forwarder", p.forwarder);
      o.Set("pmd", p.pmd);
      set_description(o, p.description);
      out.Set(uint32_t(i), o);
    }
    return out;
  }

  Napi::Value Forwarders(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto fwds = engine(env).forwarders();
    Napi::Array out = Napi::Array::New(env, fwds.size());
    for (size_t i = 0; i < fwds.size(); i++) {
      Napi::Object o = Napi::Object::New(env);
      o.Set("kind", fwds[i].kind);
      o.Set("name", fwds[i].name);
      o.Set("pmd", fwds[i].pmd);
      Napi::Array m = Napi::Array::New(env, fwds[i].members.size());
      for (size_t k = 0; k < fwds[i].members.size(); k++) m.Set(uint32_t(k), fwds[i].members[k]);
      o.Set("members", m);
      out.Set(uint32_t(i), o);
    }
    return out;
  }

  Napi::Value Counters(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto block = engine(env).counters();
    // The view keeps the block alive through the finalizer's reference, even past close().
    auto* hold = new std::shared_ptr<vw::CounterBlock>(block);
    Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(
        env, block->data(), block->bytes(),
        [](Napi::Env, void*, std::shared_ptr<vw::CounterBlock>* h) { delete h; }, hold);
    return Napi::TypedArrayOf<uint64_t>::New(env, block->bytes() / 8, ab, 0, napi_biguint64_array);
  }

  Napi::Value CounterLayout(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto block = engine(env).counters();
    Napi::Object o = Napi::Object::New(env);
    o.Set("queueStride", uint32_t(vw::kQueueCounterCount));
    o.Set("pmdStride", uint32_t(vw::kPmdCounterCount));
    o.Set("pmdBase", double(block->pmd_set_offset(0)));
    return o;
  }

  // Readable after close() too: the count is the wrapper's, not the engine's.
  Napi::Value EventsDropped(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), double(events_dropped_->load(std::memory_order_relaxed)));
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    if (!closed_) {
      closed_ = true;
      if (engine_) engine_->close();
      Release();
    }
    return info.Env().Undefined();
  }

  std::unique_ptr<Engine> engine_;
  Napi::ThreadSafeFunction tsfn_;
  bool tsfn_open_ = false;
  bool closed_ = false;
  std::shared_ptr<std::atomic<uint64_t>> events_dropped_ = std::make_shared<std::atomic<uint64_t>>(0);
};

// ---------------------------------------------------------------------------------------------------
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

  Napi::Value Features(const Napi::CallbackInfo& info) { return Napi::BigInt::New(info.Env(), vu(info.Env()).features()); }
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
    return Napi::Boolean::New(env, vu(env).send(uint16_t(u32(info[0], "qp")), b.Data(), uint32_t(b.Length())));
  }
  Napi::Value Receive(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto frames = vu(env).receive(uint16_t(u32(info[0], "qp")), u32(info[1], "max"));
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
    return Napi::Boolean::New(info.Env(), vu(info.Env()).wait_call(uint16_t(u32(info[0], "vring")),
                                                                    int(u32(info[1], "timeoutMs"))));
  }
  Napi::Value RawMessage(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!info[2].IsBuffer() || !info[3].IsArray())
      throw make_error(env, "rawMessage(request, flags, payload: Buffer, fds: number[], wantReply)", "ERR_INVALID_ARG_TYPE");
    auto payload = info[2].As<Napi::Buffer<uint8_t>>();
    Napi::Array fa = info[3].As<Napi::Array>();
    std::vector<int> fds;
    for (uint32_t i = 0; i < fa.Length(); i++) fds.push_back(fa.Get(i).As<Napi::Number>().Int32Value());
    bool want = info[4].ToBoolean();
    std::vector<uint8_t> reply;
    std::string err;
    if (!vu(env).raw_message(u32(info[0], "request"), u32(info[1], "flags"), payload.Data(),
                             uint32_t(payload.Length()), fds.data(), fds.size(), want, &reply, &err))
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
    if (!vu(env).ring_addrs(uint16_t(u32(info[0], "vring")), &a)) throw make_error(env, "no such vring", "ERR_OUT_OF_RANGE");
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

// ---------------------------------------------------------------------------------------------------
// dropPrivileges({ user?: { uid, gid, groups }, keep: capability numbers }): runtime/privileges.h.
Napi::Value DropPrivileges(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsObject()) throw make_error(env, "dropPrivileges(options: object)", "ERR_INVALID_ARG_TYPE");
  Napi::Object o = info[0].As<Napi::Object>();
  vw::Account account;
  const bool change_user = !o.Get("user").IsUndefined();
  if (change_user) {
    if (!o.Get("user").IsObject()) throw make_error(env, "user must be an object", "ERR_INVALID_ARG_TYPE");
    Napi::Object u = o.Get("user").As<Napi::Object>();
    account.uid = u32(u.Get("uid"), "uid");
    account.gid = u32(u.Get("gid"), "gid");
    if (!u.Get("groups").IsArray()) throw make_error(env, "groups must be an array", "ERR_INVALID_ARG_TYPE");
    Napi::Array g = u.Get("groups").As<Napi::Array>();
    for (uint32_t i = 0; i < g.Length(); i++) account.groups.push_back(u32(g.Get(i), "group"));
  }
  if (!o.Get("keep").IsArray()) throw make_error(env, "keep must be an array of capability numbers", "ERR_INVALID_ARG_TYPE");
  Napi::Array k = o.Get("keep").As<Napi::Array>();
  uint64_t keep = 0;
  for (uint32_t i = 0; i < k.Length(); i++) {
    uint32_t cap = u32(k.Get(i), "capability");
    if (cap > 63) throw make_error(env, "capability numbers are 0..63", "ERR_OUT_OF_RANGE");
    keep |= uint64_t(1) << cap;
  }
  vw::PrivilegeReport r;
  std::string err;
  if (!vw::drop_privileges(change_user ? &account : nullptr, keep, &r, &err)) throw make_error(env, err, "ERR_PRIVILEGES");
  Napi::Object out = Napi::Object::New(env);
  Napi::Array kept = Napi::Array::New(env);
  for (uint32_t cap = 0; cap < 64; cap++)
    if (r.kept >> cap & 1) kept.Set(kept.Length(), cap);
  out.Set("kept", kept);
  out.Set("boundingDropped", r.bounding_dropped);
  out.Set("threads", r.threads);
  Napi::Array unreachable = Napi::Array::New(env, r.unreachable.size());
  for (size_t i = 0; i < r.unreachable.size(); i++) unreachable.Set(uint32_t(i), double(r.unreachable[i]));
  out.Set("unreachable", unreachable);
  return out;
}

// guestMemory(): what the process maps for guests and the limits (core/guest_memory.h), in bytes.
Napi::Value GuestMemoryInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const vw::GuestMemoryLimits l = vw::guest_memory_limits();
  Napi::Object o = Napi::Object::New(env);
  o.Set("mappedBytes", double(vw::guest_memory_mapped_bytes()));
  o.Set("maxPerPort", double(l.per_port));
  o.Set("maxPerProcess", double(l.per_process));
  return o;
}

// setGuestMemoryLimits({ maxPerPort, maxPerProcess }): for regions mapped from now on.
Napi::Value SetGuestMemoryLimits(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsObject()) throw make_error(env, "setGuestMemoryLimits(limits: object)", "ERR_INVALID_ARG_TYPE");
  Napi::Object o = info[0].As<Napi::Object>();
  vw::set_guest_memory_limits({u64(o.Get("maxPerPort"), "maxPerPort"), u64(o.Get("maxPerProcess"), "maxPerProcess")});
  return env.Undefined();
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("Engine", EngineWrap::Init(env));
  exports.Set("VirtioUser", VirtioUserWrap::Init(env));
  Napi::Array q = Napi::Array::New(env, vw::kQueueCounterCount);
  for (uint32_t i = 0; i < vw::kQueueCounterCount; i++) q.Set(i, counter_info(env, vw::kQueueCounterInfo[i]));
  Napi::Array p = Napi::Array::New(env, vw::kPmdCounterCount);
  for (uint32_t i = 0; i < vw::kPmdCounterCount; i++) p.Set(i, counter_info(env, vw::kPmdCounterInfo[i]));
  exports.Set("queueCounters", q);
  exports.Set("pmdCounters", p);
  // The limits user input is checked against in TypeScript, stated once, here.
  Napi::Object limits = Napi::Object::New(env);
  limits.Set("maxQueuePairs", uint32_t(vw::kMaxQueuePairs));
  limits.Set("minFrame", vw::kMinFrame);
  limits.Set("maxFrame", vw::kMaxFrame);
  limits.Set("maxPmdThreads", vw::Engine::kPmdSets);
  limits.Set("maxQueuedEvents", double(kMaxQueuedEvents));
  exports.Set("limits", limits);
  exports.Set("guestBase", Napi::BigInt::New(env, uint64_t(VirtioUser::kGuestBase)));
  exports.Set("dropPrivileges", Napi::Function::New(env, DropPrivileges, "dropPrivileges"));
  exports.Set("guestMemory", Napi::Function::New(env, GuestMemoryInfo, "guestMemory"));
  exports.Set("setGuestMemoryLimits", Napi::Function::New(env, SetGuestMemoryLimits, "setGuestMemoryLimits"));
  return exports;
}

}  // namespace

NODE_API_MODULE(vhostwire, Init)
