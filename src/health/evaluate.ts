/**
 * Health: the pure part. Turns the latest readings, the rules that marked the process
 * unhealthy and any extra reasons into a status. No clock, no I/O, no thread of its
 * own: the main thread (`probe.health()`) and the probe worker (`GET /health`) both
 * call it, each with what it sees.
 */
import { describe } from '../internal/check-options.js';
import type { StallThread } from '../stalls/stall.js';
import type { HealthLevel, HealthThresholdName, ResolvedThresholds } from './options.js';
import type { MainSample, Sample } from '../samples/sample.js';
import type { ProbeStatus } from '../synthetics/book.js';

export type HealthStatus = 'ok' | 'degraded' | 'unhealthy';

/** One reason the process is not ok. */
export interface HealthReason {
  /** `eventLoopDelay`, `eventLoopUtilization`, `heap`, `rss`, `rule`, `dependency`, `blocked`, or a user source's kind. */
  kind: string;
  /** What a person reads first. */
  message: string;
  /** What this reason alone makes the status. */
  status: 'degraded' | 'unhealthy';
  /** The observed value, and the threshold it crossed, where there is one. */
  value?: number;
  threshold?: number;
  /** Rule reasons: the rule's name, and when it fired and stops counting (ms since the epoch). */
  rule?: string;
  since?: number;
  until?: number;
  /** Rule reasons: the same as `value` (the field name of sysprobe before 0.2). */
  observed?: number;
  /** Which source gave it (`addHealthSource` names). */
  source?: string;
}

/** The readings health looks at, whichever thread took them. */
export interface HealthReadings {
  eventLoopDelayMs?: number;
  eventLoopUtilization?: number;
  heapUsed?: number;
  heapLimit?: number;
  rss?: number;
}

/** What the worker's latest sample says. */
export function readingsFromSample(sample: Sample | undefined): HealthReadings {
  if (!sample) return {};
  return {
    eventLoopDelayMs: sample.eventLoop?.lagMaxMs,
    eventLoopUtilization: sample.eventLoop?.utilization,
    heapUsed: sample.memory?.heapUsed,
    heapLimit: sample.memory?.heapLimit,
    rss: sample.memory?.rss,
  };
}

/** What the main thread's latest reading says (RSS read by the caller). */
export function readingsFromMain(main: MainSample | undefined, rss: number | undefined): HealthReadings {
  return {
    eventLoopDelayMs: main?.eventLoop?.maxDelayMs,
    eventLoopUtilization: main?.eventLoop?.utilization,
    heapUsed: main?.memory?.heapUsed,
    heapLimit: main?.memory?.heapLimit,
    rss,
  };
}

/** The reasons the readings give against the thresholds. */
export function thresholdReasons(readings: HealthReadings, thresholds: ResolvedThresholds): HealthReason[] {
  const reasons: HealthReason[] = [];
  const check = (
    kind: string,
    value: number | undefined,
    level: HealthLevel | undefined,
    what: (v: number) => string,
    unit: (v: number) => string,
  ) => {
    if (value === undefined || !Number.isFinite(value) || !level) return;
    const status = value >= level.unhealthy ? 'unhealthy' : value >= level.degraded ? 'degraded' : undefined;
    if (!status) return;
    const threshold = status === 'unhealthy' ? level.unhealthy : level.degraded;
    reasons.push({ kind, status, value, threshold, message: `${what(value)} (${status} at ${unit(threshold)})` });
  };
  const ms = (v: number) => `${Math.round(v)} ms`;
  const pct = (v: number) => `${Math.round(v * 1000) / 10}%`;
  const mib = (v: number) => `${Math.round(v / 2 ** 20)} MiB`;
  check(
    'eventLoopDelay',
    readings.eventLoopDelayMs,
    thresholds.eventLoopDelayMs,
    (v) => `event loop delayed up to ${ms(v)}`,
    ms,
  );
  check(
    'eventLoopUtilization',
    readings.eventLoopUtilization,
    thresholds.eventLoopUtilization,
    (v) => `event loop ${pct(v)} busy`,
    pct,
  );
  const { heapUsed, heapLimit } = readings;
  if (heapUsed !== undefined && heapLimit) {
    check(
      'heap',
      heapUsed / heapLimit,
      thresholds.heapUsedRatio,
      (v) => `heap at ${pct(v)} of its limit (${mib(heapUsed)} of ${mib(heapLimit)})`,
      pct,
    );
  }
  check('rss', readings.rss, thresholds.rssBytes, (v) => `resident memory ${mib(v)}`, mib);
  return reasons;
}

/** What `probe.health()` and `GET /health` report. */
export interface Health {
  status: HealthStatus;
  /** False only when unhealthy: a degraded process still serves (and answers 200). */
  healthy: boolean;
  /** Worst first. */
  reasons: HealthReason[];
  /** When this was evaluated, ms since the epoch. */
  checkedAt: number;
  /** Only from the worker's endpoint: the main thread is blocked right now. */
  blocked?: BlockedInfo;
  /**
   * Only from the worker's endpoint: the worker threads registered with watchThread() that are blocked
   * right now. They do not change the status: the main thread still serves.
   */
  blockedThreads?: BlockedThreadInfo[];
}

/** A watched worker thread's current stall, as the worker sees it. */
export interface BlockedThreadInfo {
  thread: StallThread;
  /** How long its event loop has been blocked, ms. */
  forMs: number;
  /** The innermost frame of its stall's stack, when it was taken. */
  function?: string;
  file?: string;
  /** 1-based. */
  line?: number;
}

/** The main thread's current stall, as the worker sees it. */
export interface BlockedInfo {
  /** How long the event loop has been blocked, ms. */
  forMs: number;
  /** The innermost frame of the stall's stack, when it was taken. */
  function?: string;
  file?: string;
  /** 1-based. */
  line?: number;
  /** The HTTP requests in flight on the blocked thread, oldest first (path without its query string). */
  requests?: Array<{ method: string; path: string; startedAt: number; runningMs: number; traceId?: string }>;
  /** The system call the thread is blocked in, and what it waits on, when it is in one (native code). */
  syscall?: string;
  waitingOn?: string;
}

/** Combines reasons into a status: the worst of them. */
export function combine(reasons: HealthReason[], checkedAt: number, blocked?: BlockedInfo): Health {
  const sorted = [...reasons].sort((a, b) => rank(b.status) - rank(a.status));
  const status: HealthStatus = sorted.length === 0 ? 'ok' : sorted[0]!.status;
  return { status, healthy: status !== 'unhealthy', reasons: sorted, checkedAt, ...(blocked ? { blocked } : {}) };
}

function rank(status: HealthStatus): number {
  return status === 'unhealthy' ? 2 : status === 'degraded' ? 1 : 0;
}

/** Checks what a health source returned; a bad reason becomes an unhealthy reason that says so. */
export function sourceReasons(source: string, value: unknown): HealthReason[] {
  if (!Array.isArray(value))
    return [
      {
        kind: 'source',
        source,
        status: 'unhealthy',
        message: `health source "${source}" returned ${describe(value)}, not an array of reasons`,
      },
    ];
  return value.slice(0, 32).map((r: unknown): HealthReason => {
    const reason = (typeof r === 'object' && r !== null ? r : {}) as Partial<HealthReason>;
    const status = reason.status === 'degraded' ? 'degraded' : 'unhealthy';
    const message =
      typeof reason.message === 'string'
        ? reason.message.slice(0, 500)
        : `health source "${source}" reported a problem`;
    return {
      kind: typeof reason.kind === 'string' ? reason.kind.slice(0, 64) : 'source',
      source,
      status,
      message,
      ...(typeof reason.value === 'number' ? { value: reason.value } : {}),
      ...(typeof reason.threshold === 'number' ? { threshold: reason.threshold } : {}),
    };
  });
}

/**
 * Synthetic probes whose last runs all failed. A dead dependency makes this process degraded,
 * not unhealthy: taking every instance out of rotation for a dependency they share would turn
 * one outage into two.
 */
export function dependencyReasons(
  probes: ReadonlyArray<Pick<ProbeStatus, 'name' | 'target' | 'failing' | 'lastResult'>>,
): HealthReason[] {
  return probes
    .filter((p) => p.failing)
    .map((p) => ({
      kind: 'dependency',
      status: 'degraded' as const,
      source: p.name,
      message: `probe ${p.name} (${p.target}) failing${p.lastResult?.error ? `: ${p.lastResult.error}` : ''}`,
    }));
}

/** A rule with `markUnhealthy` that fired and is within its cooldown. */
export function ruleReason(
  firing: { rule: string; firedAt: number; observed: number; threshold: number; value: string },
  until: number,
): HealthReason {
  return {
    kind: 'rule',
    status: 'unhealthy',
    rule: firing.rule,
    since: firing.firedAt,
    until,
    value: firing.observed,
    observed: firing.observed,
    threshold: firing.threshold,
    message: `rule "${firing.rule}" fired: ${firing.value} was ${round(firing.observed)}, above ${round(firing.threshold)}`,
  };
}

function round(v: number): number {
  return Math.round(v * 1000) / 1000;
}
