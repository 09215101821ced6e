/**
 * watchThread(): an app's worker thread asks the main thread's probe to watch it. The worker's
 * half of the watched threads (the probe worker's is stalls/watched-threads.ts): it hooks this
 * thread's loop with the native loop watch, registers its isolate for stacks
 * (native/thread_stack.cc), and publishes both in the process's thread table
 * (stalls/thread-table.ts). From then on the probe worker sees this thread's stalls while they
 * last, takes its stack by a V8 interrupt, and the main thread's probe emits them as 'stall'
 * events naming this thread. Nothing here wakes this thread.
 */
import { isMainThread, threadId } from 'node:worker_threads';
import { ErrorCode, SysprobeError } from '../errors.js';
import { checkInteger, checkKnownKeys, checkPlainObject, invalid, describe } from '../internal/check-options.js';
import { loadLoopWatch, parkWatchdogs } from './loop-watch.js';
import { registerHost } from '../captures/thread-stack.js';
import { claimLoop, releaseLoop } from './loop-claim.js';
import { currentThread, type StallThread } from './stall.js';
import { inheritedThreadTable, MAX_NAME_BYTES, MAX_WATCHED_THREADS } from './thread-table.js';

/** Options for {@link watchThread}. */
export interface WatchThreadOptions {
  /** The name its stalls carry (`thread.name`), 1 to 64 bytes of UTF-8. Default: the Worker's `name` where Node tells it, else `worker <threadId>`. */
  name?: string;
  /** This thread's own stall threshold, ms (20 to 60000). Default: the main probe's `stallThresholdMs`. */
  stallThresholdMs?: number;
}

/** What {@link watchThread} returns: the thread as its stalls name it, and how to stop watching it. */
export interface ThreadWatch {
  readonly thread: StallThread;
  /** Stops watching this thread (idempotent). A thread that ends is unregistered without it. */
  stop(): void;
}

const OPTION_NAMES = ['name', 'stallThresholdMs'] as const;

/** The watch this thread holds, if any: one per thread. */
let current: ThreadWatch | undefined;

/**
 * Registers the calling worker thread with the main thread's running probe, which then sees
 * its stalls while they last, takes its JS stack and emits them as `'stall'` events with
 * `thread: { id: threadId, name }`. Call it in a worker created after `start()` on the main
 * thread. Throws SYSPROBE_ERR_INVALID_OPTION (bad options), SYSPROBE_ERR_UNSUPPORTED (on the
 * main thread, without the native loop watch, or with 32 threads already watched),
 * SYSPROBE_ERR_NOT_STARTED (no probe runs on the main thread, or this worker was created
 * before the first `start()`) and SYSPROBE_ERR_ALREADY_STARTED (this thread is watched already,
 * or runs a probe of its own, which watches its loop: stalls/loop-claim.ts).
 */
export function watchThread(options?: WatchThreadOptions): ThreadWatch {
  const given = options === undefined ? {} : checkPlainObject('(the watchThread options)', options);
  checkKnownKeys('', given, OPTION_NAMES);
  const { name = currentThread().name, stallThresholdMs: rawThreshold } = given as WatchThreadOptions;
  if (typeof name !== 'string' || name.length === 0 || Buffer.byteLength(name, 'utf8') > MAX_NAME_BYTES)
    throw invalid(`Option name must be a string of 1 to ${MAX_NAME_BYTES} bytes; got ${describe(name)}.`);
  const thresholdMs = checkInteger('stallThresholdMs', rawThreshold, 20, 60_000, 0);
  if (isMainThread)
    throw new SysprobeError(
      ErrorCode.UNSUPPORTED,
      'watchThread() is for worker threads: the main thread is watched by the probe start() runs.',
    );
  if (current)
    throw new SysprobeError(
      ErrorCode.ALREADY_STARTED,
      `this thread is watched already (as '${current.thread.name}'); call stop() on that watch first.`,
    );
  // A thread with its own probe is watched by it already (stalls/loop-claim.ts).
  claimLoop('watchThread');
  try {
    return watchClaimed(name, thresholdMs);
  } catch (err) {
    releaseLoop('watchThread');
    throw err;
  }
}

function watchClaimed(name: string, thresholdMs: number): ThreadWatch {
  const table = inheritedThreadTable();
  if (!table || !table.open)
    throw new SysprobeError(
      ErrorCode.NOT_STARTED,
      table
        ? 'watchThread() found no probe running on the main thread: call start() there first.'
        : 'watchThread() found no probe on the main thread: call start() there before creating this worker ' +
            '(the worker learns of the probe when it is created).',
    );
  const { addon, error } = loadLoopWatch();
  const loopId = addon?.attach() ?? 0;
  if (!addon || !loopId)
    throw new SysprobeError(
      ErrorCode.UNSUPPORTED,
      `watchThread() needs the native loop watch (${error ?? "it could not hook this thread's loop"}).`,
    );
  // Without the thread stack addon its stalls are still seen, reported without a stack, by a watchdog that never parks.
  const host = registerHost();
  parkWatchdogs();
  const thread: StallThread = { id: threadId, name };
  const serial = table.claim({
    loopId,
    stackHost: host?.hostId ?? 0,
    tid: host?.tid ?? 0,
    threadId,
    thresholdMs,
    name,
  });
  if (!serial) {
    addon.detach();
    throw new SysprobeError(
      ErrorCode.UNSUPPORTED,
      `watchThread(): ${MAX_WATCHED_THREADS} threads are watched already; stop() one first.`,
    );
  }
  let stopped = false;
  const watch: ThreadWatch = {
    thread,
    stop() {
      if (stopped) return;
      stopped = true;
      if (current === watch) current = undefined;
      releaseLoop('watchThread');
      table.release(serial);
      // The probe worker stops its watchdog when it sees the slot freed; the hook only stamps turns meanwhile.
      addon.detach();
    },
  };
  current = watch;
  return Object.freeze(watch);
}
