// sysprobe's thread stack: the JS stack of another thread of this process while it
// is stuck in JS, for a probe whose host is an app's worker thread (the inspector's
// connectToMainThread() reaches only the main thread).
//
// The host thread registers its isolate (hostId = register()). The probe worker asks
// for a stack (request(hostId) -> requestId): V8's Isolate::RequestInterrupt, which is
// thread-safe, makes the host thread run our callback at its next interrupt check,
// which a thread running JS reaches within about a millisecond. The callback takes
// StackTrace::CurrentStackTrace, copies it into plain strings and leaves it in the
// request's slot; the worker polls take(requestId) until it is there or it gives up.
//
// Never crash the host:
//   - hosts and requests live in a registry under one mutex, and are found by id, so
//     nothing points at a thread or a request that is gone: an interrupt for a request
//     the worker gave up on, or for a host that ended, finds nothing and does nothing;
//   - RequestInterrupt is called under the mutex, and a host leaves the registry from
//     its environment's cleanup hook, under the same mutex, before its isolate goes;
//   - the library pins itself in memory (RTLD_NODELETE): a pending interrupt may run
//     after the thread that loaded us unloaded its addons.
//
// It also wakes the loop watch's parked watchdogs (native/loop_watch.c, which is on
// Node-API only and cannot reach V8): wakeOnEntry(loopWatchFile), on a thread whose loop
// loop_watch hooked, registers V8 callbacks that run at each call from C++ into V8 that
// may run script (CallDepthScope<true> in V8's api.cc: node::MakeCallback, Function::Call,
// Promise::Resolver::Resolve, ...) and before each GC. Each is one thread-local load and
// one plain load of loop_watch's park word; only when a watchdog parked: an exchange and a
// FUTEX_WAKE. loop_watch.c says why a turn cannot start unseen.

#include <dlfcn.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <node_version.h>  // first: it sets NAPI_VERSION, which node_api.h would default
#include <node_api.h>
#include <v8.h>

#include <climits>
#include <mutex>
#include <chrono>
#include <string>
#include <unordered_map>
#include <vector>

// The Node ABI this was built for: src/native-file.ts refuses the file before dlopen under another ABI
// (Node-API skips Node's own check, and this addon's V8 symbols differ between Node majors).
extern "C" __attribute__((used, visibility("default"))) const char sysprobe_abi[] =
    "sysprobe-abi:" NODE_STRINGIFY(NODE_MODULE_VERSION) ";";

namespace {

constexpr int kMaxFrames = 64;
constexpr size_t kMaxPending = 16;

struct FrameText {
  std::string function_name;
  std::string url;
  int line;    // 0-based, as the inspector's
  int column;  // 0-based
};

struct Request {
  uint32_t host;
  bool done = false;
  std::vector<FrameText> frames;
  double asked_ms = 0;     // steady clock
  double answered_ms = 0;  // when the host ran the interrupt
};

struct Host {
  v8::Isolate* isolate;
};

std::mutex registry_mutex;
std::unordered_map<uint32_t, Host> hosts;
std::unordered_map<uint32_t, Request> requests;
uint32_t last_id = 0;

double SteadyMs() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

uint32_t NextId() {
  if (++last_id == 0) ++last_id;
  return last_id;
}

std::string Text(v8::Isolate* isolate, v8::Local<v8::String> s) {
  if (s.IsEmpty()) return std::string();
  v8::String::Utf8Value utf8(isolate, s);
  return *utf8 ? std::string(*utf8, static_cast<size_t>(utf8.length())) : std::string();
}

// On the host thread, inside its JS, at an interrupt check.
void OnInterrupt(v8::Isolate* isolate, void* data) {
  uint32_t id = static_cast<uint32_t>(reinterpret_cast<uintptr_t>(data));
  double answered_ms = SteadyMs();
  {
    std::lock_guard<std::mutex> lock(registry_mutex);
    if (requests.find(id) == requests.end()) return;  // given up on
  }
  std::vector<FrameText> frames;
  {
    v8::HandleScope scope(isolate);
    v8::Local<v8::StackTrace> trace = v8::StackTrace::CurrentStackTrace(isolate, kMaxFrames, v8::StackTrace::kDetailed);
    int count = trace->GetFrameCount();
    frames.reserve(static_cast<size_t>(count));
    for (int i = 0; i < count; i++) {
      v8::Local<v8::StackFrame> frame = trace->GetFrame(isolate, static_cast<uint32_t>(i));
      frames.push_back({Text(isolate, frame->GetFunctionName()), Text(isolate, frame->GetScriptNameOrSourceURL()),
                        frame->GetLineNumber() - 1, frame->GetColumn() - 1});
    }
  }
  std::lock_guard<std::mutex> lock(registry_mutex);
  auto found = requests.find(id);
  if (found == requests.end()) return;
  found->second.frames = std::move(frames);
  found->second.done = true;
  found->second.answered_ms = answered_ms;
}

void ForgetHost(void* arg) {
  uint32_t id = static_cast<uint32_t>(reinterpret_cast<uintptr_t>(arg));
  std::lock_guard<std::mutex> lock(registry_mutex);
  hosts.erase(id);
}

// ---- Waking the loop watch's parked watchdogs, on the watched thread ----

// loop_watch's park word of this thread's loop (a static pool there: never freed), while the callbacks run.
thread_local uint32_t* park_word = nullptr;

inline void WakeParked() {
  uint32_t* word = park_word;
  if (word == nullptr || __atomic_load_n(word, __ATOMIC_RELAXED) == 0) return;
  if (__atomic_exchange_n(word, 0u, __ATOMIC_SEQ_CST) != 0)
    syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, INT_MAX, nullptr, nullptr, 0);
}

void OnCallEntered(v8::Isolate*) { WakeParked(); }
void OnGcPrologue(v8::Isolate*, v8::GCType, v8::GCCallbackFlags) { WakeParked(); }

using EntryWordFn = uint32_t* (*)(int on);

struct EnvState {
  uint32_t host = 0;  // this thread's registration, if any
  v8::Isolate* waking = nullptr;  // the isolate whose callbacks wake parked watchdogs, if any
  EntryWordFn entry_word = nullptr;
};

void StopWaking(void* arg) {
  EnvState* st = static_cast<EnvState*>(arg);
  st->waking->RemoveBeforeCallEnteredCallback(OnCallEntered);
  st->waking->RemoveGCPrologueCallback(OnGcPrologue);
  st->waking = nullptr;
  park_word = nullptr;
  st->entry_word(0);  // the watchdogs look periodically again (a no-op once loop_watch closed this thread's watch)
}

EnvState* StateOf(napi_env env) {
  void* data = nullptr;
  napi_get_instance_data(env, &data);
  return static_cast<EnvState*>(data);
}

napi_value Number(napi_env env, double d) {
  napi_value v;
  napi_create_double(env, d, &v);
  return v;
}

// register(): on the host thread; its id for request(). Idempotent per thread.
napi_value Register(napi_env env, napi_callback_info) {
  EnvState* st = StateOf(env);
  if (st == nullptr) return Number(env, 0);
  if (st->host == 0) {
    uint32_t id;
    {
      std::lock_guard<std::mutex> lock(registry_mutex);
      id = NextId();
      hosts[id] = Host{v8::Isolate::GetCurrent()};
    }
    if (napi_add_env_cleanup_hook(env, ForgetHost, reinterpret_cast<void*>(static_cast<uintptr_t>(id))) != napi_ok) {
      ForgetHost(reinterpret_cast<void*>(static_cast<uintptr_t>(id)));
      return Number(env, 0);
    }
    st->host = id;
  }
  return Number(env, st->host);
}

// request(hostId): from any thread; a request id for take(), or 0 (no such host, or too many pending).
napi_value RequestStack(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  double host_in = 0;
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  if (argc < 1 || napi_get_value_double(env, argv[0], &host_in) != napi_ok) {
    napi_throw_type_error(env, nullptr, "request(hostId)");
    return nullptr;
  }
  std::lock_guard<std::mutex> lock(registry_mutex);
  auto host = hosts.find(static_cast<uint32_t>(host_in));
  if (host == hosts.end() || requests.size() >= kMaxPending) return Number(env, 0);
  uint32_t id = NextId();
  requests[id].host = host->first;
  requests[id].asked_ms = SteadyMs();
  // Under the mutex: the host cannot leave the registry (and its isolate go) meanwhile.
  host->second.isolate->RequestInterrupt(OnInterrupt, reinterpret_cast<void*>(static_cast<uintptr_t>(id)));
  return Number(env, id);
}

// take(requestId): once answered (the request is then forgotten), { frames: [{ functionName, url,
// lineNumber, columnNumber }], latencyMs: from the request to the host taking the interrupt }; else undefined.
napi_value Take(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  double id_in = 0;
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  if (argc < 1 || napi_get_value_double(env, argv[0], &id_in) != napi_ok) {
    napi_throw_type_error(env, nullptr, "take(requestId)");
    return nullptr;
  }
  Request done;
  {
    std::lock_guard<std::mutex> lock(registry_mutex);
    auto found = requests.find(static_cast<uint32_t>(id_in));
    if (found == requests.end() || !found->second.done) return nullptr;
    done = std::move(found->second);
    requests.erase(found);
  }
  napi_value answer, result;
  napi_create_object(env, &answer);
  napi_create_array_with_length(env, done.frames.size(), &result);
  for (size_t i = 0; i < done.frames.size(); i++) {
    const FrameText& f = done.frames[i];
    napi_value frame, name, url;
    napi_create_object(env, &frame);
    napi_create_string_utf8(env, f.function_name.c_str(), f.function_name.size(), &name);
    napi_create_string_utf8(env, f.url.c_str(), f.url.size(), &url);
    napi_set_named_property(env, frame, "functionName", name);
    napi_set_named_property(env, frame, "url", url);
    napi_set_named_property(env, frame, "lineNumber", Number(env, f.line));
    napi_set_named_property(env, frame, "columnNumber", Number(env, f.column));
    napi_set_element(env, result, static_cast<uint32_t>(i), frame);
  }
  napi_set_named_property(env, answer, "frames", result);
  napi_set_named_property(env, answer, "latencyMs", Number(env, done.answered_ms - done.asked_ms));
  return answer;
}

// cancel(requestId): the worker gave up; a late interrupt then finds nothing.
napi_value Cancel(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  double id_in = 0;
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  if (argc >= 1 && napi_get_value_double(env, argv[0], &id_in) == napi_ok) {
    std::lock_guard<std::mutex> lock(registry_mutex);
    requests.erase(static_cast<uint32_t>(id_in));
  }
  return nullptr;
}

// wakeOnEntry(loopWatchFile): on a thread whose loop native/loop_watch.c hooked (attach()), where that
// addon was loaded from: this thread's JS entries and GCs now wake that loop's parked watchdogs. false if
// loop_watch is not loaded from that file, is an older build, or has no park word for this thread.
napi_value WakeOnEntry(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], result;
  char file[4096];
  size_t length = 0;
  EnvState* st = StateOf(env);
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  if (argc < 1 || napi_get_value_string_utf8(env, argv[0], file, sizeof file, &length) != napi_ok ||
      length >= sizeof file - 1) {
    napi_throw_type_error(env, nullptr, "wakeOnEntry(loopWatchFile)");
    return nullptr;
  }
  uint32_t* word = nullptr;
  EntryWordFn entry_word = nullptr;
  if (void* lib = dlopen(file, RTLD_LAZY | RTLD_NOLOAD)) {  // only if loaded already; pinned by loop_watch itself
    entry_word = reinterpret_cast<EntryWordFn>(dlsym(lib, "sysprobe_loop_watch_entry_word"));
    dlclose(lib);
  }
  if (st != nullptr && entry_word != nullptr) word = entry_word(1);
  if (word != nullptr && st->waking == nullptr) {
    if (napi_add_env_cleanup_hook(env, StopWaking, st) != napi_ok) {
      entry_word(0);
      word = nullptr;
    } else {
      st->waking = v8::Isolate::GetCurrent();
      st->entry_word = entry_word;
      st->waking->AddBeforeCallEnteredCallback(OnCallEntered);
      st->waking->AddGCPrologueCallback(OnGcPrologue);
    }
  }
  if (word != nullptr) park_word = word;
  napi_get_boolean(env, word != nullptr, &result);
  return result;
}

// tid(): the calling thread's kernel thread id (its /proc/self/task/<tid>), for the probe's look at a stalled host.
napi_value Tid(napi_env env, napi_callback_info) { return Number(env, static_cast<double>(syscall(SYS_gettid))); }

void FreeState(napi_env, void* data, void*) { delete static_cast<EnvState*>(data); }

// A pending interrupt may run after the thread that loaded us unloaded its addons.
void PinLibrary() {
  Dl_info self;
  if (dladdr(reinterpret_cast<void*>(&PinLibrary), &self) && self.dli_fname)
    dlopen(self.dli_fname, RTLD_LAZY | RTLD_NODELETE | RTLD_NOLOAD);  // LAZY: binds nothing new
}

napi_value Init(napi_env env, napi_value exports) {
  static std::once_flag pinned;
  std::call_once(pinned, PinLibrary);
  napi_set_instance_data(env, new EnvState(), FreeState, nullptr);
  napi_property_descriptor methods[] = {
      {"register", nullptr, Register, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"request", nullptr, RequestStack, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"take", nullptr, Take, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"tid", nullptr, Tid, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"cancel", nullptr, Cancel, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"wakeOnEntry", nullptr, WakeOnEntry, nullptr, nullptr, nullptr, napi_default, nullptr},
  };
  napi_define_properties(env, exports, sizeof(methods) / sizeof(methods[0]), methods);
  return exports;
}

}  // namespace

NAPI_MODULE_INIT() { return Init(env, exports); }
