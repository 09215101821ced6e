/**
 * Rules: declarative triggers over the sampled values. A rule fires when its
 * value stays above the threshold for `forMs`, then rests for `cooldownMs`.
 * The worker feeds each sample in as it records it; what to do on a firing
 * (capture, log, count, mark unhealthy, call the user) is the caller's.
 * Pure and clock-free (time comes from the samples), so it is tested on
 * made-up sample sequences.
 */
import type { Sample } from '../samples/sample.js';
import type { RuleCondition, RuleFiring, RuleValue } from './firing.js';
import { CGROUP_RULE_VALUES } from '../containers/cgroup-rule-values.js';
import { oldGenerationLimit } from '../crash/near-limit.js';
import { processOldSpaceFlag } from '../crash/old-space-flag.js';

/** The firing the worker reports when the process comes near its heap or memory limit (src/crash). */
export const NEAR_LIMIT_RULE = 'near-limit';

/** How each value is read from a sample. */
export const RULE_VALUES: Record<RuleValue, (s: Sample) => number | undefined> = {
  /** Event-loop utilization over the sample interval, 0..1 (event-loop values skip samples sysprobe paused itself). */
  'eventLoop.utilization': (s: Sample) => (s.selfPaused ? undefined : s.eventLoop?.utilization),
  /** The longest the loop went without turning in the interval, ms. */
  'eventLoop.lagMaxMs': (s: Sample) => (s.selfPaused ? undefined : s.eventLoop?.lagMaxMs),
  /** Process CPU over the interval, in CPUs (1 = one core busy). */
  'cpu.utilization': (s: Sample) => s.cpu?.utilization,
  /** V8 heap used, bytes. */
  'memory.heapUsed': (s: Sample) => s.memory?.heapUsed,
  /** Heap used as a share of V8's heap limit, 0..1: how close to an out-of-memory crash. */
  'memory.heapLimitShare': (s: Sample) => (s.memory ? s.memory.heapUsed / s.memory.heapLimit : undefined),
  /** The heap after the last full GC / what V8 lets the old generation grow to (`--max-old-space-size`, else its limit less the young generation's room), 0..1; needs the GC addon. */
  'memory.liveHeapLimitShare': (s: Sample) =>
    s.memory?.heapAfterGc !== undefined
      ? s.memory.heapAfterGc / oldGenerationLimit(s.memory.heapLimit, processOldSpaceFlag())
      : undefined,
  /** Resident set size, bytes (on the samples the worker read it for: every few seconds). */
  'memory.rss': (s: Sample) => s.memory?.rss,
  /** Sustained heap growth, bytes per minute; 0 unless a line explains the heap's floors (r² >= 0.5), so noise does not fire. */
  'memory.heapGrowthPerMin': (s: Sample) => trusted(s.memory?.heapGrowthPerMin, s.memory?.heapGrowthR2),
  /** Sustained RSS growth (native memory included), bytes per minute; 0 unless r² >= 0.5. */
  'memory.rssGrowthPerMin': (s: Sample) => trusted(s.memory?.rssGrowthPerMin, s.memory?.rssGrowthR2),
  /** Sustained growth of external memory (ArrayBuffers, Buffers), bytes per minute; 0 unless r² >= 0.5. */
  'memory.externalGrowthPerMin': (s: Sample) => trusted(s.memory?.externalGrowthPerMin, s.memory?.externalGrowthR2),
  /** Garbage collections per minute over the interval, all kinds. */
  'gc.perMin': (s: Sample) => s.gcRates?.perMin,
  /** Bytes each GC reclaimed on average over the interval (with the native addon; absent without it). */
  'gc.reclaimedPerGc': (s: Sample) => s.gcRates?.reclaimedPerGc,
  /** This process's TCP sockets, all states (option `sockets`; on the samples a sweep was read for). */
  'sockets.total': (s: Sample) => s.sockets?.total,
  /** ... in ESTABLISHED. */
  'sockets.established': (s: Sample) => socketsIn(s, 'ESTABLISHED'),
  /** ... in CLOSE_WAIT: the peer closed and this process has not; a steady rise is a descriptor leak. */
  'sockets.closeWait': (s: Sample) => socketsIn(s, 'CLOSE_WAIT'),
  /** ... in TIME_WAIT on this process's listening ports. */
  'sockets.timeWait': (s: Sample) => socketsIn(s, 'TIME_WAIT'),
  /** ... in SYN_SENT: connects waiting for an answer. */
  'sockets.synSent': (s: Sample) => socketsIn(s, 'SYN_SENT'),
  /** Bytes sent and not yet acknowledged, all sockets. */
  'sockets.sendQueueBytes': (s: Sample) => s.sockets?.sendQueueBytes,
  /** Bytes received and not yet read by the app, all sockets. */
  'sockets.recvQueueBytes': (s: Sample) => s.sockets?.recvQueueBytes,
  /** Connections waiting for accept() on this process's listeners. */
  'sockets.acceptQueue': (s: Sample) => s.sockets?.acceptQueue,
  /** The network namespace's retransmitted TCP segments per second over the last sweep. */
  'tcp.retransmitsPerSec': (s: Sample) => s.sockets?.retransmitsPerSec,
  ...CGROUP_RULE_VALUES,
};

function socketsIn(s: Sample, state: string): number | undefined {
  return s.sockets ? (s.sockets.byState[state] ?? 0) : undefined;
}

/** A fitted rate counts only when a line explains the points (r² >= 0.5); else 0, so noise does not fire. */
function trusted(rate: number | undefined, r2: number | undefined): number | undefined {
  return rate === undefined ? undefined : (r2 ?? 0) >= 0.5 ? rate : 0;
}

/**
 * Process CPU in sysprobe's own first second is sysprobe starting (its worker boots: measured
 * here ~0.5 CPU over the first ~300 ms interval, longer under load), not the service: a short
 * `cpu.utilization` rule fired on it and opened an incident before anything happened. Those
 * samples are not judged for the values start-up inflates (they stay in the recorder).
 */
export const START_UP_MS = 1000;
const INFLATED_BY_START_UP: ReadonlySet<RuleValue> = new Set<RuleValue>(['cpu.utilization']);

interface RuleState {
  aboveSince: number | undefined;
  restUntil: number;
}

export class RuleEngine {
  readonly #rules: readonly RuleCondition[];
  readonly #state = new Map<string, RuleState>();
  #firstSampleAt: number | undefined;

  constructor(rules: readonly RuleCondition[]) {
    this.#rules = rules;
    for (const rule of rules) this.#state.set(rule.name, { aboveSince: undefined, restUntil: 0 });
  }

  /** Feeds one sample (in time order); returns the rules it fired. */
  observe(sample: Sample): RuleFiring[] {
    const firings: RuleFiring[] = [];
    this.#firstSampleAt ??= sample.time;
    const startingUp = sample.time - sample.intervalMs < this.#firstSampleAt + START_UP_MS;
    for (const rule of this.#rules) {
      const state = this.#state.get(rule.name)!;
      const observed = startingUp && INFLATED_BY_START_UP.has(rule.value) ? undefined : RULE_VALUES[rule.value](sample);
      // A sample without the value (its sampler is off) neither starts nor breaks a window.
      if (observed === undefined) continue;
      if (!(observed > rule.above)) {
        state.aboveSince = undefined;
        continue;
      }
      // The window starts at the beginning of the first interval above the threshold.
      state.aboveSince ??= sample.time - sample.intervalMs;
      const aboveForMs = sample.time - state.aboveSince;
      if (aboveForMs >= rule.forMs && sample.time >= state.restUntil) {
        firings.push({
          rule: rule.name,
          value: rule.value,
          threshold: rule.above,
          observed,
          aboveForMs,
          firedAt: sample.time,
        });
        state.restUntil = sample.time + rule.cooldownMs;
        state.aboveSince = undefined; // a new window after the cooldown
      }
    }
    return firings;
  }
}
