/**
 * The rule values the cgroup gives (docs/rules.md): read from the samples that carry a
 * cgroup reading (the worker reads it when it drains, every 10 s at the defaults), absent
 * elsewhere, so a rule on them neither starts nor breaks a window between readings.
 */
import type { Sample } from '../samples/sample.js';

export type CgroupRuleValue =
  | 'cgroup.cpuThrottledRatio'
  | 'cgroup.cpuThrottledMsPerSec'
  | 'cgroup.cpuQuotaUtilization'
  | 'cgroup.memoryUsageRatio'
  | 'cgroup.memoryWorkingSetRatio';

export const CGROUP_RULE_VALUES: Record<CgroupRuleValue, (s: Sample) => number | undefined> = {
  /** Throttled periods / elapsed periods since the previous reading, 0..1: how often the quota stopped the process. */
  'cgroup.cpuThrottledRatio': (s) => s.cgroup?.cpu?.throttledRatio,
  /** ms the quota stopped the process per second of wall time since the previous reading. */
  'cgroup.cpuThrottledMsPerSec': (s) => s.cgroup?.cpu?.throttledMsPerSec,
  /** Process CPU over the interval as a share of the cgroup's CPU quota (1 = all of it); absent without a quota. */
  'cgroup.cpuQuotaUtilization': (s) => s.cpu?.quotaUtilization,
  /** Memory charged to the cgroup / its limit, 0..1 (page cache counts: near 1 is not yet danger). */
  'cgroup.memoryUsageRatio': (s) => s.cgroup?.memory?.usageRatio,
  /** The cgroup's working set / its limit, 0..1: how close the kernel's OOM killer is. */
  'cgroup.memoryWorkingSetRatio': (s) => s.cgroup?.memory?.workingSetRatio,
};
