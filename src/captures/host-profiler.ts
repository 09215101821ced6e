/**
 * Profiles taken by a worker-hosted probe's host thread of itself. The probe worker is a child
 * of the host worker: `connectToMainThread()` reaches only the process's main thread, and a
 * worker cannot connect to its parent's inspector. So when the probe worker asks (a host
 * request, protocol.ts), the host opens an `inspector.Session` into its own isolate
 * (`session.connect()`), runs the same inspector steps as the main thread's profiles
 * (profiler-steps.ts), ends the run with its own unref'd timer and answers with the raw profile;
 * the probe worker writes the files and the summaries (worker-captures.ts) as for the main thread.
 *
 * The host comes first: no session while no profile is asked for (one is opened per profile and
 * closed after it); every inspector call has a timeout; a request that reaches the host after
 * the probe worker stopped waiting for it is refused rather than run. A request asked while the
 * host is blocked waits in its message queue until its loop returns: the profile then starts,
 * and the answer says when it was received (the probe worker tells the caller it started late).
 */
import * as inspector from 'node:inspector';
import { threadId } from 'node:worker_threads';
import { ErrorCode, SysprobeError } from '../errors.js';
import type { HostProfileRequest } from '../protocol.js';
import type { CpuProfile } from './cpuprofile.js';
import type { AllocationProfile } from './heapprofile.js';
import {
  allocationCalls,
  cpuCalls,
  hotLocations,
  inliningOff,
  PRELOOK_MS,
  recompileAt,
  sampleFor,
  type InspectorPost,
  type SamplingCalls,
} from './profiler-steps.js';

/** The host's answer: the profile as V8 gave it, and the timings the probe worker reports honestly. */
export interface HostProfile<P> {
  profile: P;
  /** When the profiler started, ms since the epoch. */
  startedAtMs: number;
  /** When the host thread took the request from its queue, ms since the epoch (late when its loop was blocked). */
  receivedAtMs: number;
  /** How much later than asked the host's timer ended the run, ms (its loop was blocked when the run was due to end). */
  stoppedLateMs: number;
  /** The host thread's threadId. */
  threadId: number;
}

/** A run ends this much after it was due before the host says it stopped late: timers are not exact. */
const LATE_STOP_MS = 100;

export class HostProfiler {
  /** Profiler domains with a run in progress (one of each per isolate). */
  readonly #busy = new Set<string>();
  /** What close() ends: each open session and the wake-up of its run's timer. */
  readonly #open = new Set<{ session: inspector.Session; wake: () => void }>();
  #closed = false;

  /** Runs the profile asked for; rejects with CAPTURE_BUSY, CAPTURE_FAILED or STOPPED. */
  run(request: HostProfileRequest): Promise<HostProfile<CpuProfile | AllocationProfile>> {
    const receivedAtMs = Date.now();
    if (receivedAtMs > request.deadline)
      return Promise.reject(
        new SysprobeError(
          ErrorCode.CAPTURE_FAILED,
          `the thread took the profile request ${receivedAtMs - request.deadline} ms after the probe worker stopped waiting for it (its loop was blocked)`,
        ),
      );
    if (request.kind === 'hostCpuProfile')
      return this.#cpu(request.durationMs, request.samplingIntervalUs, receivedAtMs);
    const calls = allocationCalls(request.samplingIntervalBytes);
    return this.#withSession(calls.domain, (post, wait) =>
      this.#sample<AllocationProfile>(post, wait, request.durationMs, calls, receivedAtMs),
    );
  }

  /** A CPU profile as the main thread's (main-inspector.ts): inlining off, a first look, its hot code recompiled. */
  #cpu(durationMs: number, samplingIntervalUs: number, receivedAtMs: number): Promise<HostProfile<CpuProfile>> {
    return this.#withSession('Profiler', async (post, wait) => {
      const restoreInlining = inliningOff();
      try {
        if (restoreInlining)
          await recompileAt(
            post,
            await hotLocations(() => sampleFor<CpuProfile>(post, PRELOOK_MS, cpuCalls(samplingIntervalUs), wait)),
          );
        return await this.#sample<CpuProfile>(post, wait, durationMs, cpuCalls(samplingIntervalUs), receivedAtMs);
      } finally {
        restoreInlining?.();
      }
    });
  }

  async #sample<P>(
    post: InspectorPost,
    wait: (ms: number) => Promise<void>,
    durationMs: number,
    calls: SamplingCalls,
    receivedAtMs: number,
  ): Promise<HostProfile<P>> {
    let dueAt = 0;
    const { profile, startedAtMs } = await sampleFor<P>(post, durationMs, calls, (ms) => {
      dueAt = performance.now() + ms;
      return wait(ms);
    });
    const late = performance.now() - dueAt;
    return { profile, startedAtMs, receivedAtMs, stoppedLateMs: late > LATE_STOP_MS ? Math.round(late) : 0, threadId };
  }

  /** Opens a session into this thread for one profiler domain's run, and closes it after, whatever happens. */
  async #withSession<R>(
    domain: string,
    use: (post: InspectorPost, wait: (ms: number) => Promise<void>) => Promise<R>,
  ): Promise<R> {
    if (this.#closed) throw new SysprobeError(ErrorCode.STOPPED, 'the probe stopped');
    if (this.#busy.has(domain))
      throw new SysprobeError(ErrorCode.CAPTURE_BUSY, `a ${domain} run is already going on this thread`);
    this.#busy.add(domain);
    const session = new inspector.Session();
    let timer: NodeJS.Timeout | undefined;
    let wake = (): void => undefined;
    const entry = { session, wake: () => wake() };
    try {
      session.connect();
      this.#open.add(entry);
      const post: InspectorPost = <T>(method: string, params: object | undefined, timeoutMs: number) =>
        new Promise<T>((resolve, reject) => {
          // A session into this thread answers within post() unless the thread is paused in a debugger.
          const timeout = setTimeout(
            () =>
              reject(
                new SysprobeError(
                  ErrorCode.CAPTURE_FAILED,
                  `inspector ${method} did not answer within ${timeoutMs} ms: is this thread paused in a debugger?`,
                ),
              ),
            timeoutMs,
          );
          timeout.unref();
          try {
            session.post(method, params ?? {}, (err, result) => {
              clearTimeout(timeout);
              if (err)
                reject(
                  new SysprobeError(ErrorCode.CAPTURE_FAILED, `inspector ${method} failed: ${err.message}`, {
                    cause: err,
                  }),
                );
              else resolve(result as T);
            });
          } catch (err) {
            clearTimeout(timeout);
            reject(
              new SysprobeError(ErrorCode.CAPTURE_FAILED, `inspector ${method} failed: ${(err as Error).message}`, {
                cause: err,
              }),
            );
          }
        });
      // The host's own timer ends the run; unref'd, so a profile never keeps the thread alive.
      const wait = (ms: number) =>
        new Promise<void>((resolve) => {
          wake = resolve;
          timer = setTimeout(resolve, ms);
          timer.unref();
        });
      return await use(post, wait);
    } finally {
      clearTimeout(timer);
      this.#open.delete(entry);
      this.#busy.delete(domain);
      try {
        session.disconnect();
      } catch {
        // already disconnected
      }
    }
  }

  /** The probe stops: each run ends now (its calls then fail) and its session closes. */
  close(): void {
    this.#closed = true;
    for (const { session, wake } of this.#open) {
      try {
        session.disconnect();
      } catch {
        // already disconnected
      }
      wake();
    }
  }
}
