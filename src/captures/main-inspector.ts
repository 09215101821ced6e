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
 * - one capture of each kind at a time (V8 has one profiler, one pause).
 */
import * as inspector from 'node:inspector';
import { ErrorCode, SysprobeError } from '../errors.js';
import type { CpuProfile } from './cpuprofile.js';
import type { AllocationProfile } from './heapprofile.js';
import type { Frame } from './cpuprofile.js';

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
  how: 'debugger-pause' | 'blocked-in-native';
}

/**
 * A main thread running JS answers a trivial inspector command within a millisecond or two
 * (V8 interrupts it); one that takes longer than this was in native code. Measured with a
 * no-op Runtime.evaluate rather than Debugger.enable, whose cost (it replays every script to
 * the session) grows with the app and with the machine's load.
 */
const NATIVE_LATENCY_MS = 50;
const MAX_FRAMES = 64;
/** Bounds the script-URL map (an app has a few thousand scripts; beyond this, frames keep an empty url). */
const MAX_SCRIPTS = 50_000;

interface PausedEvent { callFrames: Array<{ functionName: string; url?: string; location: { scriptId: string; lineNumber: number; columnNumber?: number } }> }

export class MainInspector {
  #session: inspector.Session | undefined;
  #stackBusy = false;
  /** Profiler domains with a run in progress (V8 runs one of each at a time). */
  readonly #samplingDomains = new Set<string>();
  /** Set while a pause we requested may still land; its handler resumes it. */
  #onOurPause: ((event: PausedEvent) => void) | undefined;
  #pauseOutstanding = false;
  /** Script URLs by id: paused call frames carry only the id. V8 reports every script on Debugger.enable. */
  readonly #scriptUrls = new Map<string, string>();

  #connect(): inspector.Session {
    if (!this.#session) {
      const session = new inspector.Session();
      session.connectToMainThread();
      session.on('Debugger.paused', (message: { params: PausedEvent }) => this.#paused(message.params));
      session.on('Debugger.scriptParsed', (message: { params: { scriptId: string; url: string } }) => {
        if (message.params.url && this.#scriptUrls.size < MAX_SCRIPTS) this.#scriptUrls.set(message.params.scriptId, message.params.url);
      });
      this.#session = session;
    }
    return this.#session;
  }

  #paused(event: PausedEvent): void {
    if (!this.#pauseOutstanding) return; // someone else's pause (a breakpoint in DevTools): not ours to resume
    this.#pauseOutstanding = false;
    const deliver = this.#onOurPause;
    this.#onOurPause = undefined;
    try {
      deliver?.(event);
    } finally {
      // Resume at once; then stop debugging, unless the capture that waits for this pause does it.
      void this.#post('Debugger.resume', undefined, 1000).catch(() => undefined);
      if (!this.#stackBusy) void this.#post('Debugger.disable', undefined, 1000).catch(() => undefined);
    }
  }

  /** One inspector call with a timeout; rejects with SYSPROBE_ERR_CAPTURE_FAILED. */
  #post<T>(method: string, params: object | undefined, timeoutMs: number): Promise<T> {
    const session = this.#connect();
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => reject(new SysprobeError(ErrorCode.CAPTURE_FAILED,
        `inspector ${method} did not answer within ${timeoutMs} ms (is the app paused in a debugger, or blocked in native code?)`)), timeoutMs);
      session.post(method, params ?? {}, (err, result) => {
        clearTimeout(timer);
        if (err) reject(new SysprobeError(ErrorCode.CAPTURE_FAILED, `inspector ${method} failed: ${err.message}`, { cause: err }));
        else resolve(result as T);
      });
    });
  }

  /** The main thread's JS stack, taken now. Rejects with CAPTURE_BUSY or CAPTURE_FAILED. */
  async captureStack(timeoutMs: number): Promise<StackCapture> {
    if (this.#stackBusy || this.#pauseOutstanding) throw new SysprobeError(ErrorCode.CAPTURE_BUSY, 'a stack capture is already running');
    this.#stackBusy = true;
    try {
      const deadline = Date.now() + timeoutMs;
      const requestedAt = performance.now();
      await this.#post('Runtime.evaluate', { expression: '0', silent: true }, timeoutMs);
      const latencyMs = performance.now() - requestedAt;
      await this.#post('Debugger.enable', undefined, Math.max(1, deadline - Date.now()));
      const paused = new Promise<PausedEvent>((resolve) => { this.#onOurPause = resolve; });
      this.#pauseOutstanding = true;
      await this.#post('Debugger.pause', undefined, Math.max(1, deadline - Date.now()));
      const event = await withTimeout(paused, Math.max(1, deadline - Date.now()),
        'the main thread did not pause in time (blocked in native code, or paused in a debugger)');
      void this.#post('Debugger.disable', undefined, 1000).catch(() => undefined);
      return {
        frames: event.callFrames.slice(0, MAX_FRAMES).map((f) => ({
          functionName: f.functionName || '(anonymous)',
          url: f.url || this.#scriptUrls.get(f.location.scriptId) || '',
          lineNumber: f.location.lineNumber,
          columnNumber: f.location.columnNumber ?? 0,
        })),
        takenAt: Date.now(),
        latencyMs,
        how: latencyMs > NATIVE_LATENCY_MS ? 'blocked-in-native' : 'debugger-pause',
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

  /** Runs V8's CPU profiler on the main thread for `durationMs`. Rejects with CAPTURE_BUSY or CAPTURE_FAILED. */
  captureCpuProfile(durationMs: number, samplingIntervalUs: number): Promise<{ profile: CpuProfile; startedAtMs: number }> {
    return this.#sampleFor('a CPU profile', durationMs, {
      domain: 'Profiler', start: [['Profiler.setSamplingInterval', { interval: samplingIntervalUs }], ['Profiler.start', undefined]], stop: 'Profiler.stop',
    });
  }

  /**
   * Runs V8's sampling heap profiler on the main thread for `durationMs`: a sample every
   * `samplingIntervalBytes` allocated, with its stack; what is still live at the end is kept.
   */
  captureAllocationProfile(durationMs: number, samplingIntervalBytes: number): Promise<{ profile: AllocationProfile; startedAtMs: number }> {
    return this.#sampleFor('an allocation profile', durationMs, {
      domain: 'HeapProfiler', start: [['HeapProfiler.startSampling', { samplingInterval: samplingIntervalBytes }]], stop: 'HeapProfiler.stopSampling',
    });
  }

  /** Enables a profiler domain, starts it, waits, stops it and disables it; one run per domain at a time. */
  async #sampleFor<P>(what: string, durationMs: number, calls: { domain: string; start: Array<[string, object | undefined]>; stop: string }): Promise<{ profile: P; startedAtMs: number }> {
    if (this.#samplingDomains.has(calls.domain)) throw new SysprobeError(ErrorCode.CAPTURE_BUSY, `${what} is already running`);
    this.#samplingDomains.add(calls.domain);
    try {
      await this.#post(`${calls.domain}.enable`, undefined, 2000);
      for (const [method, params] of calls.start) await this.#post(method, params, 2000);
      // The profile's own times are monotonic; the files want the wall-clock start.
      const startedAtMs = Date.now();
      await new Promise((resolve) => setTimeout(resolve, durationMs));
      const { profile } = await this.#post<{ profile: P }>(calls.stop, undefined, 5000);
      return { profile, startedAtMs };
    } finally {
      void this.#post(`${calls.domain}.disable`, undefined, 1000).catch(() => undefined);
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

function withTimeout<T>(promise: Promise<T>, timeoutMs: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new SysprobeError(ErrorCode.CAPTURE_FAILED, message)), timeoutMs);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
