/**
 * A streaming .heapsnapshot reader. The file is read in chunks and tokenised by a
 * hand-written byte loop straight into flat typed arrays: `nodes` and `edges` (sized
 * from the header's counts), `locations`, and the `strings` table. The whole text is
 * never held, so snapshots past V8's maximum string length load, and memory is the
 * arrays' size. Anything that is not a well-formed snapshot ends in a coded error.
 */
import { open } from 'node:fs/promises';
import { SysprobeError, ErrorCode } from '../errors.js';

/** The `snapshot.meta` block of a heap snapshot: the layout of the flat arrays. */
export interface SnapshotMeta {
  node_fields: string[];
  node_types: unknown[];
  edge_fields: string[];
  edge_types: unknown[];
  location_fields?: string[];
}

/** A parsed snapshot: flat arrays as V8 wrote them, plus the header. */
export interface RawSnapshot {
  meta: SnapshotMeta;
  nodeCount: number;
  edgeCount: number;
  nodes: Uint32Array;
  edges: Uint32Array;
  strings: string[];
  locations: Uint32Array;
}

/** Called as the file is read; `total` is the file's size in bytes. */
export type ProgressCallback = (bytesRead: number, total: number) => void;

export interface ReadOptions {
  onProgress?: ProgressCallback;
  /** Bytes per read; 4 MiB by default. */
  chunkBytes?: number;
}

const HEADER_MAX_BYTES = 1 << 20;
const NODES_KEY = Buffer.from('"nodes"');

const enum Mode { Top, Key, Colon, NumArray, StrArray, Skip, End }

// Byte constants, named so the loops read.
const QUOTE = 0x22, BACKSLASH = 0x5c, COMMA = 0x2c, COLON = 0x3a;
const LBRACKET = 0x5b, RBRACKET = 0x5d, LBRACE = 0x7b, RBRACE = 0x7d;
const ZERO = 0x30;

function bad(message: string): SysprobeError {
  return new SysprobeError(ErrorCode.BAD_SNAPSHOT, message);
}

function isSpace(b: number): boolean {
  return b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09;
}

/** State handed in and out of {@link scanNumbers} (module-level so the hot loop touches no object fields per byte). */
const scan = { fill: 0, value: 0, digits: 0, closed: false };
const SCAN_OVERFLOW = -(2 ** 40), SCAN_RANGE = -(2 ** 41);

/**
 * The hot loop: unsigned decimal integers separated by commas and whitespace, into
 * `arr` from `scan.fill`, until `]` (returns the index after it, `scan.closed`) or the
 * end of the chunk. A bad byte at index j returns -(j+1).
 */
function scanNumbers(buf: Uint8Array, i: number, arr: Uint32Array): number {
  const n = buf.length;
  const cap = arr.length;
  let fill = scan.fill, value = scan.value, digits = scan.digits;
  scan.closed = false;
  for (; i < n; i++) {
    const b = buf[i]!;
    const d = (b - ZERO) >>> 0; // one unsigned compare tells a digit
    if (d < 10) {
      value = value * 10 + d;
      digits = 1;
      continue;
    }
    if (digits !== 0) {
      if (fill >= cap) { scan.fill = fill; return SCAN_OVERFLOW; }
      if (value > 0xffffffff) { scan.fill = fill; return SCAN_RANGE; }
      arr[fill++] = value;
      value = 0;
      digits = 0;
    }
    if (b === COMMA || b === 0x0a || b === 0x20 || b === 0x0d || b === 0x09) continue;
    scan.fill = fill; scan.value = 0; scan.digits = 0;
    if (b === RBRACKET) { scan.closed = true; return i + 1; }
    return -i - 1;
  }
  scan.fill = fill; scan.value = value; scan.digits = digits;
  return n;
}

/** The `locations` array, whose length the header does not give: grown by doubling before each scan. */
class GrowableU32 {
  data = new Uint32Array(1024);
  length = 0;
}

/**
 * The tokenizer: a state machine fed one chunk at a time. It keeps only the state
 * of the token that crosses a chunk boundary (a partial number or string).
 */
class SnapshotTokenizer {
  meta: SnapshotMeta | undefined;
  nodeCount = 0;
  edgeCount = 0;
  nodes = new Uint32Array(0);
  edges = new Uint32Array(0);
  readonly strings: string[] = [];
  readonly locations = new GrowableU32();

  #header: Buffer[] = [];
  #headerBytes = 0;
  #mode: Mode | -1 = -1; // -1: still reading the header
  #key = '';
  #offset = 0; // absolute file offset of the chunk being fed, for messages

  // Number-array state.
  #target: 'nodes' | 'edges' | 'locations' = 'nodes';
  #fill = 0;
  #value = 0;
  #inNumber = false;
  #opened = false;

  // String state: pieces of a string that spans chunks, and whether it has escapes.
  #strParts: Buffer[] = [];
  #inString = false;
  #escaped = false;
  #hasEscape = false;

  // Skip state for values we do not keep (trace trees, samples).
  #depth = 0;

  feed(chunk: Buffer): void {
    let i = 0;
    if (this.#mode === -1) {
      i = this.#readHeader(chunk);
      if (i < 0) { this.#offset += chunk.length; return; }
    }
    this.#run(chunk, i);
    this.#offset += chunk.length;
  }

  #run(buf: Buffer, i: number): void {
    const n = buf.length;
    while (i < n) {
      switch (this.#mode) {
        case Mode.NumArray: i = this.#numbers(buf, i); break;
        case Mode.StrArray: i = this.#stringArray(buf, i); break;
        case Mode.Skip: i = this.#skip(buf, i); break;
        default: i = this.#structure(buf, i); break;
      }
    }
  }

  finish(): RawSnapshot {
    if (this.#mode === -1) {
      if (this.#headerBytes === 0) throw bad('the file is empty');
      throw bad('not a heap snapshot: no "snapshot" header followed by "nodes"');
    }
    if (this.#mode !== Mode.End) throw bad(`truncated: the file ends inside the snapshot (after ${this.#offset} bytes)`);
    const meta = this.meta!;
    const nodeFields = meta.node_fields.length;
    const edgeFields = meta.edge_fields.length;
    if (this.#filled.nodes !== this.nodeCount * nodeFields) {
      throw bad(`the header says ${this.nodeCount} nodes but the "nodes" array holds ${this.#filled.nodes / nodeFields}`);
    }
    if (this.#filled.edges !== this.edgeCount * edgeFields) {
      throw bad(`the header says ${this.edgeCount} edges but the "edges" array holds ${this.#filled.edges / edgeFields}`);
    }
    if (!this.#seenStrings) throw bad('the snapshot has no "strings" table');
    return {
      meta, nodeCount: this.nodeCount, edgeCount: this.edgeCount, nodes: this.nodes, edges: this.edges,
      strings: this.strings, locations: this.locations.data.subarray(0, this.locations.length),
    };
  }

  #filled = { nodes: 0, edges: 0 };
  #seenStrings = false;

  /** Collects bytes until `"nodes"`; parses what precedes it as the header. Returns where the body starts, or -1. */
  #readHeader(chunk: Buffer): number {
    this.#header.push(chunk);
    this.#headerBytes += chunk.length;
    const all = this.#header.length === 1 ? chunk : Buffer.concat(this.#header);
    const at = all.indexOf(NODES_KEY);
    if (at < 0) {
      if (this.#headerBytes > HEADER_MAX_BYTES) throw bad('not a heap snapshot: no "nodes" array in the first MiB');
      if (this.#header.length > 1) this.#header = [all];
      return -1;
    }
    let text = all.toString('utf8', 0, at).trimEnd();
    if (text.endsWith(',')) text = text.slice(0, -1);
    let parsed: unknown;
    try {
      parsed = JSON.parse(`${text}}`);
    } catch {
      throw bad('not a heap snapshot: the header before "nodes" is not JSON');
    }
    this.#acceptHeader(parsed);
    this.#header = [];
    this.#mode = Mode.Top;
    // Resume in the current chunk at the key: this chunk is the last of `all`.
    const startInChunk = at - (all.length - chunk.length);
    if (startInChunk >= 0) return startInChunk;
    // The key began in an earlier chunk: feed the tail of `all` before this chunk ends.
    this.#run(all.subarray(at, all.length - chunk.length), 0);
    return 0;
  }

  #acceptHeader(parsed: unknown): void {
    const snap = (parsed as { snapshot?: unknown } | null)?.snapshot as
      | { meta?: Partial<SnapshotMeta>; node_count?: unknown; edge_count?: unknown } | undefined;
    const meta = snap?.meta;
    if (!snap || !meta) throw bad('not a heap snapshot: no "snapshot.meta" in the header');
    const strs = (v: unknown): v is string[] => Array.isArray(v) && v.every((s) => typeof s === 'string');
    if (!strs(meta.node_fields) || !strs(meta.edge_fields) || !Array.isArray(meta.node_types) || !Array.isArray(meta.edge_types)) {
      throw bad('wrong meta: node_fields, node_types, edge_fields and edge_types must be arrays');
    }
    for (const f of ['type', 'name', 'id', 'self_size', 'edge_count']) {
      if (!meta.node_fields.includes(f)) throw bad(`wrong meta: node_fields lacks "${f}"`);
    }
    for (const f of ['type', 'name_or_index', 'to_node']) {
      if (!meta.edge_fields.includes(f)) throw bad(`wrong meta: edge_fields lacks "${f}"`);
    }
    if (!strs(meta.node_types[0]) || !strs(meta.edge_types[0])) throw bad('wrong meta: node_types[0] and edge_types[0] must list the type names');
    const nodeCount = snap.node_count, edgeCount = snap.edge_count;
    if (!Number.isSafeInteger(nodeCount) || !Number.isSafeInteger(edgeCount) || (nodeCount as number) < 1 || (edgeCount as number) < 0) {
      throw bad('wrong meta: node_count and edge_count must be counts');
    }
    const nodeLen = (nodeCount as number) * meta.node_fields.length;
    const edgeLen = (edgeCount as number) * meta.edge_fields.length;
    // A typed array's length is bounded; a header that claims more is corrupt, not a reason to crash.
    if (nodeLen > 2 ** 32 - 1 || edgeLen > 2 ** 32 - 1) throw bad('wrong meta: node_count or edge_count is too large');
    this.meta = meta as SnapshotMeta;
    this.nodeCount = nodeCount as number;
    this.edgeCount = edgeCount as number;
    this.nodes = new Uint32Array(nodeLen);
    this.edges = new Uint32Array(edgeLen);
  }

  /** Between values: object keys, colons, commas, the closing brace. */
  #structure(buf: Buffer, i: number): number {
    const n = buf.length;
    while (i < n) {
      const b = buf[i]!;
      if (this.#mode === Mode.Key) {
        const end = buf.indexOf(QUOTE, i);
        if (end < 0) { this.#key += buf.toString('latin1', i, n); return n; }
        this.#key += buf.toString('latin1', i, end);
        if (this.#key.length > 64) throw this.#unexpected(buf, i);
        this.#mode = Mode.Colon;
        i = end + 1;
        continue;
      }
      if (isSpace(b)) { i++; continue; }
      if (this.#mode === Mode.End) throw bad(`unexpected data after the end of the snapshot at byte ${this.#offset + i}`);
      if (this.#mode === Mode.Top) {
        if (b === COMMA) { i++; continue; }
        if (b === RBRACE) { this.#mode = Mode.End; i++; continue; }
        if (b === QUOTE) { this.#key = ''; this.#mode = Mode.Key; i++; continue; }
        throw this.#unexpected(buf, i);
      }
      // Mode.Colon
      if (b !== COLON) throw this.#unexpected(buf, i);
      this.#beginValue(this.#key);
      return i + 1;
    }
    return n;
  }

  #beginValue(key: string): void {
    this.#opened = false;
    if (key === 'nodes' || key === 'edges' || key === 'locations') {
      this.#target = key;
      this.#inNumber = false;
      this.#value = 0;
      this.#fill = 0;
      this.#mode = Mode.NumArray;
    } else if (key === 'strings') {
      this.#mode = Mode.StrArray;
      this.#inString = false;
    } else if (key === 'snapshot') {
      throw bad('wrong meta: a second "snapshot" header');
    } else {
      this.#depth = 0;
      this.#inString = false;
      this.#mode = Mode.Skip;
    }
  }

  #unexpected(buf: Buffer, i: number): SysprobeError {
    return bad(`corrupt: unexpected byte 0x${buf[i]!.toString(16).padStart(2, '0')} at byte ${this.#offset + i}`);
  }

  /** The hot loop: unsigned integers into the target array. */
  #numbers(buf: Buffer, i: number): number {
    const n = buf.length;
    if (!this.#opened) {
      while (i < n && isSpace(buf[i]!)) i++;
      if (i === n) return n;
      if (buf[i] !== LBRACKET) throw this.#unexpected(buf, i);
      this.#opened = true;
      i++;
    }
    const target = this.#target;
    let arr: Uint32Array;
    if (target === 'locations') {
      // At most one number per two bytes: grow before the loop so it never checks.
      const need = this.locations.length + ((n - i) >> 1) + 1;
      if (need > this.locations.data.length) {
        const next = new Uint32Array(Math.max(need, this.locations.data.length * 2));
        next.set(this.locations.data.subarray(0, this.locations.length));
        this.locations.data = next;
      }
      arr = this.locations.data;
      this.#fill = this.locations.length;
    } else {
      arr = target === 'nodes' ? this.nodes : this.edges;
    }
    scan.fill = this.#fill; scan.value = this.#value; scan.digits = this.#inNumber ? 1 : 0;
    // A plain Uint8Array view: V8 indexes it faster than a Buffer in this loop.
    const stop = scanNumbers(new Uint8Array(buf.buffer, buf.byteOffset, buf.length), i, arr);
    this.#fill = scan.fill; this.#value = scan.value; this.#inNumber = scan.digits > 0;
    if (target === 'locations') this.locations.length = scan.fill;
    if (stop === SCAN_OVERFLOW) throw bad(`wrong meta: the "${target}" array is longer than the header's count`);
    if (stop === SCAN_RANGE) throw bad(`corrupt: a number out of range in "${target}" before byte ${this.#offset + n}`);
    if (stop < 0) throw this.#unexpected(buf, -stop - 1);
    if (scan.closed) {
      this.#mode = Mode.Top;
      if (target !== 'locations') this.#filled[target] = scan.fill;
    }
    return stop;
  }

  /** `["a","b\n",...]`: each string is decoded once it is complete. */
  #stringArray(buf: Buffer, i: number): number {
    const n = buf.length;
    while (i < n) {
      if (this.#inString) {
        // Find the closing quote that is not escaped.
        let j = i;
        let escaped = this.#escaped;
        for (; j < n; j++) {
          const b = buf[j]!;
          if (escaped) { escaped = false; continue; }
          if (b === BACKSLASH) { escaped = true; this.#hasEscape = true; continue; }
          if (b === QUOTE) break;
        }
        if (j === n) {
          this.#strParts.push(Buffer.from(buf.subarray(i, n)));
          this.#escaped = escaped;
          return n;
        }
        this.#escaped = false;
        this.strings.push(this.#decode(buf, i, j));
        this.#inString = false;
        i = j + 1;
        continue;
      }
      const b = buf[i]!;
      if (isSpace(b) || (b === COMMA && this.#opened)) { i++; continue; }
      if (!this.#opened) {
        if (b !== LBRACKET) throw this.#unexpected(buf, i);
        this.#opened = true;
        i++;
        continue;
      }
      if (b === QUOTE) { this.#inString = true; this.#hasEscape = false; this.#strParts = []; i++; continue; }
      if (b === RBRACKET) { this.#seenStrings = true; this.#mode = Mode.Top; return i + 1; }
      throw this.#unexpected(buf, i);
    }
    return n;
  }

  #decode(buf: Buffer, start: number, end: number): string {
    const parts = this.#strParts;
    const raw = parts.length === 0 ? buf : Buffer.concat([...parts, buf.subarray(start, end)]);
    const s = parts.length === 0 ? start : 0;
    const e = parts.length === 0 ? end : raw.length;
    this.#strParts = [];
    if (!this.#hasEscape) return raw.toString('utf8', s, e);
    try {
      return JSON.parse(`"${raw.toString('utf8', s, e)}"`) as string;
    } catch {
      throw bad(`corrupt: a bad escape in a string before byte ${this.#offset + end}`);
    }
  }

  /** Skips a JSON value we do not keep (trace trees, samples), tracking depth and strings. */
  #skip(buf: Buffer, i: number): number {
    const n = buf.length;
    for (; i < n; i++) {
      const b = buf[i]!;
      if (this.#inString) {
        if (this.#escaped) this.#escaped = false;
        else if (b === BACKSLASH) this.#escaped = true;
        else if (b === QUOTE) this.#inString = false;
        continue;
      }
      if (b === QUOTE) { this.#inString = true; continue; }
      if (b === LBRACKET || b === LBRACE) { this.#depth++; continue; }
      if (b === RBRACKET || b === RBRACE) {
        if (--this.#depth < 0) throw this.#unexpected(buf, i);
        if (this.#depth === 0) { this.#mode = Mode.Top; return i + 1; }
        continue;
      }
      if (this.#depth === 0 && !isSpace(b)) {
        // A scalar at top level: read until the next comma or brace.
        if (b === COMMA || b === RBRACE) { this.#mode = Mode.Top; return i; }
      }
    }
    return n;
  }
}

/** Checks that every index in the arrays points where it may, so analysis can trust them. */
function validate(raw: RawSnapshot): void {
  const { meta, nodes, edges, strings, nodeCount } = raw;
  const nf = meta.node_fields.length, ef = meta.edge_fields.length;
  const nType = meta.node_fields.indexOf('type'), nName = meta.node_fields.indexOf('name');
  const nEdges = meta.node_fields.indexOf('edge_count');
  const eType = meta.edge_fields.indexOf('type'), eName = meta.edge_fields.indexOf('name_or_index');
  const eTo = meta.edge_fields.indexOf('to_node');
  const nodeTypes = (meta.node_types[0] as string[]).length;
  const edgeTypeNames = meta.edge_types[0] as string[];
  const elementType = edgeTypeNames.indexOf('element'), hiddenType = edgeTypeNames.indexOf('hidden');
  let edgeSum = 0;
  for (let i = 0; i < nodes.length; i += nf) {
    if (nodes[i + nType]! >= nodeTypes) throw bad(`corrupt: node ${i / nf} has an unknown type`);
    if (nodes[i + nName]! >= strings.length) throw bad(`corrupt: node ${i / nf} names string ${nodes[i + nName]} of ${strings.length}`);
    edgeSum += nodes[i + nEdges]!;
  }
  if (edgeSum !== raw.edgeCount) throw bad(`corrupt: the nodes own ${edgeSum} edges but the snapshot has ${raw.edgeCount}`);
  const limit = nodeCount * nf;
  for (let i = 0; i < edges.length; i += ef) {
    const type = edges[i + eType]!;
    if (type >= edgeTypeNames.length) throw bad(`corrupt: edge ${i / ef} has an unknown type`);
    const to = edges[i + eTo]!;
    if (to >= limit || to % nf !== 0) throw bad(`corrupt: edge ${i / ef} points outside the nodes`);
    if (type !== elementType && type !== hiddenType && edges[i + eName]! >= strings.length) {
      throw bad(`corrupt: edge ${i / ef} names string ${edges[i + eName]} of ${strings.length}`);
    }
  }
}

/** Reads and checks a .heapsnapshot file. Rejects with `SYSPROBE_ERR_BAD_SNAPSHOT` when it is not one. */
export async function readHeapSnapshot(file: string, options: ReadOptions = {}): Promise<RawSnapshot> {
  const chunkBytes = options.chunkBytes ?? 4 << 20;
  let fh;
  try {
    fh = await open(file, 'r');
  } catch (err) {
    throw new SysprobeError(ErrorCode.BAD_SNAPSHOT, `cannot open ${file}: ${(err as Error).message}`, { cause: err });
  }
  try {
    const { size } = await fh.stat();
    const tokenizer = new SnapshotTokenizer();
    const buf = Buffer.allocUnsafe(chunkBytes);
    let read = 0;
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, chunkBytes, null);
      if (bytesRead === 0) break;
      // The header reader keeps a chunk until it finds "nodes", so hand it a copy.
      tokenizer.feed(tokenizer.meta ? buf.subarray(0, bytesRead) : Buffer.from(buf.subarray(0, bytesRead)));
      read += bytesRead;
      options.onProgress?.(read, size);
    }
    const raw = tokenizer.finish();
    validate(raw);
    return raw;
  } finally {
    await fh.close();
  }
}

/** Parses a snapshot held in memory (tests, small inputs). */
export function parseHeapSnapshot(data: Buffer | string): RawSnapshot {
  const tokenizer = new SnapshotTokenizer();
  const buf = typeof data === 'string' ? Buffer.from(data) : data;
  const step = 1 << 16;
  for (let i = 0; i < buf.length; i += step) tokenizer.feed(Buffer.from(buf.subarray(i, i + step)));
  const raw = tokenizer.finish();
  validate(raw);
  return raw;
}
