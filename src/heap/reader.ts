/**
 * A streaming .heapsnapshot reader. The file is read in chunks and tokenised by a
 * byte loop (native/heap_scan.c for the numbers when it built, else JS) into columns
 * of typed arrays, one per field analysis uses
 * (sized from the header's counts): V8's interleaved `nodes` and `edges` records are
 * split as they are read, fields nothing reads are dropped, and an edge's target is
 * stored as a node ordinal. The whole text is never held, so snapshots past V8's
 * maximum string length load, and memory is the columns' size (about 17 bytes a node
 * and 9 an edge). Anything that is not a well-formed snapshot ends in a coded error.
 */
import { constants, createReadStream, read } from 'node:fs';
import * as v8 from 'node:v8';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { SysprobeError, ErrorCode } from '../errors.js';
import { loadNative } from '../native.js';
import { StringTable, StringTableBuilder } from './strings.js';
import { bigArray } from './arrays.js';
import { OpenFile } from '../internal/open-file.js';

/** The `snapshot.meta` block of a heap snapshot: the layout of the flat arrays. */
export interface SnapshotMeta {
  node_fields: string[];
  node_types: unknown[];
  edge_fields: string[];
  edge_types: unknown[];
  location_fields?: string[];
}

/** A parsed snapshot: one typed array per field, indexed by node or edge ordinal, plus the header. */
export interface RawSnapshot {
  meta: SnapshotMeta;
  nodeCount: number;
  edgeCount: number;
  /** Per node: index into `meta.node_types[0]`. */
  nodeTypes: Uint8Array;
  /** Per node: index into `strings`. */
  nodeNames: Uint32Array;
  nodeIds: Uint32Array;
  selfSizes: Uint32Array;
  /** Per node: its first edge; `firstEdge[n + 1]` ends its edges (length nodeCount + 1). */
  firstEdge: Uint32Array;
  /** Per edge: index into `meta.edge_types[0]`. Empty when read with `edges: false`. */
  edgeTypes: Uint8Array;
  /** Per edge: a string index, or the element index for `element` and `hidden` edges. Empty when read with `edgeNames: false`. */
  edgeNames: Uint32Array;
  /** Per edge: the node ordinal it points to. */
  edgeTargets: Uint32Array;
  /** False when read with `edges: false`: the graph cannot be walked. */
  hasEdges: boolean;
  /** False when read with `edges: false` or `edgeNames: false`: paths cannot be named. */
  hasEdgeNames: boolean;
  /** The string table, decoded on demand. */
  strings: StringTable;
}

/** Called as the file is read; `total` is the file's size in bytes. */
export type ProgressCallback = (bytesRead: number, total: number) => void;

export interface ReadOptions {
  onProgress?: ProgressCallback;
  /** Bytes per read; 4 MiB by default. */
  chunkBytes?: number;
  /** Read the edges; true by default. False skips them (a diff's middle snapshot needs only its nodes), about a third of the time. */
  edges?: boolean;
  /** Keep the edges' names; true by default. False saves 4 bytes an edge when no retainer path will be named (dominators and retained sizes only). */
  edgeNames?: boolean;
  /**
   * The most bytes all strings of the snapshot may take; more is BAD_SNAPSHOT, said as soon as
   * it is seen. Default: half of this thread's V8 heap limit (so `maxMemoryMb` bounds it).
   */
  maxStringBytes?: number;
  /** Called once the header is read, with its counts (before the arrays are). */
  onHeader?: (nodeCount: number, edgeCount: number) => void;
}

/**
 * The longest one string may be. V8 cuts the names it writes into a snapshot to about 1 KiB
 * (source-code strings aside), so a string past this is a crafted file, not one to buffer.
 */
export const MAX_STRING_TOKEN_BYTES = 16 * 1024 ** 2;

const HEADER_MAX_BYTES = 1 << 20;
/** Bytes the JS number loop scans per call: its output stays small enough for the CPU cache. */
const SCAN_WINDOW = 1 << 16;
const NODES_KEY = Buffer.from('"nodes"');

const enum Mode {
  Top,
  Key,
  Colon,
  NumArray,
  SkipArray,
  StrArray,
  Skip,
  End,
}

// Byte constants, named so the loops read.
const QUOTE = 0x22,
  BACKSLASH = 0x5c,
  COMMA = 0x2c,
  COLON = 0x3a;
const LBRACKET = 0x5b,
  RBRACKET = 0x5d,
  LBRACE = 0x7b,
  RBRACE = 0x7d;
const ZERO = 0x30;

function bad(message: string): SysprobeError {
  return new SysprobeError(ErrorCode.BAD_SNAPSHOT, message);
}

function isSpace(b: number): boolean {
  return b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09;
}

/** The scan's state, handed in and out: where the output is filled to, the number cut by the window's end (and whether one is), whether `]` ended the array. */
const scanState = new Float64Array(4);
const FILL = 0,
  VALUE = 1,
  DIGITS = 2,
  CLOSED = 3;
const SCAN_OVERFLOW = -(2 ** 40),
  SCAN_RANGE = -(2 ** 41);

/**
 * The hot loop: unsigned decimal integers separated by commas and whitespace, into
 * `arr` from `state[FILL]`, until `]` (returns the index after it, `state[CLOSED]`)
 * or the end of `buf` (bounded by `buf.length`, so V8 drops the bounds checks). A
 * bad byte at index j returns -(j+1). With the split into columns that follows
 * (storeNodes, storeEdges), it is the fallback for native/heap_scan.c, which does both
 * in one pass.
 */
function scanNumbersJs(buf: Uint8Array, i: number, arr: Uint32Array, state: Float64Array): number {
  const n = buf.length;
  const cap = arr.length;
  let fill = state[FILL]!,
    value = state[VALUE]!,
    digits = state[DIGITS]!;
  state[CLOSED] = 0;
  for (; i < n; i++) {
    const b = buf[i]!;
    const d = (b - ZERO) >>> 0; // one unsigned compare tells a digit
    if (d < 10) {
      value = value * 10 + d;
      digits = 1;
      continue;
    }
    if (digits !== 0) {
      if (fill >= cap) {
        state[FILL] = fill;
        return SCAN_OVERFLOW;
      }
      if (value > 0xffffffff) {
        state[FILL] = fill;
        return SCAN_RANGE;
      }
      arr[fill++] = value;
      value = 0;
      digits = 0;
    }
    if (b === COMMA || b === 0x0a || b === 0x20 || b === 0x0d || b === 0x09) continue;
    state[FILL] = fill;
    state[VALUE] = 0;
    state[DIGITS] = 0;
    if (b === RBRACKET) {
      state[CLOSED] = 1;
      return i + 1;
    }
    return -i - 1;
  }
  state[FILL] = fill;
  state[VALUE] = value;
  state[DIGITS] = digits;
  return n;
}

/** native/heap_scan.c: a chunk of `nodes` or `edges` straight into the columns (its header says how). */
type ScanRecords = (
  bytes: Uint8Array,
  start: number,
  state: Float64Array,
  roles: Int32Array,
  limits: Float64Array,
  columns: Array<Uint8Array | Uint32Array | undefined>,
) => number;
const nativeScanRecords = loadNative<{ scanRecords: ScanRecords }>('heap_scan').addon?.scanRecords;
let useNative = nativeScanRecords !== undefined;
// What heap_scan.c's state and roles hold (its STATE_* and ROLE_*).
const S_VALUE = 0,
  S_DIGITS = 1,
  S_FIELD = 2,
  S_RECORD = 3,
  S_EDGE_SUM = 4,
  S_CLOSED = 5,
  S_ERROR = 6,
  S_AT = 7;
const ROLE_TYPE = 1,
  ROLE_NAME = 2,
  ROLE_ID = 3,
  ROLE_SELF = 4,
  ROLE_EDGE_COUNT = 5,
  ROLE_TARGET = 6;
const ERR_BAD_BYTE = 1,
  ERR_RANGE = 2,
  ERR_TOO_MANY = 3,
  ERR_TYPE = 4,
  ERR_TARGET = 5;

/** Which loop reads the numbers: the C one when the addon built, else JS. `prefer: 'js'` forces the fallback (tests compare the two). */
export function heapScanner(prefer?: 'native' | 'js'): 'native' | 'js' {
  if (prefer) useNative = prefer === 'native' && nativeScanRecords !== undefined;
  return useNative ? 'native' : 'js';
}

/**
 * The tokenizer: a state machine fed one chunk at a time. It keeps only the state
 * of the token that crosses a chunk boundary (a partial number or string).
 */
class SnapshotTokenizer {
  meta: SnapshotMeta | undefined;
  nodeCount = 0;
  edgeCount = 0;
  #strings: StringTableBuilder | undefined;
  #table: StringTable | undefined;
  // The columns, allocated from the header's counts.
  nodeTypes = new Uint8Array(0);
  nodeNames = new Uint32Array(0);
  nodeIds = new Uint32Array(0);
  selfSizes = new Uint32Array(0);
  firstEdge = new Uint32Array(1);
  edgeTypes = new Uint8Array(0);
  edgeNames = new Uint32Array(0);
  edgeTargets = new Uint32Array(0);

  readonly #readEdges: boolean;
  readonly #readEdgeNames: boolean;
  readonly #onHeader: ReadOptions['onHeader'];
  readonly #native = useNative
    ? {
        state: new Float64Array(8),
        roles: new Int32Array(0),
        limits: new Float64Array(4),
        columns: [] as Array<Uint8Array | Uint32Array | undefined>,
      }
    : undefined;
  // Where each kept field sits in V8's records, from the header's meta.
  #layout = {
    nf: 0,
    ef: 0,
    nType: 0,
    nName: 0,
    nId: 0,
    nSelf: 0,
    nEdges: 0,
    eType: 0,
    eName: 0,
    eTo: 0,
    nodeTypes: 0,
    edgeTypes: 0,
  };

  #header: Buffer[] = [];
  #headerBytes = 0;
  #mode: Mode | -1 = -1; // -1: still reading the header
  #key = '';
  #offset = 0; // absolute file offset of the chunk being fed, for messages

  // Number-array state: a record's numbers are scanned into #scratch, then split into the columns.
  #target: 'nodes' | 'edges' | 'locations' = 'nodes';
  #value = 0;
  #inNumber = false;
  #opened = false;
  readonly #scratch = new Uint32Array(SCAN_WINDOW / 2 + 64);
  #carry = 0; // numbers of a record cut by a window, kept at the scratch's start
  #nodesRead = 0;
  #edgesRead = 0;
  #edgeSum = 0; // edges the nodes own, summed as they are read
  readonly #seen = new Set<string>(); // the arrays read through their closing bracket

  // String state: inside a string (it may span chunks), after a backslash, whether it has escapes;
  // the bytes of the current string and of all strings, bounded (a crafted file can hold one huge string).
  #strPartBytes = 0;
  #stringBytes = 0;
  readonly #maxStringBytes: number;
  #inString = false;
  #escaped = false;
  #hasEscape = false;

  // Skip state for values we do not keep (trace trees, samples).
  #depth = 0;

  /** `fileSize`: the bytes the tokenizer will be fed in all, when known (it sizes the string table's buffer). */
  constructor(
    {
      edges = true,
      edgeNames = true,
      maxStringBytes = v8.getHeapStatistics().heap_size_limit / 2,
      onHeader,
    }: Pick<ReadOptions, 'edges' | 'edgeNames' | 'maxStringBytes' | 'onHeader'> = {},
    readonly fileSize?: number,
  ) {
    this.#maxStringBytes = maxStringBytes;
    this.#onHeader = onHeader;
    this.#readEdges = edges;
    this.#readEdgeNames = edges && edgeNames;
  }

  feed(chunk: Buffer): void {
    let i = 0;
    if (this.#mode === -1) {
      i = this.#readHeader(chunk);
      if (i < 0) {
        this.#offset += chunk.length;
        return;
      }
    }
    this.#run(chunk, i);
    this.#offset += chunk.length;
  }

  #run(buf: Buffer, i: number): void {
    const n = buf.length;
    while (i < n) {
      switch (this.#mode) {
        case Mode.NumArray:
          i = this.#numbers(buf, i);
          break;
        case Mode.SkipArray:
          i = this.#skipArray(buf, i);
          break;
        case Mode.StrArray:
          i = this.#stringArray(buf, i);
          break;
        case Mode.Skip:
          i = this.#skip(buf, i);
          break;
        default:
          i = this.#structure(buf, i);
          break;
      }
    }
  }

  finish(): RawSnapshot {
    if (this.#mode === -1) {
      if (this.#headerBytes === 0) throw bad('the file is empty');
      throw bad('not a heap snapshot: no "snapshot" header followed by "nodes"');
    }
    if (this.#mode !== Mode.End)
      throw bad(`truncated: the file ends inside the snapshot (after ${this.#offset} bytes)`);
    for (const key of ['nodes', 'edges', 'strings'])
      if (!this.#seen.has(key)) throw bad(`the snapshot has no "${key}" array`);
    if (this.#nodesRead !== this.nodeCount) {
      throw bad(`the header says ${this.nodeCount} nodes but the "nodes" array holds ${this.#nodesRead}`);
    }
    if (this.#readEdges && this.#edgesRead !== this.edgeCount) {
      throw bad(`the header says ${this.edgeCount} edges but the "edges" array holds ${this.#edgesRead}`);
    }
    if (this.#edgeSum !== this.edgeCount)
      throw bad(`corrupt: the nodes own ${this.#edgeSum} edges but the snapshot has ${this.edgeCount}`);
    return {
      meta: this.meta!,
      nodeCount: this.nodeCount,
      edgeCount: this.edgeCount,
      nodeTypes: this.nodeTypes,
      nodeNames: this.nodeNames,
      nodeIds: this.nodeIds,
      selfSizes: this.selfSizes,
      firstEdge: this.firstEdge,
      edgeTypes: this.edgeTypes,
      edgeNames: this.edgeNames,
      edgeTargets: this.edgeTargets,
      hasEdges: this.#readEdges,
      hasEdgeNames: this.#readEdgeNames,
      strings: this.#table!,
    };
  }

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
      { meta?: Partial<SnapshotMeta>; node_count?: unknown; edge_count?: unknown } | undefined;
    const meta = snap?.meta;
    if (!snap || !meta) throw bad('not a heap snapshot: no "snapshot.meta" in the header');
    const strs = (v: unknown): v is string[] => Array.isArray(v) && v.every((s) => typeof s === 'string');
    if (
      !strs(meta.node_fields) ||
      !strs(meta.edge_fields) ||
      !Array.isArray(meta.node_types) ||
      !Array.isArray(meta.edge_types)
    ) {
      throw bad('wrong meta: node_fields, node_types, edge_fields and edge_types must be arrays');
    }
    for (const f of ['type', 'name', 'id', 'self_size', 'edge_count']) {
      if (!meta.node_fields.includes(f)) throw bad(`wrong meta: node_fields lacks "${f}"`);
    }
    for (const f of ['type', 'name_or_index', 'to_node']) {
      if (!meta.edge_fields.includes(f)) throw bad(`wrong meta: edge_fields lacks "${f}"`);
    }
    if (!strs(meta.node_types[0]) || !strs(meta.edge_types[0]))
      throw bad('wrong meta: node_types[0] and edge_types[0] must list the type names');
    const nodeCount = snap.node_count,
      edgeCount = snap.edge_count;
    if (
      !Number.isSafeInteger(nodeCount) ||
      !Number.isSafeInteger(edgeCount) ||
      (nodeCount as number) < 1 ||
      (edgeCount as number) < 0
    ) {
      throw bad('wrong meta: node_count and edge_count must be counts');
    }
    // A typed array's length is bounded; a header that claims more is corrupt, not a reason to crash.
    if (
      (nodeCount as number) * meta.node_fields.length > 2 ** 32 - 1 ||
      (edgeCount as number) * meta.edge_fields.length > 2 ** 32 - 1
    ) {
      throw bad('wrong meta: node_count or edge_count is too large');
    }
    const nodeTypes = meta.node_types[0].length,
      edgeTypes = meta.edge_types[0].length;
    if (nodeTypes > 256 || edgeTypes > 256) throw bad('wrong meta: more than 256 node or edge types');
    this.meta = meta as SnapshotMeta;
    const nf = meta.node_fields,
      ef = meta.edge_fields;
    this.#layout = {
      nf: nf.length,
      ef: ef.length,
      nodeTypes,
      edgeTypes,
      nType: nf.indexOf('type'),
      nName: nf.indexOf('name'),
      nId: nf.indexOf('id'),
      nSelf: nf.indexOf('self_size'),
      nEdges: nf.indexOf('edge_count'),
      eType: ef.indexOf('type'),
      eName: ef.indexOf('name_or_index'),
      eTo: ef.indexOf('to_node'),
    };
    const N = (this.nodeCount = nodeCount as number);
    const E = (this.edgeCount = edgeCount as number);
    this.nodeTypes = bigArray(Uint8Array, N);
    this.nodeNames = bigArray(Uint32Array, N);
    this.nodeIds = bigArray(Uint32Array, N);
    this.selfSizes = bigArray(Uint32Array, N);
    this.firstEdge = bigArray(Uint32Array, N + 1);
    if (this.#readEdges) {
      this.edgeTypes = bigArray(Uint8Array, E);
      if (this.#readEdgeNames) this.edgeNames = bigArray(Uint32Array, E);
      this.edgeTargets = bigArray(Uint32Array, E);
    }
    this.#onHeader?.(N, E);
  }

  /** Between values: object keys, colons, commas, the closing brace. */
  #structure(buf: Buffer, i: number): number {
    const n = buf.length;
    while (i < n) {
      const b = buf[i]!;
      if (this.#mode === Mode.Key) {
        const end = buf.indexOf(QUOTE, i);
        if (end < 0) {
          this.#key += buf.toString('latin1', i, n);
          return n;
        }
        this.#key += buf.toString('latin1', i, end);
        if (this.#key.length > 64) throw this.#unexpected(buf, i);
        this.#mode = Mode.Colon;
        i = end + 1;
        continue;
      }
      if (isSpace(b)) {
        i++;
        continue;
      }
      if (this.#mode === Mode.End)
        throw bad(`unexpected data after the end of the snapshot at byte ${this.#offset + i}`);
      if (this.#mode === Mode.Top) {
        if (b === COMMA) {
          i++;
          continue;
        }
        if (b === RBRACE) {
          this.#mode = Mode.End;
          i++;
          continue;
        }
        if (b === QUOTE) {
          this.#key = '';
          this.#mode = Mode.Key;
          i++;
          continue;
        }
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
    if ((key === 'edges' && !this.#readEdges) || key === 'locations') {
      this.#target = key; // numbers nothing reads (allocation sites; a diff's middle edges): skipped
      this.#mode = Mode.SkipArray;
    } else if (key === 'nodes' || key === 'edges') {
      this.#target = key;
      this.#inNumber = false;
      this.#value = 0;
      this.#carry = 0;
      if (this.#native) this.#prepareNative(key);
      this.#mode = Mode.NumArray;
    } else if (key === 'strings') {
      if (this.#strings) throw bad('corrupt: a second "strings" array');
      this.#mode = Mode.StrArray;
      this.#inString = false;
      // V8 writes the strings last: what is left of the file bounds their bytes.
      this.#strings = new StringTableBuilder(this.fileSize !== undefined ? this.fileSize - this.#offset : undefined);
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

  /** Skips whitespace to the array's `[`; returns where its contents start, or the chunk's end. */
  #openArray(buf: Buffer, i: number): number {
    const n = buf.length;
    while (i < n && isSpace(buf[i]!)) i++;
    if (i === n) return n;
    if (buf[i] !== LBRACKET) throw this.#unexpected(buf, i);
    this.#opened = true;
    return i + 1;
  }

  /** Tells heap_scan.c what each field of the array's records is, where it goes, and the bounds to check. */
  #prepareNative(key: 'nodes' | 'edges'): void {
    const native = this.#native!;
    const l = this.#layout;
    native.state.fill(0);
    if (key === 'nodes') {
      native.roles = new Int32Array(l.nf);
      native.roles[l.nType] = ROLE_TYPE;
      native.roles[l.nName] = ROLE_NAME;
      native.roles[l.nId] = ROLE_ID;
      native.roles[l.nSelf] = ROLE_SELF;
      native.roles[l.nEdges] = ROLE_EDGE_COUNT;
      native.limits.set([this.nodeCount, l.nodeTypes, 0, 0]);
      native.columns = [this.nodeTypes, this.nodeNames, this.nodeIds, this.selfSizes, this.firstEdge];
      native.state[S_RECORD] = this.#nodesRead;
      native.state[S_EDGE_SUM] = this.#edgeSum;
    } else {
      native.roles = new Int32Array(l.ef);
      native.roles[l.eType] = ROLE_TYPE;
      native.roles[l.eName] = ROLE_NAME;
      native.roles[l.eTo] = ROLE_TARGET;
      native.limits.set([this.edgeCount, l.edgeTypes, l.nf, this.nodeCount]);
      native.columns = [this.edgeTypes, this.edgeNames, undefined, undefined, undefined, this.edgeTargets];
      native.state[S_RECORD] = this.#edgesRead;
    }
  }

  /** Numbers of `nodes` or `edges`, into their columns: by heap_scan.c in one pass, or by the JS loop and a split. */
  #numbers(buf: Buffer, i: number): number {
    if (!this.#opened && (i = this.#openArray(buf, i)) === buf.length) return i;
    // A plain Uint8Array view: V8 indexes it faster than a Buffer in the hot loop.
    const view = new Uint8Array(buf.buffer, buf.byteOffset, buf.length);
    const target = this.#target;
    if (this.#native) return this.#numbersNative(buf, view, i, target as 'nodes' | 'edges');
    const width = target === 'nodes' ? this.#layout.nf : this.#layout.ef;
    const n = view.length;
    while (i < n) {
      const state = scanState;
      state[FILL] = this.#carry;
      state[VALUE] = this.#value;
      state[DIGITS] = this.#inNumber ? 1 : 0;
      const at = i;
      let stop = scanNumbersJs(view.subarray(at, Math.min(n, at + SCAN_WINDOW)), 0, this.#scratch, state);
      if (stop >= 0) stop += at;
      else if (stop > SCAN_OVERFLOW) stop -= at; // a bad byte: its index in the chunk
      this.#value = state[VALUE]!;
      this.#inNumber = state[DIGITS]! > 0;
      if (stop === SCAN_RANGE) throw bad(`corrupt: a number out of range in "${target}" near byte ${this.#offset + i}`);
      if (stop === SCAN_OVERFLOW) throw bad(`corrupt: too many numbers in "${target}" near byte ${this.#offset + i}`); // cannot happen: the scratch holds a window's worth
      if (stop < 0) throw this.#unexpected(buf, -stop - 1);
      const filled = state[FILL]!;
      const whole = filled - (filled % width);
      if (target === 'nodes') this.#storeNodes(whole);
      else this.#storeEdges(whole);
      this.#carry = filled - whole;
      this.#scratch.copyWithin(0, whole, filled);
      if (state[CLOSED]) {
        if (this.#carry !== 0) throw bad(`corrupt: the "${target}" array ends inside a record of ${width} numbers`);
        this.#seen.add(target);
        this.#mode = Mode.Top;
        return stop;
      }
      i = stop;
    }
    return n;
  }

  #numbersNative(buf: Buffer, view: Uint8Array, i: number, target: 'nodes' | 'edges'): number {
    const { state, roles, limits, columns } = this.#native!;
    const stop = nativeScanRecords!(view, i, state, roles, limits, columns);
    const record = state[S_RECORD]!;
    if (target === 'nodes') {
      this.#nodesRead = record;
      this.#edgeSum = state[S_EDGE_SUM]!;
    } else this.#edgesRead = record;
    if (stop < 0) {
      const at = state[S_AT]!,
        what = target === 'nodes' ? 'node' : 'edge';
      switch (state[S_ERROR]) {
        case ERR_BAD_BYTE:
          throw this.#unexpected(buf, at);
        case ERR_RANGE:
          throw bad(`corrupt: a number out of range in "${target}" near byte ${this.#offset + at}`);
        case ERR_TOO_MANY:
          throw bad(`wrong meta: the "${target}" array is longer than the header's count`);
        case ERR_TYPE:
          throw bad(`corrupt: ${what} ${at} has an unknown type`);
        case ERR_TARGET:
          throw bad(`corrupt: edge ${at} points outside the nodes`);
        default:
          throw bad(`corrupt: the "${target}" array ends inside a record of ${roles.length} numbers`);
      }
    }
    if (state[S_CLOSED]) {
      this.#seen.add(target);
      this.#mode = Mode.Top;
    }
    return stop;
  }

  /** Splits `count` scanned numbers (whole node records) into the node columns, checking each type. */
  #storeNodes(count: number): void {
    const { nf, nType, nName, nId, nSelf, nEdges, nodeTypes: typeCount } = this.#layout;
    const s = this.#scratch;
    const types = this.nodeTypes,
      names = this.nodeNames,
      ids = this.nodeIds,
      selfSizes = this.selfSizes,
      first = this.firstEdge;
    let node = this.#nodesRead,
      edgeSum = this.#edgeSum;
    if (node + count / nf > this.nodeCount)
      throw bad('wrong meta: the "nodes" array is longer than the header\'s count');
    for (let r = 0; r < count; r += nf) {
      const type = s[r + nType]!;
      if (type >= typeCount) throw bad(`corrupt: node ${node} has an unknown type`);
      types[node] = type;
      names[node] = s[r + nName]!;
      ids[node] = s[r + nId]!;
      selfSizes[node] = s[r + nSelf]!;
      edgeSum += s[r + nEdges]!;
      first[++node] = edgeSum;
    }
    this.#nodesRead = node;
    this.#edgeSum = edgeSum;
  }

  /** Splits `count` scanned numbers (whole edge records) into the edge columns; a target becomes a node ordinal. */
  #storeEdges(count: number): void {
    const { ef, nf, eType, eName, eTo, edgeTypes: typeCount } = this.#layout;
    const s = this.#scratch;
    const types = this.edgeTypes,
      names = this.edgeNames,
      targets = this.edgeTargets;
    const keepNames = this.#readEdgeNames;
    const N = this.nodeCount;
    let edge = this.#edgesRead;
    if (edge + count / ef > this.edgeCount)
      throw bad('wrong meta: the "edges" array is longer than the header\'s count');
    for (let r = 0; r < count; r += ef) {
      const type = s[r + eType]!;
      if (type >= typeCount) throw bad(`corrupt: edge ${edge} has an unknown type`);
      const slot = s[r + eTo]!;
      const to = Math.floor(slot / nf);
      if (to * nf !== slot || to >= N) throw bad(`corrupt: edge ${edge} points outside the nodes`);
      types[edge] = type;
      if (keepNames) names[edge] = s[r + eName]!;
      targets[edge++] = to;
    }
    this.#edgesRead = edge;
  }

  /** A flat number array read without keeping it: to its `]`, found by memchr. */
  #skipArray(buf: Buffer, i: number): number {
    if (!this.#opened && (i = this.#openArray(buf, i)) === buf.length) return i;
    const end = buf.indexOf(RBRACKET, i);
    if (end < 0) return buf.length;
    this.#seen.add(this.#target);
    this.#mode = Mode.Top;
    return end + 1;
  }

  /**
   * `["a","b\n",...]`: each string's bytes go to the table as they are, copied by a byte loop
   * up to the next quote or backslash; only a string with an escape is decoded here, to check it.
   */
  #stringArray(buf: Buffer, i: number): number {
    const n = buf.length;
    const view = new Uint8Array(buf.buffer, buf.byteOffset, n); // V8 indexes it faster than a Buffer
    const table = this.#strings!;
    while (i < n) {
      if (this.#inString) {
        let j = i;
        if (this.#escaped) {
          // the chunk before ended with a backslash: this byte is the escaped one
          this.#countString(1);
          table.append(view, j, j + 1);
          j++;
          this.#escaped = false;
        }
        for (;;) {
          // Copy no further than the bounds allow, so a huge string fails before it is buffered.
          const limit = Math.min(n, j + this.#stringRoom());
          const stop = table.copyPlain(view, j, limit);
          this.#countString(stop - j);
          j = stop;
          if (j === n || view[j] === QUOTE) break;
          if (j === limit) this.#countString(1); // over a bound: throws
          this.#hasEscape = true; // a backslash: it and the escaped byte
          if (j + 1 === n) {
            this.#countString(1);
            table.append(view, j, n);
            this.#escaped = true;
            j = n;
            break;
          }
          this.#countString(2);
          table.append(view, j, j + 2);
          j += 2;
        }
        if (j === n) return n;
        if (this.#hasEscape) this.#checkEscapes(table.pending(), j);
        table.end(this.#hasEscape);
        this.#inString = false;
        i = j + 1;
        continue;
      }
      const b = view[i]!;
      if (isSpace(b) || (b === COMMA && this.#opened)) {
        i++;
        continue;
      }
      if (!this.#opened) {
        if (b !== LBRACKET) throw this.#unexpected(buf, i);
        this.#opened = true;
        i++;
        continue;
      }
      if (b === QUOTE) {
        this.#inString = true;
        this.#hasEscape = false;
        this.#strPartBytes = 0;
        i++;
        continue;
      }
      if (b === RBRACKET) {
        this.#table = table.finish();
        this.#strings = undefined;
        this.#seen.add('strings');
        this.#mode = Mode.Top;
        return i + 1;
      }
      throw this.#unexpected(buf, i);
    }
    return n;
  }

  #checkEscapes(bytes: Uint8Array, end: number): void {
    try {
      JSON.parse(`"${Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString('utf8')}"`);
    } catch {
      throw bad(`corrupt: a bad escape in a string before byte ${this.#offset + end}`);
    }
  }

  /** Bytes the string being read may still grow by within both bounds. */
  #stringRoom(): number {
    return Math.max(0, Math.min(MAX_STRING_TOKEN_BYTES - this.#strPartBytes, this.#maxStringBytes - this.#stringBytes));
  }

  /** Counts `bytes` more of the string being read against both bounds; throws before they are buffered past either. */
  #countString(bytes: number): void {
    this.#strPartBytes += bytes;
    this.#stringBytes += bytes;
    if (this.#strPartBytes > MAX_STRING_TOKEN_BYTES) {
      throw bad(
        `a string longer than ${MAX_STRING_TOKEN_BYTES} bytes (at byte ${this.#offset}); V8 writes no such string`,
      );
    }
    if (this.#stringBytes > this.#maxStringBytes) {
      throw bad(
        `the strings take more than ${Math.round(this.#maxStringBytes / 1024 ** 2)} MiB, over the memory this read may use (raise maxMemoryMb)`,
      );
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
      if (b === QUOTE) {
        this.#inString = true;
        continue;
      }
      if (b === LBRACKET || b === LBRACE) {
        this.#depth++;
        continue;
      }
      if (b === RBRACKET || b === RBRACE) {
        if (--this.#depth < 0) throw this.#unexpected(buf, i);
        if (this.#depth === 0) {
          this.#mode = Mode.Top;
          return i + 1;
        }
        continue;
      }
      if (this.#depth === 0 && !isSpace(b)) {
        // A scalar at top level: read until the next comma or brace.
        if (b === COMMA || b === RBRACE) {
          this.#mode = Mode.Top;
          return i;
        }
      }
    }
    return n;
  }
}

/**
 * Checks that every string index points into the table, so analysis can trust the
 * columns (types, targets and counts were checked as they were read; the strings come last).
 */
function validate(raw: RawSnapshot): void {
  const { nodeNames, edgeNames, edgeTypes, strings } = raw;
  const count = strings.length;
  for (let n = 0; n < nodeNames.length; n++) {
    if (nodeNames[n]! >= count) throw bad(`corrupt: node ${n} names string ${nodeNames[n]} of ${count}`);
  }
  const edgeTypeNames = raw.meta.edge_types[0] as string[];
  const element = edgeTypeNames.indexOf('element'),
    hidden = edgeTypeNames.indexOf('hidden');
  for (let e = 0; e < edgeNames.length; e++) {
    const type = edgeTypes[e]!;
    if (edgeNames[e]! >= count && type !== element && type !== hidden)
      throw bad(`corrupt: edge ${e} names string ${edgeNames[e]} of ${count}`);
  }
}

/** Reads and checks a .heapsnapshot file (or a gzipped one). Rejects with `SYSPROBE_ERR_BAD_SNAPSHOT` when it is not one. */
export async function readHeapSnapshot(file: string, options: ReadOptions = {}): Promise<RawSnapshot> {
  const chunkBytes = options.chunkBytes ?? 4 << 20;
  let fh;
  try {
    // O_NONBLOCK: opening a FIFO would otherwise wait for a writer forever; the type is checked next.
    // An OpenFile, not a FileHandle: a reading thread terminated mid-open cannot leak it (internal/open-file.ts).
    fh = await OpenFile.open(file, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (err) {
    throw new SysprobeError(ErrorCode.BAD_SNAPSHOT, `cannot open ${file}: ${(err as Error).message}`, { cause: err });
  }
  try {
    const stat = await fh.stat();
    if (stat.isDirectory()) throw bad(`${file} is a directory, not a heap snapshot file`);
    if (!stat.isFile()) throw bad(`${file} is not a regular file (a FIFO, socket or device), not a heap snapshot file`);
    const { size } = stat;
    const gzipped = await isGzip(fh);
    const tokenizer = new SnapshotTokenizer(options, gzipped ? undefined : size);
    const feed = (chunk: Buffer, bytesRead: number): void => {
      // The header reader keeps a chunk until it finds "nodes", so hand it a copy.
      tokenizer.feed(tokenizer.meta ? chunk : Buffer.from(chunk));
      options.onProgress?.(bytesRead, size);
    };
    if (gzipped) await feedGunzipped(fh, chunkBytes, feed);
    else await feedPlain(fh, chunkBytes, feed);
    const raw = tokenizer.finish();
    validate(raw);
    return raw;
  } finally {
    await fh.close();
  }
}

type Feed = (chunk: Buffer, bytesRead: number) => void;

async function isGzip(fh: OpenFile): Promise<boolean> {
  const magic = Buffer.alloc(2);
  const { bytesRead } = await fh.read(magic, 0, 2, 0);
  return bytesRead === 2 && magic[0] === 0x1f && magic[1] === 0x8b;
}

/** Two buffers: the next chunk is read (on libuv's pool) while this one is tokenised. */
async function feedPlain(fh: OpenFile, chunkBytes: number, feed: Feed): Promise<void> {
  const bufs = [Buffer.allocUnsafe(chunkBytes), Buffer.allocUnsafe(chunkBytes)];
  let next = fh.read(bufs[0]!, 0, chunkBytes, 0);
  let read = 0;
  try {
    for (let k = 0; ; k ^= 1) {
      const { bytesRead } = await next;
      if (bytesRead === 0) break;
      read += bytesRead;
      next = fh.read(bufs[k ^ 1]!, 0, chunkBytes, read);
      feed(bufs[k]!.subarray(0, bytesRead), read);
    }
  } finally {
    await next.catch(() => undefined); // a bad chunk ends the loop with a read in flight: let it land before the file closes
  }
}

/** A gzipped snapshot (`.heapsnapshot.gz`): inflated on libuv's pool while the chunks before are tokenised. */
async function feedGunzipped(fh: OpenFile, chunkBytes: number, feed: Feed): Promise<void> {
  // The stream reads the descriptor but never closes it (its destroy() would): the OpenFile's close is the one.
  const source = createReadStream('', {
    fd: fh.fd,
    start: 0,
    highWaterMark: chunkBytes,
    autoClose: false,
    fs: { read, close: (_fd: number, done: (err: NodeJS.ErrnoException | null) => void) => done(null) },
  });
  const gunzip = createGunzip({ chunkSize: 1 << 20 });
  const piped = pipeline(source, gunzip).catch((err: unknown) => err as Error);
  try {
    for await (const chunk of gunzip) feed(chunk as Buffer, source.bytesRead);
  } catch (err) {
    if (err instanceof SysprobeError) throw err;
    throw bad(`corrupt: the gzip stream cannot be inflated (${(err as Error).message})`);
  } finally {
    source.destroy();
    gunzip.destroy();
  }
  const failed = await piped;
  if (failed) throw bad(`corrupt: the gzip stream cannot be inflated (${failed.message})`);
}

/** Parses a snapshot held in memory (tests, small inputs). */
export function parseHeapSnapshot(data: Buffer | string): RawSnapshot {
  const buf = typeof data === 'string' ? Buffer.from(data) : data;
  const tokenizer = new SnapshotTokenizer({}, buf.length);
  const step = 1 << 16;
  for (let i = 0; i < buf.length; i += step) tokenizer.feed(Buffer.from(buf.subarray(i, i + step)));
  const raw = tokenizer.finish();
  validate(raw);
  return raw;
}
