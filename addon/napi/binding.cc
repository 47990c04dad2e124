// The N-API surface of the addon, and nothing else: argument unpacking, errors as JavaScript Errors
// with a code, events marshalled to the JS thread. Arguments arrive already validated by TypeScript
// (src/options.ts); the checks here only keep a wrong call from reaching the core. Declared for
// TypeScript in src/native.ts.
#include <napi.h>

#include <atomic>
#include <memory>

#include "core/counters.h"
#include "core/guest_memory.h"
#include "core/netdev_stats.h"
#include "napi/convert.h"
#include "ports/uplink/af_packet.h"
#include "ports/uplink/af_xdp.h"
#include "runtime/engine.h"
#include "runtime/privileges.h"

namespace {

using vw::Engine;
using vw::PortEvent;
using vw::napi::make_error;
using vw::napi::u32;
using vw::napi::u64;

// Events waiting for the JS thread. Each is a few hundred bytes; a front end that floods refusals (or a
// JS thread that is busy) must not grow the queue without end. Beyond this many, events are dropped and
// counted (eventsDropped): a flood loses its repeats. A dropped ring-broken event still shows in the
// port's counters; a dropped refusal only in that count.
constexpr size_t kMaxQueuedEvents = 1024;

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
                           InstanceMethod<&EngineWrap::AddBridge>("addBridge"),
                           InstanceMethod<&EngineWrap::RemoveBridge>("removeBridge"),
                           InstanceMethod<&EngineWrap::BridgeAddPort>("bridgeAddPort"),
                           InstanceMethod<&EngineWrap::BridgeRemovePort>("bridgeRemovePort"),
                           InstanceMethod<&EngineWrap::Fdb>("fdb"),
                           InstanceMethod<&EngineWrap::Bridges>("bridges"),
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
  // A member's bridge options as src/native.ts declares them (BridgePortOptions), already validated.
  static vw::BridgeMember bridge_member(Napi::Value v) {
    Napi::Env env = v.Env();
    if (!v.IsObject()) throw make_error(env, "a bridge member must be an object", "ERR_INVALID_ARG_TYPE");
    Napi::Object o = v.As<Napi::Object>();
    vw::BridgeMember m;
    m.port = o.Get("port").ToString();
    auto opt_u32 = [&](const char* k, uint32_t max) -> uint32_t {
      Napi::Value x = o.Get(k);
      if (x.IsUndefined()) return 0;
      const uint32_t n = u32(x, k);
      if (n > max)
        throw make_error(env, std::string(k) + " must be at most " + std::to_string(max), "ERR_OUT_OF_RANGE");
      return n;
    };
    auto opt_bool = [&](const char* k, bool def) {
      Napi::Value x = o.Get(k);
      return x.IsUndefined() ? def : x.ToBoolean().Value();
    };
    m.cfg.vlan = uint16_t(opt_u32("vlan", 4094));
    m.cfg.native = uint16_t(opt_u32("native", 4094));
    Napi::Value trunk = o.Get("trunk");
    if (trunk.IsArray()) {
      Napi::Array a = trunk.As<Napi::Array>();
      m.cfg.is_trunk = true;
      for (uint32_t i = 0; i < a.Length(); i++) {
        const uint32_t vid = u32(a.Get(i), "trunk VLAN");
        if (vid < 1 || vid > 4094) throw make_error(env, "trunk VLANs must be from 1 to 4094", "ERR_OUT_OF_RANGE");
        m.cfg.trunk.set(vid);
      }
    }
    Napi::Value mac = o.Get("mac");
    if (!mac.IsUndefined()) {
      m.cfg.has_mac = true;
      m.cfg.mac = u64(mac, "mac");
    }
    m.cfg.learning = opt_bool("learning", true);
    m.cfg.flood_unknown = opt_bool("flood", true);
    m.cfg.flood_multicast = opt_bool("floodMulticast", true);
    m.cfg.isolated = opt_bool("isolated", false);
    return m;
  }

  // addBridge(name, {ageingSeconds, maxMacs, maxMacsPerPort, static}, members): the PMD's index.
  Napi::Value AddBridge(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!info[1].IsObject() || !info[2].IsArray())
      throw make_error(env, "addBridge(name, options, members)", "ERR_INVALID_ARG_TYPE");
    Napi::Object o = info[1].As<Napi::Object>();
    vw::BridgeOptions opts;
    if (!o.Get("ageingSeconds").IsUndefined()) opts.ageing_s = u32(o.Get("ageingSeconds"), "ageingSeconds");
    if (!o.Get("maxMacs").IsUndefined()) opts.max_macs = u32(o.Get("maxMacs"), "maxMacs");
    opts.max_macs_per_port = opts.max_macs;
    if (!o.Get("maxMacsPerPort").IsUndefined()) opts.max_macs_per_port = u32(o.Get("maxMacsPerPort"), "maxMacsPerPort");
    if (opts.max_macs < 1 || opts.max_macs > vw::Fdb::kMaxEntries || opts.max_macs_per_port < 1 ||
        opts.max_macs_per_port > opts.max_macs)
      throw make_error(
          env,
          "maxMacs must be from 1 to " + std::to_string(vw::Fdb::kMaxEntries) + " and maxMacsPerPort from 1 to maxMacs",
          "ERR_OUT_OF_RANGE");
    std::vector<vw::StaticMac> statics;
    Napi::Value st = o.Get("static");
    if (st.IsArray()) {
      Napi::Array a = st.As<Napi::Array>();
      for (uint32_t i = 0; i < a.Length(); i++) {
        if (!a.Get(i).IsObject()) throw make_error(env, "a static entry must be an object", "ERR_INVALID_ARG_TYPE");
        Napi::Object e = a.Get(i).As<Napi::Object>();
        const uint32_t vlan = e.Get("vlan").IsUndefined() ? 0 : u32(e.Get("vlan"), "vlan");
        if (vlan > 4094) throw make_error(env, "a static entry's vlan must be from 0 to 4094", "ERR_OUT_OF_RANGE");
        statics.push_back({e.Get("port").ToString(), uint16_t(vlan), u64(e.Get("mac"), "mac")});
      }
    }
    Napi::Array a = info[2].As<Napi::Array>();
    std::vector<vw::BridgeMember> members;
    for (uint32_t i = 0; i < a.Length(); i++) members.push_back(bridge_member(a.Get(i)));
    std::string err;
    uint32_t pmd = 0;
    Check(env, engine(env).add_bridge(info[0].ToString(), opts, members, statics, &pmd, &err), err);
    return Napi::Number::New(env, pmd);
  }
  Napi::Value RemoveBridge(const Napi::CallbackInfo& info) {
    std::string err;
    Check(info.Env(), engine(info.Env()).remove_bridge(info[0].ToString(), &err), err);
    return info.Env().Undefined();
  }
  Napi::Value BridgeAddPort(const Napi::CallbackInfo& info) {
    std::string err;
    Check(info.Env(), engine(info.Env()).bridge_add_port(info[0].ToString(), bridge_member(info[1]), &err), err);
    return info.Env().Undefined();
  }
  Napi::Value BridgeRemovePort(const Napi::CallbackInfo& info) {
    std::string err;
    Check(info.Env(), engine(info.Env()).bridge_remove_port(info[0].ToString(), info[1].ToString(), &err), err);
    return info.Env().Undefined();
  }
  Napi::Value Fdb(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string err;
    std::vector<vw::FdbRow> rows;
    Check(env, engine(env).fdb(info[0].ToString(), &rows, &err), err);
    Napi::Array out = Napi::Array::New(env, rows.size());
    for (size_t i = 0; i < rows.size(); i++) {
      Napi::Object o = Napi::Object::New(env);
      o.Set("mac", double(rows[i].mac));
      o.Set("vlan", rows[i].vlan);
      o.Set("port", rows[i].port);
      o.Set("ageSeconds", rows[i].age_s);
      o.Set("static", rows[i].is_static);
      out.Set(uint32_t(i), o);
    }
    return out;
  }
  Napi::Value Bridges(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto brs = engine(env).bridges();
    Napi::Array out = Napi::Array::New(env, brs.size());
    for (size_t i = 0; i < brs.size(); i++) {
      const vw::BridgeSummary& b = brs[i];
      Napi::Object o = Napi::Object::New(env);
      o.Set("name", b.name);
      o.Set("pmd", b.pmd);
      o.Set("ageingSeconds", double(b.options.ageing_s));
      o.Set("maxMacs", b.options.max_macs);
      o.Set("maxMacsPerPort", b.options.max_macs_per_port);
      o.Set("macs", b.stats.size);
      o.Set("learned", double(b.stats.fdb.learned));
      o.Set("aged", double(b.stats.fdb.aged));
      o.Set("moved", double(b.stats.fdb.moved));
      o.Set("evicted", double(b.stats.fdb.evicted));
      o.Set("refusedTableFull", double(b.stats.fdb.refused_table_full));
      o.Set("refusedPortLimit", double(b.stats.fdb.refused_port_limit));
      o.Set("flooded", double(b.stats.flooded));
      o.Set("floodCopies", double(b.stats.flood_copies));
      Napi::Array vd = Napi::Array::New(env, b.vlan_drops.size());
      for (size_t k = 0; k < b.vlan_drops.size(); k++) {
        const auto& [vlan, n] = b.vlan_drops[k];
        Napi::Object x = Napi::Object::New(env);
        x.Set("vlan", vlan == vw::Bridge::kUntagged ? "untagged"
                      : vlan == vw::Bridge::kOther  ? "other"
                                                    : std::to_string(vlan));
        x.Set("drops", double(n));
        vd.Set(uint32_t(k), x);
      }
      o.Set("vlanDrops", vd);
      Napi::Array ms = Napi::Array::New(env, b.members.size());
      for (size_t k = 0; k < b.members.size(); k++) {
        const auto& m = b.members[k];
        Napi::Object x = Napi::Object::New(env);
        x.Set("port", m.port);
        x.Set("macs", m.entries);
        x.Set("rx", double(m.stats.rx));
        x.Set("tx", double(m.stats.tx));
        Napi::Object d = Napi::Object::New(env);
        d.Set("runt", double(m.stats.drop_runt));
        d.Set("vlan", double(m.stats.drop_vlan));
        d.Set("spoofed", double(m.stats.drop_spoofed));
        d.Set("local", double(m.stats.drop_local));
        d.Set("isolated", double(m.stats.drop_isolated));
        d.Set("noRoom", double(m.stats.drop_no_room));
        x.Set("drops", d);
        ms.Set(uint32_t(k), x);
      }
      o.Set("members", ms);
      out.Set(uint32_t(i), o);
    }
    return out;
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
      Napi::Array qp = Napi::Array::New(env, p.queue_pmds.size());
      for (size_t q = 0; q < p.queue_pmds.size(); q++) qp.Set(uint32_t(q), p.queue_pmds[q]);
      o.Set("queuePmds", qp);
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
        env, block->data(), block->bytes(), [](Napi::Env, void*, std::shared_ptr<vw::CounterBlock>* h) { delete h; },
        hold);
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
  if (!o.Get("keep").IsArray())
    throw make_error(env, "keep must be an array of capability numbers", "ERR_INVALID_ARG_TYPE");
  Napi::Array k = o.Get("keep").As<Napi::Array>();
  uint64_t keep = 0;
  for (uint32_t i = 0; i < k.Length(); i++) {
    uint32_t cap = u32(k.Get(i), "capability");
    if (cap > 63) throw make_error(env, "capability numbers are 0..63", "ERR_OUT_OF_RANGE");
    keep |= uint64_t(1) << cap;
  }
  vw::PrivilegeReport r;
  std::string err;
  if (!vw::drop_privileges(change_user ? &account : nullptr, keep, &r, &err))
    throw make_error(env, err, "ERR_PRIVILEGES");
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

// netdevStats(ifname): a Promise of the interface's kernel counters, read on a libuv worker thread
// because the netlink round trip blocks (for at most kNetdevStatsTimeoutMs).
class NetdevStatsWorker : public Napi::AsyncWorker {
 public:
  NetdevStatsWorker(Napi::Env env, std::string ifname)
      : Napi::AsyncWorker(env, "vhostwire netdev stats"), ifname_(std::move(ifname)), deferred_(env) {}
  Napi::Promise promise() { return deferred_.Promise(); }

 protected:
  void Execute() override { stats_ = vw::read_netdev_stats(ifname_); }
  void OnOK() override {
    Napi::Env env = Env();
    auto record = [&](const std::vector<std::pair<std::string, uint64_t>>& kv,
                      const std::string& error) -> Napi::Value {
      if (!error.empty()) return env.Null();
      Napi::Object o = Napi::Object::New(env);
      for (const auto& [k, v] : kv) o.Set(k, double(v));
      return o;
    };
    Napi::Object o = Napi::Object::New(env);
    const std::string missing = "no interface " + ifname_ + " in this network namespace";
    o.Set("exists", stats_.exists);
    o.Set("link", stats_.exists ? record(stats_.link, stats_.link_error) : env.Null());
    o.Set("linkError", stats_.exists ? stats_.link_error : missing);
    o.Set("ethtool", stats_.exists ? record(stats_.ethtool, stats_.ethtool_error) : env.Null());
    o.Set("ethtoolError", stats_.exists ? stats_.ethtool_error : missing);
    deferred_.Resolve(o);
  }

 private:
  std::string ifname_;
  Napi::Promise::Deferred deferred_;
  vw::NetdevStats stats_;
};

Napi::Value NetdevStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) throw make_error(env, "netdevStats(ifname: string)", "ERR_INVALID_ARG_TYPE");
  auto* w = new NetdevStatsWorker(env, info[0].As<Napi::String>().Utf8Value());
  Napi::Promise p = w->promise();
  w->Queue();
  return p;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("Engine", EngineWrap::Init(env));
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
  limits.Set("maxBridgeMacs", vw::Fdb::kMaxEntries);
  limits.Set("maxQueuedEvents", double(kMaxQueuedEvents));
  // An uplink's AF_PACKET receive ring (--uplink block-size=, blocks=, retire-ms=; frames= with tpacket=v2).
  using R = vw::TpacketRing;
  auto range = [&](uint32_t min, uint32_t max, uint32_t def) {
    Napi::Object r = Napi::Object::New(env);
    r.Set("min", min);
    r.Set("max", max);
    r.Set("default", def);
    return r;
  };
  limits.Set("uplinkBlockSize", range(R::kMinBlockSize, R::kMaxBlockSize, R::kDefaultBlockSize));
  limits.Set("uplinkBlocks", range(R::kMinBlocks, R::kMaxBlocks, R::kDefaultBlocks));
  limits.Set("uplinkRetireMs", range(R::kMinRetireMs, R::kMaxRetireMs, R::kDefaultRetireMs));
  // tpacket=v2's slots (--uplink frames=), rounded up to whole 1 MiB blocks.
  limits.Set("uplinkFrames", range(R::kMinFrames, R::kMaxFrames, R::kDefaultFrames));
  limits.Set("uplinkFramesPerBlock", R::kV2SlotsPerBlock);
  limits.Set("uplinkRingBytes", double(R::kMaxBytes));
  // An uplink's AF_XDP UMEM and rings (--uplink frame-size=, ring-size=), powers of two.
  using X = vw::XskParams;
  limits.Set("uplinkFrameSize", range(X::kMinFrameSize, X::kMaxFrameSize, X::kDefaultFrameSize));
  limits.Set("uplinkXdpRingSize", range(X::kMinRingSize, X::kMaxRingSize, X::kDefaultRingSize));
  exports.Set("limits", limits);
  exports.Set("dropPrivileges", Napi::Function::New(env, DropPrivileges, "dropPrivileges"));
  exports.Set("guestMemory", Napi::Function::New(env, GuestMemoryInfo, "guestMemory"));
  exports.Set("setGuestMemoryLimits", Napi::Function::New(env, SetGuestMemoryLimits, "setGuestMemoryLimits"));
  exports.Set("netdevStats", Napi::Function::New(env, NetdevStats, "netdevStats"));
  return exports;
}

}  // namespace

NODE_API_MODULE(vhostwire, Init)
