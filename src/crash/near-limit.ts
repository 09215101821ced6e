/**
 * Sees a process come near the limit that will kill it: V8's heap limit (a fatal
 * "JavaScript heap out of memory" abort) or its memory cgroup's limit (the kernel's OOM
 * killer). Pure and clock-free: the worker feeds it each sample.
 *
 * Node gives JavaScript no near-heap-limit callback (V8's AddNearHeapLimitCallback is C++,
 * runs inside the failing GC where no JS may run, and Node uses it only for
 * --heapsnapshot-near-heap-limit, whose snapshot doubles memory at the worst moment). So
 * this watches what the samples carry: the heap right after the last full GC (the live
 * heap, what no collection can free) and the cgroup's working set.
 *
 * V8's heap_size_limit includes room reserved for the young generation, and the old
 * generation, where leaks live, fails when it reaches the rest. For a 4 GiB heap that is
 * noise; for `--max-old-space-size=64` it is most of the difference (the limit reads 112
 * MiB on Node 20/22, 256 on 24, 160 on 26, and the process dies near 64 MiB live). So when
 * the service set `--max-old-space-size` (old-space-flag.ts) that is the limit; else the
 * limit less Node 20/22's reservation (three 16 MiB semi-spaces), an estimate.
 *
 * V8 also gives up before the line ("Ineffective mark-compacts near heap limit") when, close
 * to it, its full GCs free little and take most of the time: seen here at 80–84% of a 64 MiB
 * old generation, with GC pauses at 25–55% of each second before. So within the approach (75%),
 * GC pauses taking 40% of the interval or more fire too.
 */

/** The young generation's reservation inside heap_size_limit on 64-bit V8 of Node 20/22 (3 × 16 MiB semi-spaces). */
export const YOUNG_GENERATION_RESERVE = 48 << 20;

export interface NearLimitSettings {
  /** Fire at this share of the limit. Default 0.9. */
  share: number;
  /** Fire again only after the share fell below this. Default 0.75. Within it, GC thrashing fires. */
  rearmShare: number;
  /** Within the approach, this share of the interval in GC pauses fires: V8 is about to give up. Default 0.4. */
  gcPauseShare: number;
  /** And not more often than this, ms. Default 10 minutes. */
  cooldownMs: number;
  /** The process's `--max-old-space-size`, bytes (old-space-flag.ts), when given. */
  oldSpaceFlag: number | undefined;
}

/** The figures a sample gives it. */
export interface MemoryFigures {
  time: number;
  heapUsed?: number;
  heapLimit?: number;
  /** Heap used right after the last full GC (needs the GC addon). */
  heapAfterGc?: number;
  /** Share of the interval spent in GC pauses, 0..1. */
  gcPauseShare?: number;
  /** The cgroup's working set and limit, bytes. */
  cgroupWorkingSet?: number;
  cgroupLimit?: number;
}

export interface NearLimit {
  at: number;
  /** `heap`: V8's limit; `cgroup`: the memory cgroup's. */
  kind: 'heap' | 'cgroup';
  /** The share of the limit in use, 0..1. */
  share: number;
  used: number;
  limit: number;
  reason: string;
}

/**
 * The bytes the old generation may reach: the `--max-old-space-size` given (within the heap
 * limit), else the heap limit less the young generation's room (when that leaves enough to be meaningful).
 */
export function oldGenerationLimit(heapLimit: number, oldSpaceFlag?: number): number {
  if (oldSpaceFlag !== undefined && oldSpaceFlag > 0 && oldSpaceFlag <= heapLimit) return oldSpaceFlag;
  return heapLimit > 2 * YOUNG_GENERATION_RESERVE ? heapLimit - YOUNG_GENERATION_RESERVE : heapLimit;
}

/** The heap's share of what it may grow to: the live heap after a full GC when known, else the heap used (a higher bar: it holds garbage). */
export function heapShare(
  f: MemoryFigures,
  oldSpaceFlag?: number,
): { share: number; used: number; limit: number; afterGc: boolean } | undefined {
  if (f.heapLimit === undefined || f.heapLimit <= 0) return undefined;
  const limit = oldGenerationLimit(f.heapLimit, oldSpaceFlag);
  if (f.heapAfterGc !== undefined) return { share: f.heapAfterGc / limit, used: f.heapAfterGc, limit, afterGc: true };
  if (f.heapUsed !== undefined) return { share: f.heapUsed / limit, used: f.heapUsed, limit, afterGc: false };
  return undefined;
}

export class NearLimitWatch {
  readonly #settings: NearLimitSettings;
  readonly #armed = { heap: true, cgroup: true };
  #lastFiredAt = -Infinity;
  #approaching = false;

  constructor(settings: Partial<NearLimitSettings> = {}) {
    this.#settings = {
      share: 0.9,
      rearmShare: 0.75,
      gcPauseShare: 0.4,
      cooldownMs: 10 * 60_000,
      oldSpaceFlag: undefined,
      ...settings,
    };
  }

  /** True while the last figures were within the approach (at or above `rearmShare` of a limit): watch closely then. */
  get approaching(): boolean {
    return this.#approaching;
  }

  /** A near-limit event when this sample crosses into it (once per approach, and per cooldown); else undefined. */
  observe(f: MemoryFigures): NearLimit | undefined {
    const candidates: NearLimit[] = [];
    const heap = heapShare(f, this.#settings.oldSpaceFlag);
    const cgroupShare = f.cgroupWorkingSet !== undefined && f.cgroupLimit ? f.cgroupWorkingSet / f.cgroupLimit : 0;
    this.#approaching = Math.max(heap?.share ?? 0, cgroupShare) >= this.#settings.rearmShare;
    if (heap) {
      // Without the after-GC figure, the heap used holds garbage a GC would free: ask for 5 points more.
      const bar = heap.afterGc ? this.#settings.share : Math.min(0.99, this.#settings.share + 0.05);
      const thrashing = (f.gcPauseShare ?? 0) >= this.#settings.gcPauseShare;
      if (heap.share < this.#settings.rearmShare) this.#armed.heap = true;
      else if ((heap.share >= bar || thrashing) && this.#armed.heap) {
        const where = `the heap ${heap.afterGc ? 'after a full GC' : 'in use'} is ${Math.round(heap.share * 100)}% of what V8 lets it grow to (${heap.used} of ${heap.limit} bytes)`;
        candidates.push({
          at: f.time,
          kind: 'heap',
          share: heap.share,
          used: heap.used,
          limit: heap.limit,
          reason:
            heap.share >= bar
              ? where
              : `${where} and GC pauses took ${Math.round(f.gcPauseShare! * 100)}% of the last interval: V8 gives up ("ineffective mark-compacts") about here`,
        });
      }
    }
    if (f.cgroupWorkingSet !== undefined && f.cgroupLimit !== undefined && f.cgroupLimit > 0) {
      const share = f.cgroupWorkingSet / f.cgroupLimit;
      if (share < this.#settings.rearmShare) this.#armed.cgroup = true;
      else if (share >= this.#settings.share && this.#armed.cgroup) {
        candidates.push({
          at: f.time,
          kind: 'cgroup',
          share,
          used: f.cgroupWorkingSet,
          limit: f.cgroupLimit,
          reason: `the memory cgroup's working set is ${Math.round(share * 100)}% of its limit (${f.cgroupWorkingSet} of ${f.cgroupLimit} bytes): the kernel's OOM killer acts at the limit`,
        });
      }
    }
    const event = candidates.sort((a, b) => b.share - a.share)[0];
    if (!event || f.time - this.#lastFiredAt < this.#settings.cooldownMs) return undefined;
    this.#armed[event.kind] = false;
    this.#lastFiredAt = f.time;
    return event;
  }
}
