/**
 * The functions that hold the CPU in a short profile: where a profile that starts outside a stall
 * looks first, so that code optimized before it (with its callees inlined, whose time V8 charges
 * to the caller) is recompiled without inlining before the real profile (main-inspector.ts).
 * Pure and linear in the profile's size.
 */
import { isSynthetic, weighProfile, type CpuProfile } from './cpuprofile.js';

/** Where to set a breakpoint in a function: inside its body, where the samples were. 0-based. */
export interface HotLocation {
  scriptId: string;
  lineNumber: number;
  columnNumber: number;
  functionName: string;
}

interface PositionTicks {
  positionTicks?: Array<{ line: number; ticks: number }>;
}

/**
 * The JavaScript functions with at least `minShare` of the profile's non-idle self time,
 * heaviest first, at most `max`. Each at its hottest line below its declaration when the profile
 * has position ticks (a breakpoint there is inside the function), else at the function's own position.
 */
export function hotFunctions(profile: CpuProfile, { minShare = 0.1, max = 5 } = {}): HotLocation[] {
  const weighed = weighProfile(profile);
  const nodes = weighed.profile.nodes;
  const byFunction = new Map<string, { micros: number; location: HotLocation; lineTicks: number }>();
  let busyMicros = 0;
  nodes.forEach((node, index) => {
    const micros = weighed.selfMicros[index]!;
    const frame = node.callFrame;
    if (isSynthetic(frame)) {
      if (frame.functionName !== '(idle)') busyMicros += micros;
      return;
    }
    busyMicros += micros;
    if (micros <= 0 || !frame.scriptId || frame.scriptId === '0' || !frame.url) return;
    const key = `${frame.scriptId}:${frame.lineNumber}:${frame.columnNumber}`;
    let entry = byFunction.get(key);
    if (!entry) {
      entry = {
        micros: 0,
        lineTicks: -1,
        location: {
          scriptId: frame.scriptId,
          lineNumber: frame.lineNumber,
          columnNumber: frame.columnNumber,
          functionName: frame.functionName,
        },
      };
      byFunction.set(key, entry);
    }
    entry.micros += micros;
    for (const { line, ticks } of (node as PositionTicks).positionTicks ?? []) {
      // A line after the declaration's is inside the body; on the declaration's own line, column 0 could be outside it.
      if (Number.isSafeInteger(line) && line - 1 > frame.lineNumber && ticks > entry.lineTicks) {
        entry.lineTicks = ticks;
        entry.location = { ...entry.location, lineNumber: line - 1, columnNumber: 0 };
      }
    }
  });
  if (busyMicros <= 0) return [];
  return [...byFunction.values()]
    .filter((e) => e.micros / busyMicros >= minShare)
    .sort((a, b) => b.micros - a.micros)
    .slice(0, max)
    .map((e) => e.location);
}
