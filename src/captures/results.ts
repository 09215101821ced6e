/**
 * What the worker's captures return: profile results, and the captures taken for a rule
 * firing. A leaf: type imports only.
 */
import type { Frame, ProfileSummary } from './cpuprofile.js';
import type { AllocationSummary } from './heapprofile.js';
import type { RuleFiring } from '../rules/firing.js';
import type { SocketPicture } from '../sockets/sampler.js';

/** What a CPU profile capture wrote, and what it found. */
export interface CpuProfileResult {
  /** The .cpuprofile file (Chrome DevTools, speedscope). */
  file: string;
  /** The same profile as gzipped pprof (profile back ends such as Pyroscope). */
  pprofFile: string;
  /** The .cpuprofile's JSON sidecar: the summary, and the rule that triggered the capture, if one did. */
  sidecarFile: string;
  summary: ProfileSummary;
  /** When the profiler started, as an ISO time (the sidecar's `profiledFrom`). */
  profiledFrom: string;
  /** How long it profiled, ms: the duration the profile was started with (the sidecar's `durationMs`). */
  durationMs: number;
  /**
   * A probe started in a worker thread: that thread's loop was blocked when the profile was asked for, so the
   * profile started this many ms later, when the loop returned (absent when it started at once).
   */
  startedLateMs?: number;
  /** What to know to read the profile right, e.g. that it started or ended late because its thread was blocked. */
  note?: string;
  /** The rule firing that triggered this profile; absent for a capture asked for directly. */
  trigger?: RuleFiring;
  /**
   * True when this request joined a profile that was already running (asked for by another
   * caller, a rule or the control endpoint) instead of starting one: the files, the summary,
   * `profiledFrom`, `durationMs` and `trigger` are that profile's.
   */
  shared?: true;
}

/** What an allocation profile capture wrote, and what it found. */
export interface AllocationProfileResult {
  /** The .heapprofile file (Chrome DevTools, Memory tab). */
  file: string;
  /** Its JSON sidecar: the summary, and the rule that triggered the capture, if one did. */
  sidecarFile: string;
  summary: AllocationSummary;
  /** When sampling started, as an ISO time (the sidecar's `profiledFrom`). */
  profiledFrom: string;
  /** How long it sampled, ms: the duration the profile was started with. */
  durationMs: number;
  /** As CpuProfileResult.startedLateMs. */
  startedLateMs?: number;
  /** As CpuProfileResult.note. */
  note?: string;
  /** The rule firing that triggered this profile; absent for a capture asked for directly. */
  trigger?: RuleFiring;
  /** True when this request joined a profile already running: everything above is that profile's (see CpuProfileResult.shared). */
  shared?: true;
}

/** What the worker did for a rule that fired. */
export interface RuleCaptures {
  stack?: Frame[];
  cpuProfile?: CpuProfileResult;
  allocationProfile?: AllocationProfileResult;
  /** Taken by the main thread after the worker's captures (the writer must run in the snapshotted isolate). */
  heapSnapshot?: { file: string; sidecarFile: string; bytes: number; pauseMs: number };
  /** This process's sockets when a probe's latency rule fired (option `sockets`). */
  sockets?: SocketPicture;
  /** Node's diagnostic report, written by the main thread near a memory limit (src/crash). */
  diagnosticReport?: { file: string; sidecarFile: string; bytes: number };
  /** Captures that were skipped (budget) or failed, and why. */
  notTaken?: string[];
}

/** A rule that fired, and what the worker captured for it. */
export interface RuleEvent {
  firing: RuleFiring;
  captures: RuleCaptures;
}
