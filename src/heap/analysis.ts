/**
 * What users read from snapshots: totals by class, the biggest retainers, two-snapshot
 * deltas and three-snapshot leak candidates. Pure functions over {@link HeapGraph}s;
 * the results are plain JSON (the shape of `sysprobe heap … --json`).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import { HeapGraph } from './graph.js';
import { readHeapSnapshot, type ProgressCallback } from './reader.js';
import { readHeapSnapshotInThread, type ThreadRead } from './read-thread.js';

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
  newObjects: { count: number; selfSize: number; byConstructor: Array<{ name: string; count: number; selfSize: number }> };
  /** Ranked leak candidates, most retained first; empty for two files. */
  leaks: LeakCandidate[];
  timings: Record<string, number>;
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
export async function loadGraph(file: string, onProgress?: ProgressCallback, { edges = true, edgeNames = true } = {}): Promise<HeapGraph> {
  const raw = await readHeapSnapshot(file, { edges, edgeNames, ...(onProgress ? { onProgress } : {}) });
  return new HeapGraph(raw);
}

/** Totals per class, with retained sizes counted once per class. */
export function classTotals(graph: HeapGraph): Map<string, ClassTotal> {
  const totals: ClassTotal[] = [];
  const groupByName = new Map<string, number>();
  const groupOf = graph.scratchInt32(); // every entry is written below
  // A class is named by the node's name for objects and natives and by its type for the
  // rest, so two small tables (by string index, by type) find a node's group without a string.
  const byName = new Int32Array(graph.strings.length).fill(-1);
  const byType = new Int32Array(graph.nodeTypeNames.length).fill(-1);
  const named = graph.nodeTypeNames.map((t) => t === 'object' || t === 'native');
  const groupFor = (n: number): number => {
    const name = graph.className(n);
    let g = groupByName.get(name);
    if (g === undefined) {
      g = totals.length;
      groupByName.set(name, g);
      totals.push({ name, count: 0, selfSize: 0, retainedSize: 0 });
    }
    return g;
  };
  for (let n = 0; n < graph.nodeCount; n++) {
    const type = graph.typeIndex(n);
    let g: number;
    if (named[type]) {
      const s = graph.nameIndex(n);
      g = byName[s]!;
      if (g < 0) g = byName[s] = groupFor(n);
    } else {
      g = byType[type]!;
      if (g < 0) g = byType[type] = groupFor(n);
    }
    groupOf[n] = g;
    const t = totals[g]!;
    t.count++;
    t.selfSize += graph.selfSize(n);
  }
  groupOf[0] = -1; // the synthetic root is not a class
  const retained = graph.retainedByGroup(groupOf, totals.length);
  graph.releaseScratch(groupOf);
  for (let g = 0; g < totals.length; g++) totals[g]!.retainedSize = retained[g]!;
  return new Map(totals.map((t) => [t.name, t]));
}

export function summarizeGraph(graph: HeapGraph, file: string, top = 50, timings: Record<string, number> = {}): HeapSummary {
  let t = process.hrtime.bigint();
  graph.analyze();
  timings.dominatorsMs = ms(t);
  t = process.hrtime.bigint();
  const constructors = [...classTotals(graph).values()].sort((a, b) => b.retainedSize - a.retainedSize).slice(0, top);
  let totalSize = 0;
  for (let n = 0; n < graph.nodeCount; n++) totalSize += graph.selfSize(n);
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
    name: graph.className(n), id: graph.nodeId(n), selfSize: graph.selfSize(n), retainedSize: retained[n]!, retainerPath: graph.retainerPath(n),
  }));
  timings.aggregateMs = ms(t);
  return { file, nodeCount: graph.nodeCount, edgeCount: graph.firstEdge[graph.nodeCount]!, totalSize, constructors, topRetainers, timings };
}

export async function summarize(file: string, options: AnalysisOptions = {}): Promise<HeapSummary> {
  const timings: Record<string, number> = {};
  const t = process.hrtime.bigint();
  const graph = await loadGraph(file, options.onProgress ? (r, s) => options.onProgress!(0, r, s) : undefined);
  timings.parseMs = ms(t);
  return summarizeGraph(graph, file, options.top ?? 50, timings);
}

/**
 * A set of heap object ids. V8 numbers objects upwards from small values, so a bitmap
 * over 0…max id usually costs under a byte per object and answers with one load; ids
 * spread thinner than that (a long-lived process) use a sorted array and binary search.
 */
export class IdSet {
  readonly #bits: Uint8Array | undefined;
  readonly #sorted: Uint32Array | undefined;

  constructor(ids: Uint32Array) {
    let max = 0;
    for (let i = 0; i < ids.length; i++) if (ids[i]! > max) max = ids[i]!;
    if (max >>> 3 <= ids.length * 4) {
      const bits = this.#bits = new Uint8Array((max >>> 3) + 1);
      for (let i = 0; i < ids.length; i++) bits[ids[i]! >>> 3]! |= 1 << (ids[i]! & 7);
    } else {
      this.#sorted = Uint32Array.from(ids).sort();
    }
  }

  static of(graph: HeapGraph): IdSet {
    const ids = graph.scratch();
    for (let n = 0; n < graph.nodeCount; n++) ids[n] = graph.nodeId(n);
    const set = new IdSet(ids); // keeps a copy, if any
    graph.releaseScratch(ids);
    return set;
  }

  has(id: number): boolean {
    const bits = this.#bits;
    if (bits) return (id >>> 3) < bits.length && (bits[id >>> 3]! & (1 << (id & 7))) !== 0;
    const sorted = this.#sorted!;
    let lo = 0, hi = sorted.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const v = sorted[mid]!;
      if (v === id) return true;
      if (v < id) lo = mid + 1; else hi = mid - 1;
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
    try { total += fs.statSync(file).size; } catch { return false; } // the read will say what is wrong with it
  }
  return os.freemem() >= total;
}

/** Reads a diff's files, timing each: the last one on a worker thread (a second core) when `parallel` allows. */
class DiffFiles {
  readonly timings: Record<string, number> = {};
  #lastRead: ThreadRead | undefined;

  constructor(readonly files: string[], readonly options: AnalysisOptions) {}

  get lastIndex(): number { return this.files.length - 1; }

  /** Reads file `i` here. */
  async load(i: number, parts: { edges?: boolean; edgeNames?: boolean } = {}): Promise<HeapGraph> {
    const t = process.hrtime.bigint();
    const g = await loadGraph(this.files[i]!, this.#progress(i), parts);
    this.timings[`parse${i}Ms`] = ms(t);
    return g;
  }

  /** Starts reading the last file on another core (when parallel). */
  startLast(): void {
    const { parallel } = this.options;
    if (parallel === false || this.#lastRead || (parallel === undefined && !roomForAThread(this.files))) return;
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
  cancel(): void { this.#lastRead?.cancel(); }

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
    // The first file: per-class totals (its retained sizes need dominators, not paths) and its ids.
    let a: HeapGraph | undefined = await reads.load(0, { edgeNames: false });
    // The last file is analysed in full: it is read on another core while the first is analysed
    // and the middle one read, and is ready about then. Not sooner: the first file's analysis
    // is the earlier peak of memory, and need not meet the last file whole.
    reads.startLast();
    let t = process.hrtime.bigint();
    a.analyze(); // before the passes that borrow the arrays it is done with
    const totalsA = classTotals(a);
    const idsA = IdSet.of(a);
    timings.analyze0Ms = ms(t);
    a = undefined;

    // With three files, the second is only asked which objects are new: its nodes suffice.
    const threeFiles = files.length >= 3;
    let b: HeapGraph | undefined = threeFiles ? await reads.load(1, { edges: false }) : await reads.last();
    const fresh = newObjects(b, idsA, threeFiles);
    const last = threeFiles ? await reads.last() : b;
    b = undefined; // a three-file diff is done with the middle file

    t = process.hrtime.bigint();
    last.analyze();
    const constructors = constructorDeltas(totalsA, classTotals(last)).slice(0, top);
    const leaks = fresh.candidates ? leakCandidates(last, fresh.candidates, top) : [];
    timings.analyzeLastMs = ms(t);
    const byConstructor = [...fresh.byConstructor.values()].sort((p, q) => q.selfSize - p.selfSize).slice(0, top);
    return { files, constructors, newObjects: { count: fresh.count, selfSize: fresh.selfSize, byConstructor }, leaks, timings };
  } finally {
    reads.cancel();
  }
}

/** Objects in `graph` whose ids are not in `before`, by class; and, when asked, the ids among them a leak is reported in. */
function newObjects(graph: HeapGraph, before: IdSet, withCandidates: boolean) {
  const byConstructor = new Map<string, { name: string; count: number; selfSize: number }>();
  let count = 0, selfSize = 0;
  const candidates: number[] = [];
  for (let n = 1; n < graph.nodeCount; n++) {
    const id = graph.nodeId(n);
    if (before.has(id)) continue;
    const name = graph.className(n);
    let e = byConstructor.get(name);
    if (!e) byConstructor.set(name, (e = { name, count: 0, selfSize: 0 }));
    e.count++; e.selfSize += graph.selfSize(n); count++; selfSize += graph.selfSize(n);
    if (withCandidates && LEAK_TYPES.has(graph.nodeType(n)) && graph.isProgramObject(n)) candidates.push(id);
  }
  return { byConstructor, count, selfSize, candidates: withCandidates ? new IdSet(Uint32Array.from(candidates)) : undefined };
}

/** Per class, last minus first; those that changed, by |retained size change|, largest first. */
function constructorDeltas(first: Map<string, ClassTotal>, last: Map<string, ClassTotal>): ConstructorDelta[] {
  const deltas: ConstructorDelta[] = [];
  for (const name of new Set([...first.keys(), ...last.keys()])) {
    const x = first.get(name), y = last.get(name);
    const d = {
      name,
      countDelta: (y?.count ?? 0) - (x?.count ?? 0),
      selfSizeDelta: (y?.selfSize ?? 0) - (x?.selfSize ?? 0),
      retainedSizeDelta: (y?.retainedSize ?? 0) - (x?.retainedSize ?? 0),
    };
    if (d.countDelta !== 0 || d.selfSizeDelta !== 0 || d.retainedSizeDelta !== 0) deltas.push(d);
  }
  return deltas.sort((p, q) => Math.abs(q.retainedSizeDelta) - Math.abs(p.retainedSizeDelta) || Math.abs(q.selfSizeDelta) - Math.abs(p.selfSizeDelta));
}

/** Groups the survivors in `graph` whose ids are in `candidateIds` by class and retainer path, ranked by retained size. */
export function leakCandidates(graph: HeapGraph, candidateIds: IdSet, top = 50): LeakCandidate[] {
  graph.analyze();
  const groupOf = graph.scratchInt32().fill(-1);
  const keys = new Map<string, number>();
  const groups: Array<{ constructor: string; count: number; selfSize: number; best: number; sampleIds: number[] }> = [];
  // Per retaining parent: its path (computed once) and its groups by class and step, so the
  // siblings in one table find their group by a short key, not by the whole path's text.
  const byParent = new Map<number, { path: string; groups: Map<string, number> }>();
  const retained = graph.retainedSizes;
  for (let n = 1; n < graph.nodeCount; n++) {
    if (!candidateIds.has(graph.nodeId(n))) continue;
    const e = graph.parentEdge(n);
    if (e === undefined) continue; // unreachable: garbage, not a leak
    const parent = graph.edgeOwner(e);
    let holder = byParent.get(parent);
    if (!holder) byParent.set(parent, (holder = { path: parent === 0 ? '' : graph.retainerPath(parent, true), groups: new Map() }));
    const name = graph.className(n);
    const local = `${name}\u0000${graph.stepLabel(e, true)}`;
    let g = holder.groups.get(local);
    if (g === undefined) {
      const key = `${holder.path}\u0000${local}`;
      g = keys.get(key);
      if (g === undefined) {
        g = groups.length;
        keys.set(key, g);
        groups.push({ constructor: name, count: 0, selfSize: 0, best: n, sampleIds: [] });
      }
      holder.groups.set(local, g);
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
  const ranked = groups.map((grp, g) => ({ grp, retainedSize: sums[g]! }))
    .filter((x) => x.retainedSize > 0)
    .sort((p, q) => q.retainedSize - p.retainedSize)
    .slice(0, top);
  return ranked.map(({ grp, retainedSize }) => ({
    constructor: grp.constructor, count: grp.count, selfSize: grp.selfSize, retainedSize,
    retainerPath: graph.retainerPath(grp.best), sampleIds: grp.sampleIds,
  }));
}
