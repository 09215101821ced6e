/**
 * A one-writer, one-reader mailbox in shared memory holding the latest JSON
 * value. The main thread writes its readings here instead of posting a message,
 * so handing them over wakes nobody: the worker picks them up on its next
 * wake-up. A sequence lock (odd while writing) keeps reads consistent.
 */
const SEQ = 0;
const LENGTH = 1;
const HEADER_BYTES = 8;

export class SharedJsonSlot {
  readonly buffer: SharedArrayBuffer;
  readonly #header: Int32Array;
  readonly #bytes: Uint8Array;
  readonly #encoder = new TextEncoder();
  readonly #decoder = new TextDecoder();

  /** `capacity` bounds the JSON text in bytes; a larger value is refused by write(). */
  constructor(bufferOrCapacity: SharedArrayBuffer | number) {
    this.buffer = typeof bufferOrCapacity === 'number' ? new SharedArrayBuffer(HEADER_BYTES + bufferOrCapacity) : bufferOrCapacity;
    this.#header = new Int32Array(this.buffer, 0, 2);
    this.#bytes = new Uint8Array(this.buffer, HEADER_BYTES);
  }

  /** The most JSON bytes a value may take. */
  get capacity(): number {
    return this.#bytes.length;
  }

  /** How many values were written so far (a reader compares it to see whether there is news). */
  get version(): number {
    return Atomics.load(this.#header, SEQ) >>> 1;
  }

  /** Writes the value; returns false (and keeps the previous value) when its JSON exceeds the capacity. */
  write(value: unknown): boolean {
    const encoded = this.#encoder.encode(JSON.stringify(value));
    if (encoded.length > this.capacity) return false;
    Atomics.add(this.#header, SEQ, 1); // odd: writing
    this.#bytes.set(encoded);
    Atomics.store(this.#header, LENGTH, encoded.length);
    Atomics.add(this.#header, SEQ, 1); // even: done
    return true;
  }

  /** The latest value and its version, or undefined if none was written or the writer kept racing us. */
  read<T>(): { version: number; value: T } | undefined {
    for (let attempt = 0; attempt < 4; attempt++) {
      const before = Atomics.load(this.#header, SEQ);
      if (before === 0) return undefined;
      if (before % 2 === 1) continue;
      const length = Atomics.load(this.#header, LENGTH);
      const copy = this.#bytes.slice(0, Math.min(length, this.capacity));
      if (Atomics.load(this.#header, SEQ) !== before) continue;
      return { version: before >>> 1, value: JSON.parse(this.#decoder.decode(copy)) as T };
    }
    return undefined;
  }
}
