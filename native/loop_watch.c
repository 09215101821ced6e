/*
 * Loop watch: sees a stalled event loop without waking the loop it watches.
 *
 * The JS heartbeat costs a wake-up of the watched thread (~170 µs here) several
 * times a second. This addon needs none:
 *   - a uv_prepare hook on the watched loop stamps each turn just before the
 *     loop polls (one clock read, only when the loop turns anyway);
 *   - libuv already counts the time the loop spends waiting in epoll
 *     (uv_metrics_idle_time, thread-safe), so from any thread:
 *         left the poll = stamp + (idle now - idle at stamp)
 *         busy for      = now - left the poll      (about 0 while it waits)
 *   - a watchdog pthread, started by the probe worker, looks at the loop and
 *     calls into the worker's JS only when a stall starts or ends, and once
 *     when the watched thread has ended. One probe worker may run several: its
 *     host's loop and each app worker registered with watchThread().
 *   - while the loop waits in poll the watchdog parks (a futex on the watch's
 *     park word) instead of looking every threshold; the loop's own thread
 *     wakes it from its first entry into JavaScript (and from a GC) after the
 *     poll: native/thread_stack.cc registers V8 callbacks that do it (this
 *     file is on Node-API only, V8's C++ API is per ABI). Without them the
 *     watchdog never parks and looks as before. See park() for why a turn
 *     cannot start unseen.
 *
 * Any thread's loop can be watched (the main thread's, or an app worker's that
 * runs its own probe), several at once. What makes that safe:
 *   - each watched loop has its own heap-allocated state (`watch`), found by id
 *     in a registry under a mutex and reference-counted: the watched thread
 *     holds one reference, each watchdog another, so neither can free it under
 *     the other;
 *   - the hook is closed by an async cleanup hook of the watched thread's
 *     environment, before its loop closes; from then on the watch says "no
 *     loop" and a watchdog that outlives it sees a loop that is never busy;
 *   - this shared library pins itself in memory (RTLD_NODELETE): Node unloads
 *     a worker's addons when the worker ends, and a hook callback or a watchdog
 *     thread must never run code from an unmapped library.
 */
#define _GNU_SOURCE /* pthread_setname_np, dladdr */
#define NAPI_VERSION 8
#include <node_api.h>
#include <uv.h>

#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

/* Lag samples kept for readers (one sample per threshold: 1024 is minutes). */
#define LAG_RING 1024

/*
 * A parked watchdog looks anyway after this long. It bounds how late a stall is
 * seen when its turn starts without entering JavaScript or collecting garbage
 * (native code only: a platform task, an addon's uv callback stuck on a lock),
 * i.e. without waking it: such a stall is seen at most 5 s late, as it runs; one
 * that ended before that look is reported then as a late stall (the hook timed
 * its turn), without a stack, which a turn with no JavaScript does not have.
 * A wake-up costs 150 to 450 us of CPU on this machine's VM, mostly the switch:
 * 0.2 wake-ups/s, against 5/s when looking every 200 ms.
 */
#define PARK_FALLBACK_NS 5000000000ull

/*
 * Park words: a watch's futex word lives in this static pool, not in the watch,
 * so that the watched thread's V8 callbacks (which hold its address in a
 * thread-local) never touch freed memory: a word outlives its watch, and a
 * stale address can only cause one spurious wake-up of a later watch's dogs.
 * Padded to a cache line each: the watched threads only read their own.
 */
#define PARK_WORDS 64
typedef struct {
  _Alignas(64) _Atomic uint32_t word; /* 1: a watchdog of this loop is (about to be) parked */
} park_word;
static park_word park_words[PARK_WORDS];
static unsigned char park_word_used[PARK_WORDS]; /* registry_mutex */

/* One watched loop. */
typedef struct watch {
  struct watch* next; /* registry list; registry_mutex */
  uint32_t id;        /* registry_mutex */
  int refs;           /* registry_mutex */
  int registered;     /* registry_mutex: findable by id */

  /* The loop, NULL once its environment began to close; other threads read it under loop_mutex. */
  pthread_mutex_t loop_mutex;
  uv_loop_t* loop;
  /* 1 while the hook runs (an attach() not yet matched by detach()): an unhooked loop is never busy. */
  atomic_int hooked;
  /* The park word (park_words), NULL if the pool was empty: then the watchdogs never park. */
  _Atomic uint32_t* park;
  /* 1 while the watched thread wakes parked watchdogs from its JS entries (sysprobe_loop_watch_entry_word). */
  atomic_int wakes_on_entry;

  /* ---- The watched thread's own (the hook and its environment's calls). ---- */
  uv_prepare_t hook;
  napi_async_cleanup_hook_handle cleanup;
  uint64_t longest_turn_published; /* longest turn since takeLongestTurn() */

  /* ---- Written by the hook, read by the watchdog. ---- */
  atomic_uint stamp_seq;         /* seqlock over the two stamps below */
  _Atomic uint64_t stamp_at;     /* uv_hrtime() when the loop last went to poll */
  _Atomic uint64_t stamp_idle;   /* uv_metrics_idle_time() at that moment */
  _Atomic uint64_t longest_turn; /* longest turn since the watchdog last took it, ns */
  _Atomic uint64_t longest_turn_start; /* when that turn left poll (uv_hrtime) */

  /* ---- Written by the watchdog, read by anyone. ---- */
  _Atomic uint64_t lag_ring[LAG_RING]; /* lag samples, ns */
  _Atomic uint64_t lag_count;          /* samples ever written */
} watch;

/* A watchdog thread, owned by the environment that started it (the probe worker's). */
typedef struct watchdog {
  watch* w; /* one reference held */
  pthread_t thread;
  pthread_mutex_t mutex;
  pthread_cond_t wake;
  atomic_int stopping; /* set under mutex; read without it while parked */
  uint64_t threshold_ns;
  napi_threadsafe_function on_stall;
  struct env_state* owner;
  struct watchdog* next; /* the owner's list */
} watchdog;

/* Per environment (thread) that loaded the addon. */
typedef struct env_state {
  watch* attached; /* the loop this thread hooked, if any (one reference) */
  int users;       /* attach() calls not yet matched by detach(): the hook runs while > 0 */
  watchdog* dogs;  /* the watchdogs this thread started, one per watched loop */
} env_state;

static pthread_mutex_t registry_mutex = PTHREAD_MUTEX_INITIALIZER;
static watch* registry;
static uint32_t last_id;

/* started: 1 a stall began, 0 it ended, 2 one ended that no look saw while it ran, -1 the watched loop is gone (its thread ended). */
typedef struct { int started; double start_ms; double duration_ms; } stall_event;

static uint64_t max_u64(uint64_t a, uint64_t b) { return a > b ? a : b; }

/* ---- The registry ---- */

static watch* find_watch(uint32_t id) {
  watch* found = NULL;
  pthread_mutex_lock(&registry_mutex);
  for (watch* w = registry; w; w = w->next) {
    if (w->id == id && w->registered) {
      w->refs++;
      found = w;
      break;
    }
  }
  pthread_mutex_unlock(&registry_mutex);
  return found;
}

static void put_watch(watch* w) {
  int last;
  pthread_mutex_lock(&registry_mutex);
  last = --w->refs == 0;
  if (last) {
    for (watch** at = &registry; *at; at = &(*at)->next) {
      if (*at == w) {
        *at = w->next;
        break;
      }
    }
    if (w->park) park_word_used[(park_word*)(void*)w->park - park_words] = 0;
  }
  pthread_mutex_unlock(&registry_mutex);
  if (last) {
    pthread_mutex_destroy(&w->loop_mutex);
    free(w);
  }
}

/* ---- Parking ---- */

#ifdef __linux__
static long futex(_Atomic uint32_t* word, int op, uint32_t value, const struct timespec* timeout) {
  return syscall(SYS_futex, (uint32_t*)word, op, value, timeout, NULL, 0);
}
#endif

/* Wakes every watchdog parked on `word` (the word is cleared first: one that is about to wait does not). */
static void wake_parked(_Atomic uint32_t* word) {
  if (!word) return;
  atomic_store_explicit(word, 0, memory_order_seq_cst);
#ifdef __linux__
  futex(word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL);
#endif
}

/* The watch the calling thread hooked (attach), until its environment closes it. */
static _Thread_local watch* thread_watch;

/*
 * For native/thread_stack.cc, found with dlsym: on the watched thread, on = 1
 * says its V8 callbacks now wake parked watchdogs, and returns the word they
 * must clear (and FUTEX_WAKE) when they find it set; NULL when this thread
 * hooked no loop or has no word. on = 0 says they stopped (the watchdogs look
 * periodically again, woken now).
 */
__attribute__((visibility("default"))) _Atomic uint32_t* sysprobe_loop_watch_entry_word(int on) {
  watch* w = thread_watch;
  if (!w || !w->park) return NULL;
  atomic_store_explicit(&w->wakes_on_entry, on ? 1 : 0, memory_order_seq_cst);
  if (!on) wake_parked(w->park);
  return on ? w->park : NULL;
}

/* ---- The hook, on the watched loop's thread ---- */

static void on_turn(uv_prepare_t* handle) {
  watch* w = handle->data;
  uint64_t now = uv_hrtime();
  uint64_t idle = uv_metrics_idle_time(handle->loop);
  uint64_t prev_at = atomic_load_explicit(&w->stamp_at, memory_order_relaxed);
  uint64_t prev_idle = atomic_load_explicit(&w->stamp_idle, memory_order_relaxed);
  uint64_t elapsed = now - prev_at, waited = idle - prev_idle;
  uint64_t turn = elapsed > waited ? elapsed - waited : 0;
  uint64_t longest = atomic_load_explicit(&w->longest_turn, memory_order_relaxed);
  while (turn > longest && !atomic_compare_exchange_weak_explicit(&w->longest_turn, &longest, turn, memory_order_relaxed,
                                                                  memory_order_relaxed)) {
  }
  if (turn > longest) atomic_store_explicit(&w->longest_turn_start, now - turn, memory_order_relaxed);
  if (turn > w->longest_turn_published) w->longest_turn_published = turn;
  unsigned seq = atomic_load_explicit(&w->stamp_seq, memory_order_relaxed);
  atomic_store_explicit(&w->stamp_seq, seq + 1, memory_order_relaxed);
  atomic_thread_fence(memory_order_release);
  atomic_store_explicit(&w->stamp_at, now, memory_order_relaxed);
  atomic_store_explicit(&w->stamp_idle, idle, memory_order_relaxed);
  atomic_store_explicit(&w->stamp_seq, seq + 2, memory_order_release);
}

static void on_hook_closed(uv_handle_t* handle) {
  watch* w = handle->data;
  napi_remove_async_cleanup_hook(w->cleanup);
  pthread_mutex_lock(&registry_mutex);
  w->registered = 0;
  pthread_mutex_unlock(&registry_mutex);
  put_watch(w); /* the watched thread's reference */
}

/* The watched thread's environment is ending: unhook before its loop closes. */
static void close_watch(napi_async_cleanup_hook_handle handle, void* arg) {
  watch* w = arg;
  (void)handle;
  pthread_mutex_lock(&w->loop_mutex);
  w->loop = NULL; /* watchdogs stop reading the loop now */
  pthread_mutex_unlock(&w->loop_mutex);
  if (thread_watch == w) thread_watch = NULL;
  atomic_store_explicit(&w->wakes_on_entry, 0, memory_order_seq_cst);
  wake_parked(w->park); /* parked watchdogs hear now that the loop is gone */
  uv_prepare_stop(&w->hook);
  uv_close((uv_handle_t*)&w->hook, on_hook_closed);
}

/* ---- Read from any thread ---- */

/* How long the watched loop has been busy in its current turn; 0 while it waits in poll or once it is gone. */
static uint64_t busy_ns(watch* w, uint64_t now, int* gone) {
  uint64_t at, idle_at, idle_now;
  unsigned before, after;
  do {
    before = atomic_load_explicit(&w->stamp_seq, memory_order_acquire);
    at = atomic_load_explicit(&w->stamp_at, memory_order_relaxed);
    idle_at = atomic_load_explicit(&w->stamp_idle, memory_order_relaxed);
    atomic_thread_fence(memory_order_acquire);
    after = atomic_load_explicit(&w->stamp_seq, memory_order_relaxed);
  } while ((before & 1) || before != after);
  if (!atomic_load_explicit(&w->hooked, memory_order_acquire)) return 0;
  pthread_mutex_lock(&w->loop_mutex);
  if (!w->loop) {
    pthread_mutex_unlock(&w->loop_mutex);
    if (gone) *gone = 1;
    return 0;
  }
  idle_now = uv_metrics_idle_time(w->loop);
  pthread_mutex_unlock(&w->loop_mutex);
  uint64_t left_poll = at + (idle_now > idle_at ? idle_now - idle_at : 0);
  return now > left_poll ? now - left_poll : 0;
}

static void push_lag(watch* w, uint64_t ns) {
  uint64_t n = atomic_load_explicit(&w->lag_count, memory_order_relaxed);
  atomic_store_explicit(&w->lag_ring[n % LAG_RING], ns, memory_order_relaxed);
  atomic_store_explicit(&w->lag_count, n + 1, memory_order_release);
}

/* ---- The watchdog thread ---- */

static void emit(watchdog* dog, int started, uint64_t start_ns, uint64_t duration_ns) {
  stall_event* event = malloc(sizeof *event);
  if (!event) return;
  event->started = started;
  event->start_ms = (double)start_ns / 1e6;
  event->duration_ms = (double)duration_ns / 1e6;
  if (napi_call_threadsafe_function(dog->on_stall, event, napi_tsfn_nonblocking) != napi_ok) free(event);
}

/*
 * 1 if the watched loop was waiting in poll at a moment after the caller's
 * earlier stores: two reads of its idle time, under libuv's metrics mutex, differ
 * only while it waits there (the idle time then grows with the clock; in a turn it
 * is constant), and no new turn stamped in between (the stamp moves before poll).
 * So the first read found the loop in poll, and libuv's update of the idle time
 * when the loop leaves it takes the same mutex later.
 */
static int waits_in_poll(watch* w) {
  unsigned before = atomic_load_explicit(&w->stamp_seq, memory_order_acquire);
  uint64_t first, second;
  if (before & 1) return 0;
  pthread_mutex_lock(&w->loop_mutex);
  if (!w->loop) {
    pthread_mutex_unlock(&w->loop_mutex);
    return 0;
  }
  first = uv_metrics_idle_time(w->loop);
  second = uv_metrics_idle_time(w->loop);
  pthread_mutex_unlock(&w->loop_mutex);
  return second != first && atomic_load_explicit(&w->stamp_seq, memory_order_acquire) == before;
}

/*
 * Parks the watchdog (its mutex released meanwhile) until the watched thread
 * enters JavaScript or collects garbage, the watchdog is stopped, the loop is
 * gone, or PARK_FALLBACK_NS passed: PARK_WOKEN or PARK_TIMED_OUT. Returns 0
 * without parking when the loop is not waiting in poll.
 *
 * Why a turn cannot start unseen: the watchdog stores 1 in the park word, then
 * (waits_in_poll) finds the loop in poll under libuv's metrics mutex. The loop
 * thread, leaving poll, updates its idle time under that mutex (libuv does it
 * before each I/O callback and before the timers and immediates run), and only
 * then runs the turn's JavaScript, whose first entry loads the word
 * (thread_stack.cc). Unlocking the mutex after the watchdog's read, then locking
 * it in the loop thread, orders the store of 1 before that load: the load sees
 * 1 (or a later value: 0 from a wake that already woke this watchdog), so the
 * loop thread wakes it. Had the loop left poll before the watchdog's read, the
 * idle time stops growing and the watchdog does not park. The loop thread's
 * load needs no fence (one plain load per JS entry); the store's seq_cst is
 * belt and braces.
 */
enum { PARK_WOKEN = 1, PARK_TIMED_OUT = 2 };

static int park(watchdog* dog, watch* w) {
  _Atomic uint32_t* word = w->park;
  int how = PARK_WOKEN;
  atomic_store_explicit(word, 1, memory_order_seq_cst);
  if (!waits_in_poll(w)) return 0; /* the word stays set: the turn's next JS entry clears it */
  pthread_mutex_unlock(&dog->mutex);
  uint64_t deadline = uv_hrtime() + PARK_FALLBACK_NS;
  while (atomic_load_explicit(word, memory_order_acquire) && !atomic_load(&dog->stopping)) {
    uint64_t now = uv_hrtime();
    if (now >= deadline) {
      how = PARK_TIMED_OUT;
      break;
    }
    struct timespec left = {(time_t)((deadline - now) / 1000000000u), (long)((deadline - now) % 1000000000u)};
#ifdef __linux__
    futex(word, FUTEX_WAIT_PRIVATE, 1, &left); /* returns at once if the word is 0 already */
#else
    nanosleep(&left, NULL);
#endif
  }
  pthread_mutex_lock(&dog->mutex);
  return how;
}

static void* watch_loop(void* arg) {
  watchdog* dog = arg;
  watch* w = dog->w;
  uint64_t threshold_ns = dog->threshold_ns;
  int stalled = 0;
  uint64_t stall_start = 0;
  uint64_t next_sample = uv_hrtime() + threshold_ns;
  /* While stalled, look often enough to report the end promptly. */
  uint64_t stalled_poll = threshold_ns / 4 < 50000000 ? threshold_ns / 4 : 50000000;
  int gone = 0;
  int parked = 0; /* how the last wait ended: 0 not parked, PARK_WOKEN, PARK_TIMED_OUT */
  unsigned seen_seq = atomic_load_explicit(&w->stamp_seq, memory_order_acquire); /* the turn stamp at the previous look */
  pthread_mutex_lock(&dog->mutex);
  while (!dog->stopping) {
    uint64_t now = uv_hrtime();
    uint64_t wake = now + 60000000000ull; /* once the loop is gone: only wait to be stopped */
    unsigned seq = atomic_load_explicit(&w->stamp_seq, memory_order_acquire);
    uint64_t busy = gone ? 0 : busy_ns(w, now, &gone);
    if (gone && gone != 2) {
      /* The watched thread ended: a stall it was in ends here, then the owner hears, once, that it is gone. */
      if (stalled) emit(dog, 0, stall_start, max_u64(now - stall_start, threshold_ns));
      stalled = 0;
      emit(dog, -1, now, 0);
      gone = 2;
    } else if (!gone) {
      if (parked) {
        /* The samples due while parked: the loop waited (lag 0) until it left poll, now - busy. */
        uint64_t left_poll = now - busy;
        for (int n = 0; next_sample + threshold_ns <= now && n < LAG_RING; n++) {
          push_lag(w, next_sample > left_poll ? next_sample - left_poll : 0);
          next_sample += threshold_ns;
        }
        if (next_sample + threshold_ns <= now) next_sample = now; /* older than the ring: skipped */
      }
      if (now >= next_sample) {
        push_lag(w, busy);
        next_sample = now + threshold_ns;
      }
      if (!stalled) {
        /*
         * A turn that reached the threshold and ended between two looks: this thread was kept off the
         * CPU while it ran (a starved host, a container's CPU quota). Reported late, never lost.
         */
        uint64_t done = atomic_exchange_explicit(&w->longest_turn, 0, memory_order_relaxed);
        if (done >= threshold_ns)
          emit(dog, 2, atomic_load_explicit(&w->longest_turn_start, memory_order_relaxed), done);
      }
      if (!stalled && busy >= threshold_ns) {
        stalled = 1;
        stall_start = now - busy;
        emit(dog, 1, stall_start, busy);
      } else if (stalled && now - busy > stall_start + 1000000) {
        /* The loop has left the stalled turn; the hook measured it whole. */
        stalled = 0;
        uint64_t turn = atomic_exchange_explicit(&w->longest_turn, 0, memory_order_relaxed);
        emit(dog, 0, stall_start, max_u64(turn, threshold_ns));
      }
      /*
       * Park while the loop waits, unless it turns often (more than one turn since the previous look: a busy
       * loop would wake the watchdog at once, at the cost of a futex wake on its own thread), or the watchdog was
       * woken just now by the turn under way.
       */
      int may_park = !stalled && parked != PARK_WOKEN && seq - seen_seq <= 2 && w->park &&
                     atomic_load(&w->wakes_on_entry);
      seen_seq = seq;
      parked = may_park ? park(dog, w) : 0;
      if (parked) continue;
      /* Next look: the next lag sample, or the moment this turn would become a stall. */
      wake = next_sample;
      if (stalled) wake = now + stalled_poll;
      else if (busy > 0 && now - busy + threshold_ns < wake) wake = now - busy + threshold_ns;
    }
    struct timespec deadline;
    deadline.tv_sec = (time_t)(wake / 1000000000u);
    deadline.tv_nsec = (long)(wake % 1000000000u);
    /* uv_hrtime() is CLOCK_MONOTONIC, the clock the condition variable waits on. */
    int rc;
    do rc = pthread_cond_timedwait(&dog->wake, &dog->mutex, &deadline);
    while (rc == 0 && !dog->stopping && uv_hrtime() < wake);
  }
  pthread_mutex_unlock(&dog->mutex);
  return NULL;
}

/* Joins the thread and frees the watchdog; on the thread that started it. */
static void stop_dog(watchdog* dog) {
  pthread_mutex_lock(&dog->mutex);
  atomic_store(&dog->stopping, 1);
  pthread_cond_signal(&dog->wake);
  pthread_mutex_unlock(&dog->mutex);
  if (dog->w->park) wake_parked(dog->w->park); /* after stopping is set: a dog about to park sees one or the other */
  pthread_join(dog->thread, NULL);
  napi_release_threadsafe_function(dog->on_stall, napi_tsfn_abort);
  if (dog->owner) {
    for (watchdog** at = &dog->owner->dogs; *at; at = &(*at)->next) {
      if (*at == dog) {
        *at = dog->next;
        break;
      }
    }
  }
  put_watch(dog->w);
  pthread_cond_destroy(&dog->wake);
  pthread_mutex_destroy(&dog->mutex);
  free(dog);
}

/* The owner's environment is ending with its watchdog still running. */
static void dog_cleanup(void* arg) { stop_dog(arg); }

/* ---- JS bindings ---- */

static env_state* state_of(napi_env env) {
  void* data = NULL;
  napi_get_instance_data(env, &data);
  return data;
}

static napi_value number_value(napi_env env, double d) {
  napi_value v;
  napi_create_double(env, d, &v);
  return v;
}

static napi_value boolean_value(napi_env env, int b) {
  napi_value v;
  napi_get_boolean(env, b, &v);
  return v;
}

static void free_closed(uv_handle_t* handle) { free(handle->data); }

/*
 * attach(): hooks the calling thread's loop and returns the loop's id (> 0) for
 * startWatchdog, or 0 if it cannot. The hook lives until the thread's
 * environment ends, so a stop/start is synchronous: detach() only stops it.
 */
static napi_value attach(napi_env env, napi_callback_info info) {
  (void)info;
  env_state* st = state_of(env);
  uv_loop_t* loop;
  if (!st || napi_get_uv_event_loop(env, &loop) != napi_ok) return number_value(env, 0);
  watch* w = st->attached;
  if (!w) {
    w = calloc(1, sizeof *w);
    if (!w) return number_value(env, 0);
    if (pthread_mutex_init(&w->loop_mutex, NULL) != 0) {
      free(w);
      return number_value(env, 0);
    }
    if (uv_prepare_init(loop, &w->hook) != 0) {
      pthread_mutex_destroy(&w->loop_mutex);
      free(w);
      return number_value(env, 0);
    }
    w->hook.data = w;
    w->loop = loop;
    uv_unref((uv_handle_t*)&w->hook); /* never keeps the thread alive */
    if (napi_add_async_cleanup_hook(env, close_watch, w, &w->cleanup) != napi_ok) {
      /* Cannot unhook at teardown, so do not hook: close now, and free once closed. */
      pthread_mutex_destroy(&w->loop_mutex);
      uv_close((uv_handle_t*)&w->hook, free_closed);
      return number_value(env, 0);
    }
    w->refs = 1;
    w->registered = 1;
    pthread_mutex_lock(&registry_mutex);
    for (int i = 0; i < PARK_WORDS; i++) {
      if (!park_word_used[i]) {
        park_word_used[i] = 1;
        atomic_store(&park_words[i].word, 0);
        w->park = &park_words[i].word;
        break;
      }
    }
    w->id = ++last_id ? last_id : ++last_id; /* never 0 */
    w->next = registry;
    registry = w;
    pthread_mutex_unlock(&registry_mutex);
    st->attached = w;
    thread_watch = w;
  }
  if (st->users++ == 0) {
    atomic_store(&w->stamp_at, uv_hrtime());
    atomic_store(&w->stamp_idle, uv_metrics_idle_time(loop));
    atomic_store(&w->longest_turn, 0); /* turns from before this attach are nobody's stalls */
    w->longest_turn_published = 0;
    uv_prepare_start(&w->hook, on_turn);
    atomic_store_explicit(&w->hooked, 1, memory_order_release);
  }
  return number_value(env, w->id);
}

/*
 * detach(): matches one attach(); the last stops the calling thread's hook (after its
 * watchdogs have stopped). A thread's own probe and watchThread() each attach.
 */
static napi_value detach(napi_env env, napi_callback_info info) {
  (void)info;
  env_state* st = state_of(env);
  if (st && st->attached && st->users > 0 && --st->users == 0) {
    atomic_store_explicit(&st->attached->hooked, 0, memory_order_release);
    uv_prepare_stop(&st->attached->hook);
  }
  return NULL;
}

static void call_js(napi_env env, napi_value callback, void* context, void* data) {
  (void)context;
  stall_event* event = data;
  if (env && callback) {
    napi_value args[5], global;
    napi_get_boolean(env, event->started == 1, &args[0]);
    napi_create_double(env, event->start_ms, &args[1]);
    napi_create_double(env, event->duration_ms, &args[2]);
    napi_get_boolean(env, event->started < 0, &args[3]);
    napi_get_boolean(env, event->started == 2, &args[4]);
    napi_get_global(env, &global);
    napi_call_function(env, global, callback, 5, args, NULL);
  }
  free(event);
}

/* The calling thread's watchdog of loop `id`, if it started one. */
static watchdog* dog_of(env_state* st, uint32_t id) {
  if (!st) return NULL;
  for (watchdog* dog = st->dogs; dog; dog = dog->next)
    if (dog->w->id == id) return dog;
  return NULL;
}

/*
 * startWatchdog(loopId, thresholdMs, onStall(started, startMs, durationMs, gone, late)): from
 * the probe worker; onStall runs on the calling thread. One per loop per calling thread
 * (the probe worker watches its host's loop and each thread registered with watchThread()).
 * `gone`: the watched thread ended (said once, after the end of a stall it was in).
 * `late`: a stall that had ended before any look saw it (said once, with its whole length).
 */
static napi_value start_watchdog(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value args[3], name;
  double loop_id, threshold_ms;
  env_state* st = state_of(env);
  napi_get_cb_info(env, info, &argc, args, NULL, NULL);
  if (argc < 3 || napi_get_value_double(env, args[0], &loop_id) != napi_ok ||
      napi_get_value_double(env, args[1], &threshold_ms) != napi_ok || threshold_ms < 1 || loop_id < 1) {
    napi_throw_type_error(env, NULL, "startWatchdog(loopId >= 1, thresholdMs >= 1, onStall)");
    return NULL;
  }
  if (!st || dog_of(st, (uint32_t)loop_id)) return boolean_value(env, 0);
  watchdog* dog = calloc(1, sizeof *dog);
  if (!dog) return boolean_value(env, 0);
  dog->w = find_watch((uint32_t)loop_id);
  if (!dog->w) {
    free(dog);
    return boolean_value(env, 0);
  }
  napi_create_string_utf8(env, "sysprobe-loop-watch", NAPI_AUTO_LENGTH, &name);
  if (napi_create_threadsafe_function(env, args[2], NULL, name, 64, 1, NULL, NULL, NULL, call_js, &dog->on_stall) !=
      napi_ok) {
    put_watch(dog->w);
    free(dog);
    return boolean_value(env, 0);
  }
  napi_unref_threadsafe_function(env, dog->on_stall);
  pthread_condattr_t attr;
  pthread_condattr_init(&attr);
  pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
  pthread_cond_init(&dog->wake, &attr);
  pthread_condattr_destroy(&attr);
  pthread_mutex_init(&dog->mutex, NULL);
  dog->threshold_ns = (uint64_t)(threshold_ms * 1e6);
  if (pthread_create(&dog->thread, NULL, watch_loop, dog) != 0) {
    napi_release_threadsafe_function(dog->on_stall, napi_tsfn_abort);
    pthread_cond_destroy(&dog->wake);
    pthread_mutex_destroy(&dog->mutex);
    put_watch(dog->w);
    free(dog);
    return boolean_value(env, 0);
  }
#ifdef __linux__
  pthread_setname_np(dog->thread, "sysprobe-watch"); /* before start() resolves, so /proc names it from the start */
#endif
  dog->owner = st;
  dog->next = st->dogs;
  st->dogs = dog;
  napi_add_env_cleanup_hook(env, dog_cleanup, dog);
  return boolean_value(env, 1);
}

/* The loop id given as the first argument, or 0. */
static uint32_t loop_arg(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value args[1];
  double id = 0;
  napi_get_cb_info(env, info, &argc, args, NULL, NULL);
  if (argc < 1 || napi_get_value_double(env, args[0], &id) != napi_ok || id < 1 || id > 4294967295.0) return 0;
  return (uint32_t)id;
}

/* stopWatchdog(loopId): stops the calling thread's watchdog of that loop (joins its thread). */
static napi_value stop_watchdog_js(napi_env env, napi_callback_info info) {
  watchdog* dog = dog_of(state_of(env), loop_arg(env, info));
  if (dog) {
    napi_remove_env_cleanup_hook(env, dog_cleanup, dog);
    stop_dog(dog);
  }
  return NULL;
}

/* lagMs(loopId): how long that loop, watched by this thread's watchdog, has been busy in its current turn. */
static napi_value lag_ms(napi_env env, napi_callback_info info) {
  watchdog* dog = dog_of(state_of(env), loop_arg(env, info));
  return number_value(env, dog ? (double)busy_ns(dog->w, uv_hrtime(), NULL) / 1e6 : 0);
}

/* takeLongestTurn(): on the attached thread, the longest turn (ms) since the last call. */
static napi_value take_longest_turn(napi_env env, napi_callback_info info) {
  (void)info;
  env_state* st = state_of(env);
  if (!st || !st->attached) return number_value(env, 0);
  double ms = (double)st->attached->longest_turn_published / 1e6;
  st->attached->longest_turn_published = 0;
  return number_value(env, ms);
}

/*
 * readLag(cursor, out: Float64Array): on the attached thread, copies the lag
 * samples (ms) of its loop written since `cursor` (a count; start at 0) into
 * out, oldest first, and returns [next cursor, samples copied]. Samples older
 * than the ring, or more than out holds, are skipped (the oldest go).
 */
static napi_value read_lag(napi_env env, napi_callback_info info) {
  size_t argc = 2, length;
  napi_value args[2], result;
  double cursor_in;
  void* data;
  napi_typedarray_type type;
  env_state* st = state_of(env);
  napi_get_cb_info(env, info, &argc, args, NULL, NULL);
  if (argc < 2 || napi_get_value_double(env, args[0], &cursor_in) != napi_ok ||
      napi_get_typedarray_info(env, args[1], &type, &length, &data, NULL, NULL) != napi_ok ||
      type != napi_float64_array) {
    napi_throw_type_error(env, NULL, "readLag(cursor, Float64Array)");
    return NULL;
  }
  watch* w = st ? st->attached : NULL;
  uint64_t end = w ? atomic_load_explicit(&w->lag_count, memory_order_acquire) : 0;
  uint64_t cursor = cursor_in < 0 ? 0 : cursor_in > (double)end ? end : (uint64_t)cursor_in;
  uint64_t from = cursor;
  if (end - from > LAG_RING) from = end - LAG_RING;
  if (end - from > length) from = end - length;
  double* out = data;
  for (uint64_t i = from; i < end; i++)
    out[i - from] = (double)atomic_load_explicit(&w->lag_ring[i % LAG_RING], memory_order_relaxed) / 1e6;
  napi_create_array_with_length(env, 2, &result);
  napi_set_element(env, result, 0, number_value(env, (double)end));
  napi_set_element(env, result, 1, number_value(env, (double)(end - from)));
  return result;
}

static void free_state(napi_env env, void* data, void* hint) {
  (void)env;
  (void)hint;
  /* Cleanup hooks have run: the watchdog is stopped and the hook closing; only the record goes. */
  free(data);
}

/*
 * Node dlclose()s a worker's addons when the worker ends, but a watched loop's
 * hook and the watchdog threads may outlive the thread that loaded us: keep
 * this library mapped for the life of the process.
 */
static void pin_library(void) {
  Dl_info self;
  if (dladdr((void*)pin_library, &self) && self.dli_fname) dlopen(self.dli_fname, RTLD_LAZY | RTLD_NODELETE | RTLD_NOLOAD);
}

static pthread_once_t pinned = PTHREAD_ONCE_INIT;

static napi_value init(napi_env env, napi_value exports) {
  pthread_once(&pinned, pin_library);
  env_state* st = calloc(1, sizeof *st);
  if (st && napi_set_instance_data(env, st, free_state, NULL) != napi_ok) {
    free(st);
    st = NULL;
  }
  if (!st) {
    napi_throw_error(env, NULL, "loop_watch: out of memory"); /* the loader falls back to the heartbeat */
    return NULL;
  }
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
