/*
 * Loop watch: sees a stalled event loop without waking the loop it watches.
 *
 * The JS heartbeat costs a main-thread wake-up (~170 µs here) several times a
 * second. This addon needs none:
 *   - a uv_prepare hook on the watched loop stamps each turn just before the
 *     loop polls (one clock read and one uncontended mutex, ~100 ns, only when
 *     the loop turns anyway);
 *   - libuv already counts the time the loop spends waiting in epoll
 *     (uv_metrics_idle_time, thread-safe), so from any thread:
 *         left the poll = stamp + (idle now - idle at stamp)
 *         busy for      = now - left the poll      (about 0 while it waits)
 *   - a watchdog pthread wakes once per threshold (~50 µs a wake-up here), and
 *     calls into the probe worker's JS only when a stall starts or ends.
 *
 * One watched loop per process: attach() refuses a second one, and the caller
 * falls back to the JS heartbeat.
 */
#define _GNU_SOURCE /* pthread_setname_np */
#define NAPI_VERSION 8
#include <node_api.h>
#include <uv.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

/* Lag samples kept for readers (one sample per threshold: 1024 is minutes). */
#define LAG_RING 1024

/* ---- Written by the watched loop's thread, read by the watchdog. ---- */
static uv_loop_t* watched;          /* the hooked loop; its handle lives until that environment ends */
static uv_prepare_t turn_hook;
static atomic_int attached;
static atomic_uint stamp_seq;       /* seqlock over the two stamps below */
static _Atomic uint64_t stamp_at;   /* uv_hrtime() when the loop last went to poll */
static _Atomic uint64_t stamp_idle; /* uv_metrics_idle_time() at that moment */
static _Atomic uint64_t longest_turn; /* longest turn since the watchdog last took it, ns */
static uint64_t longest_turn_published; /* longest turn since takeLongestTurn(); same thread as the hook */

/* ---- Written by the watchdog, read by anyone. ---- */
static _Atomic uint64_t lag_ring[LAG_RING]; /* lag samples, ns */
static _Atomic uint64_t lag_count;          /* samples ever written */

/* ---- The watchdog thread (owned by the thread that called startWatchdog). ---- */
static pthread_t watchdog;
static pthread_mutex_t watchdog_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t watchdog_wake;
static int watchdog_running;
static int watchdog_stopping;
static uint64_t threshold_ns;
static napi_threadsafe_function on_stall;

typedef struct { int started; double start_ms; double duration_ms; } stall_event;

static uint64_t max_u64(uint64_t a, uint64_t b) { return a > b ? a : b; }

static void on_turn(uv_prepare_t* handle) {
  (void)handle;
  uint64_t now = uv_hrtime();
  uint64_t idle = uv_metrics_idle_time(watched);
  uint64_t prev_at = atomic_load_explicit(&stamp_at, memory_order_relaxed);
  uint64_t prev_idle = atomic_load_explicit(&stamp_idle, memory_order_relaxed);
  uint64_t elapsed = now - prev_at, waited = idle - prev_idle;
  uint64_t turn = elapsed > waited ? elapsed - waited : 0;
  uint64_t longest = atomic_load_explicit(&longest_turn, memory_order_relaxed);
  while (turn > longest &&
         !atomic_compare_exchange_weak_explicit(&longest_turn, &longest, turn, memory_order_relaxed, memory_order_relaxed)) {
  }
  if (turn > longest_turn_published) longest_turn_published = turn;
  unsigned seq = atomic_load_explicit(&stamp_seq, memory_order_relaxed);
  atomic_store_explicit(&stamp_seq, seq + 1, memory_order_relaxed);
  atomic_thread_fence(memory_order_release);
  atomic_store_explicit(&stamp_at, now, memory_order_relaxed);
  atomic_store_explicit(&stamp_idle, idle, memory_order_relaxed);
  atomic_store_explicit(&stamp_seq, seq + 2, memory_order_release);
}

/* How long the watched loop has been busy in its current turn; ~0 while it waits in poll. */
static uint64_t busy_ns(uint64_t now) {
  uint64_t at, idle_at;
  unsigned before, after;
  do {
    before = atomic_load_explicit(&stamp_seq, memory_order_acquire);
    at = atomic_load_explicit(&stamp_at, memory_order_relaxed);
    idle_at = atomic_load_explicit(&stamp_idle, memory_order_relaxed);
    atomic_thread_fence(memory_order_acquire);
    after = atomic_load_explicit(&stamp_seq, memory_order_relaxed);
  } while ((before & 1) || before != after);
  uint64_t idle_now = uv_metrics_idle_time(watched);
  uint64_t left_poll = at + (idle_now > idle_at ? idle_now - idle_at : 0);
  return now > left_poll ? now - left_poll : 0;
}

static void push_lag(uint64_t ns) {
  uint64_t n = atomic_load_explicit(&lag_count, memory_order_relaxed);
  atomic_store_explicit(&lag_ring[n % LAG_RING], ns, memory_order_relaxed);
  atomic_store_explicit(&lag_count, n + 1, memory_order_release);
}

static void emit(int started, uint64_t start_ns, uint64_t duration_ns) {
  stall_event* event = malloc(sizeof *event);
  if (!event) return;
  event->started = started;
  event->start_ms = (double)start_ns / 1e6;
  event->duration_ms = (double)duration_ns / 1e6;
  if (napi_call_threadsafe_function(on_stall, event, napi_tsfn_nonblocking) != napi_ok) free(event);
}

static void* watch(void* arg) {
  (void)arg;
  int stalled = 0;
  uint64_t stall_start = 0;
  uint64_t next_sample = uv_hrtime() + threshold_ns;
  /* While stalled, look often enough to report the end promptly. */
  uint64_t stalled_poll = threshold_ns / 4 < 50000000 ? threshold_ns / 4 : 50000000;
  pthread_mutex_lock(&watchdog_mutex);
  while (!watchdog_stopping) {
    uint64_t now = uv_hrtime();
    uint64_t busy = busy_ns(now);
    uint64_t wake;
    if (now >= next_sample) {
      push_lag(busy);
      next_sample = now + threshold_ns;
    }
    if (!stalled && busy >= threshold_ns) {
      stalled = 1;
      stall_start = now - busy;
      atomic_store_explicit(&longest_turn, 0, memory_order_relaxed);
      emit(1, stall_start, busy);
    } else if (stalled && now - busy > stall_start + 1000000) {
      /* The loop has left the stalled turn; the hook measured it whole. */
      stalled = 0;
      uint64_t turn = atomic_exchange_explicit(&longest_turn, 0, memory_order_relaxed);
      emit(0, stall_start, max_u64(turn, threshold_ns));
    }
    /* Next look: the next lag sample, or the moment this turn would become a stall. */
    wake = next_sample;
    if (stalled) wake = now + stalled_poll;
    else if (busy > 0 && now - busy + threshold_ns < wake) wake = now - busy + threshold_ns;
    struct timespec deadline;
    deadline.tv_sec = (time_t)(wake / 1000000000u);
    deadline.tv_nsec = (long)(wake % 1000000000u);
    /* uv_hrtime() is CLOCK_MONOTONIC, the clock the condition variable waits on. */
    int rc;
    do rc = pthread_cond_timedwait(&watchdog_wake, &watchdog_mutex, &deadline);
    while (rc == 0 && !watchdog_stopping && uv_hrtime() < wake);
  }
  pthread_mutex_unlock(&watchdog_mutex);
  return NULL;
}

/* ---- JS bindings ---- */

static napi_value undefined_value(napi_env env) {
  napi_value v;
  napi_get_undefined(env, &v);
  return v;
}

static napi_value boolean_value(napi_env env, int b) {
  napi_value v;
  napi_get_boolean(env, b, &v);
  return v;
}

static void close_hook(void* arg) {
  (void)arg;
  /* The environment is going away: its loop must not keep our handle. */
  atomic_store(&attached, 0);
  uv_close((uv_handle_t*)&turn_hook, NULL);
  watched = NULL;
}

/*
 * attach(): hooks the calling thread's loop. Returns false if another thread's
 * loop is watched. The handle lives until the environment's teardown, so a
 * stop/start is synchronous: detach() only stops the hook.
 */
static napi_value attach(napi_env env, napi_callback_info info) {
  (void)info;
  uv_loop_t* loop;
  int expected = 0;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) return boolean_value(env, 0);
  if ((watched && watched != loop) || !atomic_compare_exchange_strong(&attached, &expected, 1)) return boolean_value(env, 0);
  if (!watched) {
    if (uv_prepare_init(loop, &turn_hook) != 0) {
      atomic_store(&attached, 0);
      return boolean_value(env, 0);
    }
    uv_unref((uv_handle_t*)&turn_hook); /* never keeps the process alive */
    watched = loop;
    napi_add_env_cleanup_hook(env, close_hook, NULL);
  }
  atomic_store(&stamp_at, uv_hrtime());
  atomic_store(&stamp_idle, uv_metrics_idle_time(loop));
  longest_turn_published = 0;
  uv_prepare_start(&turn_hook, on_turn);
  return boolean_value(env, 1);
}

/* detach(): on the attached thread, after the watchdog has stopped. */
static napi_value detach(napi_env env, napi_callback_info info) {
  (void)info;
  if (atomic_load(&attached)) {
    uv_prepare_stop(&turn_hook);
    atomic_store(&attached, 0);
  }
  return undefined_value(env);
}

static void call_js(napi_env env, napi_value callback, void* context, void* data) {
  (void)context;
  stall_event* event = data;
  if (env && callback) {
    napi_value args[3], global;
    napi_get_boolean(env, event->started, &args[0]);
    napi_create_double(env, event->start_ms, &args[1]);
    napi_create_double(env, event->duration_ms, &args[2]);
    napi_get_global(env, &global);
    napi_call_function(env, global, callback, 3, args, NULL);
  }
  free(event);
}

static void stop_watchdog(void) {
  pthread_mutex_lock(&watchdog_mutex);
  if (!watchdog_running) {
    pthread_mutex_unlock(&watchdog_mutex);
    return;
  }
  watchdog_stopping = 1;
  pthread_cond_signal(&watchdog_wake);
  pthread_mutex_unlock(&watchdog_mutex);
  pthread_join(watchdog, NULL);
  napi_release_threadsafe_function(on_stall, napi_tsfn_abort);
  watchdog_running = 0;
}

static void cleanup_hook(void* arg) {
  (void)arg;
  stop_watchdog();
}

/* startWatchdog(thresholdMs, onStall(started, startMs, durationMs)): from the probe worker. */
static napi_value start_watchdog(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value args[2], name;
  double threshold_ms;
  napi_get_cb_info(env, info, &argc, args, NULL, NULL);
  if (argc < 2 || napi_get_value_double(env, args[0], &threshold_ms) != napi_ok || threshold_ms < 1) {
    napi_throw_type_error(env, NULL, "startWatchdog(thresholdMs >= 1, onStall)");
    return NULL;
  }
  if (!atomic_load(&attached) || watchdog_running) return boolean_value(env, 0);
  napi_create_string_utf8(env, "sysprobe-loop-watch", NAPI_AUTO_LENGTH, &name);
  if (napi_create_threadsafe_function(env, args[1], NULL, name, 64, 1, NULL, NULL, NULL, call_js, &on_stall) != napi_ok) {
    return boolean_value(env, 0);
  }
  napi_unref_threadsafe_function(env, on_stall);
  pthread_condattr_t attr;
  pthread_condattr_init(&attr);
  pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
  pthread_cond_init(&watchdog_wake, &attr);
  pthread_condattr_destroy(&attr);
  threshold_ns = (uint64_t)(threshold_ms * 1e6);
  watchdog_stopping = 0;
  if (pthread_create(&watchdog, NULL, watch, NULL) != 0) {
    napi_release_threadsafe_function(on_stall, napi_tsfn_abort);
    return boolean_value(env, 0);
  }
  watchdog_running = 1;
#ifdef __linux__
  pthread_setname_np(watchdog, "sysprobe-watch"); /* before start() resolves, so /proc names it from the start */
#endif
  napi_add_env_cleanup_hook(env, cleanup_hook, NULL);
  return boolean_value(env, 1);
}

static napi_value stop_watchdog_js(napi_env env, napi_callback_info info) {
  (void)info;
  int was_running = watchdog_running;
  stop_watchdog();
  if (was_running) napi_remove_env_cleanup_hook(env, cleanup_hook, NULL);
  return undefined_value(env);
}

/* lagMs(): how long the watched loop has been busy in its current turn. */
static napi_value lag_ms(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value v;
  napi_create_double(env, atomic_load(&attached) ? (double)busy_ns(uv_hrtime()) / 1e6 : 0, &v);
  return v;
}

/* takeLongestTurn(): on the attached thread, the longest turn (ms) since the last call. */
static napi_value take_longest_turn(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value v;
  napi_create_double(env, (double)longest_turn_published / 1e6, &v);
  longest_turn_published = 0;
  return v;
}

/*
 * readLag(cursor, out: Float64Array): copies the lag samples (ms) written since
 * `cursor` (a count; start at 0) into out, oldest first, and returns
 * [next cursor, samples copied]. Samples older than the ring, or more than out
 * holds, are skipped (the oldest go).
 */
static napi_value read_lag(napi_env env, napi_callback_info info) {
  size_t argc = 2, length;
  napi_value args[2], result;
  double cursor_in;
  void* data;
  napi_typedarray_type type;
  napi_get_cb_info(env, info, &argc, args, NULL, NULL);
  if (argc < 2 || napi_get_value_double(env, args[0], &cursor_in) != napi_ok ||
      napi_get_typedarray_info(env, args[1], &type, &length, &data, NULL, NULL) != napi_ok || type != napi_float64_array) {
    napi_throw_type_error(env, NULL, "readLag(cursor, Float64Array)");
    return NULL;
  }
  uint64_t end = atomic_load_explicit(&lag_count, memory_order_acquire);
  uint64_t cursor = cursor_in < 0 ? 0 : cursor_in > (double)end ? end : (uint64_t)cursor_in;
  uint64_t from = cursor;
  if (end - from > LAG_RING) from = end - LAG_RING;
  if (end - from > length) from = end - length;
  double* out = data;
  for (uint64_t i = from; i < end; i++) out[i - from] = (double)atomic_load_explicit(&lag_ring[i % LAG_RING], memory_order_relaxed) / 1e6;
  napi_value next, count;
  napi_create_array_with_length(env, 2, &result);
  napi_create_double(env, (double)end, &next);
  napi_create_double(env, (double)(end - from), &count);
  napi_set_element(env, result, 0, next);
  napi_set_element(env, result, 1, count);
  return result;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"attach", NULL, attach, NULL, NULL, NULL, napi_enumerable, NULL},
    {"detach", NULL, detach, NULL, NULL, NULL, napi_enumerable, NULL},
    {"startWatchdog", NULL, start_watchdog, NULL, NULL, NULL, napi_enumerable, NULL},
    {"stopWatchdog", NULL, stop_watchdog_js, NULL, NULL, NULL, napi_enumerable, NULL},
    {"lagMs", NULL, lag_ms, NULL, NULL, NULL, napi_enumerable, NULL},
    {"takeLongestTurn", NULL, take_longest_turn, NULL, NULL, NULL, napi_enumerable, NULL},
    {"readLag", NULL, read_lag, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE_INIT() { return init(env, exports); }
