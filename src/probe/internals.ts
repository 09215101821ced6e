/**
 * A look inside a running probe, for tests, benchmarks and sysprobe's own start-up code:
 * its parts (probe/parts.ts: the resolved options, the worker supervisor, …). Not exported
 * from index.ts; nothing here is public API.
 */
import { Probe } from './probe.js';
import type { ProbeParts } from './parts.js';

export function probeInternals(probe: Probe): ProbeParts {
  return Probe.unsafeParts(probe);
}
