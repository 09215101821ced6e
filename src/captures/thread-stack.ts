/**
 * The stack of a probe's host thread when that thread is an app's worker: the inspector's
 * `connectToMainThread()` reaches only the main thread, so the probe worker asks V8 instead
 * (native/thread_stack.cc): `Isolate::RequestInterrupt` makes the host run a callback at its
 * next interrupt check (within ~1 ms while it runs JS) that takes its stack. Both halves
 * live here: the host registers itself (`registerHost()`), the probe worker captures.
 */
import { loadNative } from '../native.js';
import { ErrorCode, SysprobeError } from '../errors.js';
import type { Frame } from './cpuprofile.js';
import { NATIVE_LATENCY_MS, OwnTimeSpan, type StackCapture } from './main-inspector.js';

/** The addon's functions, as native/thread_stack.cc defines them. */
export interface ThreadStackAddon {
  /** On the host thread: registers its isolate; its id for request(), 0 if it cannot. */
  register(): number;
  /** The calling thread's kernel thread id. */
  tid(): number;
  /** Asks the host for its stack; a request id for take(), 0 if there is no such host or too many are pending. */
  request(hostId: number): number;
  /** Once the host answered (the request is then forgotten): its frames, and how long it took to take the interrupt (ms); else undefined. */
  take(requestId: number): { frames: Frame[]; latencyMs: number } | undefined;
  /** Forgets a request: a late answer finds nothing. */
  cancel(requestId: number): void;
  /**
   * On a thread whose loop native/loop_watch.c (loaded from `loopWatchFile`) hooked: its JS entries and GCs wake
   * that loop's parked watchdogs from now on; false if they cannot (then the watchdogs never park).
   */
  wakeOnEntry?(loopWatchFile: string): boolean;
}

/** The addon, or undefined with the reason it could not load. Loaded once per thread. */
export function loadThreadStack(): { addon: ThreadStackAddon | undefined; error: string | undefined } {
  return loadNative<ThreadStackAddon>('thread_stack');
}

/** On the host thread (a worker): its registration for the probe worker, and its kernel thread id. */
export function registerHost(): { hostId: number; tid: number } | undefined {
  const { addon } = loadThreadStack();
  if (!addon) return undefined;
  try {
    const hostId = addon.register();
    return hostId ? { hostId, tid: addon.tid() } : undefined;
  } catch {
    return undefined; // an addon from another build: the probe runs without this thread's stacks
  }
}

/** Polls for the answer this often: a capture happens only during a stall or when asked for. */
const POLL_MS = 2;

/**
 * In the probe worker: the host thread's stack, taken by a V8 interrupt. `tid` (0: unknown) is the host's kernel
 * thread id: the time it waited for a CPU is not read as native code, and stretches the timeout (OwnTimeSpan).
 * Rejects with CAPTURE_FAILED.
 */
export async function interruptStack(hostId: number, tid: number, timeoutMs: number): Promise<StackCapture> {
  const { addon, error } = loadThreadStack();
  if (!addon) throw new SysprobeError(ErrorCode.CAPTURE_FAILED, `the thread stack addon did not load (${error})`);
  const span = new OwnTimeSpan(timeoutMs, tid > 0 ? [tid] : []);
  const id = addon.request(hostId);
  if (!id) throw new SysprobeError(ErrorCode.CAPTURE_FAILED, 'the host thread is gone or busy with other requests');
  for (;;) {
    const answer = addon.take(id);
    if (answer) {
      // Timed by the addon (request to interrupt), so this worker's own polling delay does not count.
      const { frames, latencyMs } = answer;
      return {
        frames,
        takenAt: Date.now(),
        latencyMs,
        // A thread in native code takes the interrupt only when the call returns: the stack shows where JS resumed.
        how: latencyMs - span.waitedMs() > NATIVE_LATENCY_MS ? 'blocked-in-native' : 'interrupt',
      };
    }
    if (span.remainingMs() <= 0) {
      addon.cancel(id);
      throw new SysprobeError(
        ErrorCode.CAPTURE_FAILED,
        `the thread did not take the interrupt within ${span.describe()} (blocked in native code, or paused in a debugger)`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}
