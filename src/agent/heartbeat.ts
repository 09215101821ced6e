import * as v8 from 'node:v8';
import { createHistogram, performance, type EventLoopUtilization, type RecordableHistogram } from 'node:perf_hooks';
import { Beat, type MainSample } from '../protocol.js';
import { SharedJsonSlot } from '../shared-slot.js';
import type { ResolvedOptions } from '../options.js';
import type { GcObserver } from './gc.js';

/** Room for one MainSample as JSON; a typical one is ~2 KB, most of it heap spaces and handle types. */
const MAIN_SLOT_BYTES = 64 * 1024;

/**
 * The main thread's only periodic work. Each beat stamps the time into shared
 * memory (the worker reads it to see a stall while it lasts), records the gap
 * since the previous beat into the delay histograms, and, once per sample
 * interval, reads what only the main thread can read and leaves it in
 * `mainSlot` (no message, so nobody is woken).
 *
 * One timer, unref()ed, at `heartbeatIntervalMs`: on this kind of machine each
 * wake-up costs ~170 µs of CPU, so the period is the cost knob.
 */
export class Heartbeat {
  readonly shared = new SharedArrayBuffer(Beat.SIZE * BigInt64Array.BYTES_PER_ELEMENT);
  /** Where each sample's main-thread readings are left for the worker (no message, so no wake-up). */
  readonly mainSlot = new SharedJsonSlot(MAIN_SLOT_BYTES);
  /** Gaps between beats (ns), read and reset by the worker once per sample. */
  readonly workerHistogram: RecordableHistogram = createHistogram();
  /** Gaps between beats (ns), read and reset by the exporter once per collection. */
  readonly exportHistogram: RecordableHistogram = createHistogram();
  readonly #beat = new BigInt64Array(this.shared);
  readonly #options: ResolvedOptions;
  readonly #gc: GcObserver | undefined;
  readonly #onGap: (gapMs: number) => void;
  readonly #onSlotFull: (capacityBytes: number) => void;
  #timer: NodeJS.Timeout | undefined;
  #lastSampleAt = 0;
  #lastElu: EventLoopUtilization = performance.eventLoopUtilization();

  constructor(options: ResolvedOptions, gc: GcObserver | undefined, onGap: (gapMs: number) => void, onSlotFull: (capacityBytes: number) => void) {
    this.#options = options;
    this.#gc = gc;
    this.#onGap = onGap;
    this.#onSlotFull = onSlotFull;
    Atomics.store(this.#beat, Beat.LAST, process.hrtime.bigint());
  }

  start(): void {
    this.#timer = setInterval(() => this.#tick(), this.#options.heartbeatIntervalMs);
    this.#timer.unref();
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  #tick(): void {
    const now = process.hrtime.bigint();
    const gap = now - Atomics.load(this.#beat, Beat.LAST);
    Atomics.store(this.#beat, Beat.LAST, now);
    // Wakes the worker only if it is waiting for a stall to end; free otherwise.
    Atomics.notify(this.#beat, Beat.LAST);
    if (gap > 0n && this.#options.samplers.eventLoop) {
      this.workerHistogram.record(gap);
      this.exportHistogram.record(gap);
      this.#onGap(Number(gap) / 1e6);
    }
    const nowMs = Number(now / 1_000_000n);
    // Half a beat of slack so a sample is not pushed a whole beat late by timer jitter.
    if (nowMs - this.#lastSampleAt >= this.#options.sampleIntervalMs - this.#options.heartbeatIntervalMs / 2) {
      this.#lastSampleAt = nowMs;
      this.publish();
    }
  }

  /** Leaves the main thread's readings for the worker. */
  publish(): void {
    if (!this.mainSlot.write(this.#sampleMain())) this.#onSlotFull(this.mainSlot.capacity);
  }

  /** Reads the values only the main thread can read. Cheap: no I/O but one small /proc read inside memoryUsage(). */
  #sampleMain(): MainSample {
    const { samplers } = this.#options;
    const sample: MainSample = { time: Date.now() };
    if (samplers.eventLoop) {
      const elu = performance.eventLoopUtilization();
      const delta = performance.eventLoopUtilization(elu, this.#lastElu);
      this.#lastElu = elu;
      sample.eventLoop = { utilization: delta.utilization, activeMs: elu.active, idleMs: elu.idle };
    }
    if (samplers.memory) {
      const heap = v8.getHeapStatistics();
      const usage = process.memoryUsage();
      sample.memory = {
        heapUsed: heap.used_heap_size,
        heapTotal: heap.total_heap_size,
        heapLimit: heap.heap_size_limit,
        external: usage.external,
        arrayBuffers: usage.arrayBuffers,
        spaces: v8.getHeapSpaceStatistics().map((s) => ({
          name: s.space_name, used: s.space_used_size, size: s.space_size,
          available: s.space_available_size, physical: s.physical_space_size,
        })),
      };
    }
    // A plain copy: structuredClone() would open a MessageChannel per call on Node 20.
    if (samplers.gc && this.#gc) sample.gc = Object.fromEntries(Object.entries(this.#gc.totals).map(([kind, t]) => [kind, { ...t }]));
    if (samplers.handles) {
      const handles: Record<string, number> = {};
      for (const type of process.getActiveResourcesInfo()) handles[type] = (handles[type] ?? 0) + 1;
      sample.handles = handles;
    }
    return sample;
  }
}
