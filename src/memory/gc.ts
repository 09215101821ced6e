/**
 * The GC picture of the main thread. V8 reports GCs to the isolate that collected,
 * so this cannot live in the worker.
 *
 * Two sources: Node's 'gc' performance entries count GCs and time each one (all
 * that the v8js.gc.duration histogram needs), and the optional native addon
 * (native/gc_stats.cc) hooks V8's GC prologue and epilogue to sum what each GC
 * reclaimed and keep the heap left after the last full GC, which the entries do
 * not carry. Without the addon, those two figures are absent and the rest works.
 */
import { constants, performance, PerformanceObserver, type PerformanceEntry } from 'node:perf_hooks';
import { loadNative } from '../native.js';

/** The GC kinds of the `v8js.gc.type` attribute, by perf_hooks constant. */
const KIND_NAMES: Record<number, string> = {
  [constants.NODE_PERFORMANCE_GC_MINOR]: 'minor',
  [constants.NODE_PERFORMANCE_GC_MAJOR]: 'major',
  [constants.NODE_PERFORMANCE_GC_INCREMENTAL]: 'incremental',
  [constants.NODE_PERFORMANCE_GC_WEAKCB]: 'weakcb',
};
/** The same kinds in the order the addon's read() returns them. */
const ADDON_KINDS = ['minor', 'major', 'incremental', 'weakcb'] as const;

/** One GC: its kind, its pause, and when it started (ms since the epoch). */
export type GcListener = (kind: string, durationMs: number, startedAt: number) => void;

/** Cumulative since start, per GC kind. */
export interface GcTotal {
  count: number;
  durationMs: number;
  /** Heap bytes the GCs of this kind freed (used before minus used after); absent without the addon. */
  reclaimedBytes?: number;
}

/** The addon's functions, as native/gc_stats.cc defines them. */
interface GcStatsAddon {
  /** Hooks the calling thread's isolate; false if it is hooked already. */
  start(): boolean;
  stop(): void;
  /** Per kind [count, pause ms, reclaimed bytes], then heap used after the last mark-compact (-1 before one) and when it ended. */
  read(out: Float64Array): void;
}

export class GcObserver {
  readonly #counted: Record<string, { count: number; durationMs: number }> = {};
  readonly #observer: PerformanceObserver;
  readonly #addon: GcStatsAddon | undefined;
  readonly #buffer = new Float64Array(ADDON_KINDS.length * 3 + 2);
  /** Why reclaimed bytes are not measured, when they are not. */
  readonly reclaimedUnsupported: string | undefined;

  /** `onError`: the observer's callback runs on the host's loop, so nothing may escape it. */
  constructor(listener: GcListener, onError: (err: unknown) => void) {
    this.#observer = new PerformanceObserver((list) => {
      try {
        for (const entry of list.getEntries()) {
          const kind =
            KIND_NAMES[(entry as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind ?? -1] ?? 'other';
          const total = (this.#counted[kind] ??= { count: 0, durationMs: 0 });
          total.count += 1;
          total.durationMs += entry.duration;
          listener(kind, entry.duration, performance.timeOrigin + entry.startTime);
        }
      } catch (err) {
        onError(err);
      }
    });
    this.#observer.observe({ entryTypes: ['gc'] });
    const { addon, error } = loadNative<GcStatsAddon>('gc_stats');
    if (!addon) this.reclaimedUnsupported = `the GC statistics addon did not load (${error})`;
    else if (!addon.start()) this.reclaimedUnsupported = 'another probe in this thread already hooks its GCs';
    else this.#addon = addon;
  }

  /** A copy of the totals by kind, with reclaimed bytes where the addon measures them. */
  get totals(): Record<string, GcTotal> {
    const totals: Record<string, GcTotal> = {};
    for (const [kind, t] of Object.entries(this.#counted)) totals[kind] = { ...t };
    if (this.#addon) {
      this.#addon.read(this.#buffer);
      ADDON_KINDS.forEach((kind, i) => {
        const total = totals[kind];
        if (total) total.reclaimedBytes = this.#buffer[i * 3 + 2]!;
      });
    }
    return totals;
  }

  /** Heap used right after the last full (mark-compact) GC, and when it ended: the live heap, without garbage. Needs the addon. */
  heapAfterMajorGc(): { bytes: number; at: number } | undefined {
    if (!this.#addon) return undefined;
    this.#addon.read(this.#buffer);
    const bytes = this.#buffer[ADDON_KINDS.length * 3]!;
    return bytes >= 0 ? { bytes, at: this.#buffer[ADDON_KINDS.length * 3 + 1]! } : undefined;
  }

  stop(): void {
    this.#observer.disconnect();
    this.#addon?.stop();
  }
}
