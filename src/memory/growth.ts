/**
 * Sustained memory growth, from a regression rather than two points. The heap is
 * a sawtooth (it grows until a GC cuts it back), so the tracker keeps the lowest
 * value of each bucket of time (the floor the GCs bring it back to) and fits a
 * least-squares line through the floors of the window. A leak raises the floors;
 * a busy but healthy heap only raises the teeth.
 */

/** A fitted growth rate, in units per minute, and how well a line explains the floors (r², 0..1). */
export interface Growth {
  perMinute: number;
  r2: number;
  /** How many floors the fit used; fewer than 3 means no estimate. */
  points: number;
  /** The time the floors span, ms. */
  spanMs: number;
}

export class GrowthTracker {
  readonly #windowMs: number;
  readonly #bucketMs: number;
  /** One floor per bucket, oldest first: [bucket start, lowest value seen in it]. */
  readonly #floors: Array<[number, number]> = [];

  /** `windowMs`: how far back the fit looks; `bucketMs`: how long each floor's bucket is (a few GC cycles). */
  constructor(windowMs: number, bucketMs: number) {
    if (!(windowMs > 0 && bucketMs > 0 && bucketMs <= windowMs))
      throw new RangeError('GrowthTracker needs 0 < bucketMs <= windowMs');
    this.#windowMs = windowMs;
    this.#bucketMs = bucketMs;
  }

  /** Adds one reading (time in ms, in order). */
  add(time: number, value: number): void {
    if (!Number.isFinite(time) || !Number.isFinite(value)) return;
    const bucket = Math.floor(time / this.#bucketMs) * this.#bucketMs;
    const last = this.#floors.at(-1);
    if (last && last[0] === bucket) last[1] = Math.min(last[1], value);
    else if (!last || bucket > last[0]) this.#floors.push([bucket, value]);
    while (this.#floors.length > 0 && this.#floors[0]![0] <= time - this.#windowMs) this.#floors.shift();
  }

  /** The growth over the window, or undefined with fewer than three floors. */
  growth(): Growth | undefined {
    // The newest bucket is still filling: its floor may yet drop, so it is left out.
    const floors = this.#floors.slice(0, -1);
    const n = floors.length;
    if (n < 3) return undefined;
    const t0 = floors[0]![0];
    let sumX = 0,
      sumY = 0,
      sumXX = 0,
      sumXY = 0,
      sumYY = 0;
    for (const [t, y] of floors) {
      const x = (t - t0) / 60_000; // minutes, so the slope is per minute
      sumX += x;
      sumY += y;
      sumXX += x * x;
      sumXY += x * y;
      sumYY += y * y;
    }
    const sxx = sumXX - (sumX * sumX) / n;
    const sxy = sumXY - (sumX * sumY) / n;
    const syy = sumYY - (sumY * sumY) / n;
    const perMinute = sxx > 0 ? sxy / sxx : 0;
    const r2 = sxx > 0 && syy > 0 ? (sxy * sxy) / (sxx * syy) : 0;
    return { perMinute, r2, points: n, spanMs: floors[n - 1]![0] - t0 };
  }
}
