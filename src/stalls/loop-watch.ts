/**
 * The native loop watch (native/loop_watch.c), shared by both threads: the main
 * thread hooks its loop (the main thread, or an app worker running its own probe), the
 * probe worker runs the watchdog. It sees a stall without
 * waking the main thread, which the JS heartbeat cannot do; see
 * docs/architecture.md for what each costs. Optional: when the addon did not
 * build, sysprobe falls back to the heartbeat.
 */
import { loadNative, nativeFile } from '../native.js';
import { loadThreadStack } from '../captures/thread-stack.js';

/** The addon's functions, as native/loop_watch.c defines them. */
export interface LoopWatchAddon {
  /** Hooks the calling thread's loop (any thread's); returns its id for startWatchdog, 0 if it cannot. Counted: each attach() needs a detach(). */
  attach(): number;
  /** Matches one attach(); the last stops the calling thread's hook (synchronous). */
  detach(): void;
  /**
   * Starts a watchdog thread on loop `loopId` (one per loop per calling thread); `onStall` runs on the calling
   * thread when a stall starts and when it ends, and once with `gone` when the watched thread has ended.
   */
  startWatchdog(
    loopId: number,
    thresholdMs: number,
    onStall: (started: boolean, startHrMs: number, durationMs: number, gone: boolean, late?: boolean) => void,
  ): boolean;
  /** Stops the calling thread's watchdog of loop `loopId`. */
  stopWatchdog(loopId: number): void;
  /** How long loop `loopId`, watched by the calling thread's watchdog, has been busy in its current turn, ms; about 0 while it waits. */
  lagMs(loopId: number): number;
  /** On the attached thread: the longest completed turn (ms) since the previous call. */
  takeLongestTurn(): number;
  /** On the attached thread: copies its loop's lag samples written since `cursor` into `out`; returns [next cursor, samples copied]. */
  readLag(cursor: number, out: Float64Array): [number, number];
}

/** How the stalls of the event loop are seen: `native` (no main-thread wake-ups) or `heartbeat` (a JS timer). */
export type LoopWatchKind = 'native' | 'heartbeat';

/** The addon, or undefined with the reason it could not load. Loaded once per thread. */
export function loadLoopWatch(): { addon: LoopWatchAddon | undefined; error: string | undefined } {
  return loadNative<LoopWatchAddon>('loop_watch');
}

/**
 * On a thread whose loop attach() hooked: lets the watchdogs of that loop park while it waits
 * in poll, woken by this thread's next entry into JavaScript (native/thread_stack.cc registers
 * the V8 callback; loop_watch.c is on Node-API only). Idempotent per thread. false when the
 * thread stack addon is missing or older: the watchdogs then look every stall threshold.
 */
export function parkWatchdogs(): boolean {
  const { addon } = loadThreadStack();
  const file = nativeFile('loop_watch');
  if (!addon?.wakeOnEntry || !file) return false;
  try {
    return addon.wakeOnEntry(file);
  } catch {
    return false;
  }
}

/** One reader's view of the watchdog's lag samples: each call to drain() hands over the new ones. */
export class LagSamples {
  readonly #addon: LoopWatchAddon;
  readonly #buffer = new Float64Array(1024);
  #cursor: number;

  constructor(addon: LoopWatchAddon) {
    this.#addon = addon;
    // Start from now: samples left by an earlier probe are not ours.
    [this.#cursor] = addon.readLag(Number.MAX_SAFE_INTEGER, this.#buffer);
  }

  /** Calls `record` with each lag sample (ms) taken since the last drain, oldest first. */
  drain(record: (lagMs: number) => void): void {
    const [next, count] = this.#addon.readLag(this.#cursor, this.#buffer);
    this.#cursor = next;
    for (let i = 0; i < count; i++) record(this.#buffer[i]!);
  }
}
