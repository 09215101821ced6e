/**
 * What users read from snapshots: totals by class, the biggest retainers, two-snapshot
 * deltas and three-snapshot leak candidates. Pure functions over {@link HeapGraph}s;
 * the results are plain JSON (the shape of `sysprobe heap … --json`).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import { HeapGraph, dominatorScratchShape, type DominatorScratch } from './graph.js';
import { readHeapSnapshot, type ProgressCallback, type ReadOptions } from './reader.js';
import { readHeapSnapshotInThread, type ThreadRead } from './read-thread.js';
import { touchedArraysInThread } from './touch-thread.js';
import { bigArray, releaseDeadArrays } from './arrays.js';

/** Totals for one class: a constructor name, or `(type)` for strings, arrays, code… */
export interface ClassTotal {
  name: string;
  count: number;
  selfSize: number;
  /** Retained size of its instances, each counted once even when one holds another. */
  retainedSize: number;
}

/** One of the objects that keep the most memory alive. */
export interface TopRetainer {
  name: string;
  id: number;
  selfSize: number;
  retainedSize: number;
  retainerPath: string;
}

export interface HeapSummary {
  file: string;
  nodeCount: number;
  edgeCount: number;
  totalSize: number;
  /** Sorted by retained size, largest first. */
  constructors: ClassTotal[];
  /** The objects with the largest retained sizes (not the root's direct synthetic children). */
  topRetainers: TopRetainer[];
  timings: Record<string, number>;
}

export interface ConstructorDelta {
  name: string;
  countDelta: number;
  selfSizeDelta: number;
  retainedSizeDelta: number;
}

/** A group of objects allocated between the first and second snapshot and still alive in the last. */
export interface LeakCandidate {
  constructor: string;
  count: number;
  selfSize: number;
  retainedSize: number;
  /** How the largest of them is held, from the GC roots: `(GC roots) → Map "sessionCache" → table → LeakyEntry`. */
  retainerPath: string;
  /** A few heap object ids of the group's largest members (to look up in DevTools). */
  sampleIds: number[];
}

export interface HeapDiff {
  files: string[];
  /** Per class, last snapshot minus first; sorted by |retainedSizeDelta|, largest first. */
  constructors: ConstructorDelta[];
  /** Objects present in the second snapshot and not in the first. */
  newObjects: {
    count: number;
    selfSize: number;
    byConstructor: Array<{ name: string; count: number; selfSize: number }>;
  };
  /**
   * Likely leaks, most retained first: the groups of objects made between the first two
   * snapshots and alive in the last that retain at least {@link HeapDiff.noiseFloor}.
   * Empty for two files, and when nothing grew meaningfully.
   */
  leaks: LeakCandidate[];
  /** Three files: whether any group is a likely leak (false says "no leak found"). Absent for two files. */
  leakFound?: boolean;
  /** Bytes the heap grew from the first snapshot to the last (self sizes; negative when it shrank). */
  heapGrowth: number;
  /** Three files: the least a group must retain to be called a likely leak (see {@link noiseFloor}). */
  noiseFloor?: number;
  /** Three files: groups that survived but retain less than the noise floor (not listed). */
  belowNoiseFloor?: number;
  timings: Record<string, number>;
}

/** The least a leak candidate retains to count: a fraction of the heap's growth, and never under this many bytes. */
export const NOISE_FLOOR = { fractionOfGrowth: 0.05, minBytes: 256 * 1024 } as const;

/**
 * What a group must retain to be called a likely leak: 5 % of what the heap grew from the
 * first snapshot to the last, and at least 256 KiB. A steady process keeps a few survivors
 * of any interval (compiled code, caches filled once, the last request's objects); a leak
 * is what the growth is made of.
 */
export function noiseFloor(heapGrowth: number): number {
  return Math.max(NOISE_FLOOR.minBytes, NOISE_FLOOR.fractionOfGrowth * Math.max(0, heapGrowth));
}

export interface AnalysisOptions {
  /** How many classes, retainers and leak groups to list; 50 by default. */
  top?: number;
  /** Called as each file is read: index of the file, bytes read, file size. Files may be read at the same time. */
  onProgress?: (fileIndex: number, bytesRead: number, total: number) => void;
  /**
   * A diff reads its last file on a worker thread (a second core) while it analyses the first
   * ones. By default only when free memory is at least the files' total size ({@link roomForAThread}); true always, false never.
   */
  parallel?: boolean;
}

/** Node types that are objects a program made (a leak is reported in these; the rest is what they hold). */
const OBJECT_TYPES = new Set(['object', 'closure', 'regexp', 'native']);
/**
 * What a leak is reported in: objects, not the closures that capture them. A listener
 * closure that holds a leaked object is part of its retainer path (`onData() → context`),
 * so the object's constructor is what ranks.
 */
const LEAK_TYPES = new Set(['object', 'native']);

function ms(start: bigint): number {
  return Number(process.hrtime.bigint() - start) / 1e6;
}

/**
 * Reads a snapshot into a graph. A diff reads less of its first two files: `edgeNames: false`
 * for the first (its dominators, not its paths), `edges: false` for the middle (its nodes only).
 */
export async function loadGraph(
  file: string,
  onProgress?: ProgressCallback,
  { edges = true, edgeNames = true, onHeader }: Pick<ReadOptions, 'edges' | 'edgeNames' | 'onHeader'> = {},
): Promise<HeapGraph> {
  const raw = await readHeapSnapshot(file, {
    edges,
    edgeNames,
    ...(onProgress ? { onProgress } : {}),
    ...(onHeader ? { onHeader } : {}),
  });
  return new HeapGraph(raw);
}

/**
 * Numbers the classes nodes count under ({@link HeapGraph.className}) without a string per
 * node: a class is named by the node's name for objects and natives and by its type for the
 * rest, so two small tables (by string index, by type) find a node's class.
 */
class ClassNumbering {
  readonly names: string[] = [];
  /** Per class: is it a kind of object a program made (a leak is reported in these)? */
  readonly leakable: boolean[] = [];
  readonly #ids = new Map<string, number>();
  readonly #byName: Int32Array;
  readonly #byType: Int32Array;
  readonly #named: boolean[];
  readonly #leakType: boolean[];

  constructor(readonly graph: HeapGraph) {
    this.#byName = new Int32Array(graph.strings.length).fill(-1);
    this.#byType = new Int32Array(graph.nodeTypeNames.length).fill(-1);
    this.#named = graph.nodeTypeNames.map((t) => t === 'object' || t === 'native');
    this.#leakType = graph.nodeTypeNames.map((t) => LEAK_TYPES.has(t));
  }

  of(n: number): number {
    const graph = this.graph;
    const type = graph.typeIndex(n);
    if (this.#named[type]) {
      const s = graph.nameIndex(n);
      const c = this.#byName[s]!;
      return c >= 0 ? c : (this.#byName[s] = this.#add(n));
    }
    const c = this.#byType[type]!;
    return c >= 0 ? c : (this.#byType[type] = this.#add(n));
  }

  #add(n: number): number {
    const name = this.graph.className(n);
    let c = this.#ids.get(name);
    if (c === undefined) {
      c = this.names.length;
      this.#ids.set(name, c);
      this.names.push(name);
      this.leakable.push(this.#leakType[this.graph.typeIndex(n)]! && this.graph.isProgramObject(n));
    }
    return c;
  }
}

/** Totals per class, with retained sizes counted once per class. */
export function classTotals(graph: HeapGraph): Map<string, ClassTotal> {
  const classes = new ClassNumbering(graph);
  const counts: number[] = [],
    selfSizes: number[] = [];
  const groupOf = graph.scratchInt32(); // every entry is written below
  for (let n = 0; n < graph.nodeCount; n++) {
    const c = classes.of(n);
    groupOf[n] = c;
    counts[c] = (counts[c] ?? 0) + 1;
    selfSizes[c] = (selfSizes[c] ?? 0) + graph.selfSize(n);
  }
  groupOf[0] = -1; // the synthetic root is not a class
  counts[classes.of(0)]!--;
  selfSizes[classes.of(0)]! -= graph.selfSize(0);
  const retained = graph.retainedByGroup(groupOf, classes.names.length);
  graph.releaseScratch(groupOf);
  const totals = new Map<string, ClassTotal>();
  classes.names.forEach((name, c) => {
    if (counts[c]! > 0)
      totals.set(name, { name, count: counts[c]!, selfSize: selfSizes[c]!, retainedSize: retained[c]! });
  });
  return totals;
}

/** The sum of the nodes' self sizes: the heap's size as the snapshot saw it. */
function heapSize(graph: HeapGraph): number {
  let total = 0;
  for (let n = 0; n < graph.nodeCount; n++) total += graph.selfSize(n);
  return total;
}

export function summarizeGraph(
  graph: HeapGraph,
  file: string,
  top = 50,
  timings: Record<string, number> = {},
): HeapSummary {
  let t = process.hrtime.bigint();
  graph.analyze();
  timings.dominatorsMs = ms(t);
  t = process.hrtime.bigint();
  const constructors = [...classTotals(graph).values()].sort((a, b) => b.retainedSize - a.retainedSize).slice(0, top);
  const totalSize = heapSize(graph);
  // Largest retainers among program objects.
  const retained = graph.retainedSizes;
  const best: number[] = [];
  for (let n = 1; n < graph.nodeCount; n++) {
    if (!OBJECT_TYPES.has(graph.nodeType(n))) continue;
    const via = graph.parentEdge(n);
    if (via === undefined || graph.edgeOwner(via) === 0) continue; // the global objects hold everything; say what they hold
    if (best.length < top || retained[n]! > retained[best[best.length - 1]!]!) {
      best.push(n);
      best.sort((a, b) => retained[b]! - retained[a]!);
      if (best.length > top) best.pop();
    }
  }
  const topRetainers = best.map((n) => ({
    name: graph.className(n),
    id: graph.nodeId(n),
    selfSize: graph.selfSize(n),
    retainedSize: retained[n]!,
    retainerPath: graph.retainerPath(n),
  }));
  timings.aggregateMs = ms(t);
  return {
    file,
    nodeCount: graph.nodeCount,
    edgeCount: graph.firstEdge[graph.nodeCount]!,
    totalSize,
    constructors,
    topRetainers,
    timings,
  };
}

export async function summarize(file: string, options: AnalysisOptions = {}): Promise<HeapSummary> {
  const timings: Record<string, number> = {};
  const t = process.hrtime.bigint();
  const graph = await loadGraph(file, options.onProgress ? (r, s) => options.onProgress!(0, r, s) : undefined);
  timings.parseMs = ms(t);
  return summarizeGraph(graph, file, options.top ?? 50, timings);
}

/**
 * A set of heap object ids. V8 numbers objects upwards in steps of 2, so most of a
 * snapshot's ids fill a range a bitmap covers at under a byte per object and answers with
 * one load. A few do not: V8 gives some native objects ids near 2^32, and a long-lived
 * process spreads its ids thin. So the bitmap covers at most 32 ids' worth of range per
 * member from the smallest id, and the ids past it are kept in a sorted array searched
 * by halves (a set of only such ids is a sorted array, as before). One outlier near 2^32
 * once sent a whole 2 GB snapshot's 18 million ids to the sorted array: 1.4 s to sort,
 * and a binary search for each object of the next snapshot.
 */
export class IdSet {
  /** The bitmap covers ids base … base + span - 1. */
  readonly #base: number;
  readonly #span: number;
  readonly #bits: Uint8Array;
  /** The members past the bitmap, ascending. */
  readonly #rest: Uint32Array;

  constructor(ids: Uint32Array) {
    let min = 0xffffffff;
    for (let i = 0; i < ids.length; i++) if (ids[i]! < min) min = ids[i]!;
    const base = (this.#base = ids.length > 0 ? min : 0);
    // The largest id the bitmap may cover: 32 ids of range per member (4 bits of bitmap each).
    const reach = base + ids.length * 32;
    let top = base,
      outside = 0;
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      if (id >= reach) outside++;
      else if (id > top) top = id;
    }
    const span = (this.#span = ids.length > outside ? top - base + 1 : 0);
    const bits = (this.#bits = bigArray(Uint8Array, (span + 7) >>> 3));
    const rest = (this.#rest = new Uint32Array(outside));
    let r = 0;
    for (let i = 0; i < ids.length; i++) {
      const d = ids[i]! - base;
      if (d < span) bits[d >>> 3]! |= 1 << (d & 7);
      else rest[r++] = ids[i]!;
    }
    rest.sort();
  }

  static of(graph: HeapGraph): IdSet {
    const ids = graph.scratch();
    for (let n = 0; n < graph.nodeCount; n++) ids[n] = graph.nodeId(n);
    const set = new IdSet(ids); // keeps a copy, if any
    graph.releaseScratch(ids);
    return set;
  }

  has(id: number): boolean {
    const d = id - this.#base;
    if (d >= 0 && d < this.#span) return (this.#bits[d >>> 3]! & (1 << (d & 7))) !== 0;
    const rest = this.#rest;
    let lo = 0,
      hi = rest.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const v = rest[mid]!;
      if (v === id) return true;
      if (v < id) lo = mid + 1;
      else hi = mid - 1;
    }
    return false;
  }
}

/**
 * Reading the last file meanwhile holds it beside the first file's analysis: about 1.3× the
 * peak memory of reading in turn (measured at 2 GB). By default it is done only when free
 * memory is at least the files' total size, about twice that peak, so that a diff never
 * pushes the machine toward swap for the sake of speed.
 */
export function roomForAThread(files: string[]): boolean {
  let total = 0;
  for (const file of files) {
    try {
      total += fs.statSync(file).size;
    } catch {
      return false;
    } // the read will say what is wrong with it
  }
  return os.freemem() >= total;
}

/** Reads a diff's files, timing each: the last one on a worker thread (a second core) when `parallel` allows. */
class DiffFiles {
  readonly timings: Record<string, number> = {};
  #lastRead: ThreadRead | undefined;
  #threads: boolean | undefined;

  constructor(
    readonly files: string[],
    readonly options: AnalysisOptions,
  ) {}

  get lastIndex(): number {
    return this.files.length - 1;
  }

  /** Whether the diff may use a second core (see {@link AnalysisOptions.parallel}); decided once. */
  get threads(): boolean {
    const { parallel } = this.options;
    return (this.#threads ??= parallel === true || (parallel === undefined && roomForAThread(this.files)));
  }

  /** Reads file `i` here. */
  async load(i: number, parts: Pick<ReadOptions, 'edges' | 'edgeNames' | 'onHeader'> = {}): Promise<HeapGraph> {
    const t = process.hrtime.bigint();
    const g = await loadGraph(this.files[i]!, this.#progress(i), parts);
    this.timings[`parse${i}Ms`] = ms(t);
    return g;
  }

  /** Starts reading the last file on another core (when parallel). */
  startLast(): void {
    if (this.#lastRead || !this.threads) return;
    const onProgress = this.#progress(this.lastIndex);
    this.#lastRead = readHeapSnapshotInThread(this.files[this.lastIndex]!, onProgress ? { onProgress } : {});
    this.#lastRead.result.catch(() => undefined); // awaited in last(); if an earlier step fails first, this must not go unhandled
  }

  /** The last file: from the thread (its parse time, and how long the analysis waited for it), or read here. */
  async last(): Promise<HeapGraph> {
    if (!this.#lastRead) return this.load(this.lastIndex);
    const t = process.hrtime.bigint();
    const { raw, parseMs } = await this.#lastRead.result;
    this.timings[`parse${this.lastIndex}Ms`] = parseMs;
    this.timings.waitedMs = ms(t);
    return new HeapGraph(raw);
  }

  /** Stops a read still running (the diff failed, or is done). */
  cancel(): void {
    this.#lastRead?.cancel();
  }

  #progress(i: number): ProgressCallback | undefined {
    const { onProgress } = this.options;
    return onProgress ? (read, size) => onProgress(i, read, size) : undefined;
  }
}

/**
 * Two files: per-class deltas and new objects. Three files (baseline, target, final):
 * also leak candidates — objects whose ids are absent from the first, present in the
 * second and still alive in the third, grouped by class and retainer path.
 * One full graph at a time; each is dropped as soon as its part is done.
 */
export async function diff(files: string[], options: AnalysisOptions = {}): Promise<HeapDiff> {
  const top = options.top ?? 50;
  const reads = new DiffFiles(files, options);
  const { timings } = reads;
  try {
    // The first file's graph, then the middle one's, live only in the helpers below: a graph
    // held in this function's frame across an await may stay reachable until it returns.
    const first = await firstFile(reads);
    releaseDeadArrays();
    const threeFiles = files.length >= 3;
    let fresh: ReturnType<typeof newObjects>;
    let last: HeapGraph;
    if (threeFiles) {
      fresh = await middleFile(reads, first.ids);
      releaseDeadArrays(); // the middle file's columns, before the last file's analysis adds its own
      last = await reads.last();
    } else {
      last = await reads.last();
      fresh = newObjects(last, first.ids, false);
    }
    const { totals: totalsA, size: sizeA } = first;

    const t = process.hrtime.bigint();
    last.analyze();
    const constructors = constructorDeltas(totalsA, classTotals(last)).slice(0, top);
    const heapGrowth = heapSize(last) - sizeA;
    const byConstructor = [...fresh.byConstructor.values()].sort((p, q) => q.selfSize - p.selfSize).slice(0, top);
    const result: HeapDiff = {
      files,
      constructors,
      newObjects: { count: fresh.count, selfSize: fresh.selfSize, byConstructor },
      leaks: [],
      heapGrowth,
      timings,
    };
    if (fresh.candidates) {
      const floor = noiseFloor(heapGrowth);
      const all = leakCandidates(last, fresh.candidates);
      result.leaks = all.filter((l) => l.retainedSize >= floor).slice(0, top);
      result.leakFound = result.leaks.length > 0;
      result.noiseFloor = floor;
      result.belowNoiseFloor = all.length - all.filter((l) => l.retainedSize >= floor).length;
    }
    timings.analyzeLastMs = ms(t);
    return result;
  } finally {
    reads.cancel();
  }
}

/**
 * The first file: per-class totals (its retained sizes need dominators, not paths), its size
 * and its ids. Starts reading the last file on another core once this one is read: the first
 * file's analysis is the earlier peak of memory, and need not meet the last file whole.
 */
async function firstFile(reads: DiffFiles): Promise<{ totals: Map<string, ClassTotal>; size: number; ids: IdSet }> {
  // While this file is read, the second core (idle until the last file's read starts) makes its
  // dominator arrays and takes their page faults.
  let scratch: Promise<DominatorScratch | undefined> | undefined;
  const onHeader = reads.threads
    ? (nodes: number, edges: number) => {
        scratch = touchedArraysInThread(dominatorScratchShape(nodes, edges));
      }
    : undefined;
  const a = await reads.load(0, { edgeNames: false, ...(onHeader ? { onHeader } : {}) });
  reads.startLast();
  const t = process.hrtime.bigint();
  a.analyze(await scratch); // before the passes that borrow the arrays it is done with
  const totals = classTotals(a);
  const size = heapSize(a);
  const ids = IdSet.of(a);
  reads.timings.analyze0Ms = ms(t);
  return { totals, size, ids };
}

/** The middle file of three is only asked which objects are new: its nodes suffice. */
async function middleFile(reads: DiffFiles, before: IdSet): Promise<ReturnType<typeof newObjects>> {
  return newObjects(await reads.load(1, { edges: false }), before, true);
}

/** Objects in `graph` whose ids are not in `before`, by class; and, when asked, the ids among them a leak is reported in. */
function newObjects(graph: HeapGraph, before: IdSet, withCandidates: boolean) {
  const classes = new ClassNumbering(graph);
  const counts: number[] = [],
    selfSizes: number[] = [];
  let count = 0,
    selfSize = 0,
    found = 0;
  const candidates = withCandidates ? graph.scratch() : undefined;
  for (let n = 1; n < graph.nodeCount; n++) {
    const id = graph.nodeId(n);
    if (before.has(id)) continue;
    const c = classes.of(n),
      size = graph.selfSize(n);
    counts[c] = (counts[c] ?? 0) + 1;
    selfSizes[c] = (selfSizes[c] ?? 0) + size;
    count++;
    selfSize += size;
    if (candidates && classes.leakable[c]) candidates[found++] = id;
  }
  const byConstructor = new Map<string, { name: string; count: number; selfSize: number }>();
  classes.names.forEach((name, c) => {
    if (counts[c]) byConstructor.set(name, { name, count: counts[c]!, selfSize: selfSizes[c]! });
  });
  let ids: IdSet | undefined;
  if (candidates) {
    ids = new IdSet(candidates.subarray(0, found));
    graph.releaseScratch(candidates);
  }
  return { byConstructor, count, selfSize, candidates: ids };
}

/** Per class, last minus first; those that changed, by |retained size change|, largest first. */
function constructorDeltas(first: Map<string, ClassTotal>, last: Map<string, ClassTotal>): ConstructorDelta[] {
  const deltas: ConstructorDelta[] = [];
  for (const name of new Set([...first.keys(), ...last.keys()])) {
    const x = first.get(name),
      y = last.get(name);
    const d = {
      name,
      countDelta: (y?.count ?? 0) - (x?.count ?? 0),
      selfSizeDelta: (y?.selfSize ?? 0) - (x?.selfSize ?? 0),
      retainedSizeDelta: (y?.retainedSize ?? 0) - (x?.retainedSize ?? 0),
    };
    if (d.countDelta !== 0 || d.selfSizeDelta !== 0 || d.retainedSizeDelta !== 0) deltas.push(d);
  }
  return deltas.sort(
    (p, q) =>
      Math.abs(q.retainedSizeDelta) - Math.abs(p.retainedSizeDelta) ||
      Math.abs(q.selfSizeDelta) - Math.abs(p.selfSizeDelta),
  );
}

/**
 * Groups the survivors in `graph` whose ids are in `candidateIds` by class and by how they
 * are held (the shape of their retainer path, element indices alike), ranked by retained
 * size, all groups. Each holder's path is keyed once (RetainerPaths.keyer), so the work
 * grows with the distinct holders, not with the text of every candidate's path.
 */
export function leakCandidates(graph: HeapGraph, candidateIds: IdSet, top = Infinity): LeakCandidate[] {
  graph.analyze();
  const groupOf = graph.scratchInt32().fill(-1);
  const groupByKey = new Map<number, number>();
  const groups: Array<{ constructor: string; count: number; selfSize: number; best: number; sampleIds: number[] }> = [];
  const paths = graph.paths;
  const keyOf = paths.keyer();
  const retained = graph.retainedSizes;
  for (let n = 1; n < graph.nodeCount; n++) {
    if (!candidateIds.has(graph.nodeId(n))) continue;
    if (paths.parentEdge(n) === undefined) continue; // unreachable (garbage) or a path's start: not a leak
    const key = keyOf(n);
    let g = groupByKey.get(key);
    if (g === undefined) {
      g = groups.length;
      groupByKey.set(key, g);
      groups.push({ constructor: graph.className(n), count: 0, selfSize: 0, best: n, sampleIds: [] });
    }
    groupOf[n] = g;
    const grp = groups[g]!;
    grp.count++;
    if (grp.sampleIds.length < 5) grp.sampleIds.push(graph.nodeId(n));
    grp.selfSize += graph.selfSize(n);
    if (retained[n]! > retained[grp.best]!) grp.best = n;
  }
  const sums = graph.retainedByGroup(groupOf, groups.length);
  graph.releaseScratch(groupOf);
  const ranked = groups
    .map((grp, g) => ({ grp, retainedSize: sums[g]! }))
    .filter((x) => x.retainedSize > 0)
    .sort((p, q) => q.retainedSize - p.retainedSize)
    .slice(0, top);
  return ranked.map(({ grp, retainedSize }) => ({
    constructor: grp.constructor,
    count: grp.count,
    selfSize: grp.selfSize,
    retainedSize,
    retainerPath: graph.retainerPath(grp.best),
    sampleIds: grp.sampleIds,
  }));
}
