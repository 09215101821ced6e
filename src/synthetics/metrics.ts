/**
 * The synthetic probes' instruments, recorded on the main thread as each run's
 * result arrives from the worker (one message per run, every intervalMs).
 */
import type { Attributes, Counter, Histogram, Meter } from '@opentelemetry/api';
import type { ProbePhases, ProbeResult } from './runner.js';

/** Bucket bounds (s): loopback connects are well under a millisecond, slow dependencies take seconds. */
const PROBE_BUCKETS_S = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
/** Phase names as they appear in the `sysprobe.probe.phase` attribute. */
const PHASES: ReadonlyArray<[keyof ProbePhases, string]> = [
  ['dns', 'dns'],
  ['connect', 'connect'],
  ['tls', 'tls'],
  ['firstByte', 'first_byte'],
  ['total', 'total'],
];

export class ProbeMetrics {
  readonly #duration: Histogram;
  readonly #results: Counter;

  constructor(meter: Meter) {
    this.#duration = meter.createHistogram('sysprobe.probe.duration', {
      description:
        'How long each phase of a successful synthetic probe run took (dns, connect, tls, first_byte, total), by probe.',
      unit: 's',
      advice: { explicitBucketBoundaries: PROBE_BUCKETS_S },
    });
    this.#results = meter.createCounter('sysprobe.probe.results', {
      description: 'Synthetic probe runs, by probe and sysprobe.probe.outcome: success, failure, timeout.',
      unit: '{run}',
    });
  }

  record(result: ProbeResult): void {
    const attributes: Attributes = { 'sysprobe.probe': result.name, 'sysprobe.probe.target': result.target };
    this.#results.add(1, { ...attributes, 'sysprobe.probe.outcome': result.outcome });
    // Failed and timed-out runs are counted, not timed: a refused connect is fast and would read as good latency.
    if (result.outcome !== 'success') return;
    for (const [key, phase] of PHASES) {
      const ms = result.phases[key];
      if (ms !== undefined) this.#duration.record(ms / 1000, { ...attributes, 'sysprobe.probe.phase': phase });
    }
  }
}
