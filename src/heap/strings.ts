/**
 * A snapshot's string table kept as it was read: each string's bytes (still JSON-escaped)
 * end to end in one buffer, decoded only when asked. A leak of hundreds of thousands of
 * objects brings as many unique strings (keys, ids, tokens); holding them as JS strings
 * cost a garbage-collected heap of a few hundred MB and a structured clone from the
 * reading thread. Three typed arrays cost their bytes, move between threads by
 * transfer, and analysis decodes only the few names it prints or groups by.
 */

import { bigArray } from './arrays.js';

const BACKSLASH = 0x5c,
  QUOTE = 0x22;
/** Decoded strings kept, by index modulo this (a direct-mapped cache: names repeat). */
const CACHE_SLOTS = 4096;

export class StringTable {
  /** Where string i ends in `bytes`; it starts where string i-1 ends (0 for the first). */
  readonly ends: Float64Array;
  /** Per string: 1 when it holds a JSON escape and must be unescaped to be read. */
  readonly escaped: Uint8Array;
  readonly bytes: Uint8Array;
  readonly #cacheKeys = new Int32Array(CACHE_SLOTS).fill(-1);
  readonly #cacheValues = new Array<string>(CACHE_SLOTS);

  constructor(bytes: Uint8Array, ends: Float64Array, escaped: Uint8Array) {
    this.bytes = bytes;
    this.ends = ends;
    this.escaped = escaped;
  }

  /** The table again from its arrays (after a transfer between threads, which keeps data but not classes). */
  static revive(t: { bytes: Uint8Array; ends: Float64Array; escaped: Uint8Array }): StringTable {
    return new StringTable(t.bytes, t.ends, t.escaped);
  }

  /** Strings built in memory (tests, small inputs). */
  static of(strings: string[]): StringTable {
    const builder = new StringTableBuilder();
    for (const s of strings) {
      const json = Buffer.from(JSON.stringify(s).slice(1, -1));
      builder.append(json, 0, json.length);
      builder.end(json.includes(BACKSLASH));
    }
    return builder.finish();
  }

  get length(): number {
    return this.ends.length;
  }

  /** String i (undefined past the end). */
  get(i: number): string {
    if (!(i >= 0 && i < this.ends.length)) return undefined as unknown as string;
    const slot = i & (CACHE_SLOTS - 1);
    if (this.#cacheKeys[slot] === i) return this.#cacheValues[slot]!;
    const start = i === 0 ? 0 : this.ends[i - 1]!,
      end = this.ends[i]!;
    const text = Buffer.from(this.bytes.buffer, this.bytes.byteOffset + start, end - start).toString('utf8');
    // The reader checked the escapes as it read (see StringTableBuilder.end's caller).
    const s = this.escaped[i] ? (JSON.parse(`"${text}"`) as string) : text;
    this.#cacheKeys[slot] = i;
    this.#cacheValues[slot] = s;
    return s;
  }

  /** Is string i a decimal number (the names V8 gives internal slots)? */
  isDigits(i: number): boolean {
    const start = i === 0 ? 0 : this.ends[i - 1]!,
      end = this.ends[i]!;
    if (end === start) return false;
    for (let k = start; k < end; k++) if ((this.bytes[k]! - 0x30) >>> 0 > 9) return false;
    return true;
  }

  /** The index of a string (ASCII, no escapes: the names V8 gives its own edges and structures), or -1. */
  indexOf(ascii: string): number {
    const want = Buffer.from(ascii, 'latin1');
    const len = want.length,
      bytes = this.bytes,
      ends = this.ends;
    let start = 0;
    for (let i = 0; i < ends.length; i++) {
      const end = ends[i]!;
      if (end - start === len && !this.escaped[i]) {
        let k = 0;
        while (k < len && bytes[start + k] === want[k]) k++;
        if (k === len) return i;
      }
      start = end;
    }
    return -1;
  }

  /** Every string, decoded (tests; large tables should be read by index). */
  toArray(): string[] {
    return Array.from({ length: this.length }, (_, i) => this.get(i));
  }

  /** The buffers a transfer between threads moves. */
  transferables(): ArrayBuffer[] {
    return [this.bytes.buffer, this.ends.buffer, this.escaped.buffer] as ArrayBuffer[];
  }
}

/** Collects a table's bytes as the reader finds them; a string may arrive in pieces (it spans chunks). */
export class StringTableBuilder {
  #bytes: Uint8Array;
  #used = 0;
  #ends = new Float64Array(1024);
  #escaped = new Uint8Array(1024);
  #count = 0;

  /** `expectedBytes`: room to start with (the file's remaining size, when known, so the buffer never grows). */
  constructor(expectedBytes = 1 << 20) {
    this.#bytes = bigArray(Uint8Array, Math.max(16, expectedBytes));
  }

  get count(): number {
    return this.#count;
  }

  /** Adds bytes start…end of `buf` to the string being read. */
  append(buf: Uint8Array, start: number, end: number): void {
    const len = end - start;
    this.#room(len);
    this.#bytes.set(buf.subarray(start, end), this.#used);
    this.#used += len;
  }

  /**
   * Adds bytes of `buf` from `start` to the string being read up to the first quote or
   * backslash, or `limit`; returns where it stopped. A byte loop: most strings are a few
   * bytes, where a search call and a copy call each cost more than the copy itself.
   */
  copyPlain(buf: Uint8Array, start: number, limit: number): number {
    this.#room(limit - start);
    const bytes = this.#bytes;
    let used = this.#used,
      i = start;
    for (; i < limit; i++) {
      const b = buf[i]!;
      if (b === QUOTE || b === BACKSLASH) break;
      bytes[used++] = b;
    }
    this.#used = used;
    return i;
  }

  #room(len: number): void {
    if (this.#used + len <= this.#bytes.length) return;
    const grown = bigArray(Uint8Array, Math.max(this.#bytes.length * 2, this.#used + len));
    grown.set(this.#bytes.subarray(0, this.#used));
    this.#bytes = grown;
  }

  /** Ends the string being read. */
  end(hasEscape: boolean): void {
    if (this.#count === this.#ends.length) {
      const ends = new Float64Array(this.#count * 2);
      ends.set(this.#ends);
      this.#ends = ends;
      const escaped = new Uint8Array(this.#count * 2);
      escaped.set(this.#escaped);
      this.#escaped = escaped;
    }
    this.#ends[this.#count] = this.#used;
    this.#escaped[this.#count++] = hasEscape ? 1 : 0;
  }

  /** The bytes of the string being read so far (to check an escaped one). */
  pending(): Uint8Array {
    const start = this.#count === 0 ? 0 : this.#ends[this.#count - 1]!;
    return this.#bytes.subarray(start, this.#used);
  }

  /** The table, its arrays trimmed to what they hold (a copy only when much room is left over). */
  finish(): StringTable {
    const trim = <T extends Uint8Array | Float64Array>(a: T, used: number): T =>
      (a.length > used * 1.25 + 4096 ? a.slice(0, used) : a.subarray(0, used)) as T;
    return new StringTable(
      trim(this.#bytes, this.#used),
      trim(this.#ends, this.#count),
      trim(this.#escaped, this.#count),
    );
  }
}
