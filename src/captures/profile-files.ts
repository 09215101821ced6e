/**
 * Writes a CPU profile the way every sysprobe capture does: `.cpuprofile` (DevTools,
 * speedscope), gzipped pprof (profile back ends) and a JSON manifest with the summary
 * and, when a rule triggered it, the firing. Used by the probe worker and by
 * profileThread(); never on the main thread of a probed app.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { CpuProfileResult } from '../protocol.js';
import type { RuleFiring } from '../worker/rules.js';
import { summarizeProfile, type CpuProfile } from './cpuprofile.js';
import { toPprof } from './pprof.js';

export async function writeProfileFiles(dumpDir: string, profile: CpuProfile, meta: {
  startedAtMs: number; durationMs: number; thread: string; trigger?: RuleFiring | undefined;
}): Promise<CpuProfileResult> {
  const stamp = new Date(meta.startedAtMs).toISOString().replace(/[:.]/g, '-');
  const base = path.join(dumpDir, `cpu-${stamp}-${process.pid}-${meta.thread}${meta.trigger ? `-${meta.trigger.rule}` : ''}`);
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
