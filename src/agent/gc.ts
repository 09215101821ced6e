import { constants, PerformanceObserver, type PerformanceEntry } from 'node:perf_hooks';

/** The GC kinds of the `v8js.gc.type` attribute. */
const KIND_NAMES: Record<number, string> = {
  [constants.NODE_PERFORMANCE_GC_MINOR]: 'minor',
  [constants.NODE_PERFORMANCE_GC_MAJOR]: 'major',
  [constants.NODE_PERFORMANCE_GC_INCREMENTAL]: 'incremental',
  [constants.NODE_PERFORMANCE_GC_WEAKCB]: 'weakcb',
};

export type GcListener = (kind: string, durationMs: number) => void;

/**
 * Counts GCs by kind on the main thread with a PerformanceObserver (V8 reports
 * them to the isolate that collected, so this cannot live in the worker).
 */
export class GcObserver {
  readonly totals: Record<string, { count: number; durationMs: number }> = {};
  readonly #observer: PerformanceObserver;

  /** `onError`: the observer's callback runs on the host's loop, so nothing may escape it. */
  constructor(listener: GcListener, onError: (err: unknown) => void) {
    this.#observer = new PerformanceObserver((list) => {
      try {
        for (const entry of list.getEntries()) {
          const kind = KIND_NAMES[(entry as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind ?? -1] ?? 'other';
          const total = (this.totals[kind] ??= { count: 0, durationMs: 0 });
          total.count += 1;
          total.durationMs += entry.duration;
          listener(kind, entry.duration);
        }
      } catch (err) {
        onError(err);
      }
    });
    this.#observer.observe({ entryTypes: ['gc'] });
  }

  stop(): void {
    this.#observer.disconnect();
  }
}
