import { Session } from 'node:inspector/promises';
import type { CpuProfile, CpuProfileNode } from '../src/captures/cpuprofile.js';

/** A real V8 CPU profile of `work`, sampled every 100 µs. */
export async function captureCpuProfile(work: () => void): Promise<CpuProfile> {
  const session = new Session();
  session.connect();
  try {
    await session.post('Profiler.enable');
    await session.post('Profiler.setSamplingInterval', { interval: 100 });
    await session.post('Profiler.start');
    work();
    const { profile } = await session.post('Profiler.stop');
    return profile as CpuProfile;
  } finally {
    session.disconnect(); // also stops the profiler if `work` threw
  }
}

/** A hand-made profile node: nodes of the same name are the same function (server.js, line 10, column 2, 0-based as V8 gives them). */
export function node(
  id: number,
  functionName: string,
  children: number[] = [],
  extra: Partial<CpuProfileNode> = {},
): CpuProfileNode {
  const synthetic = functionName.startsWith('(');
  return {
    id,
    callFrame: {
      functionName,
      scriptId: synthetic ? '0' : '1',
      url: synthetic ? '' : 'file:///app/server.js',
      lineNumber: synthetic ? -1 : 10,
      columnNumber: synthetic ? -1 : 2,
    },
    children,
    ...extra,
  };
}

/** A profile whose samples (leaf node ids) each weigh 1 ms. */
export function profileOf(nodes: CpuProfileNode[], samples: number[]): CpuProfile {
  return {
    nodes,
    startTime: 1_000_000,
    endTime: 1_000_000 + samples.length * 1000,
    samples,
    timeDeltas: samples.map(() => 1000),
  };
}

/** A straight chain of `depth` frames of one recursive function under '(root)', every frame sampled once. */
export function deepRecursion(depth: number): CpuProfile {
  const nodes = [node(1, '(root)', [2])];
  for (let id = 2; id <= depth + 1; id++) {
    nodes.push(node(id, 'recurse', id <= depth ? [id + 1] : []));
  }
  return profileOf(
    nodes,
    nodes.slice(1).map((n) => n.id),
  );
}

/**
 * The microseconds each sample weighs, as weighProfile gives them: its delta (none below 0),
 * the first at most the mean of the others (its delta holds the profiler's start-up).
 */
export function weighedDeltas(deltas: readonly number[]): number[] {
  const rest = deltas.slice(1).map((d) => Math.max(0, d));
  const mean = rest.length ? rest.reduce((a, b) => a + b, 0) / rest.length : Infinity;
  return deltas.length ? [Math.min(Math.max(0, deltas[0]!), mean), ...rest] : [];
}
