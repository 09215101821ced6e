/**
 * Writes profiles through the capture sink, like every other capture: the open format
 * (`.cpuprofile` for CPU, with a gzipped pprof twin; `.heapprofile` for allocations),
 * each with the sink's JSON sidecar holding the summary, the nodes' original positions
 * when source maps moved any (sourcemaps/profile-positions.ts), and, when a rule triggered it,
 * the firing. So profiles share the dump directory's free-space check, size cap,
 * partial-then-rename and rotation. Used by the probe worker and by profileThread().
 */
import * as path from 'node:path';
import type { AllocationProfileResult, CpuProfileResult } from './results.js';
import type { CaptureSink } from '../sink/sink.js';
import type { RuleFiring } from '../rules/firing.js';
import { summarizeProfile, type CpuProfile } from './cpuprofile.js';
import { summarizeAllocations, type AllocationProfile } from './heapprofile.js';
import { toPprof } from './pprof.js';
import type { SourceMaps } from '../sourcemaps/source-maps.js';
import { originalPositionsOf } from '../sourcemaps/profile-positions.js';

interface ProfileMeta {
  startedAtMs: number;
  durationMs: number;
  /** `main`, or `thread-<id>` for a profile an app thread took of itself (profileThread(), a worker-hosted probe). */
  thread: string;
  /** The thread's loop was blocked when the profile was asked for: it started this many ms late (a worker host's). */
  startedLateMs?: number | undefined;
  /** What a person must know to read the profile right (a worker host's late start or end). */
  note?: string | undefined;
  trigger?: RuleFiring | undefined;
  /** Maps positions through the scripts' source maps for the summary and pprof; the raw profile is written as V8 gave it (DevTools applies maps itself). */
  sourceMaps?: SourceMaps | undefined;
}

function sidecarOf(meta: ProfileMeta, summary: unknown): Record<string, unknown> {
  const { startedAtMs, durationMs, thread, trigger } = meta;
  return {
    profiledFrom: new Date(startedAtMs).toISOString(),
    durationMs,
    thread,
    summary,
    ...timingOf(meta),
    ...(trigger ? { trigger } : {}),
  };
}

/** A late start and its note, when there is one: in the sidecar and the result alike. */
function timingOf(meta: ProfileMeta): { startedLateMs?: number; note?: string } {
  return {
    ...(meta.startedLateMs !== undefined ? { startedLateMs: meta.startedLateMs } : {}),
    ...(meta.note !== undefined ? { note: meta.note } : {}),
  };
}

/** Writes a CPU profile as .cpuprofile and as gzipped pprof, each with its sidecar. */
export async function writeProfileFiles(
  sink: CaptureSink,
  profile: CpuProfile,
  meta: ProfileMeta,
): Promise<CpuProfileResult> {
  const original = meta.sourceMaps
    ? await meta.sourceMaps.resolver(profile.nodes.map((node) => node.callFrame))
    : undefined;
  const summary = summarizeProfile(profile, { original });
  // The profile stays as V8 gave it; its nodes' original positions ride in the sidecar for the report.
  const originalPositions = original ? originalPositionsOf(profile.nodes, original) : undefined;
  const main = await sink.write({
    kind: 'cpu-profile',
    extension: '.cpuprofile',
    sidecar: { ...sidecarOf(meta, summary), ...(originalPositions ? { originalPositions } : {}) },
    body: JSON.stringify(profile),
  });
  const pprof = await sink.write({
    kind: 'cpu-profile',
    extension: '.pb.gz',
    sidecar: { ...sidecarOf(meta, undefined), sameProfileAs: path.basename(main.file) },
    body: toPprof(profile, { startedAtMs: meta.startedAtMs, original }),
  });
  return {
    file: main.file,
    pprofFile: pprof.file,
    sidecarFile: main.sidecarFile,
    summary,
    profiledFrom: new Date(meta.startedAtMs).toISOString(),
    durationMs: meta.durationMs,
    ...timingOf(meta),
    ...(meta.trigger ? { trigger: meta.trigger } : {}),
  };
}

/** Writes a sampling heap profile as .heapprofile (DevTools) with its sidecar. */
export async function writeAllocationFiles(
  sink: CaptureSink,
  profile: AllocationProfile,
  meta: ProfileMeta,
): Promise<AllocationProfileResult> {
  const original = meta.sourceMaps ? await meta.sourceMaps.resolver(allocationFrames(profile)) : undefined;
  const summary = summarizeAllocations(profile, { original });
  const written = await sink.write({
    kind: 'allocation-profile',
    extension: '.heapprofile',
    sidecar: sidecarOf(meta, summary),
    body: JSON.stringify(profile),
  });
  return {
    file: written.file,
    sidecarFile: written.sidecarFile,
    summary,
    profiledFrom: new Date(meta.startedAtMs).toISOString(),
    durationMs: meta.durationMs,
    ...timingOf(meta),
    ...(meta.trigger ? { trigger: meta.trigger } : {}),
  };
}

/** Every frame of an allocation profile's tree (iteratively: trees can be deep); malformed nodes are left to the summary to report. */
function allocationFrames(profile: AllocationProfile): AllocationProfile['head']['callFrame'][] {
  const frames = [];
  const pending = [profile?.head];
  while (pending.length > 0 && frames.length < 1_000_000) {
    const node = pending.pop();
    if (typeof node !== 'object' || node === null || typeof node.callFrame !== 'object' || node.callFrame === null)
      continue;
    frames.push(node.callFrame);
    if (Array.isArray(node.children)) pending.push(...node.children);
  }
  return frames;
}
