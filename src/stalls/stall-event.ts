/** The public shape of a stall, as the probe emits it (`'stall'`). A leaf: type imports only. */
import type { Frame } from '../captures/cpuprofile.js';
import type { StallCapture, StallThread } from './stall.js';
import type { StallCause, StallDiagnosis } from './cause.js';
import type { StallQueue, StallRequest } from './explain.js';

/** The stall the worker saw, reported once the blocked thread runs again. */
export interface StallEvent {
  /** The thread whose loop stalled: the probe's host, `{ id: 0, name: 'main' }` or a worker's `threadId` and name. */
  thread: StallThread;
  /** When the loop stopped answering, ms since the epoch (exact with the native loop watch; within one beat with the heartbeat). */
  startedAt: number;
  /** How long the loop was blocked, ms (with the heartbeat: the gap between beats, up to one beat more). */
  durationMs: number;
  /** The blocked thread's JS stack, taken by the probe worker while the loop was still blocked (innermost frame first); absent when not taken. */
  stack: Frame[] | undefined;
  /** How the stack was taken, or why not. */
  capture: StallCapture;
  /** Why the loop stalled: `js`, `native` (a system call or other native code), `gc`, `throttled` (the container's CPU quota) or `self` (sysprobe's own pause). */
  cause: StallCause;
  /** What decided the cause; for native code, the system call and what it waited on, and the JS function that made the call. */
  diagnosis: StallDiagnosis;
  /** The HTTP requests in flight on the main thread while it was blocked, oldest first (empty with `samplers.requests` off). */
  requests: StallRequest[];
  /** The requests that waited behind the stall (absent with `samplers.requests` off). */
  queued?: StallQueue;
  /**
   * How long the cgroup's CPU quota stopped the process during the stall, ms (Linux, with a
   * CPU controller; absent otherwise), measured from when the stall was seen (`stallThresholdMs`
   * after it began) to its end: compare it with `durationMs - stallThresholdMs`. Close to that,
   * the quota, not JavaScript, held the loop.
   */
  throttledMs?: number;
}
