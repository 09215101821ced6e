/**
 * The V8 CPU profile (what the inspector's `Profiler.stop` returns, saved as
 * `.cpuprofile`) and a summary of it: where the time went, and whether one
 * function was spinning. Pure functions over the profile object, so they are
 * tested on real captures and on hand-made broken ones; a malformed profile
 * throws an Error that says what is wrong. All work is linear in the size of
 * the profile.
 */

/**
 * A JS stack frame as the inspector protocol reports it (stall stacks, profile summaries):
 * lines and columns are 0-based, -1 when unknown; `functionName` is `(anonymous)` for
 * anonymous functions, `url` empty for code without one.
 */
export interface Frame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
  /**
   * Where the frame is in the JavaScript that ran, when a source map moved `url`, `lineNumber`
   * and `columnNumber` to the original source (e.g. a `.ts` file); absent otherwise.
   */
  generated?: GeneratedPosition;
}

/** A position in the JavaScript that ran (0-based, as the inspector reports it). */
export interface GeneratedPosition {
  url: string;
  lineNumber: number;
  columnNumber: number;
}

/** Maps a frame to its original position (source maps); the identity when there is none. */
export type OriginalOf = (frame: Frame) => Frame;

export interface CallFrame extends Frame {
  scriptId: string;
}

export interface CpuProfileNode {
  id: number;
  callFrame: CallFrame;
  /** Samples whose leaf was this node. */
  hitCount?: number;
  children?: number[];
}

export interface CpuProfile {
  nodes: CpuProfileNode[];
  /** Microseconds on V8's monotonic clock (the one `process.hrtime` reads), not wall-clock time. */
  startTime: number;
  endTime: number;
  /** The leaf node id of each sample, in time order. */
  samples?: number[];
  /** Microseconds from the previous sample (from `startTime` for the first) to each sample. */
  timeDeltas?: number[];
}

/** A function's time; frames with the same name, url, line and column are one function. Lines are 0-based. */
export interface FunctionTime extends Frame {
  selfMs: number;
  /** Self time as a fraction of all sampled time. */
  selfShare: number;
  /** Time with this function anywhere on the stack, each sample counted once even when it recurses. */
  totalMs: number;
}

export interface BusyLoop {
  detected: boolean;
  /** The spinning function, present only when detected. Lines are 0-based. */
  frame?: Frame;
  /** The heaviest ordinary function's self time as a fraction of non-idle time, detected or not. */
  share: number;
}

export interface ProfileSummary {
  durationMs: number;
  sampleCount: number;
  sampleIntervalMs: number;
  /** By self time, heaviest first. V8's synthetic nodes such as '(garbage collector)' are included. */
  topFunctions: FunctionTime[];
  busyLoop: BusyLoop;
  idleShare: number;
  gcShare: number;
  programShare: number;
}

/**
 * A busy loop is one ordinary function holding at least this share of the non-idle
 * self time: a handler doing real work calls out to many functions, one that spins
 * (a runaway loop, a catastrophic regex) keeps the samples in itself.
 */
export const BUSY_LOOP_MIN_SHARE = 0.5;

/** The name V8 gives nodes that are not JavaScript functions; such nodes have an empty url. */
export const SYNTHETIC_FRAMES = {
  root: '(root)',
  idle: '(idle)',
  program: '(program)',
  gc: '(garbage collector)',
} as const;
const SYNTHETIC_NAMES: ReadonlySet<string> = new Set(Object.values(SYNTHETIC_FRAMES));

/** V8 names anonymous functions ''. */
const ANONYMOUS = '(anonymous)';

/** A validated profile with each node's parent and self time, as both the summary and the pprof encoder need them. */
export interface WeighedProfile {
  profile: CpuProfile;
  /** Index into `profile.nodes` of each node id. */
  indexById: ReadonlyMap<number, number>;
  /** Index into `profile.nodes` of each node's parent, -1 for a root. */
  parents: Int32Array;
  /** Node indices, every parent before its children. */
  preorder: Int32Array;
  /** Samples whose leaf is each node. */
  selfCounts: Float64Array;
  /** Microseconds of those samples. */
  selfMicros: Float64Array;
  sampleCount: number;
  sampledMicros: number;
  sampleIntervalMicros: number;
}

/** Whether a frame is one of V8's synthetic nodes rather than a function. */
export function isSynthetic(frame: Frame, name?: string): boolean {
  return (
    frame.url === '' && SYNTHETIC_NAMES.has(frame.functionName) && (name === undefined || frame.functionName === name)
  );
}

/** The function name to show: V8's '' for an anonymous function becomes '(anonymous)'. */
export function displayName(frame: Frame): string {
  return frame.functionName === '' ? ANONYMOUS : frame.functionName;
}

function invalid(what: string): never {
  throw new Error(`Invalid CPU profile: ${what}`);
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function checkNumberArray(
  value: unknown,
  name: string,
  accept: (n: number) => boolean,
  rule: string,
): asserts value is number[] {
  if (!Array.isArray(value)) invalid(`${name} is not an array`);
  for (let i = 0; i < value.length; i++) {
    const n: unknown = value[i];
    if (typeof n !== 'number' || !accept(n))
      invalid(`${name}[${i}] is ${typeof n === 'number' ? n : JSON.stringify(n)}, expected ${rule}`);
  }
}

function checkNode(node: unknown, index: number): asserts node is CpuProfileNode {
  if (!isRecord(node)) invalid(`nodes[${index}] is not an object`);
  if (!Number.isSafeInteger(node.id)) invalid(`nodes[${index}].id is not an integer`);
  const frame = node.callFrame;
  if (!isRecord(frame)) invalid(`node ${String(node.id)} has no callFrame object`);
  if (typeof frame.functionName !== 'string' || typeof frame.url !== 'string') {
    invalid(`node ${String(node.id)}: callFrame.functionName and callFrame.url must be strings`);
  }
  const isPosition = (n: unknown): boolean => Number.isSafeInteger(n) && (n as number) >= -1;
  if (!isPosition(frame.lineNumber) || !isPosition(frame.columnNumber)) {
    invalid(
      `node ${String(node.id)}: callFrame.lineNumber and callFrame.columnNumber must be integers from -1 (unknown)`,
    );
  }
  if (node.hitCount !== undefined && !(Number.isSafeInteger(node.hitCount) && (node.hitCount as number) >= 0)) {
    invalid(`node ${String(node.id)}: hitCount must be a non-negative integer`);
  }
  if (node.children !== undefined)
    checkNumberArray(node.children, `node ${String(node.id)}: children`, Number.isSafeInteger, 'a node id');
}

/**
 * Validates a profile and weighs its nodes. Time comes from `samples` and `timeDeltas`
 * when present, each sample weighing the delta that ends at it (the first at most the
 * mean of the others: its delta holds the profiler's start-up); otherwise from each
 * node's `hitCount` times the mean interval (duration / hits).
 */
export function weighProfile(value: unknown): WeighedProfile {
  if (!isRecord(value)) invalid('not an object');
  const { nodes, startTime, endTime, samples, timeDeltas } = value;
  if (!Array.isArray(nodes)) invalid('nodes is not an array');
  if (nodes.length === 0) invalid('nodes is empty');
  if (
    typeof startTime !== 'number' ||
    typeof endTime !== 'number' ||
    !Number.isFinite(startTime) ||
    !Number.isFinite(endTime)
  ) {
    invalid('startTime and endTime must be finite numbers');
  }
  if (endTime < startTime) invalid(`endTime ${endTime} is before startTime ${startTime}`);

  const indexById = new Map<number, number>();
  nodes.forEach((node: unknown, index) => {
    checkNode(node, index);
    if (indexById.has(node.id)) invalid(`node id ${node.id} appears twice`);
    indexById.set(node.id, index);
  });
  const profile = value as unknown as CpuProfile;
  const parents = new Int32Array(nodes.length).fill(-1);
  profile.nodes.forEach((node, index) => {
    for (const childId of node.children ?? []) {
      const child = indexById.get(childId);
      if (child === undefined) invalid(`node ${node.id} has child ${childId}, which is not a node`);
      if (parents[child] !== -1) invalid(`node ${childId} is a child of more than one node`);
      parents[child] = index;
    }
  });
  const preorder = orderParentsFirst(profile.nodes, parents, indexById);

  const selfCounts = new Float64Array(nodes.length);
  const selfMicros = new Float64Array(nodes.length);
  const durationMicros = endTime - startTime;
  let sampleCount = 0;
  let sampledMicros = 0;
  if (samples !== undefined) {
    checkNumberArray(samples, 'samples', (id) => indexById.has(id), 'the id of a node');
    if (timeDeltas !== undefined) {
      // V8 stamps samples on its sampler thread and now and then records one a little before the
      // previous one (a negative delta; DevTools sorts them). Such a sample weighs nothing.
      checkNumberArray(timeDeltas, 'timeDeltas', (d) => Number.isFinite(d), 'a finite number of microseconds');
      if (timeDeltas.length !== samples.length)
        invalid(`${samples.length} samples but ${timeDeltas.length} timeDeltas`);
    }
    const evenShare = samples.length > 0 ? durationMicros / samples.length : 0;
    // The first delta runs from the profile's start, profiler start-up included (tens of ms on
    // Node 24 and 26): weighed whole, it made the first sample's function the top one. It weighs
    // at most the mean of the others.
    let firstCap = Infinity;
    if (timeDeltas !== undefined && timeDeltas.length > 1) {
      let rest = 0;
      for (let i = 1; i < timeDeltas.length; i++) rest += Math.max(0, timeDeltas[i]!);
      firstCap = rest / (timeDeltas.length - 1);
    }
    samples.forEach((id, i) => {
      const index = indexById.get(id)!;
      const micros = Math.max(0, Math.min(timeDeltas?.[i] ?? evenShare, i === 0 ? firstCap : Infinity));
      selfCounts[index]! += 1;
      selfMicros[index]! += micros;
      sampledMicros += micros;
    });
    sampleCount = samples.length;
  } else {
    profile.nodes.forEach((node, index) => {
      selfCounts[index] = node.hitCount ?? 0;
      sampleCount += selfCounts[index]!;
    });
    const interval = sampleCount > 0 ? durationMicros / sampleCount : 0;
    selfCounts.forEach((count, index) => (selfMicros[index] = count * interval));
    sampledMicros = sampleCount * interval;
  }
  const sampleIntervalMicros = sampleCount > 0 ? sampledMicros / sampleCount : 0;
  return {
    profile,
    indexById,
    parents,
    preorder,
    selfCounts,
    selfMicros,
    sampleCount,
    sampledMicros,
    sampleIntervalMicros,
  };
}

/** Depth-first from the roots, without recursion so a deep profile cannot overflow the stack; rejects cycles. */
function orderParentsFirst(nodes: CpuProfileNode[], parents: Int32Array, indexById: Map<number, number>): Int32Array {
  const preorder = new Int32Array(nodes.length);
  let visited = 0;
  const pending: number[] = [];
  parents.forEach((parent, index) => parent === -1 && pending.push(index));
  while (pending.length > 0) {
    const index = pending.pop()!;
    preorder[visited++] = index;
    for (const childId of nodes[index]!.children ?? []) pending.push(indexById.get(childId)!);
  }
  if (visited !== nodes.length)
    invalid(`${nodes.length - visited} nodes cannot be reached from a root (their children form a cycle)`);
  return preorder;
}

/** Summarizes where a profile's time went. Throws an Error naming the problem if `profile` is not a valid CPU profile. */
export function summarizeProfile(
  profile: unknown,
  { top = 10, original = (f) => f }: { top?: number; original?: OriginalOf } = {},
): ProfileSummary {
  if (!(Number.isInteger(top) && top >= 0))
    throw new RangeError(`top must be a non-negative integer, got ${String(top)}`);
  const weighed = weighProfile(profile);
  const { nodes, startTime, endTime } = weighed.profile;
  const functionOf = groupByFunction(nodes);
  const functionCount = functionOf.frames.length;
  const selfMicros = new Float64Array(functionCount);
  weighed.selfMicros.forEach((micros, index) => (selfMicros[functionOf.byNode[index]!]! += micros));
  const totalMicros = inclusiveMicros(weighed, functionOf.byNode, functionCount);

  const sampled = weighed.sampledMicros;
  const shareOf = (micros: number, of = sampled): number => (of > 0 ? Math.min(1, micros / of) : 0);
  const syntheticMicros = (name: string): number =>
    functionOf.frames.reduce((sum, frame, f) => (isSynthetic(frame, name) ? sum + selfMicros[f]! : sum), 0);
  const idleMicros = syntheticMicros(SYNTHETIC_FRAMES.idle);

  const byWeight = [...functionOf.frames.keys()].sort((a, b) => selfMicros[b]! - selfMicros[a]!);
  const heaviest = byWeight.find((f) => !isSynthetic(functionOf.frames[f]!));
  const busyShare = heaviest === undefined ? 0 : shareOf(selfMicros[heaviest]!, sampled - idleMicros);
  const detected = heaviest !== undefined && busyShare >= BUSY_LOOP_MIN_SHARE;

  const describe = (f: number): Frame => {
    const { functionName, url, lineNumber, columnNumber } = functionOf.frames[f]!;
    const frame = original({ functionName, url, lineNumber, columnNumber });
    return { ...frame, functionName: displayName(frame) };
  };
  return {
    durationMs: (endTime - startTime) / 1000,
    sampleCount: weighed.sampleCount,
    sampleIntervalMs: weighed.sampleIntervalMicros / 1000,
    topFunctions: byWeight.slice(0, top).map((f) => ({
      ...describe(f),
      selfMs: selfMicros[f]! / 1000,
      selfShare: shareOf(selfMicros[f]!),
      totalMs: totalMicros[f]! / 1000,
    })),
    busyLoop: detected ? { detected, frame: describe(heaviest), share: busyShare } : { detected, share: busyShare },
    idleShare: shareOf(idleMicros),
    gcShare: shareOf(syntheticMicros(SYNTHETIC_FRAMES.gc)),
    programShare: shareOf(syntheticMicros(SYNTHETIC_FRAMES.program)),
  };
}

/** Numbers the distinct functions (name, url, line, column) and maps each node to its function's number. */
function groupByFunction(nodes: CpuProfileNode[]): { frames: Frame[]; byNode: Int32Array } {
  const numbers = new Map<string, number>();
  const frames: Frame[] = [];
  const byNode = new Int32Array(nodes.length);
  nodes.forEach(({ callFrame }, index) => {
    const key = JSON.stringify([callFrame.functionName, callFrame.url, callFrame.lineNumber, callFrame.columnNumber]);
    let number = numbers.get(key);
    if (number === undefined) {
      number = frames.length;
      numbers.set(key, number);
      frames.push(callFrame);
    }
    byNode[index] = number;
  });
  return { frames, byNode };
}

/**
 * Each function's inclusive time: the subtree time of every node of that function
 * that has no ancestor of the same function, so a recursive call's samples count once.
 * One walk with a count of each function on the current path keeps it linear.
 */
function inclusiveMicros(weighed: WeighedProfile, functionOf: Int32Array, functionCount: number): Float64Array {
  const { profile, indexById, parents, preorder, selfMicros } = weighed;
  const subtreeMicros = Float64Array.from(selfMicros);
  for (let i = preorder.length - 1; i >= 0; i--) {
    const index = preorder[i]!;
    const parent = parents[index]!;
    if (parent !== -1) subtreeMicros[parent]! += subtreeMicros[index]!;
  }
  const totals = new Float64Array(functionCount);
  const onPath = new Int32Array(functionCount);
  // An entry n >= 0 enters node n; ~n leaves it.
  const walk: number[] = [];
  parents.forEach((parent, index) => parent === -1 && walk.push(index));
  while (walk.length > 0) {
    const entry = walk.pop()!;
    const index = entry < 0 ? ~entry : entry;
    const f = functionOf[index]!;
    if (entry < 0) {
      onPath[f]! -= 1;
      continue;
    }
    if (onPath[f] === 0) totals[f]! += subtreeMicros[index]!;
    onPath[f]! += 1;
    walk.push(~index);
    for (const childId of profile.nodes[index]!.children ?? []) walk.push(indexById.get(childId)!);
  }
  return totals;
}
