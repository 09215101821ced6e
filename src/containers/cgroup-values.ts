/**
 * What the cgroup's readings mean over time: the share of enforcement periods that
 * were throttled, throttled time per second, memory usage against the limit, and CPU
 * against the quota. Pure, so it is tested on made-up readings.
 */
import type { CgroupCpu } from './cgroup-parse.js';
import type { CgroupReading } from './cgroup-reader.js';

/** The cgroup figures a sample carries (`Sample.cgroup`). Counters are cumulative; ratios cover the interval since the previous reading. */
export interface CgroupValues {
  cpu?: {
    /** The CPU quota in CPUs; absent when there is none. */
    quotaCores?: number;
    periods?: number;
    throttledPeriods?: number;
    throttledMs?: number;
    /** Throttled periods / elapsed periods over the interval, 0..1; absent when no period elapsed (an idle cgroup is not throttled). */
    throttledRatio?: number;
    /** ms the cgroup was stopped by its quota per second of wall time over the interval. */
    throttledMsPerSec?: number;
  };
  memory?: {
    limitBytes?: number;
    usageBytes?: number;
    /** Usage less inactive file cache (what the OOM killer acts on). */
    workingSetBytes?: number;
    peakBytes?: number;
    oomKills?: number;
    /** usage / limit, 0..1; absent without a limit. Page cache counts, so near 1 is not yet danger. */
    usageRatio?: number;
    /** working set / limit, 0..1; absent without a limit or a memory.stat: the one to alert on. */
    workingSetRatio?: number;
  };
}

/** A counter's growth, or undefined when either side lacks it or it went back (the cgroup was made anew). */
function grew(after: number | undefined, before: number | undefined): number | undefined {
  return after === undefined || before === undefined || after < before ? undefined : after - before;
}

/** The sample's cgroup figures from the latest reading, with the rates since the one before. */
export function cgroupValues(current: CgroupReading, previous: CgroupReading | undefined): CgroupValues {
  const values: CgroupValues = {};
  const cpu = current.cpu;
  if (cpu) {
    const out: NonNullable<CgroupValues['cpu']> = {};
    if (cpu.quotaCores !== undefined) out.quotaCores = cpu.quotaCores;
    if (cpu.periods !== undefined) out.periods = cpu.periods;
    if (cpu.throttledPeriods !== undefined) out.throttledPeriods = cpu.throttledPeriods;
    if (cpu.throttledMs !== undefined) out.throttledMs = cpu.throttledMs;
    const before = previous?.cpu;
    const periods = grew(cpu.periods, before?.periods);
    const throttled = grew(cpu.throttledPeriods, before?.throttledPeriods);
    if (periods !== undefined && throttled !== undefined && periods > 0)
      out.throttledRatio = Math.min(1, throttled / periods);
    const throttledMs = grew(cpu.throttledMs, before?.throttledMs);
    const elapsedMs = previous ? current.time - previous.time : 0;
    if (throttledMs !== undefined && elapsedMs > 0) out.throttledMsPerSec = (throttledMs / elapsedMs) * 1000;
    values.cpu = out;
  }
  const memory = current.memory;
  if (memory) {
    const out: NonNullable<CgroupValues['memory']> = {};
    if (memory.limitBytes !== undefined) out.limitBytes = memory.limitBytes;
    if (memory.usageBytes !== undefined) out.usageBytes = memory.usageBytes;
    if (memory.workingSetBytes !== undefined) out.workingSetBytes = memory.workingSetBytes;
    if (memory.peakBytes !== undefined) out.peakBytes = memory.peakBytes;
    if (memory.oomKills !== undefined) out.oomKills = memory.oomKills;
    if (memory.limitBytes !== undefined && memory.limitBytes > 0) {
      if (memory.usageBytes !== undefined) out.usageRatio = memory.usageBytes / memory.limitBytes;
      if (memory.workingSetBytes !== undefined) out.workingSetRatio = memory.workingSetBytes / memory.limitBytes;
    }
    values.memory = out;
  }
  return values;
}

/**
 * How long the cgroup was throttled between two readings of its CPU controller (a stall's
 * start and end), ms; undefined when either reading lacks the figure. Throttling is per
 * cgroup, not per thread: it says the process was stopped, and the stall overlapped it.
 */
export function throttledBetween(start: CgroupCpu | undefined, end: CgroupCpu | undefined): number | undefined {
  return grew(end?.throttledMs, start?.throttledMs);
}

/**
 * Process CPU in CPUs as a share of what the process may use: the cgroup's quota when it
 * has one, else the CPUs the host gives it (`os.availableParallelism()`). The semantic
 * conventions define `process.cpu.utilization` against "the CPUs available to the process",
 * which in a container with a quota is the quota: 0.2 CPUs busy under a 0.2 quota is 1, saturated.
 */
export function cpuShareOfAvailable(cpuCores: number, quotaCores: number | undefined, hostCpus: number): number {
  const available = quotaCores !== undefined && quotaCores > 0 ? Math.min(quotaCores, hostCpus) : hostCpus;
  return available > 0 ? cpuCores / available : 0;
}
