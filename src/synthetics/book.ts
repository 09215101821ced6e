/**
 * The worker's book of probe results: counts, recent latencies and the baseline
 * rule per probe. `probe.probeStatus()` reads it; firings go out as rules.
 */
import type { RuleFiring } from '../rules/firing.js';
import { BaselineRule, quantile } from './baseline.js';
import type { ResolvedProbe } from './options.js';
import type { ProbeResult } from './runner.js';

/** Latencies kept per probe for the status percentiles. */
const RECENT_RUNS = 200;
/** A probe whose last this-many runs all failed (or timed out) is failing: a `dependency` health reason. */
export const FAILING_AFTER_RUNS = 3;

/** What {@link Probe.probeStatus} reports per probe. */
export interface ProbeStatus {
  name: string;
  target: string;
  /** The latest run, or undefined before the first finished. */
  lastResult: ProbeResult | undefined;
  successes: number;
  failures: number;
  timeouts: number;
  /** Over the last 200 runs that got an answer (timeouts count as the timeout), ms. */
  latencyMs: { p50: number; p99: number } | undefined;
  /** The baseline the latency rule compares with, ms; undefined until it has enough runs, or with `baseline: false`. */
  baselineMs: number | undefined;
  /** True while the latency rule's condition holds (latency or failures departed from the baseline). */
  firing: boolean;
  /** True when the last runs all failed or timed out (3 in a row). */
  failing: boolean;
}

class ProbeEntry {
  readonly probe: ResolvedProbe;
  readonly rule: BaselineRule | undefined;
  readonly latencies: number[] = [];
  lastResult: ProbeResult | undefined;
  successes = 0;
  failures = 0;
  timeouts = 0;
  failedInARow = 0;

  constructor(probe: ResolvedProbe) {
    this.probe = probe;
    this.rule = probe.baseline ? new BaselineRule(probe.name, probe.baseline) : undefined;
  }
}

export class ProbeBook {
  readonly #entries = new Map<string, ProbeEntry>();

  constructor(probes: readonly ResolvedProbe[]) {
    for (const probe of probes) this.#entries.set(probe.name, new ProbeEntry(probe));
  }

  /** Books one run; returns the rule firing it caused, if any. */
  record(result: ProbeResult): RuleFiring | undefined {
    const entry = this.#entries.get(result.name);
    if (!entry) return undefined;
    entry.lastResult = result;
    if (result.outcome === 'success') entry.successes++;
    else if (result.outcome === 'failure') entry.failures++;
    else entry.timeouts++;
    entry.failedInARow = result.outcome === 'success' ? 0 : entry.failedInARow + 1;
    if (result.outcome !== 'failure') {
      entry.latencies.push(result.phases.total);
      if (entry.latencies.length > RECENT_RUNS) entry.latencies.shift();
    }
    return entry.rule?.observe({ time: result.time, outcome: result.outcome, totalMs: result.phases.total });
  }

  /** Whether the probe's last FAILING_AFTER_RUNS runs all failed or timed out. */
  failing(name: string): boolean {
    return (this.#entries.get(name)?.failedInARow ?? 0) >= FAILING_AFTER_RUNS;
  }

  status(): ProbeStatus[] {
    return [...this.#entries.values()].map((e) => {
      const sorted = [...e.latencies].sort((a, b) => a - b);
      const view = e.rule?.view;
      return {
        name: e.probe.name,
        target: e.probe.target,
        lastResult: e.lastResult,
        successes: e.successes,
        failures: e.failures,
        timeouts: e.timeouts,
        latencyMs: sorted.length > 0 ? { p50: quantile(sorted, 0.5)!, p99: quantile(sorted, 0.99)! } : undefined,
        baselineMs: view?.baselineMs,
        firing: view?.firing ?? false,
        failing: this.failing(e.probe.name),
      };
    });
  }
}
