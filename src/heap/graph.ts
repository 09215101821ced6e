/**
 * The heap graph over a parsed snapshot's flat arrays, and the analyses on it:
 * dominators (Lengauer–Tarjan over typed arrays), retained sizes, retainer paths
 * (paths.ts) and totals by class. Nodes are addressed by ordinal (0…nodeCount-1); nothing allocates an object
 * per node.
 */
import type { RawSnapshot } from './reader.js';
import type { StringTable } from './strings.js';
import { RetainerPaths } from './paths.js';
import { bigArray } from './arrays.js';
import { loadNative } from '../native.js';

const NONE = 0xffffffff;

type ComputeDominators = (
  firstEdge: Uint32Array,
  edgeTypes: Uint8Array,
  edgeTargets: Uint32Array,
  selfSizes: Uint32Array,
  weakType: number,
  shortcutType: number,
  scratch: Uint32Array[],
  retained: Float64Array,
) => number;
const nativeDominators = loadNative<{ computeDominators?: ComputeDominators }>('heap_scan').addon?.computeDominators;
let useNativeDominators = nativeDominators !== undefined;

/** Tests: compute dominators with the JS pass (false) or native/heap_scan.c when it loaded (true); returns whether native is in use. */
export function useNativeDominatorPass(on: boolean): boolean {
  useNativeDominators = on && nativeDominators !== undefined;
  return useNativeDominators;
}
/**
 * Arrays for the dominator pass of a graph of `nodeCount` nodes and `edgeCount` edges, given to
 * {@link HeapGraph.analyze}: allocated, and their pages touched, on another core while the
 * snapshot is read (touch-thread.ts), they cost the pass no page faults.
 */
export interface DominatorScratch {
  dfn: Uint32Array;
  vertex: Uint32Array;
  parent: Uint32Array;
  firstPred: Uint32Array;
  semi: Uint32Array;
  retained: Float64Array;
  preds: Uint32Array;
}

/** What {@link DominatorScratch} holds for a graph: each array's kind and length. */
export function dominatorScratchShape(nodeCount: number, edgeCount: number) {
  const u32 = (length: number): ['u32', number] => ['u32', length];
  const f64 = (length: number): ['f64', number] => ['f64', length];
  const N = nodeCount;
  return {
    dfn: u32(N),
    vertex: u32(N),
    parent: u32(N),
    firstPred: u32(N + 1),
    semi: u32(N),
    retained: f64(N),
    preds: u32(edgeCount),
  } satisfies Record<keyof DominatorScratch, ['u32' | 'f64', number]>;
}

/** The collections whose `table` edge leads to V8's hash table of their entries. */
const COLLECTIONS = new Set(['Map', 'Set', 'WeakMap', 'WeakSet']);

export class HeapGraph {
  readonly nodeCount: number;
  readonly strings: StringTable;
  readonly nodeTypeNames: string[];
  readonly edgeTypeNames: string[];
  /** Per node: index of its first edge; `firstEdge[n+1]` ends it. */
  readonly firstEdge: Uint32Array;
  readonly #hasEdges: boolean;
  readonly #hasEdgeNames: boolean;
  readonly #nodeTypes: Uint8Array;
  readonly #nodeNames: Uint32Array;
  readonly #nodeIds: Uint32Array;
  readonly #selfSizes: Uint32Array;
  readonly #edgeTypes: Uint8Array;
  readonly #edgeNames: Uint32Array;
  readonly #edgeTargets: Uint32Array;
  readonly #weak: number;
  readonly #shortcut: number;
  readonly #element: number;
  readonly #hidden: number;
  readonly #internal: number;

  // Filled by analyze() and, for paths, on first use.
  #dominator: Uint32Array | undefined;
  #retained: Float64Array | undefined;
  #preOrder: Uint32Array | undefined;
  #reached = 0;
  #paths: RetainerPaths | undefined;
  // Node-sized arrays the dominator pass is done with, lent to the passes after it (paths,
  // per-class sums, leak groups) so they reuse that memory instead of adding to the peak.
  readonly #spare: Uint32Array[] = [];

  constructor(raw: RawSnapshot) {
    this.nodeCount = raw.nodeCount;
    this.strings = raw.strings;
    this.nodeTypeNames = raw.meta.node_types[0] as string[];
    this.edgeTypeNames = raw.meta.edge_types[0] as string[];
    this.firstEdge = raw.firstEdge;
    this.#hasEdges = raw.hasEdges;
    this.#hasEdgeNames = raw.hasEdgeNames;
    this.#nodeTypes = raw.nodeTypes;
    this.#nodeNames = raw.nodeNames;
    this.#nodeIds = raw.nodeIds;
    this.#selfSizes = raw.selfSizes;
    this.#edgeTypes = raw.edgeTypes;
    this.#edgeNames = raw.edgeNames;
    this.#edgeTargets = raw.edgeTargets;
    this.#weak = this.edgeTypeNames.indexOf('weak');
    this.#shortcut = this.edgeTypeNames.indexOf('shortcut');
    this.#element = this.edgeTypeNames.indexOf('element');
    this.#hidden = this.edgeTypeNames.indexOf('hidden');
    this.#internal = this.edgeTypeNames.indexOf('internal');
  }

  // Node views.
  /** The node's type, as an index into {@link nodeTypeNames}. */
  typeIndex(n: number): number {
    return this.#nodeTypes[n]!;
  }
  /** The node's name, as an index into {@link strings}. */
  nameIndex(n: number): number {
    return this.#nodeNames[n]!;
  }
  nodeType(n: number): string {
    return this.nodeTypeNames[this.#nodeTypes[n]!]!;
  }
  nodeName(n: number): string {
    return this.strings.get(this.#nodeNames[n]!);
  }
  nodeId(n: number): number {
    return this.#nodeIds[n]!;
  }
  selfSize(n: number): number {
    return this.#selfSizes[n]!;
  }

  // Edge views (e is an edge index).
  edgeType(e: number): string {
    return this.edgeTypeNames[this.#edgeTypes[e]!]!;
  }
  edgeTarget(e: number): number {
    return this.#edgeTargets[e]!;
  }
  /** The edge's name: a property name, or an element index as a string. */
  edgeName(e: number): string {
    if (!this.#hasEdgeNames)
      throw new Error('this heap graph was read without its edge names (readHeapSnapshot with edgeNames: false)');
    const v = this.#edgeNames[e]!;
    return this.isIndexEdge(e) ? String(v) : this.strings.get(v);
  }
  isIndexEdge(e: number): boolean {
    const t = this.#edgeTypes[e]!;
    return t === this.#element || t === this.#hidden;
  }

  /** The class a node counts under: its constructor for objects and closures, `(type)` for the rest, as DevTools groups. */
  className(n: number): string {
    const type = this.nodeType(n);
    if (type === 'object' || type === 'native') return this.nodeName(n);
    if (type === 'closure') return 'Function';
    if (type === 'concatenated string' || type === 'sliced string') return '(string)';
    return `(${type})`;
  }

  /** A node-sized scratch array, contents unspecified; hand it back with {@link releaseScratch} when done. */
  scratch(): Uint32Array {
    return this.#spare.pop() ?? bigArray(Uint32Array, this.nodeCount);
  }
  /** {@link scratch} as signed numbers. */
  scratchInt32(): Int32Array {
    const a = this.scratch();
    return new Int32Array(a.buffer, a.byteOffset, a.length);
  }
  releaseScratch(a: Uint32Array | Int32Array): void {
    this.#spare.push(new Uint32Array(a.buffer, a.byteOffset, a.length));
  }

  /** Does this edge hold its target for GC? Weak edges never do; shortcuts only from the root (as in DevTools). */
  #essential(from: number, typeValue: number): boolean {
    return typeValue !== this.#weak && (typeValue !== this.#shortcut || from === 0);
  }

  /**
   * Builds the dominator tree and retained sizes. Idempotent. Retainer paths are built on first use.
   * `scratch`: arrays for the pass (see {@link DominatorScratch}); used when their sizes fit this graph.
   */
  analyze(scratch?: DominatorScratch): void {
    if (!this.#hasEdges)
      throw new Error('this heap graph was read without its edges (readHeapSnapshot with edges: false)');
    if (!this.#retained) this.#computeDominators(scratch);
  }

  get dominators(): Uint32Array {
    this.analyze();
    return this.#dominator!;
  }
  get retainedSizes(): Float64Array {
    this.analyze();
    return this.#retained!;
  }
  retainedSize(n: number): number {
    return this.retainedSizes[n]!;
  }

  #computeDominators(scratch: DominatorScratch | undefined): void {
    if (useNativeDominators && this.#computeDominatorsNative(scratch)) return;
    const N = this.nodeCount;
    const types = this.#edgeTypes,
      targets = this.#edgeTargets,
      first = this.firstEdge;

    // 1. Depth-first pre-order from the root over essential edges (explicit stack, so
    //    long chains like linked lists cannot overflow the call stack).
    const dfn = bigArray(Uint32Array, N).fill(NONE); // node → pre-order number
    const vertex = bigArray(Uint32Array, N); // pre-order number → node
    const parent = bigArray(Uint32Array, N); // by pre-order number
    const stack = bigArray(Uint32Array, N);
    const cursor = bigArray(Uint32Array, N);
    let top = 0,
      count = 0;
    stack[0] = 0;
    cursor[0] = first[0]!;
    dfn[0] = count;
    vertex[count++] = 0;
    while (top >= 0) {
      const n = stack[top]!;
      const end = first[n + 1]!;
      let e = cursor[top]!;
      for (; e < end; e++) {
        if (!this.#essential(n, types[e]!)) continue;
        const to = targets[e]!;
        if (dfn[to] !== NONE) continue;
        parent[count] = dfn[n]!;
        dfn[to] = count;
        vertex[count++] = to;
        cursor[top] = e + 1;
        stack[++top] = to;
        cursor[top] = first[to]!;
        break;
      }
      if (e >= end) top--;
    }
    const reached = count;
    // Nodes the root cannot reach strongly (garbage V8 kept in the snapshot) hang off the root.
    for (let n = 0; n < N; n++)
      if (dfn[n] === NONE) {
        parent[count] = 0;
        dfn[n] = count;
        vertex[count++] = n;
      }

    // 2. Predecessors by pre-order number, essential edges from reached nodes only.
    const firstPred = bigArray(Uint32Array, N + 1);
    for (let n = 0; n < N; n++) {
      if (dfn[n]! >= reached) continue;
      for (let e = first[n]!; e < first[n + 1]!; e++) {
        if (this.#essential(n, types[e]!)) firstPred[dfn[targets[e]!]! + 1]!++;
      }
    }
    for (let i = 0; i < N; i++) firstPred[i + 1]! += firstPred[i]!;
    const preds = bigArray(Uint32Array, firstPred[N]!);
    // Scratch arrays are reused once their step is done: peak memory is what bounds large snapshots.
    const semi = bigArray(Uint32Array, N);
    const fill = semi; // fill cursors now, semi-dominators in step 3
    fill.set(firstPred.subarray(0, N));
    for (let n = 0; n < N; n++) {
      const from = dfn[n]!;
      if (from >= reached) continue;
      for (let e = first[n]!; e < first[n + 1]!; e++) {
        if (this.#essential(n, types[e]!)) preds[fill[dfn[targets[e]!]!]!++] = from;
      }
    }

    // 3. Semi-dominators by Lengauer–Tarjan's eval/link with path compression, then each
    //    immediate dominator as the nearest common ancestor of its DFS parent and its
    //    semi-dominator (semi-NCA): no buckets, all in pre-order numbers.
    const ancestor = cursor.fill(NONE); // the DFS cursors are done with
    const label = dfn; // pre-order numbers are not needed past step 2
    for (let i = 0; i < N; i++) {
      semi[i] = i;
      label[i] = i;
    }
    const path = stack; // reused: the compression path
    const evaluate = (v: number): number => {
      if (ancestor[v] === NONE) return v;
      // Compress the ancestor chain iteratively.
      let depth = 0;
      let x = v;
      while (ancestor[ancestor[x]!] !== NONE) {
        path[depth++] = x;
        x = ancestor[x]!;
      }
      while (depth > 0) {
        const y = path[--depth]!;
        const a = ancestor[y]!;
        if (semi[label[a]!]! < semi[label[y]!]!) label[y] = label[a]!;
        ancestor[y] = ancestor[a]!;
      }
      return label[v]!;
    };
    for (let w = reached - 1; w >= 1; w--) {
      let s = semi[w]!;
      for (let p = firstPred[w]!; p < firstPred[w + 1]!; p++) {
        const u = semi[evaluate(preds[p]!)]!;
        if (u < s) s = u;
      }
      semi[w] = s;
      ancestor[w] = parent[w]!;
    }
    // In pre-order, a node's dominator is settled before the node: walk up from the parent.
    const idom = parent; // parent[w] is read once, just before idom[w] replaces it
    for (let w = 1; w < reached; w++) {
      const s = semi[w]!;
      let x = idom[w]!;
      while (x > s) x = idom[x]!;
      idom[w] = x;
    }
    // Unreached nodes (pre-order numbers from `reached`) already have parent, so idom, 0.

    // 4. Back to node ordinals; retained sizes bottom-up (a dominator precedes what it dominates in pre-order).
    const dominator = semi; // semi-dominators are done with
    const retained = bigArray(Float64Array, N);
    retained.set(this.#selfSizes);
    for (let w = N - 1; w >= 1; w--) {
      const n = vertex[w]!,
        d = vertex[idom[w]!]!;
      dominator[n] = d;
      retained[d]! += retained[n]!;
    }
    dominator[0] = 0;
    this.#spare.push(dfn, stack, cursor, parent, firstPred.subarray(0, N));
    this.#dominator = dominator;
    this.#retained = retained;
    this.#preOrder = vertex;
    this.#reached = reached;
  }

  /** The same steps in native/heap_scan.c, over arrays given (when they fit) or allocated here (so the scratch ones are lent on as spares); false when it could not run. */
  #computeDominatorsNative(given: DominatorScratch | undefined): boolean {
    const N = this.nodeCount;
    const shape = dominatorScratchShape(N, this.firstEdge[N]!);
    const fits =
      given && Object.entries(shape).every(([k, [, length]]) => given[k as keyof DominatorScratch].length === length);
    // The retained sizes take the memory of the DFS stack and cursors, which the pass is done
    // with before it writes them: 8 bytes a node less at the peak.
    const retained = fits ? given.retained : bigArray(Float64Array, N);
    const stack = new Uint32Array(retained.buffer, retained.byteOffset, N),
      cursor = new Uint32Array(retained.buffer, retained.byteOffset + N * 4, N);
    const [dfn, vertex, parent, firstPred, semi] = fits
      ? [given.dfn, given.vertex, given.parent, given.firstPred, given.semi]
      : ([N, N, N, N + 1, N].map((n) => bigArray(Uint32Array, n)) as [
          Uint32Array,
          Uint32Array,
          Uint32Array,
          Uint32Array,
          Uint32Array,
        ]);
    // Without given ones, the predecessor lists are allocated in C (and freed there).
    const scratch = [dfn, vertex, parent, stack, cursor, firstPred, semi, ...(fits ? [given.preds] : [])];
    const reached = nativeDominators!(
      this.firstEdge,
      this.#edgeTypes,
      this.#edgeTargets,
      this.#selfSizes,
      this.#weak,
      this.#shortcut,
      scratch,
      retained,
    );
    if (reached < 0) return false; // out of memory for the predecessor lists: the JS pass tries
    this.#spare.push(dfn, parent, firstPred.subarray(0, N));
    this.#dominator = semi;
    this.#retained = retained;
    this.#preOrder = vertex;
    this.#reached = reached;
    return true;
  }

  /** The node that owns edge e (binary search over firstEdge). */
  edgeOwner(e: number): number {
    let lo = 0,
      hi = this.nodeCount - 1;
    const first = this.firstEdge;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (first[mid]! <= e) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  /** How each node is held, chosen to read as code (see paths.ts); found on first use. */
  get paths(): RetainerPaths {
    if (!this.#hasEdgeNames)
      throw new Error('this heap graph was read without its edge names (readHeapSnapshot with edgeNames: false)');
    this.analyze(); // first: the search borrows the arrays the dominators are done with
    return (this.#paths ??= new RetainerPaths(this));
  }

  /** The retaining edge on n's path, or undefined for the root, a path's start (a global object's or module's scope) and unreachable nodes. */
  parentEdge(n: number): number | undefined {
    return this.paths.parentEdge(n);
  }

  /** Edges from the path's start to n, start first. */
  retainerEdges(n: number, maxSteps = 64): number[] {
    return this.paths.edges(n, maxSteps).edges;
  }

  /** The typed columns, for the passes that walk the whole graph. */
  get columns(): {
    firstEdge: Uint32Array;
    nodeTypes: Uint8Array;
    nodeNames: Uint32Array;
    edgeTypes: Uint8Array;
    edgeNames: Uint32Array;
    edgeTargets: Uint32Array;
  } {
    return {
      firstEdge: this.firstEdge,
      nodeTypes: this.#nodeTypes,
      nodeNames: this.#nodeNames,
      edgeTypes: this.#edgeTypes,
      edgeNames: this.#edgeNames,
      edgeTargets: this.#edgeTargets,
    };
  }

  /** Does a chain of strong edges from the root reach n? (Nodes V8 kept that only weak edges reach do not count.) */
  isStronglyHeld(n: number): boolean {
    this.analyze();
    // The unreached nodes end the pre-order, in ascending order.
    const order = this.#preOrder!;
    let lo = this.#reached,
      hi = this.nodeCount - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const v = order[mid]!;
      if (v === n) return false;
      if (v < n) lo = mid + 1;
      else hi = mid - 1;
    }
    return true;
  }

  /** Is e a Map's or Set's edge to its backing hash table (V8's, not the program's)? */
  isCollectionTable(e: number): boolean {
    if (this.#edgeTypes[e] !== this.#internal || this.edgeName(e) !== 'table') return false;
    return COLLECTIONS.has(this.nodeName(this.edgeOwner(e)));
  }

  /** What {@link stepLabel} with normalized indices says, as a key built from numbers (no label text). */
  stepKey(e: number): string {
    const to = this.#edgeTargets[e]!;
    const name = this.isIndexEdge(e) || this.strings.isDigits(this.#edgeNames[e]!) ? '' : String(this.#edgeNames[e]);
    return `${this.#edgeTypes[e]}.${name}.${this.#nodeTypes[to]}.${this.#nodeNames[to]}`;
  }

  /** One step of a retainer path as it reads in code: `Map "sessionCache"`, `table`, `[3]`, `LeakyEntry`. */
  stepLabel(e: number, normalizeIndex = false): string {
    const to = this.edgeTarget(e);
    const type = this.nodeType(to);
    const nodeName = this.nodeName(to);
    if (type === 'synthetic' || this.edgeType(e) === 'shortcut') return nodeName;
    const name = this.edgeName(e);
    // Element indices, and the numeric names V8 gives internal slots, say nothing to a reader.
    const indexLike = this.isIndexEdge(e) || /^\d+$/.test(name);
    // V8's own structures ("system / Context") read better as the edge that leads to them.
    const named = this.isProgramObject(to);
    if (type === 'closure') {
      const fn = nodeName ? `${nodeName}()` : indexLike ? '(anonymous)()' : `${name}()`;
      return nodeName && !indexLike && name !== nodeName ? `${fn} "${name}"` : fn;
    }
    if (indexLike) return named ? nodeName : normalizeIndex ? '[]' : `[${name}]`;
    return named ? `${nodeName} "${name}"` : name;
  }

  /** An object the program made (not one of V8's own `system / …` structures). */
  isProgramObject(n: number): boolean {
    const type = this.nodeType(n);
    return (
      (type === 'object' || type === 'closure' || type === 'native' || type === 'regexp') &&
      !this.nodeName(n).startsWith('system /')
    );
  }

  /** How n is held, as it reads in code: `module orders.mjs → Map "sessionCache" → SessionRecord`, `global → Object "app" → …`. */
  retainerPath(n: number, normalizeIndex = false): string {
    return this.paths.render(n, normalizeIndex);
  }

  /**
   * Sums retained sizes per group, counting a node only when no dominator above it
   * is in the same group (so a list of 1,000 Foo that hold each other counts once).
   * `groupOf[n]` is the node's group, or -1.
   */
  retainedByGroup(groupOf: Int32Array, groupCount: number): Float64Array {
    this.analyze();
    const N = this.nodeCount;
    const dom = this.#dominator!,
      retained = this.#retained!,
      order = this.#preOrder!;
    // Walk down the dominator tree in pre-order (a dominator precedes what it dominates),
    // keeping per node its nearest dominator that is in some group, and chain through those.
    const nearest = this.scratchInt32().fill(-1); // nearest strict dominator that is in some group
    const sums = new Float64Array(groupCount);
    for (let i = 0; i < N; i++) {
      const n = order[i]!;
      const d = dom[n]!;
      nearest[n] = d === n ? -1 : groupOf[d]! >= 0 ? d : nearest[d]!;
      const g = groupOf[n]!;
      if (g < 0) continue;
      let a = nearest[n]!;
      let covered = false;
      for (let hops = 0; a >= 0 && hops < 64; hops++) {
        if (groupOf[a] === g) {
          covered = true;
          break;
        }
        a = nearest[a]!;
      }
      if (!covered) sums[g]! += retained[n]!;
    }
    this.releaseScratch(nearest);
    return sums;
  }
}
