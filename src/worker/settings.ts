/**
 * What the probe worker starts with (structured-cloned through workerData): the resolved
 * options it reads, picked by name so they cannot drift from ResolvedOptions, plus the few
 * facts only the main thread knows at start (shared buffers, which loop watch, its thread id).
 */
import type { ResolvedOptions } from '../probe/options.js';
import type { ResolvedRule } from '../rules/options.js';

/** The worker's half of a rule: its condition and the captures it asks for (callbacks and heap snapshots stay on the main thread). */
export type WorkerRule = Pick<
  ResolvedRule,
  'condition' | 'captureStack' | 'cpuProfileMs' | 'allocationProfileMs' | 'markUnhealthy'
>;

/** The options the worker reads as they are (every one of them structured-cloneable). */
type WorkerOptions = Pick<
  ResolvedOptions,
  | 'serviceName'
  | 'sampleIntervalMs'
  | 'stallThresholdMs'
  | 'capturesPerMinute'
  | 'growthWindowMs'
  | 'recorderWindowMs'
  | 'dumpDir'
  | 'dumpMaxBytes'
  | 'samplers'
  | 'sockets'
  | 'probes'
  | 'health'
>;

/** The control option as the worker gets it: the token's SHA-256 instead of the token (a ControlToken does not clone). */
export interface WorkerControl {
  readonly port: number;
  readonly host: string;
  readonly ratePerMinute: number;
  readonly tokenDigest: Uint8Array;
}

/** What the main thread knows at start that the options do not say. */
export interface ThreadFacts {
  /** The heartbeat's shared slots (see stalls/stall.ts, Beat). */
  heartbeat: SharedArrayBuffer;
  /** A SharedJsonRing where the main thread appends a MainSample each interval. */
  mainRing: SharedArrayBuffer;
  heartbeatIntervalMs: number;
  /** Who watches for stalls: the native addon's watchdog, or the worker reading the heartbeat. */
  loopWatch: 'native' | 'heartbeat';
  /** The native loop watch's id of the host thread's loop (0 with the heartbeat). */
  loopId: number;
  /** The kernel thread id of the probe's host thread (the main thread's is the pid). */
  mainTid: number;
  /** The host thread's id in native/thread_stack.cc when the host is a worker thread (-1: the addon is missing); 0 for the main thread. */
  stackHost: number;
  sysprobeVersion: string;
  /** The shared table of HTTP requests in flight (src/stalls/requests.ts); absent when the requests sampler is off. */
  requestTable?: SharedArrayBuffer;
  /** The process's table of threads registered with watchThread() (src/stalls/thread-table.ts); only a main-thread probe has it. */
  threadTable?: SharedArrayBuffer;
}

export interface WorkerSettings extends WorkerOptions, ThreadFacts {
  readonly control: WorkerControl | undefined;
  /** The rules' conditions and the captures each asks for. */
  readonly rules: readonly WorkerRule[];
  /** Incidents on: rule firings while one is open take no second capture of a kind it already has. */
  readonly incidents: boolean;
}

/** The worker's settings from the resolved options: the only place they are chosen. */
export function workerSettings(options: ResolvedOptions, facts: ThreadFacts): WorkerSettings {
  const {
    serviceName,
    sampleIntervalMs,
    stallThresholdMs,
    capturesPerMinute,
    growthWindowMs,
    recorderWindowMs,
    dumpDir,
    dumpMaxBytes,
    samplers,
    sockets,
    probes,
    health,
    control,
  } = options;
  return {
    ...facts,
    serviceName,
    sampleIntervalMs,
    stallThresholdMs,
    capturesPerMinute,
    growthWindowMs,
    recorderWindowMs,
    dumpDir,
    dumpMaxBytes,
    samplers,
    sockets,
    probes,
    health,
    control: control && {
      port: control.port,
      host: control.host,
      ratePerMinute: control.ratePerMinute,
      tokenDigest: control.token.digest(),
    },
    rules: options.rules.map(({ condition, captureStack, cpuProfileMs, allocationProfileMs, markUnhealthy }) => ({
      condition,
      captureStack,
      cpuProfileMs,
      allocationProfileMs,
      markUnhealthy,
    })),
    incidents: options.incidents.enabled,
  };
}
