/**
 * The `health` option: its shapes, defaults and ranges, checked once at start(). Imports only
 * the option checkers (src/internal/check-options.ts), like every feature's options.ts.
 */
import {
  checkHost,
  checkKnownKeys,
  checkNumber,
  checkPlainObject,
  checkPort,
  invalid,
} from '../internal/check-options.js';

/** A level pair: at or above `degraded` the status is degraded, at or above `unhealthy` unhealthy (Infinity: never). */
export interface HealthLevel {
  degraded: number;
  unhealthy: number;
}

/** Thresholds of health; `false` turns one check off. */
export interface HealthThresholds {
  /** The longest the event loop went without turning in the latest sample interval, ms. Default 500 / 2000. */
  eventLoopDelayMs?: Partial<HealthLevel> | false;
  /**
   * Event-loop utilization over the latest interval, 0..1. Default: degraded at 0.9, never unhealthy
   * (a busy loop that still turns is serving; a rule with `markUnhealthy` and a `forMs` is the tool
   * for "saturated for a while").
   */
  eventLoopUtilization?: Partial<HealthLevel> | false;
  /** Heap used as a share of V8's heap limit, 0..1. Default 0.85 / 0.95. */
  heapUsedRatio?: Partial<HealthLevel> | false;
  /** Resident set size, bytes. Default off (no sensible default: it depends on the container). */
  rssBytes?: Partial<HealthLevel> | false;
}

/** The `health` option of `start()`. */
export interface HealthOptions {
  /** Serve `GET /health` from the probe worker on this port (0: an ephemeral port, see `probe.healthAddress()`). Default: not served. */
  port?: number;
  /** The address to bind. Default `127.0.0.1` (loopback only). */
  host?: string;
  /** When the status turns degraded or unhealthy. */
  thresholds?: HealthThresholds;
  /** The `Retry-After` of a 503, seconds (1 to 3600). Default 5. */
  retryAfterSeconds?: number;
}

export type ResolvedThresholds = Readonly<Record<HealthThresholdName, Readonly<HealthLevel> | undefined>>;

export interface ResolvedHealthOptions {
  readonly port: number | undefined;
  readonly host: string;
  readonly thresholds: ResolvedThresholds;
  readonly retryAfterSeconds: number;
}

export type HealthThresholdName = 'eventLoopDelayMs' | 'eventLoopUtilization' | 'heapUsedRatio' | 'rssBytes';

const DEFAULT_THRESHOLDS: Record<HealthThresholdName, HealthLevel | undefined> = {
  eventLoopDelayMs: { degraded: 500, unhealthy: 2000 },
  eventLoopUtilization: { degraded: 0.9, unhealthy: Infinity },
  heapUsedRatio: { degraded: 0.85, unhealthy: 0.95 },
  rssBytes: undefined,
};
const THRESHOLD_RANGES: Record<HealthThresholdName, [number, number]> = {
  eventLoopDelayMs: [1, 3_600_000],
  eventLoopUtilization: [0, 1],
  heapUsedRatio: [0, 1],
  rssBytes: [1, 2 ** 50],
};

/** Checks the `health` option once; throws SYSPROBE_ERR_INVALID_OPTION. */
export function resolveHealthOptions(input: unknown): ResolvedHealthOptions {
  const options = input === undefined ? {} : checkPlainObject('health', input);
  checkKnownKeys('health', options, ['port', 'host', 'thresholds', 'retryAfterSeconds']);
  const { port, host = '127.0.0.1', thresholds = {}, retryAfterSeconds = 5 } = options as HealthOptions;
  return Object.freeze({
    port: checkPort('health.port', port),
    host: checkHost('health.host', host),
    thresholds: resolveThresholds(thresholds),
    retryAfterSeconds: checkNumber('health.retryAfterSeconds', retryAfterSeconds, 1, 3600, true),
  });
}

export function resolveThresholds(input: unknown): ResolvedThresholds {
  const given = checkPlainObject('health.thresholds', input);
  checkKnownKeys('health.thresholds', given, Object.keys(DEFAULT_THRESHOLDS));
  const out = {} as Record<HealthThresholdName, HealthLevel | undefined>;
  for (const name of Object.keys(DEFAULT_THRESHOLDS) as HealthThresholdName[]) {
    const raw = given[name];
    const where = `health.thresholds.${name}`;
    if (raw === false) {
      out[name] = undefined;
      continue;
    }
    const fallback = DEFAULT_THRESHOLDS[name];
    if (raw === undefined) {
      out[name] = fallback && Object.freeze({ ...fallback });
      continue;
    }
    const level = checkPlainObject(where, raw);
    checkKnownKeys(where, level, ['degraded', 'unhealthy']);
    const [min, max] = THRESHOLD_RANGES[name];
    const unhealthy =
      level.unhealthy === undefined
        ? (fallback?.unhealthy ?? Infinity)
        : checkNumber(`${where}.unhealthy`, level.unhealthy, min, max);
    const degraded =
      level.degraded === undefined
        ? Math.min(fallback?.degraded ?? unhealthy, unhealthy)
        : checkNumber(`${where}.degraded`, level.degraded, min, max);
    if (!Number.isFinite(degraded)) throw invalid(`Option ${where} needs degraded, unhealthy or both.`);
    if (degraded > unhealthy)
      throw invalid(`Option ${where}: degraded (${degraded}) must not be above unhealthy (${unhealthy}).`);
    out[name] = Object.freeze({ degraded, unhealthy });
  }
  return Object.freeze(out);
}
