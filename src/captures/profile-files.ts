/**
 * Writes profiles through the capture sink, like every other capture: the open format
 * (`.cpuprofile` for CPU, with a gzipped pprof twin; `.heapprofile` for allocations),
 * each with the sink's JSON sidecar holding the summary and, when a rule triggered it,
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

interface ProfileMeta {
  startedAtMs: number;
  durationMs: number;
  /** `main`, or `thread-<id>` for a profile an app thread took of itself. */
  thread: string;
  trigger?: RuleFiring | undefined;
}

function sidecarOf(meta: ProfileMeta, summary: unknown): Record<string, unknown> {
  const { startedAtMs, durationMs, thread, trigger } = meta;
  return { profiledFrom: new Date(startedAtMs).toISOString(), durationMs, thread, summary, ...(trigger ? { trigger } : {}) };
}

/** Writes a CPU profile as .cpuprofile and as gzipped pprof, each with its sidecar. */
export async function writeProfileFiles(sink: CaptureSink, profile: CpuProfile, meta: ProfileMeta): Promise<CpuProfileResult> {
  const summary = summarizeProfile(profile);
  const main = await sink.write({ kind: 'cpu-profile', extension: '.cpuprofile', sidecar: sidecarOf(meta, summary), body: JSON.stringify(profile) });
  const pprof = await sink.write({
    kind: 'cpu-profile', extension: '.pb.gz', sidecar: { ...sidecarOf(meta, undefined), sameProfileAs: path.basename(main.file) },
    body: toPprof(profile, { startedAtMs: meta.startedAtMs }),
  });
  return { file: main.file, pprofFile: pprof.file, sidecarFile: main.sidecarFile, summary, ...(meta.trigger ? { trigger: meta.trigger } : {}) };
}

/** Writes a sampling heap profile as .heapprofile (DevTools) with its sidecar. */
export async function writeAllocationFiles(sink: CaptureSink, profile: AllocationProfile, meta: ProfileMeta): Promise<AllocationProfileResult> {
  const summary = summarizeAllocations(profile);
  const written = await sink.write({ kind: 'allocation-profile', extension: '.heapprofile', sidecar: sidecarOf(meta, summary), body: JSON.stringify(profile) });
  return { file: written.file, sidecarFile: written.sidecarFile, summary, ...(meta.trigger ? { trigger: meta.trigger } : {}) };
}
