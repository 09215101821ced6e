/**
 * The typed messages between the main thread (the probe) and the probe worker: requests and
 * their answers, and what the worker reports. Only messages live here; the shapes they carry
 * live with their features (samples/, stalls/, rules/, captures/, sockets/, synthetics/).
 */
import type { Frame } from './captures/cpuprofile.js';
import type { RuleCaptures } from './captures/results.js';
import type { RuleFiring } from './rules/firing.js';
import type { WrittenCapture } from './sink/sink.js';
import type { ProbeResult } from './synthetics/runner.js';
import type { StallCapture, StallThread } from './stalls/stall.js';
import type { InFlightSnapshot } from './stalls/requests.js';
import type { ThreadObservation } from './stalls/cause.js';
import type { CgroupValues } from './containers/cgroup-values.js';
import type { HealthReason } from './health/evaluate.js';

/** What the main thread can ask the worker. */
export type Request =
  | { kind: 'recent'; sinceMs: number | undefined }
  | { kind: 'captureStack' }
  | { kind: 'captureCpuProfile'; durationMs: number }
  | { kind: 'captureAllocationProfile'; durationMs: number }
  | { kind: 'sockets' }
  | { kind: 'probeStatus' }
  /** Writes an incident's samples.json: what it holds, plus the recorder's samples since `sinceTime` (src/incidents/samples.ts). */
  | { kind: 'writeSamples'; file: string; sinceTime: number; max: number };

export type MainToWorker =
  | { type: 'request'; id: number; request: Request }
  /**
   * The main thread is about to pause itself on purpose (a heap snapshot), or has resumed: the samples
   * it falls in are marked. (Whether a stall is that pause is read from shared memory: Beat.SELF_PAUSED.)
   */
  | { type: 'selfPause'; active: boolean }
  /** The open incident closed: each kind of rule capture may be taken again (src/incidents/recorder.ts). */
  | { type: 'incidentClosed' }
  /** The answer to a HostRequest. */
  | { type: 'hostResponse'; id: number; ok: true; value: unknown }
  | { type: 'hostResponse'; id: number; ok: false; error: { code: string; message: string } }
  | { type: 'stop' };

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

export type WorkerToMain =
  | { type: 'ready'; tid: number | undefined; servers?: EndpointsReady }
  /** The worker asks the main thread for what only it can do (the control endpoint's heap snapshot). */
  | { type: 'hostRequest'; id: number; request: HostRequest }
  | { type: 'response'; id: number; ok: true; value: unknown }
  | { type: 'response'; id: number; ok: false; error: { code: string; message: string } }
  | { type: 'log'; level: LogLevel; msg: string; fields: Record<string, unknown> }
  /** `facts.selfPaused`: the stall was sysprobe's own pause (a heap snapshot), not the app's: no incident.
   *  `throttledMs`: how long the cgroup's CPU quota stopped the process during the stall (Linux, with a CPU controller).
   *  `thread`: a thread registered with watchThread() stalled (absent: the probe's host thread). */
  | {
      type: 'stall';
      thread?: StallThread;
      startedAt: number;
      durationMs: number;
      stack: Frame[] | undefined;
      capture: StallCapture;
      facts: StallWorkerFacts;
      throttledMs?: number;
    }
  /** `unhealthy`: the worker decided the firing marks the process unhealthy until then (src/health/unhealthy.ts). */
  | { type: 'rule'; firing: RuleFiring; captures: RuleCaptures; unhealthy?: HealthReason }
  /** A capture the worker wrote is complete under its final name. */
  | { type: 'captured'; capture: WrittenCapture }
  /** A synthetic probe finished a run (for its metrics and the dependency map). */
  /** A synthetic probe's run, and whether its last runs all failed (the worker's ProbeBook decides). */
  | { type: 'probeResult'; result: ProbeResult; failing: boolean };

/** What the worker saw during a stall, for the main thread's explanation of it (src/stalls/). */
export interface StallWorkerFacts {
  /** The requests in flight when the stall was seen (from the shared request table). */
  requests?: InFlightSnapshot;
  /** The main thread's state and system call, when the stall was seen and each interval while it lasted. */
  observations: ThreadObservation[];
  /** The stall fell in sysprobe's own pause of the main thread (a heap snapshot). */
  selfPaused: boolean;
}

/** What the worker can ask the main thread (the probe's host thread). */
export type HostRequest =
  { kind: 'captureHeapSnapshot'; trigger: string } | { kind: 'diagnosticReport'; trigger: string } | HostProfileRequest;

/**
 * A profile of the probe's host thread when that thread is an app's worker, which the probe worker cannot reach
 * with the inspector: the host takes it of itself (src/captures/host-profiler.ts). `deadline` (ms since the epoch):
 * after it the probe worker no longer waits, and the host does not start it.
 */
export type HostProfileRequest =
  | { kind: 'hostCpuProfile'; durationMs: number; samplingIntervalUs: number; deadline: number }
  | { kind: 'hostAllocationProfile'; durationMs: number; samplingIntervalBytes: number; deadline: number };

/** Where the worker's endpoints listen (the address they bound), or why they could not. */
export interface EndpointsReady {
  health?: { address: string; port: number } | { error: string };
  control?: { address: string; port: number } | { error: string };
}
