/**
 * What a rule is and what its firing says, shared by the rule engine, the probes' baseline
 * rules, the captures, incidents, health and the public events. A leaf module.
 */

import type { CgroupRuleValue } from '../containers/cgroup-rule-values.js';

/** The sampled values a rule can watch. */
export type RuleValue =
  | 'eventLoop.utilization'
  | 'eventLoop.lagMaxMs'
  | 'cpu.utilization'
  | 'memory.heapUsed'
  | 'memory.heapLimitShare'
  | 'memory.rss'
  | 'memory.heapGrowthPerMin'
  | 'memory.rssGrowthPerMin'
  | 'memory.externalGrowthPerMin'
  | 'gc.perMin'
  | 'gc.reclaimedPerGc'
  | 'sockets.total'
  | 'sockets.established'
  | 'sockets.closeWait'
  | 'sockets.timeWait'
  | 'sockets.synSent'
  | 'sockets.sendQueueBytes'
  | 'sockets.recvQueueBytes'
  | 'sockets.acceptQueue'
  | 'tcp.retransmitsPerSec'
  | 'memory.liveHeapLimitShare'
  | CgroupRuleValue;

/** The values a probe rule fires on (they are not sampled values, so not in RULE_VALUES). */
export type ProbeRuleValue = 'probe.latencyMs' | 'probe.failureRatio';

/** True for a firing of a synthetic probe's baseline rule (its value is a probe's, not a sample's). */
export function isProbeRuleValue(value: RuleValue | ProbeRuleValue): value is ProbeRuleValue {
  return value === 'probe.latencyMs' || value === 'probe.failureRatio';
}

/** What a rule watches and when it fires (the actions live with the caller). */
export interface RuleCondition {
  name: string;
  value: RuleValue;
  above: number;
  forMs: number;
  cooldownMs: number;
}

/** A firing: which rule, and the values that fired it. */
export interface RuleFiring {
  rule: string;
  /** A sampled value, or a probe's latency or failure ratio (the `probe-latency:<name>` rules). */
  value: RuleValue | ProbeRuleValue;
  threshold: number;
  /** The value in the sample that completed the `forMs` window. */
  observed: number;
  /** How long the value had been above the threshold, ms. */
  aboveForMs: number;
  /** The sample time it fired at, ms since the epoch. */
  firedAt: number;
}
