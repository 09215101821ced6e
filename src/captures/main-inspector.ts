/**
 * Captures from the probe worker into the main thread, through the inspector
 * (`Session#connectToMainThread()`). The inspector reaches a main thread that
 * is spinning in JS (V8 interrupts it), so these work during a stall, which
 * is when they matter.
 *
 * The host comes first:
 * - every inspector call has a timeout (a person may have the app paused in
 *   DevTools, and then nothing answers);
 * - the Debugger domain is enabled only for a stack capture and disabled right
 *   after (an enabled debugger slows `await`-heavy code ~10×);
 * - a pause we asked for is always resumed, even when it lands after we gave
 *   up waiting (a main thread blocked in native code takes the pause only when
 *   it returns to JS); a pause we did not ask for is never touched;
 * - one capture of each kind at a time (V8 has one profiler, one pause); a stack asked
 *   for while one is being taken shares it. A second profile of a kind is refused here:
 *   WorkerCaptures lets a second request join the running one (captures/shared-run.ts), so
 *   this refusal only guards against a caller that bypasses it.
 */
import * as inspector from 'node:inspector';
import { ErrorCode, SysprobeError } from '../errors.js';
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
  type SamplingCalls,
  type ScriptLocation,
} from './profiler-steps.js';
import type { Frame } from './cpuprofile.js';
import type { SourceMaps } from '../sourcemaps/source-maps.js';
import { runQueueWaitNs } from '../stalls/cause.js';

/** How a stack was taken. */
export interface StackCapture {
  frames: Frame[];
  /** When the main thread paused, ms since the epoch. */
  takenAt: number;
  /** How long the main thread took to run a trivial inspector command at the start of the capture, ms: ~1 ms when it runs JS. */
  latencyMs: number;
  /**
   * `debugger-pause`: paused in the JS that was running. `blocked-in-native`: the pause
   * only landed after a native call (execSync, a sync crypto call, …) returned, so the top
   * frames show where JS resumed, which is near, but not, the blocking call.
   */
  how: 'debugger-pause' | 'interrupt' | 'blocked-in-native';
  /** The value of the inspector's `pauseExpression`, evaluated on the paused top frame (undefined when it failed or there is none). */
  evaluated?: unknown;
}

/**
 * A main thread running JS answers a trivial inspector command within a millisecond or two
 * (V8 interrupts it); one that takes longer than this was in native code. Measured with a
 * no-op Runtime.evaluate rather than Debugger.enable, whose cost (it replays every script to
 * the session) grows with the app and with the machine's load. The time either thread spent
 * waiting for a CPU meanwhile is taken off first: on a loaded machine a thread running JS can
 * wait longer than this to be scheduled at all.
 */
export const NATIVE_LATENCY_MS = 50;
/** The threads whose waits for a CPU are taken off inspector timings: the main thread (its tid is the pid) and this worker. */
const MAIN_AND_WORKER = [process.pid, 'self'] as const;
/** An inspector timeout stretches by the threads' waits for a CPU, up to this many times its length. */
const MAX_TIMEOUT_STRETCH = 4;
const MAX_FRAMES = 64;
/** Bounds the script-URL map (an app has a few thousand scripts; beyond this, frames keep an empty url). */
const MAX_SCRIPTS = 50_000;

interface PausedEvent {
  callFrames: Array<{ functionName: string; url?: string; location: ScriptLocation; callFrameId?: string }>;
}
/** A pause of ours, with what the pause expression gave. */
interface OurPause {
  event: PausedEvent;
  evaluated?: unknown;
}
/** The pause expression's bound: the main thread stays paused (it was blocked anyway) until it answers or this passes. */
const PAUSE_EVALUATE_TIMEOUT_MS = 500;

/** A stall's stack older than this is not taken as the place the loop still spins. */
const STALL_STACK_FRESH_MS = 10_000;

export class MainInspector {
  #session: inspector.Session | undefined;
  #stackBusy = false;
  /** A CPU profile (its first look included) is running. */
  #cpuProfiling = false;
  /** Profiler domains with a run in progress (V8 runs one of each at a time). */
  readonly #samplingDomains = new Set<string>();
  /** Set while a pause we requested may still land; its handler resumes it. */
  #onOurPause: ((pause: OurPause) => void) | undefined;
  #pauseOutstanding = false;
  /** False until Debugger.enable has answered: a paused event before that is not ours. */
  #acceptPause = false;
  /** Script URLs by id: paused call frames carry only the id. V8 reports every script on Debugger.enable. */
  readonly #scriptUrls = new Map<string, string>();
  /** Maps stack positions to the original source; frames keep the generated position without it. */
  readonly #sourceMaps: SourceMaps | undefined;
  /** Where the last stack we took was paused: the JS on top of a stall. */
  #lastPause: { location: ScriptLocation; takenAt: number } | undefined;
  /** The stack capture running, if any: a profile of a stall waits for it to learn where the loop spins. */
  #stackCapture: Promise<unknown> | undefined;
  /** What every caller of captureStack() gets while that capture runs (source-mapped). */
  #sharedStack: Promise<StackCapture> | undefined;

  /** Evaluated on the top frame of each pause we take, before it is resumed (e.g. the active span: stalls/active-span.ts). */
  readonly #pauseExpression: string | undefined;

  constructor(sourceMaps?: SourceMaps, { pauseExpression }: { pauseExpression?: string } = {}) {
    this.#sourceMaps = sourceMaps;
    this.#pauseExpression = pauseExpression;
  }

  #connect(): inspector.Session {
    if (!this.#session) {
      const session = new inspector.Session();
      session.connectToMainThread();
      session.on('Debugger.paused', (message: { params: PausedEvent }) => void this.#paused(message.params));
      session.on(
        'Debugger.scriptParsed',
        (message: { params: { scriptId: string; url: string; sourceMapURL?: string } }) => {
          const { scriptId, url, sourceMapURL } = message.params;
          if (url && this.#scriptUrls.size < MAX_SCRIPTS) this.#scriptUrls.set(scriptId, url);
          if (url && sourceMapURL) this.#sourceMaps?.hint(url, sourceMapURL);
        },
      );
      this.#session = session;
    }
    return this.#session;
  }

  async #paused(event: PausedEvent): Promise<void> {
    if (!this.#pauseOutstanding || !this.#acceptPause) return; // someone else's pause (a breakpoint in DevTools): not ours to resume
    this.#pauseOutstanding = false;
    const deliver = this.#onOurPause;
    this.#onOurPause = undefined;
    try {
      const callFrameId = event.callFrames[0]?.callFrameId;
      let evaluated: unknown;
      if (deliver && this.#pauseExpression && callFrameId) {
        // Bounded by the expression (a few reads, no app code) and by the timeout; a failure only loses the value.
        const answer = await this.#post<{ result?: { value?: unknown }; exceptionDetails?: unknown }>(
          'Debugger.evaluateOnCallFrame',
          { callFrameId, expression: this.#pauseExpression, silent: true, returnByValue: true },
          PAUSE_EVALUATE_TIMEOUT_MS,
        ).catch(() => undefined);
        if (answer && !answer.exceptionDetails) evaluated = answer.result?.value;
      }
      deliver?.({ event, evaluated });
    } finally {
      // Resume at once; then stop debugging, unless the capture that waits for this pause does it.
      void this.#post('Debugger.resume', undefined, 1000).catch(() => undefined);
      if (!this.#stackBusy) void this.#post('Debugger.disable', undefined, 1000).catch(() => undefined);
    }
  }

  /**
   * One inspector call with a timeout; rejects with SYSPROBE_ERR_CAPTURE_FAILED. The timeout counts the
   * threads' own time: what the main thread and this one spent waiting for a CPU (a starved or throttled
   * container) is added back, up to MAX_TIMEOUT_STRETCH times the timeout.
   */
  #post<T>(method: string, params: object | undefined, timeoutMs: number, onAnswer?: () => void): Promise<T> {
    const session = this.#connect();
    return new Promise<T>((resolve, reject) => {
      const cancel = new OwnTimeSpan(timeoutMs).expire((span) =>
        reject(
          new SysprobeError(
            ErrorCode.CAPTURE_FAILED,
            `inspector ${method} did not answer within ${span.describe()}: is the app paused in a debugger, or blocked in native code?`,
          ),
        ),
      );
      session.post(method, params ?? {}, (err, result) => {
        cancel();
        // Synchronously, before the messages that follow this answer are dispatched (a promise's then would run after them).
        if (!err) onAnswer?.();
        if (err)
          reject(
            new SysprobeError(ErrorCode.CAPTURE_FAILED, `inspector ${method} failed: ${err.message}`, { cause: err }),
          );
        else resolve(result as T);
      });
    });
  }

  /**
   * The main thread's JS stack, taken now. Asked for while a stack is being taken (a stall's, or
   * another caller's), it is that one: one pause, one result for every caller. Rejects with
   * CAPTURE_FAILED, or CAPTURE_BUSY while a pause we asked for earlier has still not landed (the
   * main thread is in native code; a second pause could not land before it).
   */
  captureStack(timeoutMs: number): Promise<StackCapture> {
    if (this.#sharedStack) return this.#sharedStack;
    if (this.#stackBusy || this.#pauseOutstanding)
      return Promise.reject(new SysprobeError(ErrorCode.CAPTURE_BUSY, 'a stack capture is already running'));
    const capture = this.#takeStack(timeoutMs);
    this.#stackCapture = capture;
    // Maps are read after the capture has ended (the main thread runs, the next capture may start): only the worker waits.
    const sourceMaps = this.#sourceMaps;
    const shared = sourceMaps
      ? capture.then(async (taken) => ({ ...taken, frames: await sourceMaps.resolve(taken.frames) }))
      : capture;
    this.#sharedStack = shared;
    // Shared only while the pause is being taken: a stack asked for after it is a new one.
    void capture
      .catch(() => undefined)
      .finally(() => {
        if (this.#stackCapture === capture) this.#stackCapture = undefined;
        if (this.#sharedStack === shared) this.#sharedStack = undefined;
      });
    return shared;
  }

  async #takeStack(timeoutMs: number): Promise<StackCapture> {
    this.#stackBusy = true;
    try {
      // Every wait below counts the threads' own time, so a starved machine is not read as native code.
      const span = new OwnTimeSpan(timeoutMs);
      // All three go at once: a thread blocked in native code takes them together when the call returns,
      // so the pause lands at the first JS after the call, in the function that made it (not turns later).
      const answered = this.#post('Runtime.evaluate', { expression: '0', silent: true }, timeoutMs);
      const paused = new Promise<OurPause>((resolve) => {
        this.#onOurPause = resolve;
      });
      this.#pauseOutstanding = true;
      this.#acceptPause = false;
      // A paused event before enable's answer is a pause that was already there (someone's breakpoint), not ours.
      const enabled = this.#post('Debugger.enable', undefined, timeoutMs, () => {
        this.#acceptPause = true;
      });
      const pauseAsked = this.#post('Debugger.pause', undefined, timeoutMs);
      // Rejections are read below, in order; none may go unhandled meanwhile.
      for (const p of [answered, enabled, pauseAsked]) p.catch(() => undefined);
      await answered;
      const latencyMs = span.elapsedMs();
      const waitedMs = span.waitedMs();
      await enabled;
      await pauseAsked;
      const { event, evaluated } = await withTimeout(
        paused,
        span,
        'the main thread did not pause in time (blocked in native code, or paused in a debugger)',
      );
      void this.#post('Debugger.disable', undefined, 1000).catch(() => undefined);
      const takenAt = Date.now();
      const top = event.callFrames[0];
      this.#lastPause = top ? { location: top.location, takenAt } : undefined;
      const frames = event.callFrames.slice(0, MAX_FRAMES).map((f) => ({
        functionName: f.functionName || '(anonymous)',
        url: f.url || this.#scriptUrls.get(f.location.scriptId) || '',
        lineNumber: f.location.lineNumber,
        columnNumber: f.location.columnNumber ?? 0,
      }));
      return {
        frames,
        takenAt,
        latencyMs,
        how: latencyMs - waitedMs > NATIVE_LATENCY_MS ? 'blocked-in-native' : 'debugger-pause',
        ...(evaluated !== undefined ? { evaluated } : {}),
      };
    } catch (err) {
      // A pause still outstanding will be resumed by #paused when (if) it lands; stop debugging otherwise.
      this.#onOurPause = undefined;
      if (!this.#pauseOutstanding) void this.#post('Debugger.disable', undefined, 1000).catch(() => undefined);
      throw err;
    } finally {
      this.#stackBusy = false;
    }
  }

  /**
   * Runs V8's CPU profiler on the main thread for `durationMs`, with inlining off meanwhile
   * (captures/profiler-steps.ts, inliningOff). `stalled`: the main thread is stuck in the loop the
   * last stack capture saw, whose optimized code is then recompiled; otherwise a first look of
   * PRELOOK_MS finds the hot functions to recompile. Rejects with CAPTURE_BUSY or CAPTURE_FAILED.
   */
  async captureCpuProfile(
    durationMs: number,
    samplingIntervalUs: number,
    { stalled = false }: { stalled?: boolean } = {},
  ): Promise<{ profile: CpuProfile; startedAtMs: number }> {
    // One CPU profile at a time, from its first look to its end (the look and the profile are two profiler runs).
    if (this.#cpuProfiling) throw new SysprobeError(ErrorCode.CAPTURE_BUSY, 'a CPU profile is already running');
    this.#cpuProfiling = true;
    const restoreInlining = this.#samplingDomains.has('Profiler') ? undefined : inliningOff();
    try {
      // Outside a stall, the hot code may have been optimized (with inlining) before: look first, recompile it.
      if (restoreInlining && !stalled)
        await this.#recompileAt(
          await hotLocations(() =>
            this.#sampleFor<CpuProfile>('a CPU profile', PRELOOK_MS, cpuCalls(samplingIntervalUs)),
          ),
        );
      return await this.#sampleFor(
        'a CPU profile',
        durationMs,
        cpuCalls(samplingIntervalUs, stalled && restoreInlining ? () => this.#recompileStalled() : undefined),
      );
    } finally {
      this.#cpuProfiling = false;
      restoreInlining?.();
    }
  }

  /**
   * Discards the optimized code running at the top of the stall's stack (and all code that inlined
   * that function): V8 deoptimizes a function's code when a breakpoint is set in it. The breakpoint's condition is
   * never true and it is removed at once, so nothing pauses. The stalled frame drops to the
   * interpreter when it returns from the inspector's interrupt and is recompiled (without inlining)
   * while the profiler listens. Best effort: a failure leaves the profile as V8 takes it.
   */
  async #recompileStalled(): Promise<void> {
    await this.#stackCapture?.catch(() => undefined); // the stall's own stack, bounded by its timeout
    const location =
      this.#lastPause && Date.now() - this.#lastPause.takenAt < STALL_STACK_FRESH_MS
        ? this.#lastPause.location
        : undefined;
    if (location) await this.#recompileAt([location]);
  }

  /** Recompiles the functions at `locations` (profiler-steps.ts, recompileAt), holding the Debugger domain meanwhile. */
  async #recompileAt(locations: ScriptLocation[]): Promise<void> {
    // A stack capture holds the Debugger domain: wait for it (bounded by its own timeout) rather than skip.
    await this.#stackCapture?.catch(() => undefined);
    if (locations.length === 0 || this.#stackBusy || this.#pauseOutstanding) return;
    this.#stackBusy = true; // the Debugger domain is ours for these calls
    try {
      await recompileAt((method, params, timeoutMs) => this.#post(method, params, timeoutMs), locations);
    } finally {
      this.#stackBusy = false;
    }
  }

  /**
   * Runs V8's sampling heap profiler on the main thread for `durationMs`: a sample every
   * `samplingIntervalBytes` allocated, with its stack; what is still live at the end is kept.
   */
  captureAllocationProfile(
    durationMs: number,
    samplingIntervalBytes: number,
  ): Promise<{ profile: AllocationProfile; startedAtMs: number }> {
    return this.#sampleFor('an allocation profile', durationMs, allocationCalls(samplingIntervalBytes));
  }

  /** One run of a profiler domain (profiler-steps.ts, sampleFor); one per domain at a time. */
  async #sampleFor<P>(
    what: string,
    durationMs: number,
    calls: SamplingCalls,
  ): Promise<{ profile: P; startedAtMs: number }> {
    if (this.#samplingDomains.has(calls.domain))
      throw new SysprobeError(ErrorCode.CAPTURE_BUSY, `${what} is already running`);
    this.#samplingDomains.add(calls.domain);
    try {
      return await sampleFor<P>(
        (method, params, timeoutMs) => this.#post(method, params, timeoutMs),
        durationMs,
        calls,
      );
    } finally {
      this.#samplingDomains.delete(calls.domain);
    }
  }

  /** Disconnects; true if there was a session to disconnect. */
  close(): boolean {
    const session = this.#session;
    session?.disconnect();
    this.#session = undefined;
    return session !== undefined;
  }
}

function withTimeout<T>(promise: Promise<T>, span: OwnTimeSpan, message: string): Promise<T> {
  let cancel = (): void => undefined;
  const timeout = new Promise<never>((_, reject) => {
    cancel = span.expire(() => reject(new SysprobeError(ErrorCode.CAPTURE_FAILED, `${message}: ${span.describe()}`)));
  });
  return Promise.race([promise, timeout]).finally(cancel);
}

/**
 * A span of time as the threads could use it: it runs out `ms` after it began, moved back by what the
 * threads (the main thread and this one, unless told) waited for a CPU meanwhile (a starved or throttled
 * container), never beyond MAX_TIMEOUT_STRETCH times `ms`. Several threads' waits are summed: an upper
 * bound when they overlap.
 */
export class OwnTimeSpan {
  readonly #startedAt = performance.now();
  readonly #tids: readonly (number | 'self')[];
  readonly #waitedBefore: number;

  /** `tids`: the threads whose waits count (by default the main thread and this one). */
  constructor(
    readonly ms: number,
    tids: readonly (number | 'self')[] = MAIN_AND_WORKER,
  ) {
    this.#tids = tids;
    this.#waitedBefore = runQueueWaitNs(tids);
  }

  elapsedMs(): number {
    return performance.now() - this.#startedAt;
  }

  waitedMs(): number {
    return (runQueueWaitNs(this.#tids) - this.#waitedBefore) / 1e6;
  }

  /** What is left of the span, ms (0 or less once it has run out). */
  remainingMs(): number {
    return Math.min(this.ms + this.waitedMs(), this.ms * MAX_TIMEOUT_STRETCH) - this.elapsedMs();
  }

  /**
   * Calls `onExpire` once the span has run out: first looked at after the time left on the wall clock (no
   * /proc read before then, as most calls answer first), then again for what the threads' waits added.
   * Returns the cancel.
   */
  expire(onExpire: (span: this) => void): () => void {
    let timer: NodeJS.Timeout | undefined;
    const check = (): void => {
      const remainingMs = this.remainingMs();
      if (remainingMs >= 1) timer = setTimeout(check, remainingMs);
      else onExpire(this);
    };
    timer = setTimeout(check, Math.max(1, this.ms - this.elapsedMs()));
    return () => clearTimeout(timer);
  }

  /** "2004 ms (the threads waited 2091 ms for a CPU meanwhile)" */
  describe(): string {
    const waitedMs = this.waitedMs();
    const starved = waitedMs >= 1 ? ` (the threads waited ${Math.round(waitedMs)} ms for a CPU meanwhile)` : '';
    return `${Math.round(this.elapsedMs())} ms${starved}`;
  }
}
