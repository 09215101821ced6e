/**
 * One profile of a kind at a time, shared: V8 runs one CPU profiler and one sampling heap
 * profiler per isolate, so a request for a profile of a kind already running joins that run
 * and resolves with its result (the same files, the same summary, `shared: true`) instead of
 * failing. The rule for joining: the running profile must end within the duration the new
 * request asked for, so a joiner never waits longer than its own profile would have taken
 * (the main thread's request and the control endpoint bound the wait by that duration), and
 * the shared profile covers all the time it waited. A request that would wait longer is
 * refused with SYSPROBE_ERR_CAPTURE_BUSY, which says how long to ask for to share it.
 */
import { ErrorCode, SysprobeError } from '../errors.js';

interface Run<R> {
  result: Promise<R>;
  /** When its sampling is planned to end, on performance.now()'s clock; its files are written after. */
  endsAt: number;
}

export class SharedRun<R extends { shared?: true }> {
  readonly #what: string;
  readonly #now: () => number;
  #running: Run<R> | undefined;

  /** `what` names the capture in a refusal ("a CPU profile"); `now` is the clock (tests own it). */
  constructor(what: string, now: () => number = () => performance.now()) {
    this.#what = what;
    this.#now = now;
  }

  /**
   * `start()` begins a run of `durationMs` unless one is running; a running one is joined when it
   * ends within `durationMs` (the joiner's copy of the result says `shared: true`), else refused
   * with CAPTURE_BUSY. A failed run fails its joiners with the same error.
   */
  run(durationMs: number, start: () => Promise<R>): Promise<R> {
    const now = this.#now();
    const running = this.#running;
    if (running) {
      const leftMs = Math.ceil(running.endsAt - now);
      if (leftMs > durationMs)
        return Promise.reject(
          new SysprobeError(
            ErrorCode.CAPTURE_BUSY,
            `${this.#what} is already running for ${leftMs} ms more, longer than the ${durationMs} ms asked for; ask for at least ${leftMs} ms to share it`,
          ),
        );
      return running.result.then((result): R => ({ ...result, shared: true }));
    }
    const result = start();
    const run: Run<R> = { result, endsAt: now + durationMs };
    this.#running = run;
    // Joinable until its files are written and its result is known; the next request then starts a new run.
    void result
      .catch(() => undefined)
      .finally(() => {
        if (this.#running === run) this.#running = undefined;
      });
    return result;
  }
}
