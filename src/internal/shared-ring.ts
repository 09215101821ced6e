/**
 * A one-writer, one-reader ring of JSON values in shared memory. The main thread
 * appends its readings here instead of posting a message, so handing them over
 * wakes nobody; the worker drains them in batches, when it wakes for its own
 * reasons. Each slot has its own sequence lock, so a reader never sees a torn
 * value, and a value overwritten before it was read is counted as lost, never
 * misread.
 */
const WRITTEN = 0; // values written so far (Int32: ~7 years of one value per 100 ms)
const SLOTS = 1;
const CAPACITY = 2;
const HEADER_INTS = 4;
const SLOT_HEADER_INTS = 2; // [seq: 2 × writes to this slot, odd while writing; length]

export class SharedJsonRing {
  readonly buffer: SharedArrayBuffer;
  /** How many values the ring holds before the oldest is overwritten. */
  readonly slots: number;
  /** The most JSON bytes one value may take. */
  readonly capacity: number;
  readonly #ints: Int32Array;
  readonly #bytes: Uint8Array;
  readonly #slotBytes: number;
  readonly #encoder = new TextEncoder();
  readonly #decoder = new TextDecoder();

  /** A new ring of `slots` values of up to `capacity` bytes each, or a view of an existing ring's buffer. */
  constructor(init: { slots: number; capacity: number } | SharedArrayBuffer) {
    if (init instanceof SharedArrayBuffer) {
      const header = new Int32Array(init, 0, HEADER_INTS);
      this.slots = header[SLOTS]!;
      this.capacity = header[CAPACITY]!;
    } else {
      if (!(Number.isInteger(init.slots) && init.slots > 0 && Number.isInteger(init.capacity) && init.capacity > 0)) {
        throw new RangeError('SharedJsonRing needs positive integer slots and capacity');
      }
      this.slots = init.slots;
      this.capacity = init.capacity;
    }
    this.#slotBytes = SLOT_HEADER_INTS * 4 + Math.ceil(this.capacity / 4) * 4;
    this.buffer =
      init instanceof SharedArrayBuffer ? init : new SharedArrayBuffer(HEADER_INTS * 4 + this.slots * this.#slotBytes);
    this.#ints = new Int32Array(this.buffer);
    this.#bytes = new Uint8Array(this.buffer);
    this.#ints[SLOTS] = this.slots;
    this.#ints[CAPACITY] = this.capacity;
  }

  /** How many values were written so far. */
  get written(): number {
    return Atomics.load(this.#ints, WRITTEN);
  }

  /** Appends the value; returns false (and writes nothing) when its JSON exceeds the capacity. */
  write(value: unknown): boolean {
    const encoded = this.#encoder.encode(JSON.stringify(value));
    if (encoded.length > this.capacity) return false;
    const index = Atomics.load(this.#ints, WRITTEN);
    const slot = this.#slotInts(index);
    Atomics.add(this.#ints, slot, 1); // odd: writing
    this.#bytes.set(encoded, (slot + SLOT_HEADER_INTS) * 4);
    Atomics.store(this.#ints, slot + 1, encoded.length);
    Atomics.add(this.#ints, slot, 1); // even: done
    Atomics.store(this.#ints, WRITTEN, index + 1);
    return true;
  }

  /**
   * The values written since `cursor` (a count of values; start at 0), oldest first,
   * the cursor to pass next time, and how many were overwritten before they could be read.
   */
  readSince<T>(cursor: number): { values: T[]; next: number; lost: number } {
    const written = Atomics.load(this.#ints, WRITTEN);
    const from = Math.min(written, Math.max(cursor, written - this.slots));
    const values: T[] = [];
    let lost = Math.max(0, from - cursor);
    for (let index = from; index < written; index++) {
      const value = this.#read<T>(index);
      if (value === undefined) lost += 1;
      else values.push(value.value);
    }
    return { values, next: written, lost };
  }

  #slotInts(index: number): number {
    return HEADER_INTS + ((index % this.slots) * this.#slotBytes) / 4;
  }

  /** Value number `index`, unless the writer has lapped it (or is rewriting its slot right now). */
  #read<T>(index: number): { value: T } | undefined {
    const slot = this.#slotInts(index);
    // After the n-th write to a slot its seq is 2n; value `index` is that slot's write number floor(index / slots) + 1.
    const expected = 2 * (Math.floor(index / this.slots) + 1);
    if (Atomics.load(this.#ints, slot) !== expected) return undefined;
    const length = Math.min(Atomics.load(this.#ints, slot + 1), this.capacity);
    const start = (slot + SLOT_HEADER_INTS) * 4;
    const copy = this.#bytes.slice(start, start + length);
    if (Atomics.load(this.#ints, slot) !== expected) return undefined;
    return { value: JSON.parse(this.#decoder.decode(copy)) as T };
  }
}
