/**
 * The probe latency rule: each probe is compared with its own recent past.
 *
 * The baseline is the median latency of the runs in the `windowMs` before the
 * recent window; the recent window is the last `forMs`. The rule fires when the
 * recent median (so at least half the recent runs, not one slow run) exceeds
 * `factor` × the baseline, or when at least half the recent runs failed and
 * that is more than twice the baseline's failure ratio. Then it rests for
 * `cooldownMs`. Pure and clock-free: time comes from the results, so it is
 * tested on made-up sequences.
 */
import type { ProbeRuleValue, RuleFiring } from '../rules/firing.js';
import type { ProbeBaselineOptions } from './options.js';

/** Probes' latency rules are named `probe-latency:<probe name>`. */
export const PROBE_RULE_PREFIX = 'probe-latency:';

/** What the rule needs of a run. */
export interface ProbeRun {
  /** When the run finished, ms since the epoch. */
  time: number;
  outcome: 'success' | 'failure' | 'timeout';
  /** Total duration, ms (a timeout counts as the timeout). */
  totalMs: number;
}

/** The baseline needs at least this many runs, and the recent window this many, before anything fires. */
const MIN_BASELINE_RUNS = 5;
const MIN_RECENT_RUNS = 3;
/** Below a few ms, loopback jitter alone is many times the baseline: a departure must also be this large. */
export const MIN_DEPARTURE_MS = 10;
const FAILING_RATIO = 0.5;
/** The most runs kept per probe (a 100 ms interval with an hour's window would be 36,000): the oldest go first. */
const MAX_RUNS = 10_000;

export function quantile(sorted: readonly number[], q: number): number | undefined {
  if (sorted.length === 0) return undefined;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

function sortedLatencies(runs: readonly ProbeRun[]): number[] {
  return runs
    .filter((r) => r.outcome !== 'failure')
    .map((r) => r.totalMs)
    .sort((a, b) => a - b);
}

function failureRatio(runs: readonly ProbeRun[]): number {
  return runs.length === 0 ? 0 : runs.filter((r) => r.outcome !== 'success').length / runs.length;
}

/** What the rule sees now, for probeStatus(). */
export interface BaselineView {
  baselineMs: number | undefined;
  /** True while the recent window is departing from the baseline (fired or resting). */
  firing: boolean;
}

export class BaselineRule {
  readonly #rule: string;
  readonly #options: Required<ProbeBaselineOptions>;
  /** Runs of the last windowMs + forMs, oldest first. */
  #runs: ProbeRun[] = [];
  #restUntil = 0;
  #view: BaselineView = { baselineMs: undefined, firing: false };

  constructor(probeName: string, options: Required<ProbeBaselineOptions>) {
    this.#rule = `${PROBE_RULE_PREFIX}${probeName}`;
    this.#options = options;
  }

  get view(): BaselineView {
    return this.#view;
  }

  /** Feeds one run (in time order); returns a firing when the rule fires. */
  observe(run: ProbeRun): RuleFiring | undefined {
    const { factor, forMs, windowMs, cooldownMs } = this.#options;
    const recentFrom = run.time - forMs;
    this.#runs.push(run);
    const keepFrom = recentFrom - windowMs;
    let drop = 0;
    while (drop < this.#runs.length && (this.#runs[drop]!.time <= keepFrom || this.#runs.length - drop > MAX_RUNS))
      drop++;
    if (drop > 0) this.#runs = this.#runs.slice(drop);
    const split = this.#runs.findIndex((r) => r.time > recentFrom);
    const before = this.#runs.slice(0, split);
    const recent = this.#runs.slice(split);
    const baselineMs = quantile(sortedLatencies(before), 0.5);
    this.#view = { baselineMs, firing: false };
    if (before.length < MIN_BASELINE_RUNS || recent.length < MIN_RECENT_RUNS) return undefined;

    const recentMs = quantile(sortedLatencies(recent), 0.5);
    const threshold =
      baselineMs === undefined ? undefined : Math.max(factor * baselineMs, baselineMs + MIN_DEPARTURE_MS);
    const ratio = failureRatio(recent);
    const failing = ratio >= FAILING_RATIO && ratio > 2 * failureRatio(before);
    const slow = threshold !== undefined && recentMs !== undefined && recentMs > threshold;
    this.#view = { baselineMs, firing: slow || failing };
    if (!(slow || failing) || run.time < this.#restUntil) return undefined;
    this.#restUntil = run.time + cooldownMs;
    const aboveForMs = run.time - recent[0]!.time;
    return slow
      ? {
          rule: this.#rule,
          value: 'probe.latencyMs',
          threshold: threshold!,
          observed: recentMs!,
          aboveForMs,
          firedAt: run.time,
        }
      : {
          rule: this.#rule,
          value: 'probe.failureRatio',
          threshold: Math.max(FAILING_RATIO, 2 * failureRatio(before)),
          observed: ratio,
          aboveForMs,
          firedAt: run.time,
        };
  }
}
