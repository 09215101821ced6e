/**
 * The V8 sampling heap profile (what the inspector's `HeapProfiler.stopSampling`
 * returns, saved as `.heapprofile`: Chrome DevTools opens it) and a summary of
 * it: which stacks allocated what was still live when sampling stopped.
 * Pure functions; a malformed profile throws an Error that says what is wrong,
 * and the walk is iterative and linear, so a deep or huge tree is safe.
 */
import type { Frame, OriginalOf } from './cpuprofile.js';

export interface AllocationNode {
  id: number;
  callFrame: Frame & { scriptId?: string };
  /** Bytes allocated by this frame itself (sampled, still live when sampling stopped). */
  selfSize: number;
  children: AllocationNode[];
}

export interface AllocationProfile {
  head: AllocationNode;
  samples?: Array<{ size: number; nodeId: number; ordinal: number }>;
}

/** One allocating stack: the innermost frame first. */
export interface AllocationSite {
  stack: Frame[];
  bytes: number;
  share: number;
}

export interface AllocationSummary {
  totalBytes: number;
  /** Functions by bytes they allocated themselves, largest first. */
  topFunctions: Array<Frame & { bytes: number; share: number }>;
  /** The stacks that allocated most, largest first (at most 16 frames each). */
  topStacks: AllocationSite[];
}

const MAX_NODES = 1_000_000;
const STACK_FRAMES = 16;

function invalid(what: string): never {
  throw new Error(`Invalid heap profile: ${what}`);
}

/** Top allocating functions and stacks of a sampling heap profile; `original` maps frames through source maps. */
export function summarizeAllocations(
  value: unknown,
  { top = 10, original = (f) => f }: { top?: number; original?: OriginalOf } = {},
): AllocationSummary {
  const frameOf = (node: AllocationNode): Frame => {
    const { functionName, url, lineNumber, columnNumber } = node.callFrame;
    return original({ functionName: functionName || '(anonymous)', url, lineNumber, columnNumber });
  };
  const profile = value as AllocationProfile;
  if (typeof profile !== 'object' || profile === null || typeof profile.head !== 'object' || profile.head === null)
    invalid('no head node');
  const byFunction = new Map<string, Frame & { bytes: number }>();
  const sites: Array<{ path: AllocationNode[]; bytes: number }> = [];
  let totalBytes = 0;
  let visited = 0;
  // Iterative depth-first walk, keeping the path from the root to each node.
  const stack: Array<{ node: AllocationNode; path: AllocationNode[] }> = [{ node: profile.head, path: [] }];
  while (stack.length > 0) {
    const { node, path } = stack.pop()!;
    if (++visited > MAX_NODES) invalid(`more than ${MAX_NODES} nodes`);
    if (typeof node !== 'object' || node === null || typeof node.callFrame !== 'object' || node.callFrame === null)
      invalid(`node ${visited} has no callFrame`);
    if (!(Number.isFinite(node.selfSize) && node.selfSize >= 0))
      invalid(`node ${node.id} has selfSize ${String(node.selfSize)}`);
    if (!Array.isArray(node.children)) invalid(`node ${node.id} has no children array`);
    const here = node === profile.head ? path : [...path.slice(-(STACK_FRAMES - 1)), node];
    if (node.selfSize > 0) {
      totalBytes += node.selfSize;
      sites.push({ path: here, bytes: node.selfSize });
      const frame = frameOf(node);
      const key = `${frame.functionName}\0${frame.url}\0${frame.lineNumber}\0${frame.columnNumber}`;
      const entry = byFunction.get(key) ?? { ...frame, bytes: 0 };
      entry.bytes += node.selfSize;
      byFunction.set(key, entry);
    }
    for (const child of node.children) stack.push({ node: child, path: here });
  }
  const share = (bytes: number) => (totalBytes > 0 ? bytes / totalBytes : 0);
  return {
    totalBytes,
    topFunctions: [...byFunction.values()]
      .sort((a, b) => b.bytes - a.bytes)
      .slice(0, top)
      .map((f) => ({ ...f, share: share(f.bytes) })),
    topStacks: sites
      .sort((a, b) => b.bytes - a.bytes)
      .slice(0, top)
      .map(({ path, bytes }) => ({ stack: [...path].reverse().map(frameOf), bytes, share: share(bytes) })),
  };
}
