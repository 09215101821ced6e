/**
 * The `incidents` option: on by default; `false` turns incidents off; an object tunes them.
 * Checked at start() like every other option.
 */
import { checkInteger, checkKnownKeys, checkPlainObject, describe, invalid } from '../internal/check-options.js';

/** How incidents open, grow and close. Every field is optional. */
export interface IncidentOptions {
  /** An incident closes once no trigger fired for this long, ms (100 to 3600000). Default 60000. */
  quietMs?: number;
  /** Samples kept from before the trigger, ms (0 to 24 h; the recorder's window bounds it). Default 5 minutes. */
  beforeMs?: number;
  /** An incident stays open at least this long after it opened, so samples after the trigger are kept, ms (0 to 1 h). Default 0 (quietMs decides). */
  afterMs?: number;
  /** An incident closes after this long whatever keeps firing, ms (1000 to 24 h). Default 30 minutes. */
  maxOpenMs?: number;
  /**
   * When an incident closes with two or more heap snapshots, diff them (`heap-diff.json`: what
   * grew, and the leak candidates with their retainer paths) in a child process with its own
   * memory limit, never in the service's heap. It reads every snapshot, so it costs the
   * machine about 1.5× their size in memory for a while. Default false.
   */
  heapDiff?: boolean;
}

/** Incidents after checking; `enabled: false` when the option was `false`. */
export interface ResolvedIncidentOptions {
  readonly enabled: boolean;
  readonly quietMs: number;
  readonly beforeMs: number;
  readonly afterMs: number;
  readonly maxOpenMs: number;
  readonly heapDiff: boolean;
}

const NAMES = ['quietMs', 'beforeMs', 'afterMs', 'maxOpenMs', 'heapDiff'] as const;
const HOUR_MS = 3_600_000;

/** Checks the option; the recorder's window bounds how far back samples can reach. Throws SYSPROBE_ERR_INVALID_OPTION. */
export function resolveIncidents(input: unknown, recorderWindowMs: number): ResolvedIncidentOptions {
  if (input === false || input === true || input === undefined) {
    return Object.freeze({
      enabled: input !== false,
      quietMs: 60_000,
      beforeMs: Math.min(5 * 60_000, recorderWindowMs),
      afterMs: 0,
      maxOpenMs: 30 * 60_000,
      heapDiff: false,
    });
  }
  if (typeof input !== 'object' || input === null)
    throw invalid(`Option incidents must be true, false or an object; got ${describe(input)}.`);
  const options = checkPlainObject('incidents', input);
  checkKnownKeys('incidents', options, NAMES);
  const quietMs = checkInteger('incidents.quietMs', options.quietMs, 100, HOUR_MS, 60_000);
  const beforeMs = checkInteger('incidents.beforeMs', options.beforeMs, 0, 24 * HOUR_MS, 5 * 60_000);
  const afterMs = checkInteger('incidents.afterMs', options.afterMs, 0, HOUR_MS, 0);
  const maxOpenMs = checkInteger('incidents.maxOpenMs', options.maxOpenMs, 1000, 24 * HOUR_MS, 30 * 60_000);
  const heapDiff = options.heapDiff ?? false;
  if (typeof heapDiff !== 'boolean')
    throw invalid(`Option incidents.heapDiff must be true or false; got ${describe(heapDiff)}.`);
  if (maxOpenMs < quietMs)
    throw invalid(`Option incidents.maxOpenMs (${maxOpenMs}) must be at least incidents.quietMs (${quietMs}).`);
  return Object.freeze({
    enabled: true,
    quietMs,
    beforeMs: Math.min(beforeMs, recorderWindowMs),
    afterMs,
    maxOpenMs,
    heapDiff,
  });
}
