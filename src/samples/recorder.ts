/**
 * The flight recorder: a fixed-capacity ring of the most recent samples.
 * Capacity is set once from the window and the sample interval, so memory is
 * bounded whatever the process does.
 */
export class FlightRecorder<T extends { time: number }> {
  readonly capacity: number;
  readonly #slots: Array<T | undefined>;
  #next = 0;
  #size = 0;

  constructor(capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1)
      throw new RangeError(`capacity must be a positive integer, got ${capacity}`);
    this.capacity = capacity;
    this.#slots = new Array<T | undefined>(capacity).fill(undefined);
  }

  get size(): number {
    return this.#size;
  }

  push(item: T): void {
    this.#slots[this.#next] = item;
    this.#next = (this.#next + 1) % this.capacity;
    if (this.#size < this.capacity) this.#size += 1;
  }

  latest(): T | undefined {
    return this.#size === 0 ? undefined : this.#slots[(this.#next - 1 + this.capacity) % this.capacity];
  }

  /** Items whose time is at or after `since` (all when undefined), oldest first. */
  since(since: number | undefined): T[] {
    const out: T[] = [];
    const start = (this.#next - this.#size + this.capacity) % this.capacity;
    for (let i = 0; i < this.#size; i++) {
      const item = this.#slots[(start + i) % this.capacity];
      if (item !== undefined && (since === undefined || item.time >= since)) out.push(item);
    }
    return out;
  }
}
