import * as v8 from 'node:v8';
import { performance, type EventLoopUtilization } from 'node:perf_hooks';
import { Beat } from './stall.js';
import type { MainSample } from '../samples/sample.js';
import { readProcessCpu } from '../samples/cpu.js';
import { SharedJsonRing } from '../internal/shared-ring.js';
import type { ResolvedOptions } from '../probe/options.js';
import type { GcObserver } from '../memory/gc.js';

/** Room for one MainSample as JSON; a typical one is ~0.6 KB, most of it handle types. */
const MAIN_READING_BYTES = 8 * 1024;
/** Readings the ring holds: the worker drains it well before it wraps (see probe-worker's DRAIN_SLOTS). */
export const MAIN_RING_SLOTS = 64;
/** Readings in a row that find the loop idle before the period starts to stretch. */
const IDLE_READINGS_BEFORE_STRETCH = 3;
/** A reading is idle below this event-loop utilization (and with no request started since the one before). */
const IDLE_UTILIZATION = 0.01;
/**
 * A reading is not idle when the JS heap grew more than this since the one before: a leak in a quiet process is
 * what the near-limit watch and the memory rules must see in time (stretched readings let one die unwatched).
 */
const HEAP_GROWTH_NOT_IDLE_BYTES = 1024 * 1024;
/**
 * The longest a stretched period gets, ms: three of the worker's 10 s drains, two of which then find nothing and
 * read nothing. Idle, a reading and its drain are most of sysprobe's cost (cold code: ~1 ms on each thread).
 */
const MAX_STRETCHED_MS = 30_000;

/** Activity the main thread's readings watch for: requests that started (stalls.ts's RequestTracker). */
export interface ActivitySignal {
  /** Requests started so far (only grows). */
  readonly started: number;
  /** Calls `callback` once, at the next request's start (undefined: no call). */
  onNextStart(callback: (() => void) | undefined): void;
}

/** What the timer does besides sampling. */
export interface HeartbeatTimer {
  intervalMs: number;
  /** Whether this timer is the stall detector's heartbeat (no native loop watch). */
  beats: boolean;
  /** The longest the loop went without turning since the previous call, ms, when something else (the native watch) measures it. */
  takeMaxDelayMs?: () => number;
  /** Runs after each sample's readings, on the main thread. */
  onSample?: () => void;
  /** Ends a stretch at once when a request starts; without it, at the next reading that is not idle. */
  activity?: ActivitySignal;
}

/**
 * The main thread's only periodic work. Once per sample interval it reads what
 * only the main thread can read, plus the process-wide counters that cost a
 * syscall, and appends them to `mainRing` (no message, so nobody is woken).
 *
 * Without the native loop watch it is also the stall detector's heartbeat: each
 * beat stamps the time into shared memory (the worker reads it to see a stall
 * while it lasts) and reports the gap since the previous beat as a delay.
 *
 * One timer, unref()ed: on this kind of machine each wake-up costs ~170 µs of
 * CPU, so the period is the cost knob. With the native loop watch (no beats) the
 * period stretches while the process is idle (no request, the loop under 1% busy, the
 * heap not growing): after IDLE_READINGS_BEFORE_STRETCH idle readings it doubles each
 * reading, up to MAX_STRETCHED_MS. The next request's
 * start (or a busy reading) brings it back to the sample interval, and `refresh()`
 * takes a reading now for whoever is about to read one (recent(), health(), an
 * OpenTelemetry collection, a stall's end), so nothing a user reads is stale.
 */
export class Heartbeat {
  readonly shared = new SharedArrayBuffer(Beat.SIZE * BigInt64Array.BYTES_PER_ELEMENT);
  /** Where each interval's readings are left for the worker. */
  readonly mainRing = new SharedJsonRing({ slots: MAIN_RING_SLOTS, capacity: MAIN_READING_BYTES });
  readonly #beatSlot = new BigInt64Array(this.shared);
  readonly #options: ResolvedOptions;
  readonly #timer: HeartbeatTimer;
  readonly #gc: GcObserver | undefined;
  readonly #onGap: (gapMs: number) => void;
  readonly #onTooLarge: (capacityBytes: number) => void;
  #handle: NodeJS.Timeout | undefined;
  #running = false;
  /** The current period, ms: intervalMs, or longer while idle. */
  #periodMs: number;
  #idleReadings = 0;
  /** Requests started as of the last timed reading. */
  #startedAtReading = 0;
  /** Utilization since the previous reading, from the last reading. */
  #utilization = 0;
  /** The JS heap's used bytes at the last reading, and at the last timed reading (0: not read). */
  #heapUsed = 0;
  #heapUsedAtReading = 0;
  #latest: MainSample | undefined;
  #lastSampleAt = 0;
  #maxGapMs = 0;
  #lastElu: EventLoopUtilization = performance.eventLoopUtilization();

  constructor(
    options: ResolvedOptions,
    timer: HeartbeatTimer,
    gc: GcObserver | undefined,
    onGap: (gapMs: number) => void,
    onTooLarge: (capacityBytes: number) => void,
  ) {
    this.#options = options;
    this.#timer = timer;
    this.#gc = gc;
    this.#onGap = onGap;
    this.#onTooLarge = onTooLarge;
    this.#periodMs = timer.intervalMs;
    Atomics.store(this.#beatSlot, Beat.LAST, process.hrtime.bigint());
  }

  /** sysprobe is about to pause the main thread itself (a heap snapshot), or has resumed: stall watches read it at once. */
  selfPause(active: boolean): void {
    Atomics.store(this.#beatSlot, Beat.SELF_PAUSED, active ? 1n : 0n);
  }

  start(): void {
    this.#running = true;
    this.#startedAtReading = this.#timer.activity?.started ?? 0;
    this.#arm(this.#periodMs);
  }

  stop(): void {
    this.#running = false;
    clearTimeout(this.#handle);
    this.#handle = undefined;
    this.#timer.activity?.onNextStart(undefined);
  }

  /** The current period between readings, ms (longer than the sample interval while idle). */
  get periodMs(): number {
    return this.#periodMs;
  }

  /** Activity (a request starting): back to one reading per sample interval from now. */
  readonly wake = (): void => {
    this.#idleReadings = 0;
    if (this.#periodMs === this.#timer.intervalMs) return;
    this.#periodMs = this.#timer.intervalMs;
    if (!this.#running) return;
    clearTimeout(this.#handle);
    this.#arm(this.#periodMs);
  };

  /** A reading now if the latest is a sample interval old or more (the period stretches while idle). */
  refresh(): void {
    if (this.#running && Date.now() - (this.#latest?.time ?? 0) >= this.#options.sampleIntervalMs) this.publish();
  }

  /** Re-armed after each run (not setInterval), so the period can change and runs never overlap. */
  #arm(ms: number): void {
    this.#handle = setTimeout(this.#onTimer, ms);
    this.#handle.unref();
  }

  readonly #onTimer = (): void => {
    this.#tick();
    if (this.#running) this.#arm(this.#periodMs);
  };

  #tick(): void {
    const now = process.hrtime.bigint();
    if (this.#timer.beats) this.#beat(now);
    const nowMs = Number(now / 1_000_000n);
    // Half a tick of slack so a sample is not pushed a whole tick late by timer jitter.
    if (nowMs - this.#lastSampleAt >= this.#options.sampleIntervalMs - this.#timer.intervalMs / 2) {
      this.#lastSampleAt = nowMs;
      this.publish();
      if (!this.#timer.beats) this.#stretch();
    }
  }

  /** After a timed reading: the period doubles once the loop has been idle a few readings, and resets when it is not. */
  #stretch(): void {
    const activity = this.#timer.activity;
    const started = activity?.started ?? 0;
    const heapGrew = this.#heapUsed - this.#heapUsedAtReading > HEAP_GROWTH_NOT_IDLE_BYTES;
    const idle = this.#utilization < IDLE_UTILIZATION && started === this.#startedAtReading && !heapGrew;
    this.#startedAtReading = started;
    this.#heapUsedAtReading = this.#heapUsed;
    if (!idle) {
      this.wake();
      return;
    }
    if (++this.#idleReadings < IDLE_READINGS_BEFORE_STRETCH) return;
    const base = this.#timer.intervalMs;
    const next = Math.min(this.#periodMs * 2, Math.max(base, MAX_STRETCHED_MS));
    // The first request ends the stretch (one call, then the hook is gone: nothing per request).
    if (this.#periodMs === base && next > base) activity?.onNextStart(this.wake);
    this.#periodMs = next;
  }

  #beat(now: bigint): void {
    const gap = now - Atomics.load(this.#beatSlot, Beat.LAST);
    Atomics.store(this.#beatSlot, Beat.LAST, now);
    // Wakes the worker only if it is waiting for a stall to end; free otherwise.
    Atomics.notify(this.#beatSlot, Beat.LAST);
    if (gap > 0n && this.#options.samplers.eventLoop) {
      const gapMs = Number(gap) / 1e6;
      this.#maxGapMs = Math.max(this.#maxGapMs, gapMs);
      this.#onGap(gapMs);
    }
  }

  /** The newest reading, for probe.health() on the main thread. */
  get latest(): MainSample | undefined {
    return this.#latest;
  }

  /** Appends the main thread's readings for the worker. */
  publish(): void {
    const reading = this.#read();
    this.#latest = reading;
    if (!this.mainRing.write(reading)) this.#onTooLarge(this.mainRing.capacity);
    this.#timer.onSample?.();
  }

  /** Reads what the main thread can read cheaply: no I/O, no /proc. */
  #read(): MainSample {
    const { samplers } = this.#options;
    const sample: MainSample = { time: Date.now() };
    // Always read: whether the loop is idle sets the period.
    const elu = performance.eventLoopUtilization();
    const delta = performance.eventLoopUtilization(elu, this.#lastElu);
    this.#lastElu = elu;
    this.#utilization = delta.utilization;
    if (samplers.eventLoop) {
      const maxDelayMs = this.#timer.takeMaxDelayMs?.() ?? this.#maxGapMs;
      this.#maxGapMs = 0;
      sample.eventLoop = { utilization: delta.utilization, maxDelayMs };
    }
    if (samplers.cpu) sample.cpu = readProcessCpu();
    if (samplers.memory) {
      const heap = v8.getHeapStatistics();
      this.#heapUsed = heap.used_heap_size;
      sample.memory = {
        heapUsed: heap.used_heap_size,
        heapTotal: heap.total_heap_size,
        heapLimit: heap.heap_size_limit,
        external: heap.external_memory,
      };
    }
    // A plain copy: structuredClone() would open a MessageChannel per call on Node 20.
    if (samplers.gc && this.#gc) {
      sample.gc = this.#gc.totals;
      const afterGc = this.#gc.heapAfterMajorGc();
      if (afterGc && sample.memory) {
        sample.memory.heapAfterGc = afterGc.bytes;
        sample.memory.heapAfterGcAt = afterGc.at;
      }
    }
    if (samplers.handles) {
      const handles: Record<string, number> = {};
      for (const type of process.getActiveResourcesInfo()) handles[type] = (handles[type] ?? 0) + 1;
      sample.handles = handles;
    }
    return sample;
  }
}
