/**
 * A look inside a running probe, for tests, benchmarks and sysprobe's own start-up code:
 * its parts (probe/parts.ts: the resolved options, the worker supervisor, …). Not exported
 * from index.ts; nothing here is public API.
 */
import { ErrorCode, SysprobeError } from '../errors.js';
import { partsOfProbe, type Probe } from './probe.js';
import type { ProbeParts } from './parts.js';

export function probeInternals(probe: Probe): ProbeParts {
  const parts = partsOfProbe(probe);
  if (!parts)
    throw new SysprobeError(ErrorCode.INVALID_OPTION, 'probeInternals() needs a probe that start() returned.');
  return parts;
}
