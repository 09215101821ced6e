/**
 * What both threads know of a stall: the heartbeat's shared slots (the fallback watch) and how
 * a stall's stack was taken. A leaf module.
 */
import * as threads from 'node:worker_threads';
import type { ActiveSpan } from './active-span.js';

/** Slots of the heartbeat's shared BigInt64Array; all values are process.hrtime nanoseconds. */
export const Beat = {
  /** When the main thread's heartbeat last ran. */
  LAST: 0,
  /**
   * 1 while the main thread is in sysprobe's own pause (a heap snapshot), else 0. Set by the main
   * thread before it pauses, so whoever sees the stall sees this too (a message might come later).
   */
  SELF_PAUSED: 1,
  /** Number of slots. */
  SIZE: 2,
} as const;

/** Whether the main thread is in sysprobe's own pause now (see Beat.SELF_PAUSED). */
export function selfPausedNow(beat: BigInt64Array): boolean {
  return Atomics.load(beat, Beat.SELF_PAUSED) !== 0n;
}

/** How the stack of a stall was taken, or why it was not. */
export interface StallCapture {
  /**
   * `debugger-pause`: paused in the JS that blocked the loop, while it was blocking (the main thread).
   * `interrupt`: the same for a probe started inside a worker thread: V8 interrupted that thread's JS
   * and took its stack (native/thread_stack.cc).
   * `blocked-in-native`: the loop was blocked in native code (execSync, a sync crypto call, …);
   * the pause landed only when JS resumed, so the stack shows where, not the culprit.
   * `skipped`: not taken, see `reason` (the capture budget was spent, the stall was sysprobe's
   * own heap snapshot, or the watchdog could look only after the stall was over: reason
   * 'seen only after it ended: …', with the stall's exact start and length). `failed`: see `reason`.
   */
  how: 'debugger-pause' | 'interrupt' | 'blocked-in-native' | 'skipped' | 'failed';
  /** When the worker learned of the stall (it had lasted the threshold), ms since the epoch. */
  detectedAt: number;
  /** When the main thread paused, ms since the epoch. */
  takenAt?: number;
  /** How long the main thread took to answer the capture's first (trivial) inspector command, ms: ~1 ms when it runs JS. */
  latencyMs?: number;
  /** The OpenTelemetry span active in the code the pause landed in (its trace id names the request's trace), when there was one. */
  span?: ActiveSpan;
  reason?: string;
}

/**
 * Why a stall has no stack when the native watchdog saw it only after it ended: its thread did not get a CPU while
 * the turn ran (a starved host, a container's CPU quota), or it was parked and the turn ran no JavaScript to wake it
 * (native/loop_watch.c). Its length is exact; its stack is lost.
 */
export const LATE_STALL_REASON =
  'seen only after it ended: the watchdog could not look while it lasted (its thread had no CPU, or it was parked through a turn that ran no JavaScript)';

/** The capture of a stall reported late (`StallReport.late`): none. */
export function lateStallCapture(): StallCapture {
  return { how: 'skipped', detectedAt: Date.now(), reason: LATE_STALL_REASON };
}

/** The thread a stall blocked: the main thread is `{ id: 0, name: 'main' }`; a worker has its `threadId`. */
export interface StallThread {
  id: number;
  name: string;
}

/** The calling thread, as a stall names it: the Worker's `name` where Node says it (22.?+, 24), else `worker <id>`. */
export function currentThread(): StallThread {
  if (threads.isMainThread) return { id: 0, name: 'main' };
  const { threadName } = threads as { threadName?: string };
  return { id: threads.threadId, name: threadName || `worker ${threads.threadId}` };
}
