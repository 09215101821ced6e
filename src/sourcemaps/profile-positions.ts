/**
 * The original positions of a CPU profile's nodes, kept beside the profile: the `.cpuprofile`
 * stays as V8 wrote it (DevTools and other tools read it and apply maps themselves), and its
 * sidecar carries `originalPositions`, which offline readers (`sysprobe report`'s flame graph)
 * use without the scripts or their maps at hand. Bounded: at most {@link MAX_ORIGINAL_POSITIONS}
 * nodes; past that the first nodes keep theirs (V8 lists parents before children: the roots and
 * the frames near them, which a flame graph draws widest).
 *
 * Shape (compact, as profiles have thousands of nodes): `{ urls: string[], nodes: [id, url index,
 * line, column][] }`, lines and columns 0-based like the profile's own.
 */
import type { CpuProfileNode, GeneratedPosition, OriginalOf } from '../captures/cpuprofile.js';

export const MAX_ORIGINAL_POSITIONS = 20_000;

export interface OriginalPositions {
  urls: string[];
  nodes: Array<[id: number, url: number, lineNumber: number, columnNumber: number]>;
}

/** The nodes a source map moved, or undefined when none was. */
export function originalPositionsOf(
  nodes: readonly CpuProfileNode[],
  original: OriginalOf,
): OriginalPositions | undefined {
  const urls: string[] = [];
  const urlIndex = new Map<string, number>();
  const moved: OriginalPositions['nodes'] = [];
  for (const node of nodes) {
    if (moved.length >= MAX_ORIGINAL_POSITIONS) break;
    const frame = original(node.callFrame);
    if (!frame.generated) continue;
    let index = urlIndex.get(frame.url);
    if (index === undefined) {
      index = urls.length;
      urls.push(frame.url);
      urlIndex.set(frame.url, index);
    }
    moved.push([node.id, index, frame.lineNumber, frame.columnNumber]);
  }
  return moved.length > 0 ? { urls, nodes: moved } : undefined;
}

/** The original position of each node id, from a sidecar's `originalPositions`; a malformed entry is skipped. */
export function readOriginalPositions(value: unknown): Map<number, GeneratedPosition> {
  const byId = new Map<number, GeneratedPosition>();
  if (typeof value !== 'object' || value === null) return byId;
  const { urls, nodes } = value as Partial<Record<keyof OriginalPositions, unknown>>;
  if (!Array.isArray(urls) || !Array.isArray(nodes)) return byId;
  for (const entry of nodes.slice(0, MAX_ORIGINAL_POSITIONS)) {
    if (!Array.isArray(entry) || entry.length !== 4) continue;
    const [id, url, lineNumber, columnNumber] = entry as unknown[];
    const source: unknown = typeof url === 'number' ? urls[url] : undefined;
    if (
      typeof source === 'string' &&
      Number.isSafeInteger(id) &&
      Number.isSafeInteger(lineNumber) &&
      Number.isSafeInteger(columnNumber)
    )
      byId.set(id as number, { url: source, lineNumber: lineNumber as number, columnNumber: columnNumber as number });
  }
  return byId;
}
