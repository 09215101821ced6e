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

/** What the timer does besides sampling. */
export interface HeartbeatTimer {
  intervalMs: number;
  /** Whether this timer is the stall detector's heartbeat (no native loop watch). */
  beats: boolean;
  /** The longest the loop went without turning since the previous call, ms, when something else (the native watch) measures it. */
  takeMaxDelayMs?: () => number;
  /** Runs after each sample's readings, on the main thread. */
  onSample?: () => void;
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
 * CPU, so the period is the cost knob.
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
  #interval: NodeJS.Timeout | undefined;
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
    Atomics.store(this.#beatSlot, Beat.LAST, process.hrtime.bigint());
  }

  /** sysprobe is about to pause the main thread itself (a heap snapshot), or has resumed: stall watches read it at once. */
  selfPause(active: boolean): void {
    Atomics.store(this.#beatSlot, Beat.SELF_PAUSED, active ? 1n : 0n);
  }

  start(): void {
    this.#interval = setInterval(() => this.#tick(), this.#timer.intervalMs);
    this.#interval.unref();
  }

  stop(): void {
    clearInterval(this.#interval);
    this.#interval = undefined;
  }

  #tick(): void {
    const now = process.hrtime.bigint();
    if (this.#timer.beats) this.#beat(now);
    const nowMs = Number(now / 1_000_000n);
    // Half a tick of slack so a sample is not pushed a whole tick late by timer jitter.
    if (nowMs - this.#lastSampleAt >= this.#options.sampleIntervalMs - this.#timer.intervalMs / 2) {
      this.#lastSampleAt = nowMs;
      this.publish();
    }
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
    if (samplers.eventLoop) {
      const elu = performance.eventLoopUtilization();
      const delta = performance.eventLoopUtilization(elu, this.#lastElu);
      this.#lastElu = elu;
      const maxDelayMs = this.#timer.takeMaxDelayMs?.() ?? this.#maxGapMs;
      this.#maxGapMs = 0;
      sample.eventLoop = { utilization: delta.utilization, maxDelayMs };
    }
    if (samplers.cpu) sample.cpu = readProcessCpu();
    if (samplers.memory) {
      const heap = v8.getHeapStatistics();
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
