/**
 * Retainer paths that read as code. A shortest path by edge count from the GC roots runs
 * through whatever Node keeps alive: the module loader, timer lists, `process._events`
 * (`global → setTimeout() → context → requireBuiltin() → … → ModuleJob → ModuleWrap → [2] →
 * Generator → context → Map "widgetRegistry"`). What a developer recognises is the scope
 * their code declared the holder in. So:
 *
 * - The searches start at the global objects and at the app's module scopes: a Context whose
 *   closures come from a user script and whose outer context is the native one (an ES module's
 *   also names its SourceTextModule). A path from one reads `module orders.mjs → Map
 *   "sessionCache" → SessionRecord`: how Node reaches the module is not the app's business.
 * - Edges weigh by what they say: a named property or variable is cheap, V8's internal slots
 *   cost more, and entering Node's own code (a closure from a `node:` script, its scope, the
 *   native context) costs much more, so a path through app objects wins over one through Node's.
 * - Whatever those cannot reach is searched from the GC roots last, with the same weights.
 *
 * DevTools' retainers view orders by distance (edge count) from the roots; memlab's traces
 * weigh edges too but start at the GC roots, so they still walk through Node's loader. Both
 * show the V8 plumbing (`table`, `context`) this collapses where it adds nothing.
 *
 * A bucket queue (Dial's algorithm: small integer weights) keeps the search linear in the edges.
 */
import type { StringTable } from './strings.js';
import { bigArray } from './arrays.js';
import { loadNative } from '../native.js';

/** What the search reads of a heap graph (HeapGraph, which builds this). */
export interface PathGraph {
  readonly nodeCount: number;
  readonly strings: StringTable;
  readonly nodeTypeNames: string[];
  readonly edgeTypeNames: string[];
  readonly columns: {
    firstEdge: Uint32Array;
    nodeTypes: Uint8Array;
    nodeNames: Uint32Array;
    edgeTypes: Uint8Array;
    edgeNames: Uint32Array;
    edgeTargets: Uint32Array;
  };
  edgeOwner(e: number): number;
  isStronglyHeld(n: number): boolean;
  isCollectionTable(e: number): boolean;
  stepLabel(e: number, normalizeIndex?: boolean): string;
  stepKey(e: number): string;
  scratch(): Uint32Array;
  releaseScratch(a: Uint32Array): void;
}

const NONE = 0xffffffff;
/** parentEdge of a module scope the search started from. */
const MODULE_SOURCE = 0xfffffffe;
/** Bucket count: above the largest edge weight. */
const BUCKETS = 64;
const STEP = 2,
  INTERNAL_STEP = 4,
  NODE_INTERNALS = 40;
/** How far a closure's context chain is followed to its module scope. */
const MAX_SCOPE_DEPTH = 16;

type SearchPaths = (
  firstEdge: Uint32Array,
  edgeTypes: Uint8Array,
  edgeTargets: Uint32Array,
  penalty: Uint8Array,
  stepWeight: Uint8Array,
  weakType: number,
  shortcutType: number,
  modules: Uint32Array,
  parentEdge: Uint32Array,
  dist: Uint32Array,
) => boolean;
const nativeSearch = loadNative<{ searchPaths?: SearchPaths }>('heap_scan').addon?.searchPaths;
let useNativeSearch = nativeSearch !== undefined;

/** Tests: search with the JS loop (false) or native/heap_scan.c's when it loaded (true); returns whether native is in use. */
export function useNativePathSearch(on: boolean): boolean {
  useNativeSearch = on && nativeSearch !== undefined;
  return useNativeSearch;
}

/** A script Node ships (its own code, not the app's). */
function isNodeScript(name: string): boolean {
  return name.startsWith('node:') || name.startsWith('internal/') || name === 'native';
}

function baseName(script: string): string {
  const clean = script.replace(/[?#].*$/, '');
  return clean.slice(clean.lastIndexOf('/') + 1) || script;
}

export class RetainerPaths {
  readonly #graph: PathGraph;
  /** Per node: the edge that reaches it on its chosen path, NONE when unreached, MODULE_SOURCE for a module scope. */
  readonly #parentEdge: Uint32Array;
  /** Module scope (a Context node) → its script's name. */
  readonly #modules = new Map<number, string>();

  constructor(graph: PathGraph) {
    this.#graph = graph;
    const penalty = bigArray(Uint8Array, graph.nodeCount);
    this.#classifyScopes(penalty);
    this.#parentEdge = this.#search(penalty);
  }

  /** The edge on n's path, undefined for the root, a search's start and unreachable nodes. */
  parentEdge(n: number): number | undefined {
    const e = this.#parentEdge[n]!;
    return e >= MODULE_SOURCE ? undefined : e;
  }

  /** The script whose module scope n is, when the paths start there. */
  moduleOf(n: number): string | undefined {
    return this.#parentEdge[n] === MODULE_SOURCE ? this.#modules.get(n) : undefined;
  }

  /** Edges from the search's start to n, start first; `cut` when maxSteps ran out first. */
  edges(n: number, maxSteps = 64): { edges: number[]; start: number; cut: boolean } {
    const g = this.#graph;
    const path: number[] = [];
    let cur = n;
    while (path.length < maxSteps) {
      const e = this.parentEdge(cur);
      if (e === undefined) break;
      path.push(e);
      cur = g.edgeOwner(e);
    }
    return { edges: path.reverse(), start: cur, cut: this.parentEdge(cur) !== undefined };
  }

  /**
   * Marks Node's own closures and their scopes (a weight on entering them) and finds the
   * app's module scopes, from each closure's `shared` → `script` and `context` → `previous`.
   */
  #classifyScopes(penalty: Uint8Array): void {
    const g = this.#graph;
    const { firstEdge, edgeTypes, edgeNames, edgeTargets, nodeTypes, nodeNames } = g.columns;
    const str = g.strings;
    const internal = g.edgeTypeNames.indexOf('internal');
    const closureType = g.nodeTypeNames.indexOf('closure');
    const edge = (name: string): number => str.indexOf(name);
    const eContext = edge('context'),
      eShared = edge('shared'),
      eScript = edge('script_or_debug_info'),
      eScriptOld = edge('script');
    const ePrevious = edge('previous'),
      eScopeInfo = edge('scope_info'),
      eExtension = edge('extension');
    const nativeContext = str.indexOf('system / NativeContext');
    const sourceTextModule = str.indexOf('system / SourceTextModule');
    const internalEdge = (n: number, name: number): number => {
      if (name < 0) return -1;
      for (let e = firstEdge[n]!; e < firstEdge[n + 1]!; e++)
        if (edgeNames[e] === name && edgeTypes[e] === internal) return edgeTargets[e]!;
      return -1;
    };
    if (nativeContext >= 0)
      for (let n = 0; n < g.nodeCount; n++) if (nodeNames[n] === nativeContext) penalty[n] = NODE_INTERNALS;
    const scriptKind = new Map<number, boolean>(); // script name's string index → is Node's own
    // Module scope candidates: the outermost context under the native one, with its script.
    const candidates = new Map<number, number>(); // context → script name index
    for (let c = 0; c < g.nodeCount; c++) {
      if (nodeTypes[c] !== closureType) continue;
      const shared = internalEdge(c, eShared);
      let script = shared < 0 ? -1 : internalEdge(shared, eScript);
      if (script < 0 && shared >= 0) script = internalEdge(shared, eScriptOld);
      if (script < 0) continue;
      const name = nodeNames[script]!;
      let nodes = scriptKind.get(name);
      if (nodes === undefined) scriptKind.set(name, (nodes = isNodeScript(str.get(name))));
      let ctx = internalEdge(c, eContext);
      if (nodes) penalty[c] = NODE_INTERNALS;
      for (let depth = 0; ctx >= 0 && nodeNames[ctx] !== nativeContext && depth < MAX_SCOPE_DEPTH; depth++) {
        if (nodes) penalty[ctx] = NODE_INTERNALS;
        const outer = internalEdge(ctx, ePrevious);
        if (outer >= 0 && nodeNames[outer] === nativeContext) {
          if (!nodes && !candidates.has(ctx)) candidates.set(ctx, name);
          break;
        }
        ctx = outer;
      }
    }
    // A function's per-call scopes also sit under the native context when their module keeps
    // no variables of its own; those share one ScopeInfo, a module's scope has its own.
    const scopes = new Map<number, number>();
    for (const ctx of candidates.keys()) {
      const info = internalEdge(ctx, eScopeInfo);
      scopes.set(info, (scopes.get(info) ?? 0) + 1);
    }
    for (const [ctx, name] of candidates) {
      const esm = sourceTextModule >= 0 && nodeNames[Math.max(0, internalEdge(ctx, eExtension))] === sourceTextModule;
      if (esm || scopes.get(internalEdge(ctx, eScopeInfo)) === 1) {
        if (g.isStronglyHeld(ctx)) this.#modules.set(ctx, str.get(name));
      }
    }
  }

  #search(penalty: Uint8Array): Uint32Array {
    const g = this.#graph;
    const { firstEdge, edgeTypes, edgeTargets } = g.columns;
    const N = g.nodeCount;
    const weak = g.edgeTypeNames.indexOf('weak'),
      shortcut = g.edgeTypeNames.indexOf('shortcut');
    const stepWeight = new Uint8Array(g.edgeTypeNames.length).fill(STEP);
    for (const t of ['internal', 'hidden']) {
      const i = g.edgeTypeNames.indexOf(t);
      if (i >= 0) stepWeight[i] = INTERNAL_STEP;
    }
    const parentEdge = bigArray(Uint32Array, N).fill(NONE);
    const dist = g.scratch().fill(NONE);
    // The same search in native/heap_scan.c (about twice as fast); false: out of memory for its queue.
    const modules = Uint32Array.from(this.#modules.keys());
    if (useNativeSearch) {
      if (
        nativeSearch!(firstEdge, edgeTypes, edgeTargets, penalty, stepWeight, weak, shortcut, modules, parentEdge, dist)
      ) {
        g.releaseScratch(dist);
        return parentEdge;
      }
      parentEdge.fill(NONE);
      dist.fill(NONE);
    }
    // The queue: a growable typed array per bucket, kept across rounds (no garbage per node).
    const buckets = Array.from({ length: BUCKETS }, () => new Uint32Array(1024));
    const sizes = new Int32Array(BUCKETS);
    const push = (slot: number, n: number): void => {
      let b = buckets[slot]!;
      if (sizes[slot] === b.length) {
        const grown = new Uint32Array(b.length * 2);
        grown.set(b);
        buckets[slot] = b = grown;
      }
      b[sizes[slot]!++] = n;
    };
    let pending = 0,
      d = 0;
    const start = (n: number, via: number): void => {
      if (dist[n] !== NONE) return;
      dist[n] = d;
      parentEdge[n] = via;
      push(d % BUCKETS, n);
      pending++;
    };
    const run = (): void => {
      for (; pending > 0; d++) {
        const slot = d % BUCKETS;
        // Weights are 1…BUCKETS-1: nothing joins this bucket while it is read.
        const bucket = buckets[slot]!,
          size = sizes[slot]!;
        for (let i = 0; i < size; i++) {
          const n = bucket[i]!;
          pending--;
          if (dist[n] !== d) continue; // reached again, shorter, since it was queued
          for (let e = firstEdge[n]!; e < firstEdge[n + 1]!; e++) {
            const type = edgeTypes[e]!;
            if (type === weak || (type === shortcut && n !== 0)) continue; // not what holds it
            const to = edgeTargets[e]!;
            const nd = d + stepWeight[type]! + penalty[to]!;
            if (nd >= dist[to]!) continue;
            dist[to] = nd;
            parentEdge[to] = e;
            push(nd % BUCKETS, to);
            pending++;
          }
        }
        sizes[slot] = 0;
      }
    };
    dist[0] = 0;
    // The global objects (the root's shortcuts) and the app's module scopes first …
    for (let e = firstEdge[0]!; e < firstEdge[1]!; e++) if (edgeTypes[e] === shortcut) start(edgeTargets[e]!, e);
    for (const ctx of modules) start(ctx, MODULE_SOURCE);
    run();
    // … then what only the GC roots hold, farther than anything found so far.
    for (let e = firstEdge[0]!; e < firstEdge[1]!; e++)
      if (edgeTypes[e] !== shortcut && edgeTypes[e] !== weak) start(edgeTargets[e]!, e);
    run();
    g.releaseScratch(dist);
    return parentEdge;
  }

  /** The path as it reads in code: `module orders.mjs → Map "sessionCache" → SessionRecord`. */
  render(n: number, normalizeIndex = false): string {
    const g = this.#graph;
    const { edges, start, cut } = this.edges(n);
    const module = this.moduleOf(start);
    if (edges.length === 0) return module ? `module ${baseName(module)}` : n === 0 ? '(root)' : '(unreachable)';
    const steps: string[] = [];
    if (cut) steps.push('…');
    else if (module) steps.push(`module ${baseName(module)}`);
    for (const e of edges) {
      // A Map's or Set's backing table is V8's: `Map "cache" → Entry` says it.
      if (g.isCollectionTable(e)) continue;
      steps.push(g.stepLabel(e, normalizeIndex));
    }
    return steps.join(' → ');
  }

  /**
   * A number per distinct path shape (class and step by step, element indices alike), so
   * that leak candidates group by how they are held without building each path's text:
   * each node's key is its parent's key and one step, memoised.
   */
  keyer(): (n: number) => number {
    const g = this.#graph;
    const targets = g.columns.edgeTargets;
    const memo = new Map<number, number>(); // the holders' keys (not every leaf's)
    const interned = new Map<string, number>();
    const intern = (text: string): number => {
      let k = interned.get(text);
      if (k === undefined) interned.set(text, (k = interned.size));
      return k;
    };
    const keyOf = (n: number): number => {
      const stack: number[] = [];
      let cur = n,
        key: number | undefined;
      for (;;) {
        key = memo.get(cur);
        if (key !== undefined) break;
        const e = this.parentEdge(cur);
        if (e === undefined) {
          key = intern(`start ${cur === 0 ? 'root' : (this.moduleOf(cur) ?? cur)}`);
          memo.set(cur, key);
          break;
        }
        stack.push(e);
        cur = g.edgeOwner(e);
      }
      for (let i = stack.length - 1; i >= 0; i--) {
        const e = stack[i]!;
        key = intern(`${key}\u0000${g.stepKey(e)}`);
        if (i > 0) memo.set(targets[e]!, key);
      }
      return key;
    };
    return keyOf;
  }
}
