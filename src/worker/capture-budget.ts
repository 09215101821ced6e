/**
 * How many automatic captures may run per minute, so a process that stalls
 * over and over is not made sicker by being watched. A sliding window: at most
 * `perMinute` captures in any 60 s.
 */
export class CaptureBudget {
  readonly #perMinute: number;
  readonly #taken: number[] = [];

  constructor(perMinute: number) {
    this.#perMinute = perMinute;
  }

  /** Takes one capture from the budget if there is one left; `now` in ms. */
  take(now = Date.now()): boolean {
    while (this.#taken.length > 0 && now - this.#taken[0]! >= 60_000) this.#taken.shift();
    if (this.#taken.length >= this.#perMinute) return false;
    this.#taken.push(now);
    return true;
  }
}
