/**
 * Encodes a V8 CPU profile as gzipped pprof (github.com/google/pprof, proto/profile.proto),
 * the format `go tool pprof`, Pyroscope and most continuous profilers read. The
 * encoder is hand-written, for the few message types pprof needs, so that sysprobe
 * has no runtime dependency for it.
 */
import { gzipSync } from 'node:zlib';
import { displayName, isSynthetic, SYNTHETIC_FRAMES, weighProfile, type OriginalOf } from './cpuprofile.js';

/**
 * Stacks deeper than this keep their leaf-most frames, so the output stays linear in the
 * profile's size. V8 records at most 255 frames per sample (plus inlined ones).
 */
export const MAX_PPROF_STACK_DEPTH = 1024;

/** Just enough of the protobuf wire format for profile.proto: varints, packed varints, strings, nested messages. */
class ProtoWriter {
  readonly bytes: number[] = [];

  /** A non-negative integer field; zero is the default, so it is left out. */
  uint(field: number, value: number | bigint): this {
    if (value === 0 || value === 0n) return this;
    this.#varint(field * 8);
    this.#varint(value);
    return this;
  }

  packed(field: number, values: ArrayLike<number>): this {
    const inner = new ProtoWriter();
    for (let i = 0; i < values.length; i++) inner.#varint(values[i]!);
    return this.#lengthDelimited(field, inner.bytes);
  }

  string(field: number, value: string): this {
    return this.#lengthDelimited(field, Buffer.from(value, 'utf8'));
  }

  message(field: number, write: (message: ProtoWriter) => void): this {
    const inner = new ProtoWriter();
    write(inner);
    return this.#lengthDelimited(field, inner.bytes);
  }

  #lengthDelimited(field: number, bytes: ArrayLike<number>): this {
    this.#varint(field * 8 + 2);
    this.#varint(bytes.length);
    for (let i = 0; i < bytes.length; i++) this.bytes.push(bytes[i]!);
    return this;
  }

  #varint(value: number | bigint): void {
    if (typeof value === 'number' && !(Number.isSafeInteger(value) && value >= 0)) {
      throw new RangeError(`pprof: ${value} is not a non-negative integer`);
    }
    let rest = BigInt(value);
    while (rest > 0x7fn) {
      this.bytes.push(Number(rest & 0x7fn) | 0x80);
      rest >>= 7n;
    }
    this.bytes.push(Number(rest));
  }
}

/** Numbers strings for the string table, whose entry 0 must be "". */
class StringTable {
  readonly strings: string[] = [''];
  readonly #numbers = new Map<string, number>([['', 0]]);

  number(value: string): number {
    let number = this.#numbers.get(value);
    if (number === undefined) {
      number = this.strings.length;
      this.#numbers.set(value, number);
      this.strings.push(value);
    }
    return number;
  }
}

/**
 * The profile as gzipped pprof, with sample types `samples/count` and `cpu/nanoseconds`.
 * Samples are aggregated per leaf node: one pprof Sample per node that has samples,
 * holding their count and summed time, its stack leaf first. Each node is one Location
 * (V8's '(root)' is left out of the stacks); Functions are deduplicated by name, file and
 * line; lines and columns are 1-based as pprof wants (0: unknown).
 *
 * V8's `startTime` is on a monotonic clock, not wall time, so pass `startedAtMs`
 * (`Date.now()` when the profiler started) to fill pprof's `time_nanos`; without it
 * the field is left out. `original` maps each frame through its script's source map, so names,
 * files and lines are the original source's. Throws an Error naming the problem if `profile` is
 * not a valid CPU profile.
 */
export function toPprof(
  profile: unknown,
  { startedAtMs, original = (f) => f }: { startedAtMs?: number; original?: OriginalOf } = {},
): Buffer {
  if (startedAtMs !== undefined && !(Number.isFinite(startedAtMs) && startedAtMs >= 0)) {
    throw new RangeError(`startedAtMs must be a non-negative number of milliseconds, got ${String(startedAtMs)}`);
  }
  const weighed = weighProfile(profile);
  const { nodes, startTime, endTime } = weighed.profile;
  const strings = new StringTable();
  const valueType = (type: string, unit: string): ((message: ProtoWriter) => void) => {
    const [typeNumber, unitNumber] = [strings.number(type), strings.number(unit)];
    return (message) => message.uint(1, typeNumber).uint(2, unitNumber);
  };
  const sampleCount = valueType('samples', 'count');
  const cpuNanoseconds = valueType('cpu', 'nanoseconds');

  const isRootFrame = (index: number): boolean =>
    weighed.parents[index] === -1 && isSynthetic(nodes[index]!.callFrame, SYNTHETIC_FRAMES.root);

  // Location id n + 1 is node n; function ids count from 1 in order of first use.
  const functionIds = new Map<string, number>();
  const functions: Array<{ name: number; file: number; line: number }> = [];
  const frames = nodes.map(({ callFrame }) => original(callFrame));
  const locationFunction = frames.map((callFrame, index) => {
    if (isRootFrame(index)) return 0;
    const name = displayName(callFrame);
    const line = callFrame.lineNumber + 1;
    const key = JSON.stringify([name, callFrame.url, line]);
    let id = functionIds.get(key);
    if (id === undefined) {
      functions.push({ name: strings.number(name), file: strings.number(callFrame.url), line });
      id = functions.length;
      functionIds.set(key, id);
    }
    return id;
  });

  const out = new ProtoWriter().message(1, sampleCount).message(1, cpuNanoseconds);
  weighed.selfCounts.forEach((count, leaf) => {
    if (count === 0) return;
    const stack: number[] = [];
    for (let index = leaf; index !== -1 && stack.length < MAX_PPROF_STACK_DEPTH; index = weighed.parents[index]!) {
      if (!isRootFrame(index)) stack.push(index + 1);
    }
    out.message(2, (sample) =>
      sample.packed(1, stack).packed(2, [count, Math.round(weighed.selfMicros[leaf]! * 1000)]),
    );
  });
  frames.forEach((callFrame, index) => {
    if (isRootFrame(index)) return;
    out.message(4, (location) =>
      location.uint(1, index + 1).message(4, (line) =>
        line
          .uint(1, locationFunction[index]!)
          .uint(2, callFrame.lineNumber + 1)
          .uint(3, callFrame.columnNumber + 1),
      ),
    );
  });
  functions.forEach(({ name, file, line }, index) => {
    out.message(5, (fn) =>
      fn
        .uint(1, index + 1)
        .uint(2, name)
        .uint(3, name)
        .uint(4, file)
        .uint(5, line),
    );
  });
  for (const value of strings.strings) out.string(6, value);
  if (startedAtMs !== undefined) out.uint(9, BigInt(Math.round(startedAtMs * 1000)) * 1000n);
  out
    .uint(10, Math.round((endTime - startTime) * 1000))
    .message(11, cpuNanoseconds)
    .uint(12, Math.round(weighed.sampleIntervalMicros * 1000));
  return gzipSync(Buffer.from(out.bytes));
}
