/**
 * The worker's two ways of seeing the main thread's event loop stall while the
 * stall lasts. Both report a stall twice: when it becomes certain (it has lasted
 * the threshold) and when the loop runs again, with its whole length.
 */
import { Beat } from './stall.js';
import type { LoopWatchAddon } from './loop-watch.js';

const NS_PER_MS = 1e6;

/** A stall, when it becomes certain (`ended: false`, duration so far) and when it is over (`ended: true`). */
export interface StallReport {
  ended: boolean;
  /** When the loop stopped turning, ms since the epoch. */
  startedAt: number;
  durationMs: number;
  /** An ended stall that no look saw while it lasted (the watchdog thread had no CPU, or was parked through a turn with no JavaScript): no stack could be taken. */
  late?: boolean;
}

export interface StallWatch {
  /** ms until the worker's timer must call check(); Infinity when the watch needs no timer. */
  dueMs(): number;
  check(): void;
  /** How long the loop has been busy without turning, ms. */
  lagMs(): number;
  /**
   * How long the loop has been stalled, read now, or undefined while it is not: true before the stall is reported
   * (a parked native watchdog sees a turn with no JavaScript only at its fallback look).
   */
  stalledForMs(): number | undefined;
  stop(): void;
}

/** process.hrtime milliseconds (the addon's clock, CLOCK_MONOTONIC) to epoch milliseconds. */
function hrToEpochMs(hrMs: number): number {
  return Date.now() - (Number(process.hrtime.bigint()) / NS_PER_MS - hrMs);
}

/**
 * The native loop watch: the addon's own thread watches the main loop and calls
 * back only when a stall starts or ends, so neither this worker nor the main
 * thread wakes for it.
 */
export class NativeStallWatch implements StallWatch {
  readonly #addon: LoopWatchAddon;
  readonly #loopId: number;
  readonly #thresholdMs: number;

  /** `onGone`: the watched thread ended (a watched app worker; the probe's own host outlives its watch). */
  constructor(
    addon: LoopWatchAddon,
    loopId: number,
    thresholdMs: number,
    onStall: (report: StallReport) => void,
    onGone: () => void = () => undefined,
  ) {
    this.#addon = addon;
    this.#loopId = loopId;
    this.#thresholdMs = thresholdMs;
    const started = addon.startWatchdog(loopId, thresholdMs, (began, startHrMs, durationMs, gone, late) => {
      if (gone) onGone();
      else onStall({ ended: !began, startedAt: hrToEpochMs(startHrMs), durationMs, ...(late ? { late } : {}) });
    });
    if (!started) throw new Error('the native watchdog did not start (is the host thread loop attached?)');
  }

  dueMs(): number {
    return Infinity;
  }

  check(): void {}

  lagMs(): number {
    return this.#addon.lagMs(this.#loopId);
  }

  /** The hook's busy time is exact: a turn at the threshold is a stall. */
  stalledForMs(): number | undefined {
    const lagMs = this.lagMs();
    return lagMs >= this.#thresholdMs ? lagMs : undefined;
  }

  stop(): void {
    this.#addon.stopWatchdog(this.#loopId);
  }
}

/**
 * The fallback: the main thread's JS heartbeat stamps the time into shared
 * memory, and this watch wakes when a missing beat would prove a stall.
 */
export class HeartbeatStallWatch implements StallWatch {
  readonly #beat: BigInt64Array;
  readonly #heartbeatIntervalMs: number;
  readonly #thresholdMs: number;
  readonly #onStall: (report: StallReport) => void;
  #stalled = false;
  #stopped = false;

  constructor(
    settings: { heartbeat: SharedArrayBuffer; heartbeatIntervalMs: number; stallThresholdMs: number },
    onStall: (report: StallReport) => void,
  ) {
    this.#beat = new BigInt64Array(settings.heartbeat);
    this.#heartbeatIntervalMs = settings.heartbeatIntervalMs;
    this.#thresholdMs = settings.stallThresholdMs;
    this.#onStall = onStall;
  }

  /**
   * A stall is certain once the heartbeat is `stallThresholdMs` overdue: the next
   * beat was due at LAST + heartbeat, so none by LAST + heartbeat + threshold means
   * the loop has been blocked at least the threshold. A healthy loop thus costs one
   * wake-up per heartbeat + threshold, not one per beat.
   */
  dueMs(): number {
    return this.#stalled ? Infinity : this.#heartbeatIntervalMs + this.#thresholdMs - this.lagMs();
  }

  check(): void {
    if (this.#stalled || this.dueMs() > 0) return;
    const last = Atomics.load(this.#beat, Beat.LAST);
    const lagMs = this.lagMs();
    const startedAt = Date.now() - lagMs;
    this.#stalled = true;
    this.#onStall({ ended: false, startedAt, durationMs: lagMs });
    void this.#awaitBeat(last).then((durationMs) => {
      this.#stalled = false;
      if (!this.#stopped) this.#onStall({ ended: true, startedAt, durationMs });
    });
  }

  /** A beat missing for the threshold proves a stall (dueMs), whether check() has run yet or not. */
  stalledForMs(): number | undefined {
    return this.#stalled || this.dueMs() <= 0 ? this.lagMs() : undefined;
  }

  /** Time since the main thread's heartbeat last ran. */
  lagMs(): number {
    return Math.max(0, Number(process.hrtime.bigint() - Atomics.load(this.#beat, Beat.LAST)) / NS_PER_MS);
  }

  /** Resolves with the whole gap once the heartbeat moves past `last`. */
  async #awaitBeat(last: bigint): Promise<number> {
    for (;;) {
      // The heartbeat's Atomics.notify wakes us the moment the loop runs again.
      const result = Atomics.waitAsync(this.#beat, Beat.LAST, last, 1000);
      if (result.async) await result.value;
      const now = Atomics.load(this.#beat, Beat.LAST);
      if (now !== last || this.#stopped) return Number(now - last) / NS_PER_MS;
    }
  }

  stop(): void {
    this.#stopped = true;
  }
}
