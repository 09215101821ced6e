/**
 * The inspector calls that take a profile, over any session: the probe worker's session into
 * the main thread (main-inspector.ts) and a worker-hosted probe's host thread's session into
 * itself (host-profiler.ts). One way of doing each step, whichever thread is profiled; only
 * the transport (`post`) and the timer that ends the run (`wait`) differ.
 */
import { setFlagsFromString } from 'node:v8';
import { ErrorCode, SysprobeError } from '../errors.js';
import type { CpuProfile } from './cpuprofile.js';
import { hotFunctions } from './hot-functions.js';

/** One inspector call with a timeout; rejects with SYSPROBE_ERR_CAPTURE_FAILED. */
export type InspectorPost = <T>(method: string, params: object | undefined, timeoutMs: number) => Promise<T>;

/** A position in a script, as the inspector takes it for a breakpoint. */
export interface ScriptLocation {
  scriptId: string;
  lineNumber: number;
  columnNumber?: number;
}

/** What starts and stops one profiler run. */
export interface SamplingCalls {
  domain: string;
  start: Array<[string, object | undefined]>;
  stop: string;
  /** Runs once the profiler listens (a stalled loop's recompilation). */
  started?: (() => Promise<void>) | undefined;
}

/**
 * V8's CPU profiler charges a sample whose pc lies in code where TurboFan inlined a function to
 * the outermost function of that code: it unwinds inlined frames for the callers on the stack but
 * not for the sampled pc (Symbolizer::SymbolizeTickSample; the same in Node 20, 22, 24 and 26). So a
 * hot function inlined into its caller shows as the caller's self time. While sysprobe profiles
 * a thread, V8 does not inline (new optimizations only; the flags are the process's), and the
 * hot code's optimized code is discarded so that it is recompiled that way. Not when the process
 * was started without inlining.
 */
const NODE_FLAGS = [...process.execArgv, ...(process.env.NODE_OPTIONS ?? '').split(/\s+/)];
const INLINING_OFF_FROM_START = NODE_FLAGS.some((a) =>
  /^--(no-turbo-inlining|max-inlined-bytecode-size(-cumulative)?=0)$/.test(a),
);
/**
 * Maglev (on by default from Node 24, V8 13) inlines too, and its code is charged the same way:
 * on Node 24 a stalled loop recompiled without TurboFan inlining came back from Maglev with the
 * hot function inlined again. So Maglev's inlining goes off too, where V8 has it on (V8 12+).
 */
const MAGLEV_INLINES =
  Number(process.versions.v8.split('.')[0]) >= 12 &&
  !NODE_FLAGS.some((a) => a === '--no-maglev-inlining' || a === '--no-maglev');
/** How long a profile outside a stall first looks for the hot functions to recompile (recompileHot). */
export const PRELOOK_MS = 200;

/** Turns V8's inlining off for a CPU profile; returns its restore, or undefined when it was off from the start. */
export function inliningOff(): (() => void) | undefined {
  if (INLINING_OFF_FROM_START) return undefined;
  setFlagsFromString('--no-turbo-inlining');
  if (MAGLEV_INLINES) setFlagsFromString('--no-maglev-inlining');
  return () => {
    setFlagsFromString('--turbo-inlining');
    if (MAGLEV_INLINES) setFlagsFromString('--maglev-inlining');
  };
}

/** Waits `ms` on this thread's timers. */
export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Enables a profiler domain, starts it, waits (`wait`), stops it and disables it. The caller keeps
 * to one run per domain (V8 runs one of each per isolate).
 */
export async function sampleFor<P>(
  post: InspectorPost,
  durationMs: number,
  calls: SamplingCalls,
  wait: (ms: number) => Promise<void> = sleep,
): Promise<{ profile: P; startedAtMs: number }> {
  try {
    await post(`${calls.domain}.enable`, undefined, 2000);
    for (const [method, params] of calls.start) await post(method, params, 2000);
    // The profile's own times are monotonic; the files want the wall-clock start.
    const startedAtMs = Date.now();
    const waited = wait(durationMs);
    await calls.started?.();
    await waited;
    const { profile } = await post<{ profile: P }>(calls.stop, undefined, 5000);
    return { profile, startedAtMs };
  } finally {
    void post(`${calls.domain}.disable`, undefined, 1000).catch(() => undefined);
  }
}

/** The calls of a CPU profile sampled every `samplingIntervalUs`. */
export function cpuCalls(samplingIntervalUs: number, started?: () => Promise<void>): SamplingCalls {
  return {
    domain: 'Profiler',
    start: [
      ['Profiler.setSamplingInterval', { interval: samplingIntervalUs }],
      ['Profiler.start', undefined],
    ],
    stop: 'Profiler.stop',
    started,
  };
}

/** The calls of an allocation profile: a sample every `samplingIntervalBytes` allocated, with its stack. */
export function allocationCalls(samplingIntervalBytes: number): SamplingCalls {
  return {
    domain: 'HeapProfiler',
    start: [['HeapProfiler.startSampling', { samplingInterval: samplingIntervalBytes }]],
    stop: 'HeapProfiler.stopSampling',
  };
}

/**
 * Sets a never-true breakpoint at each location and removes it: V8 discards the optimized code
 * holding those functions, which is then recompiled (without inlining, while a profile runs).
 * Best effort: a failure leaves the profile as V8 takes it. The caller owns the Debugger domain meanwhile.
 */
export async function recompileAt(post: InspectorPost, locations: ScriptLocation[]): Promise<void> {
  if (locations.length === 0) return;
  try {
    await post('Debugger.enable', undefined, 2000);
    for (const location of locations) {
      const { breakpointId } = await post<{ breakpointId: string }>(
        'Debugger.setBreakpoint',
        { location, condition: 'false' },
        1000,
      );
      await post('Debugger.removeBreakpoint', { breakpointId }, 1000);
    }
  } catch {
    // the profile is still taken; only its attribution of inlined code is V8's
  } finally {
    void post('Debugger.disable', undefined, 1000).catch(() => undefined);
  }
}

/**
 * The functions that held the CPU in a short first look (PRELOOK_MS) with the profiler, where
 * they are recompiled before the real profile: code optimized before it, with the hot callee
 * inlined into the function the look saw, is discarded, and the real profile sees the callee.
 * `look` runs the first look (the caller's guards around sampleFor). A failed look finds none;
 * CAPTURE_BUSY is passed on.
 */
export async function hotLocations(look: () => Promise<{ profile: CpuProfile }>): Promise<ScriptLocation[]> {
  let profile: CpuProfile;
  try {
    ({ profile } = await look());
  } catch (err) {
    if (err instanceof SysprobeError && err.code === ErrorCode.CAPTURE_BUSY) throw err;
    return [];
  }
  try {
    return hotFunctions(profile).map(({ scriptId, lineNumber, columnNumber }) => ({
      scriptId,
      lineNumber,
      columnNumber,
    }));
  } catch {
    return [];
  }
}
