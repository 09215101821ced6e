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
 *     host's loop and each app worker registered with watchThread(). It looks
 *     only while a turn may be running: while the loop waits in poll it parks
 *     until the loop's next event (the loop's epoll fd is in its own epoll set)
 *     or next timer (the hook records the poll's timeout); see watch_loop.
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
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
#ifdef __linux__
#include <sys/epoll.h>
#endif

/* Lag samples kept for readers (one sample per threshold: 1024 is minutes). */
#define LAG_RING 1024

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
  int backend_fd; /* the loop's epoll fd (uv_backend_fd), -1 if none; valid while loop is set */

  /* ---- The watched thread's own (the hook and its environment's calls). ---- */
  uv_prepare_t hook;
  napi_async_cleanup_hook_handle cleanup;
  uint64_t longest_turn_published; /* longest turn since takeLongestTurn() */

  /* ---- Written by the hook, read by the watchdog. ---- */
  atomic_uint stamp_seq;         /* seqlock over the two stamps below */
  _Atomic uint64_t stamp_at;     /* uv_hrtime() when the loop last went to poll */
  _Atomic uint64_t stamp_idle;   /* uv_metrics_idle_time() at that moment */
  _Atomic int64_t stamp_timeout; /* uv_backend_timeout() then: ms until its next timer, -1 none */
  _Atomic uint64_t longest_turn; /* longest turn since the watchdog last took it, ns */

  /* ---- Written by the watchdog, read by anyone. ---- */
  _Atomic uint64_t lag_ring[LAG_RING]; /* lag samples, ns */
  _Atomic uint64_t lag_count;          /* samples ever written */
} watch;

/* A watchdog thread, owned by the environment that started it (the probe worker's). */
typedef struct watchdog {
  watch* w; /* one reference held */
  pthread_t thread;
  int stop_fd[2];     /* a pipe: readable once stop_dog() asks the thread to end */
  int park_fd;        /* epoll set: stop_fd, and the watched loop's epoll fd (edge-triggered) while armed; -1: cannot park */
  int park_fd_failed; /* the watchdog thread's: park_fd failed once, look every threshold instead */
  int armed;          /* the watchdog thread's: the loop's epoll fd is in park_fd */
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

/* started: 1 a stall began, 0 it ended, -1 the watched loop is gone (its thread ended). */
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
  }
  pthread_mutex_unlock(&registry_mutex);
  if (last) {
    pthread_mutex_destroy(&w->loop_mutex);
    free(w);
  }
}

/* ---- The hook, on the watched loop's thread ---- */

static void on_turn(uv_prepare_t* handle) {
  watch* w = handle->data;
  uint64_t now = uv_hrtime();
  uint64_t idle = uv_metrics_idle_time(handle->loop);
  int64_t timeout = uv_backend_timeout(handle->loop);
  uint64_t prev_at = atomic_load_explicit(&w->stamp_at, memory_order_relaxed);
  uint64_t prev_idle = atomic_load_explicit(&w->stamp_idle, memory_order_relaxed);
  uint64_t elapsed = now - prev_at, waited = idle - prev_idle;
  uint64_t turn = elapsed > waited ? elapsed - waited : 0;
  uint64_t longest = atomic_load_explicit(&w->longest_turn, memory_order_relaxed);
  while (turn > longest && !atomic_compare_exchange_weak_explicit(&w->longest_turn, &longest, turn, memory_order_relaxed,
                                                                  memory_order_relaxed)) {
  }
  if (turn > w->longest_turn_published) w->longest_turn_published = turn;
  unsigned seq = atomic_load_explicit(&w->stamp_seq, memory_order_relaxed);
  atomic_store_explicit(&w->stamp_seq, seq + 1, memory_order_relaxed);
  atomic_thread_fence(memory_order_release);
  atomic_store_explicit(&w->stamp_at, now, memory_order_relaxed);
  atomic_store_explicit(&w->stamp_idle, idle, memory_order_relaxed);
  atomic_store_explicit(&w->stamp_timeout, timeout, memory_order_relaxed);
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
  uv_prepare_stop(&w->hook);
  uv_close((uv_handle_t*)&w->hook, on_hook_closed);
}

/* ---- Read from any thread ---- */

/* What the watchdog reads of a watched loop. */
typedef struct look {
  uint64_t busy;   /* how long the current turn has run, ns; about 0 while the loop waits in poll, 0 once it is gone */
  int waiting;     /* the loop waits in poll now (its idle time grows), is unhooked, or is gone */
  int gone;        /* the watched thread's environment has ended: its loop turns no more */
  unsigned turns;  /* the hook's count of turns (changes each time the loop goes to poll) */
  uint64_t at;     /* when the loop last went to poll */
  int64_t timeout; /* its poll's timeout then, ms (-1: no timer) */
} look;

static look look_at(watch* w, uint64_t now) {
  look l;
  uint64_t idle_at, idle_now;
  unsigned after;
  do {
    l.turns = atomic_load_explicit(&w->stamp_seq, memory_order_acquire);
    l.at = atomic_load_explicit(&w->stamp_at, memory_order_relaxed);
    idle_at = atomic_load_explicit(&w->stamp_idle, memory_order_relaxed);
    l.timeout = atomic_load_explicit(&w->stamp_timeout, memory_order_relaxed);
    atomic_thread_fence(memory_order_acquire);
    after = atomic_load_explicit(&w->stamp_seq, memory_order_relaxed);
  } while ((l.turns & 1) || l.turns != after);
  l.turns /= 2;
  l.busy = 0;
  l.waiting = 1;
  l.gone = 0;
  if (!atomic_load_explicit(&w->hooked, memory_order_acquire)) return l;
  pthread_mutex_lock(&w->loop_mutex);
  if (!w->loop) {
    pthread_mutex_unlock(&w->loop_mutex);
    l.timeout = -1;
    l.gone = 1;
    return l;
  }
  idle_now = uv_metrics_idle_time(w->loop);
  /* Out of poll, libuv's idle time stands still: two reads agree to the ns. In poll it counts up to now. */
  l.waiting = uv_metrics_idle_time(w->loop) != idle_now;
  pthread_mutex_unlock(&w->loop_mutex);
  uint64_t left_poll = l.at + (idle_now > idle_at ? idle_now - idle_at : 0);
  l.busy = now > left_poll ? now - left_poll : 0;
  return l;
}

/* How long the watched loop has been busy in its current turn; 0 while it waits in poll or once it is gone. */
static uint64_t busy_ns(watch* w, uint64_t now) { return look_at(w, now).busy; }

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
 * Parked, the watchdog sleeps this long at most while the loop waits with no timer:
 * a turn that neither an event nor a timer starts (a 'beforeExit' listener between
 * two runs of the loop) is seen that late.
 */
#define PARK_MAX_NS 10000000000ull
/* Once the watched thread has ended, the watchdog only waits to be stopped (checking this often). */
#define GONE_WAIT_NS 60000000000ull

enum { WOKE_TIME, WOKE_EVENT, WOKE_STOP };

/* Whether events wait for the loop that it has not taken yet (it is about to leave its poll). */
static int events_waiting(watch* w) {
  int waiting = 0;
  pthread_mutex_lock(&w->loop_mutex);
  if (w->loop && w->backend_fd >= 0) {
    struct pollfd p = {w->backend_fd, POLLIN, 0};
    waiting = poll(&p, 1, 0) != 0; /* an error counts as waiting: never park on a doubt */
  }
  pthread_mutex_unlock(&w->loop_mutex);
  return waiting;
}

/*
 * Puts the loop's epoll fd in the parking set (arm) or takes it out. Armed, each event
 * for the loop also wakes the set (a few hundred ns in the kernel, per event): so only
 * while parked, never while a busy loop is looked at every threshold.
 */
static void arm(watchdog* dog, int on) {
#ifdef __linux__
  watch* w = dog->w;
  if (dog->armed == on || dog->park_fd < 0) return;
  struct epoll_event loop = {.events = EPOLLIN | EPOLLET, .data = {.u32 = 1}};
  /* Under loop_mutex the loop, so its epoll fd, is open (its close takes it out of the set). */
  pthread_mutex_lock(&w->loop_mutex);
  if (w->loop && w->backend_fd >= 0) {
    if (epoll_ctl(dog->park_fd, on ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, w->backend_fd, &loop) == 0) dog->armed = on;
    else if (on) dog->park_fd_failed = 1;
  } else {
    dog->armed = 0;
  }
  pthread_mutex_unlock(&w->loop_mutex);
#else
  (void)dog;
  (void)on;
#endif
}

/*
 * Whether the watchdog may park now: armed first, then no event waits that the loop
 * has not taken (so any later one wakes the set), then the loop still waits with no
 * turn since `l` (a turn that began from an event taken before the check shows: the
 * event stays readable until its callback runs, and the callback runs after the loop's
 * idle time ends).
 */
static int may_park(watchdog* dog, look l) {
  if (dog->park_fd < 0 || dog->park_fd_failed) return 0;
  arm(dog, 1);
  if (!dog->armed) {
    /* A loop that is gone turns no more: park (till the next 10 s look or stop). */
    pthread_mutex_lock(&dog->w->loop_mutex);
    int gone = !dog->w->loop;
    pthread_mutex_unlock(&dog->w->loop_mutex);
    return gone && !dog->park_fd_failed;
  }
  if (events_waiting(dog->w)) return 0;
  look again = look_at(dog->w, uv_hrtime());
  return again.waiting && again.turns == l.turns;
}

/* Sleeps until `until` (uv_hrtime) or stop; parked, also until an event arrives for the watched loop. */
static int wait_until(watchdog* dog, uint64_t until, int parked) {
  for (;;) {
    uint64_t now = uv_hrtime();
    if (now >= until) return WOKE_TIME;
    int ms = (int)((until - now + 999999) / 1000000); /* at most PARK_MAX_NS */
#ifdef __linux__
    if (parked) {
      struct epoll_event events[2];
      int n = epoll_wait(dog->park_fd, events, 2, ms);
      if (n < 0 && errno != EINTR) dog->park_fd_failed = 1; /* not again: look instead */
      if (n < 0) return WOKE_TIME;
      for (int i = 0; i < n; i++)
        if (events[i].data.u32 == 0) return WOKE_STOP;
      if (n > 0) return WOKE_EVENT;
      continue;
    }
#else
    (void)parked;
#endif
    struct pollfd p = {dog->stop_fd[0], POLLIN, 0};
    int n = poll(&p, 1, ms);
    if (n > 0) return WOKE_STOP;
    if (n < 0 && errno != EINTR) return WOKE_TIME;
  }
}

/*
 * Looks at the loop only while it may be running a turn. A stall needs a running
 * turn, and the loop leaves its poll only for an event (which wakes the parked
 * watchdog too: while parked, the loop's epoll fd is in its set, edge-triggered) or for its
 * next timer (whose time the hook recorded): so while the loop waits, the watchdog
 * sleeps until either, and once a turn began it looks when the turn would reach the
 * threshold, exactly as a watchdog looking every threshold would.
 */
static void* watch_loop(void* arg) {
  watchdog* dog = arg;
  watch* w = dog->w;
  uint64_t threshold_ns = dog->threshold_ns;
  int stalled = 0, parked = 0, gone = 0;
  uint64_t stall_start = 0;
  uint64_t next_sample = uv_hrtime() + threshold_ns;
  /* While stalled, look often enough to report the end promptly. */
  uint64_t stalled_poll = threshold_ns / 4 < 50000000 ? threshold_ns / 4 : 50000000;
  unsigned turns_seen = look_at(w, uv_hrtime()).turns;
  for (;;) {
    uint64_t now = uv_hrtime();
    if (gone) {
      /* The watched thread ended and the owner was told: only wait to be stopped. */
      if (wait_until(dog, now + GONE_WAIT_NS, 0) == WOKE_STOP) break;
      continue;
    }
    look l = look_at(w, now);
    uint64_t busy = l.busy, wake;
    if (l.gone) {
      /* The watched thread ended: a stall it was in ends here, then the owner hears, once, that it is gone. */
      if (stalled) emit(dog, 0, stall_start, max_u64(now - stall_start, threshold_ns));
      stalled = 0;
      emit(dog, -1, now, 0);
      gone = 1;
      arm(dog, 0);
      continue;
    }
    if (now >= next_sample) {
      /* The samples a watchdog looking every threshold would have taken while this one was parked: the loop waited. */
      uint64_t missed = parked ? (now - next_sample) / threshold_ns : 0;
      for (uint64_t i = 0; i < missed && i < LAG_RING; i++) push_lag(w, 0);
      push_lag(w, busy);
      next_sample = now + threshold_ns;
    }
    if (!stalled && busy >= threshold_ns) {
      stalled = 1;
      stall_start = now - busy;
      atomic_store_explicit(&w->longest_turn, 0, memory_order_relaxed);
      emit(dog, 1, stall_start, busy);
    } else if (stalled && now - busy > stall_start + 1000000) {
      /* The loop has left the stalled turn; the hook measured it whole. */
      stalled = 0;
      uint64_t turn = atomic_exchange_explicit(&w->longest_turn, 0, memory_order_relaxed);
      emit(dog, 0, stall_start, max_u64(turn, threshold_ns));
    }
    /*
     * Next look. Running a turn: when it would become a stall. Waiting in poll: park
     * until its next event or timer, unless events wait that the loop has not taken
     * yet (the event that woke the watchdog, whose turn has not begun: look a threshold
     * later), or the loop turned more than twice since the last look (a busy loop:
     * looking every threshold costs less than two wake-ups per turn): see may_park.
     */
    parked = 0;
    if (stalled) {
      wake = now + stalled_poll;
    } else if (!l.waiting) {
      wake = now - busy + threshold_ns;
    } else if (l.turns - turns_seen <= 2 && may_park(dog, l)) {
      parked = 1;
      wake = now + PARK_MAX_NS;
      if (l.timeout >= 0) {
        /* The timer's turn begins at its time (or, late, after now): look when it would be a stall. */
        uint64_t due = l.at + (uint64_t)l.timeout * 1000000u + threshold_ns;
        if (due < now + threshold_ns) due = now + threshold_ns;
        if (due < wake) wake = due;
      }
    } else {
      wake = now + threshold_ns;
    }
    if (!parked) arm(dog, 0);
    turns_seen = l.turns;
    if (wait_until(dog, wake, parked) == WOKE_STOP) break;
  }
  return NULL;
}

static void close_fds(watchdog* dog) {
  if (dog->park_fd >= 0) close(dog->park_fd);
  if (dog->stop_fd[0] >= 0) close(dog->stop_fd[0]);
  if (dog->stop_fd[1] >= 0) close(dog->stop_fd[1]);
}

/*
 * The stop pipe, and the parking set: the watched loop's epoll fd, edge-triggered (a
 * new event for the loop wakes the watchdog once; the watchdog never takes them), and
 * the stop pipe. Returns 0 only if the stop pipe failed; without the set, the watchdog
 * looks every threshold.
 */
static int open_fds(watchdog* dog) {
  dog->park_fd = -1;
  if (pipe(dog->stop_fd) != 0) {
    dog->stop_fd[0] = dog->stop_fd[1] = -1;
    return 0;
  }
  fcntl(dog->stop_fd[0], F_SETFD, FD_CLOEXEC);
  fcntl(dog->stop_fd[1], F_SETFD, FD_CLOEXEC);
#ifdef __linux__
  int set = epoll_create1(EPOLL_CLOEXEC);
  if (set < 0) return 1;
  struct epoll_event stop = {.events = EPOLLIN, .data = {.u32 = 0}};
  if (epoll_ctl(set, EPOLL_CTL_ADD, dog->stop_fd[0], &stop) == 0) dog->park_fd = set;
  else close(set);
#endif
  return 1;
}

/* Joins the thread and frees the watchdog; on the thread that started it. */
static void stop_dog(watchdog* dog) {
  ssize_t written;
  do written = write(dog->stop_fd[1], "x", 1);
  while (written < 0 && errno == EINTR);
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
  close_fds(dog);
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
    w->backend_fd = uv_backend_fd(loop);
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
    w->id = ++last_id ? last_id : ++last_id; /* never 0 */
    w->next = registry;
    registry = w;
    pthread_mutex_unlock(&registry_mutex);
    st->attached = w;
  }
  if (st->users++ == 0) {
    atomic_store(&w->stamp_at, uv_hrtime());
    atomic_store(&w->stamp_idle, uv_metrics_idle_time(loop));
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
    napi_value args[4], global;
    napi_get_boolean(env, event->started == 1, &args[0]);
    napi_create_double(env, event->start_ms, &args[1]);
    napi_create_double(env, event->duration_ms, &args[2]);
    napi_get_boolean(env, event->started < 0, &args[3]);
    napi_get_global(env, &global);
    napi_call_function(env, global, callback, 4, args, NULL);
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
 * startWatchdog(loopId, thresholdMs, onStall(started, startMs, durationMs, gone)): from
 * the probe worker; onStall runs on the calling thread. One per loop per calling thread
 * (the probe worker watches its host's loop and each thread registered with watchThread()).
 * `gone`: the watched thread ended (said once, after the end of a stall it was in).
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
  dog->threshold_ns = (uint64_t)(threshold_ms * 1e6);
  if (!open_fds(dog) || pthread_create(&dog->thread, NULL, watch_loop, dog) != 0) {
    napi_release_threadsafe_function(dog->on_stall, napi_tsfn_abort);
    close_fds(dog);
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
  return number_value(env, dog ? (double)busy_ns(dog->w, uv_hrtime()) / 1e6 : 0);
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
