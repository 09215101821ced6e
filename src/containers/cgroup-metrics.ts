/**
 * The cgroup's instruments (Linux): the memory usage and working set under the semantic
 * conventions' container names, and `sysprobe.cgroup.*` for what they do not name (the CPU
 * quota and its throttling, the memory limit, peak and OOM kills). Read from the samples at
 * collection time, like the rest of the exporter; a limit that is not set is not observed.
 */
import type { BatchObservableResult, Meter, Observable } from '@opentelemetry/api';
import type { Sample } from '../samples/sample.js';

type Observe = (result: BatchObservableResult, recent: Sample[], latest: Sample | undefined) => void;

/** The instruments' names, for docs and tests. */
export const CGROUP_METRICS = {
  memoryUsage: 'container.memory.usage',
  workingSet: 'container.memory.working_set',
  cpuQuota: 'sysprobe.cgroup.cpu.quota',
  periods: 'sysprobe.cgroup.cpu.periods',
  throttledPeriods: 'sysprobe.cgroup.cpu.throttled_periods',
  throttledTime: 'sysprobe.cgroup.cpu.throttled_time',
  throttledRatio: 'sysprobe.cgroup.cpu.throttled_ratio',
  memoryLimit: 'sysprobe.cgroup.memory.limit',
  memoryPeak: 'sysprobe.cgroup.memory.peak',
  oomKills: 'sysprobe.cgroup.memory.oom_kills',
} as const;

/** Creates the instruments (through `track`, so they join the exporter's batch callback) and returns their observer. */
export function cgroupMetrics(meter: Meter, track: <T extends Observable>(instrument: T) => T): Observe {
  const upDown = (name: string, unit: string, description: string) =>
    track(meter.createObservableUpDownCounter(name, { unit, description }));
  const counter = (name: string, unit: string, description: string) =>
    track(meter.createObservableCounter(name, { unit, description }));
  const gauge = (name: string, unit: string, description: string) =>
    track(meter.createObservableGauge(name, { unit, description }));
  const m = CGROUP_METRICS;
  const usage = upDown(
    m.memoryUsage,
    'By',
    "Memory charged to this process's cgroup (memory.current; v1 memory.usage_in_bytes), page cache included.",
  );
  const workingSet = upDown(
    m.workingSet,
    'By',
    "The cgroup's memory usage less its inactive file cache: what the OOM killer and the kubelet act on.",
  );
  const quota = gauge(
    m.cpuQuota,
    '{cpu}',
    "The cgroup's CPU quota in CPUs (quota / period); absent when there is none.",
  );
  const periods = counter(m.periods, '{period}', 'CPU quota enforcement periods that elapsed while the cgroup ran.');
  const throttledPeriods = counter(
    m.throttledPeriods,
    '{period}',
    'Periods in which the cgroup used its whole quota and was stopped until the next one.',
  );
  const throttledTime = counter(m.throttledTime, 's', "Total time the cgroup's threads were stopped by the CPU quota.");
  const throttledRatio = gauge(
    m.throttledRatio,
    '1',
    'Throttled periods / elapsed periods between the last two cgroup readings, 0..1.',
  );
  const limit = upDown(m.memoryLimit, 'By', "The cgroup's memory limit; absent when unlimited.");
  const peak = upDown(
    m.memoryPeak,
    'By',
    'The most memory the cgroup was ever charged (memory.peak; v1 max_usage_in_bytes).',
  );
  const oomKills = counter(m.oomKills, '{kill}', "Processes the kernel's OOM killer killed in this cgroup.");
  let last: Sample['cgroup'];
  return (result, recent) => {
    // The worker reads the cgroup when it drains: the newest sample that carries it.
    last = recent.findLast((s) => s.cgroup)?.cgroup ?? last;
    if (!last) return;
    const { cpu, memory } = last;
    if (cpu?.quotaCores !== undefined) result.observe(quota, cpu.quotaCores);
    if (cpu?.periods !== undefined) result.observe(periods, cpu.periods);
    if (cpu?.throttledPeriods !== undefined) result.observe(throttledPeriods, cpu.throttledPeriods);
    if (cpu?.throttledMs !== undefined) result.observe(throttledTime, cpu.throttledMs / 1000);
    if (cpu?.throttledRatio !== undefined) result.observe(throttledRatio, cpu.throttledRatio);
    if (memory?.usageBytes !== undefined) result.observe(usage, memory.usageBytes);
    if (memory?.workingSetBytes !== undefined) result.observe(workingSet, memory.workingSetBytes);
    if (memory?.limitBytes !== undefined) result.observe(limit, memory.limitBytes);
    if (memory?.peakBytes !== undefined) result.observe(peak, memory.peakBytes);
    if (memory?.oomKills !== undefined) result.observe(oomKills, memory.oomKills);
  };
}
