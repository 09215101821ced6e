/**
 * The `rules` option: what users write, how it is checked at start(), and the
 * defaults a production service can leave on. The worker evaluates the
 * conditions (rules/engine.ts); the main thread keeps what only it can run
 * (user functions, the health mark).
 */
import { checkInteger, checkKnownKeys, checkPlainObject, describe, invalid } from '../internal/check-options.js';
import { RULE_VALUES } from './engine.js';
import type { RuleCondition, RuleFiring, RuleValue } from './firing.js';

/**
 * What a rule does when it fires (every firing is also logged and counted):
 * `'captureStack'` the main thread's JS stack; `{ captureCpuProfile: { durationMs } }` a CPU
 * profile into dumpDir; `{ captureAllocationProfile: { durationMs } }` the stacks that allocate
 * (V8's sampling heap profiler) into dumpDir; `'captureHeapSnapshot'` a heap snapshot (within the safety checks and
 * the daily budget); `'markUnhealthy'` makes `probe.health()` report the process unhealthy
 * for the rule's cooldown; a function is called on the main thread with the firing.
 */
export type RuleAction =
  | 'captureStack'
  | 'markUnhealthy'
  | 'captureHeapSnapshot'
  | { captureCpuProfile: { durationMs: number } }
  | { captureAllocationProfile: { durationMs: number } }
  | ((firing: RuleFiring) => void);

/** A rule: fire when `value` stays above `above` for `forMs`, then rest for `cooldownMs`. */
export interface RuleOptions {
  /** Unique; names the rule in logs, metrics and captures. */
  name: string;
  /** One of `eventLoop.utilization` (0..1), `eventLoop.lagMaxMs`, `cpu.utilization` (CPUs busy), `memory.heapUsed` (bytes), `memory.heapLimitShare` (0..1), `memory.rss` (bytes), `memory.heapGrowthPerMin` (bytes/min, sustained); with the `sockets` option, `sockets.total`, `sockets.closeWait`, `tcp.retransmitsPerSec` and the rest in docs/network.md. */
  value: RuleValue;
  above: number;
  /** How long the value must stay above, ms (0 to 1 h). Default 0: the first sample above fires. */
  forMs?: number;
  /** Rest after a firing, ms (0 to 24 h). Default 15 minutes. */
  cooldownMs?: number;
  actions: RuleAction[];
}

/** A checked rule, split by thread: the condition and captures go to the worker, the rest stays. */
export interface ResolvedRule {
  condition: RuleCondition;
  captureStack: boolean;
  cpuProfileMs: number | undefined;
  allocationProfileMs: number | undefined;
  markUnhealthy: boolean;
  captureHeapSnapshot: boolean;
  callbacks: Array<(firing: RuleFiring) => void>;
}

/**
 * On by default (`defaultRules: false` turns them off): a CPU profile when the loop or the CPU
 * stays busy; heap snapshots while the heap keeps growing (the first is the baseline, later
 * ones after each cooldown let a diff separate new objects from old).
 */
export const DEFAULT_RULES: readonly RuleOptions[] = [
  {
    name: 'heap-growing',
    value: 'memory.heapGrowthPerMin',
    above: 1024 * 1024,
    forMs: 5 * 60_000,
    cooldownMs: 30 * 60_000,
    actions: ['captureHeapSnapshot'],
  },
  {
    name: 'loop-saturated',
    value: 'eventLoop.utilization',
    above: 0.9,
    forMs: 10_000,
    actions: [{ captureCpuProfile: { durationMs: 5000 } }],
  },
  {
    name: 'cpu-high',
    value: 'cpu.utilization',
    above: 0.9,
    forMs: 30_000,
    actions: [{ captureCpuProfile: { durationMs: 5000 } }],
  },
];

const RULE_KEYS = ['name', 'value', 'above', 'forMs', 'cooldownMs', 'actions'] as const;
const MAX_RULES = 50;

export function resolveRules(input: unknown, defaults: boolean): ResolvedRule[] {
  if (input !== undefined && !Array.isArray(input))
    throw invalid(`Option rules must be an array of rules; got ${describe(input)}.`);
  const rules = [...(defaults ? DEFAULT_RULES : []), ...((input as unknown[] | undefined) ?? [])];
  if (rules.length > MAX_RULES)
    throw invalid(`Option rules may hold at most ${MAX_RULES} rules (with the defaults); got ${rules.length}.`);
  const names = new Set<string>();
  return rules.map((raw, i) => {
    const where = `rules[${i}]`;
    const rule = checkPlainObject(where, raw);
    checkKnownKeys(where, rule, RULE_KEYS);
    const { name, value, above, actions } = rule;
    if (typeof name !== 'string' || name.length === 0 || name.length > 100)
      throw invalid(
        `Option ${where}.name must be a non-empty string of at most 100 characters; got ${describe(name)}.`,
      );
    if (names.has(name))
      throw invalid(
        `Option ${where}.name "${name}" is used twice${defaults ? ' (the default rules are heap-growing, loop-saturated and cpu-high)' : ''}.`,
      );
    names.add(name);
    if (typeof value !== 'string' || !(value in RULE_VALUES))
      throw invalid(
        `Option ${where}.value must be one of ${Object.keys(RULE_VALUES).join(', ')}; got ${describe(value)}.`,
      );
    if (typeof above !== 'number' || !Number.isFinite(above))
      throw invalid(`Option ${where}.above must be a finite number; got ${describe(above)}.`);
    const forMs = checkInteger(`${where}.forMs`, rule.forMs, 0, 3600_000, 0);
    const cooldownMs = checkInteger(`${where}.cooldownMs`, rule.cooldownMs, 0, 24 * 3600_000, 15 * 60_000);
    if (!Array.isArray(actions) || actions.length === 0)
      throw invalid(`Option ${where}.actions must be a non-empty array; got ${describe(actions)}.`);
    const resolved: ResolvedRule = {
      condition: { name, value: value as RuleValue, above, forMs, cooldownMs },
      captureStack: false,
      cpuProfileMs: undefined,
      allocationProfileMs: undefined,
      markUnhealthy: false,
      captureHeapSnapshot: false,
      callbacks: [],
    };
    for (const action of actions as unknown[]) {
      if (action === 'captureStack') resolved.captureStack = true;
      else if (action === 'markUnhealthy') resolved.markUnhealthy = true;
      else if (action === 'captureHeapSnapshot') resolved.captureHeapSnapshot = true;
      else if (typeof action === 'function') resolved.callbacks.push(action as (firing: RuleFiring) => void);
      else if (typeof action === 'object' && action !== null && 'captureCpuProfile' in action) {
        const profile = checkPlainObject(
          `${where}.actions captureCpuProfile`,
          (action as { captureCpuProfile: unknown }).captureCpuProfile,
        );
        resolved.cpuProfileMs = checkInteger(
          `${where}.actions captureCpuProfile.durationMs`,
          profile.durationMs,
          10,
          600_000,
          5000,
        );
      } else if (typeof action === 'object' && action !== null && 'captureAllocationProfile' in action) {
        const profile = checkPlainObject(
          `${where}.actions captureAllocationProfile`,
          (action as { captureAllocationProfile: unknown }).captureAllocationProfile,
        );
        resolved.allocationProfileMs = checkInteger(
          `${where}.actions captureAllocationProfile.durationMs`,
          profile.durationMs,
          10,
          600_000,
          10_000,
        );
      } else {
        throw invalid(
          `Option ${where}.actions: each action must be 'captureStack', 'captureHeapSnapshot', 'markUnhealthy', { captureCpuProfile: { durationMs } }, { captureAllocationProfile: { durationMs } } or a function; got ${describe(action)}.`,
        );
      }
    }
    return resolved;
  });
}
