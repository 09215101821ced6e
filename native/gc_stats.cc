// sysprobe's GC statistics: what each garbage collection reclaimed, and the heap
// left after the last full one, for the isolate of the thread that starts it.
//
// Node's 'gc' performance entries say a GC ran and how long it took, but not what
// it freed. v8.GCProfiler does, but it builds a JS object per GC with every heap
// space's figures: measured here at ~0.7 ms per GC, far too much for a probe that
// stays on. This hooks V8's GC prologue and epilogue directly and keeps a few
// running sums: two GetHeapStatistics calls per GC, no allocation, nothing in JS
// until sysprobe reads the sums once per sample interval.
//
// The callbacks run on the thread that owns the isolate (the main thread), as does
// read(): no locking is needed.

#include <node_api.h>
#include <node_version.h>
#include <v8.h>
#include <chrono>

// The Node ABI this was built for, as text that src/native-file.ts finds in the file before
// loading it: this addon uses V8's C++ API, whose layout changes with each ABI, and its
// Node-API registration makes Node skip the version check it does for other addons.
extern "C" __attribute__((used, visibility("default"))) const char sysprobe_abi[] =
    "sysprobe-abi:" NODE_STRINGIFY(NODE_MODULE_VERSION) ";";

namespace {

// The kinds of sysprobe's `v8js.gc.type` attribute, in the order read() returns them.
enum Kind { kMinor = 0, kMajor, kIncremental, kWeakCallbacks, kKinds };

struct Sums {
  double count = 0;
  double pause_ns = 0;
  double reclaimed_bytes = 0;
};

struct State {
  v8::Isolate* isolate = nullptr;
  bool started = false;
  Sums by_kind[kKinds];
  double used_before = 0;
  std::chrono::steady_clock::time_point began;
  // Heap used right after the last mark-compact: the live heap, the truest leak signal.
  double used_after_major = -1;
  double major_ended_ms = 0;
};

Kind KindOf(v8::GCType type) {
  switch (type) {
    case v8::kGCTypeMarkSweepCompact: return kMajor;
    case v8::kGCTypeIncrementalMarking: return kIncremental;
    case v8::kGCTypeProcessWeakCallbacks: return kWeakCallbacks;
    default: return kMinor;  // scavenge, minor mark-compact/sweep
  }
}

double UsedHeap(v8::Isolate* isolate) {
  v8::HeapStatistics stats;
  isolate->GetHeapStatistics(&stats);
  return static_cast<double>(stats.used_heap_size());
}

void Prologue(v8::Isolate* isolate, v8::GCType, v8::GCCallbackFlags, void* data) {
  State* state = static_cast<State*>(data);
  state->used_before = UsedHeap(isolate);
  state->began = std::chrono::steady_clock::now();
}

void Epilogue(v8::Isolate* isolate, v8::GCType type, v8::GCCallbackFlags, void* data) {
  State* state = static_cast<State*>(data);
  auto ended = std::chrono::steady_clock::now();
  double used_after = UsedHeap(isolate);
  Sums& sums = state->by_kind[KindOf(type)];
  sums.count += 1;
  sums.pause_ns += std::chrono::duration<double, std::nano>(ended - state->began).count();
  // Incremental marking steps and weak callbacks free little themselves; promotion can even raise "used".
  if (state->used_before > used_after) sums.reclaimed_bytes += state->used_before - used_after;
  if (type == v8::kGCTypeMarkSweepCompact) {
    state->used_after_major = used_after;
    state->major_ended_ms = std::chrono::duration<double, std::milli>(std::chrono::system_clock::now().time_since_epoch()).count();
  }
}

void Unhook(State* state) {
  if (!state->started) return;
  state->isolate->RemoveGCPrologueCallback(Prologue, state);
  state->isolate->RemoveGCEpilogueCallback(Epilogue, state);
  state->started = false;
}

void Finalize(napi_env, void* data, void*) {
  State* state = static_cast<State*>(data);
  Unhook(state);
  delete state;
}

State* GetState(napi_env env) {
  void* data = nullptr;
  napi_get_instance_data(env, &data);
  return static_cast<State*>(data);
}

// start(): hooks this thread's isolate; true if it was not hooked already.
napi_value Start(napi_env env, napi_callback_info) {
  State* state = GetState(env);
  bool hooked = false;
  if (state != nullptr && !state->started) {
    state->isolate = v8::Isolate::GetCurrent();
    state->isolate->AddGCPrologueCallback(Prologue, state);
    state->isolate->AddGCEpilogueCallback(Epilogue, state);
    state->started = true;
    hooked = true;
  }
  napi_value result;
  napi_get_boolean(env, hooked, &result);
  return result;
}

napi_value Stop(napi_env env, napi_callback_info) {
  State* state = GetState(env);
  if (state != nullptr) Unhook(state);
  return nullptr;
}

// read(out: Float64Array(14)): per kind [count, pause ms, reclaimed bytes] for minor, major,
// incremental, weakcb; then heap used after the last mark-compact (-1 before one) and when it ended (ms since the epoch).
napi_value Read(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  napi_typedarray_type type;
  size_t length = 0;
  void* raw = nullptr;
  State* state = GetState(env);
  if (argc < 1 || state == nullptr ||
      napi_get_typedarray_info(env, argv[0], &type, &length, &raw, nullptr, nullptr) != napi_ok ||
      type != napi_float64_array || length < kKinds * 3 + 2) {
    napi_throw_type_error(env, nullptr, "read() needs a Float64Array of at least 14 elements");
    return nullptr;
  }
  double* out = static_cast<double*>(raw);
  for (int k = 0; k < kKinds; k++) {
    out[k * 3] = state->by_kind[k].count;
    out[k * 3 + 1] = state->by_kind[k].pause_ns / 1e6;
    out[k * 3 + 2] = state->by_kind[k].reclaimed_bytes;
  }
  out[kKinds * 3] = state->used_after_major;
  out[kKinds * 3 + 1] = state->major_ended_ms;
  return nullptr;
}

napi_value Init(napi_env env, napi_value exports) {
  napi_set_instance_data(env, new State(), Finalize, nullptr);
  napi_property_descriptor methods[] = {
    {"start", nullptr, Start, nullptr, nullptr, nullptr, napi_default, nullptr},
    {"stop", nullptr, Stop, nullptr, nullptr, nullptr, napi_default, nullptr},
    {"read", nullptr, Read, nullptr, nullptr, nullptr, napi_default, nullptr},
  };
  napi_define_properties(env, exports, sizeof(methods) / sizeof(methods[0]), methods);
  return exports;
}

}  // namespace

NAPI_MODULE_INIT() { return Init(env, exports); }
