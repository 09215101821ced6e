/**
 * At most `limit` events in any `windowMs`: the budget for automatic captures (per
 * minute, in the worker) and for heap snapshots (per day, on the main thread), so a
 * process that is sick over and over is not made sicker by being watched.
 */
export class RateBudget {
  readonly limit: number;
  readonly #windowMs: number;
  readonly #taken: number[] = [];

  constructor(limit: number, windowMs: number) {
    this.limit = limit;
    this.#windowMs = windowMs;
  }

  /** Whether one more would fit now; `now` in ms. */
  available(now = Date.now()): boolean {
    while (this.#taken.length > 0 && now - this.#taken[0]! >= this.#windowMs) this.#taken.shift();
    return this.#taken.length < this.limit;
  }

  /** Takes one from the budget if there is one left. */
  take(now = Date.now()): boolean {
    if (!this.available(now)) return false;
    this.#taken.push(now);
    return true;
  }
}
