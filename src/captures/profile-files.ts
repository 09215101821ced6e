/**
 * Writes profiles the way every sysprobe capture does: the open format (`.cpuprofile` and
 * gzipped pprof for CPU, `.heapprofile` for allocations) and a JSON manifest with the
 * summary and, when a rule triggered it, the firing. Used by the probe worker and by
 * profileThread(); never on the main thread of a probed app.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { AllocationProfileResult, CpuProfileResult } from '../protocol.js';
import type { RuleFiring } from '../worker/rules.js';
import { summarizeProfile, type CpuProfile } from './cpuprofile.js';
import { summarizeAllocations, type AllocationProfile } from './heapprofile.js';
import { toPprof } from './pprof.js';

function baseName(dumpDir: string, kind: string, startedAtMs: number, thread: string, trigger: RuleFiring | undefined): string {
  const stamp = new Date(startedAtMs).toISOString().replace(/[:.]/g, '-');
  return path.join(dumpDir, `${kind}-${stamp}-${process.pid}-${thread}${trigger ? `-${trigger.rule}` : ''}`);
}

/** Writes a sampling heap profile as .heapprofile (DevTools) and a manifest with its summary. */
export async function writeAllocationFiles(dumpDir: string, profile: AllocationProfile, meta: {
  startedAtMs: number; durationMs: number; trigger?: RuleFiring | undefined;
}): Promise<AllocationProfileResult> {
  const base = baseName(dumpDir, 'alloc', meta.startedAtMs, 'main', meta.trigger);
  await fs.promises.mkdir(dumpDir, { recursive: true });
  const result: AllocationProfileResult = {
    file: `${base}.heapprofile`, manifestFile: `${base}.json`,
    summary: summarizeAllocations(profile), ...(meta.trigger ? { trigger: meta.trigger } : {}),
  };
  await fs.promises.writeFile(result.file, JSON.stringify(profile));
  await fs.promises.writeFile(result.manifestFile, JSON.stringify({
    kind: 'allocation-profile', pid: process.pid, startedAt: meta.startedAtMs, durationMs: meta.durationMs, ...result,
  }, null, 2));
  return result;
}

export async function writeProfileFiles(dumpDir: string, profile: CpuProfile, meta: {
  startedAtMs: number; durationMs: number; thread: string; trigger?: RuleFiring | undefined;
}): Promise<CpuProfileResult> {
  const base = baseName(dumpDir, 'cpu', meta.startedAtMs, meta.thread, meta.trigger);
  await fs.promises.mkdir(dumpDir, { recursive: true });
  const result: CpuProfileResult = {
    file: `${base}.cpuprofile`, pprofFile: `${base}.pb.gz`, manifestFile: `${base}.json`,
    summary: summarizeProfile(profile), ...(meta.trigger ? { trigger: meta.trigger } : {}),
  };
  await fs.promises.writeFile(result.file, JSON.stringify(profile));
  await fs.promises.writeFile(result.pprofFile, toPprof(profile, { startedAtMs: meta.startedAtMs }));
  await fs.promises.writeFile(result.manifestFile, JSON.stringify({
    kind: 'cpu-profile', pid: process.pid, thread: meta.thread, startedAt: meta.startedAtMs, durationMs: meta.durationMs, ...result,
  }, null, 2));
  return result;
}
