/**
 * The typed messages between the main thread (agent) and the probe worker, and
 * the shape of a sample. Both sides import this file; nothing here runs code
 * except the layout constants of the shared heartbeat.
 */
import type { Frame, ProfileSummary } from './captures/cpuprofile.js';
import type { AllocationSummary } from './captures/heapprofile.js';
import type { RuleCondition, RuleFiring } from './worker/rules.js';
import type { WrittenCapture } from './sink/sink.js';
import type { SocketPicture, SocketsSettings } from './samplers/sockets.js';
import type { ResolvedProbe } from './net/probe-options.js';
import type { ProbeResult } from './net/probes.js';
import type { ResolvedHealthOptions } from './health/evaluate.js';
import type { ResolvedControlOptions } from './control/options.js';
import type { InFlightSnapshot } from './stalls/requests.js';
import type { ThreadObservation } from './stalls/cause.js';
import type { CgroupValues } from './containers/cgroup-values.js';

export type { Frame };

/** Slots of the heartbeat's shared BigInt64Array; all values are process.hrtime nanoseconds. */
export const Beat = {
  /** When the main thread's heartbeat last ran. */
  LAST: 0,
  /** Number of slots. */
  SIZE: 1,
} as const;

/**
 * The main thread's readings, one per sample interval, appended to a shared ring
 * for the worker: what only the main thread can read (its isolate, its loop) and
 * the process-wide counters that cost a syscall or two, so the worker need not wake
 * each interval to read them.
 */
export interface MainSample {
  /** Wall-clock time of the reading, ms since the epoch. */
  time: number;
  eventLoop?: {
    utilization: number;
    /** The longest the loop went without turning since the previous reading, ms (native watch: the longest turn; heartbeat: the longest gap between beats). */
    maxDelayMs: number;
  };
  /** Process CPU since process start, ms. */
  cpu?: { userMs: number; systemMs: number };
  /** V8's heap figures (one cheap call); RSS, ArrayBuffers and per-space figures are read elsewhere (see Sample, and the exporter). */
  memory?: {
    heapUsed: number; heapTotal: number; heapLimit: number; external: number;
    /** Heap used right after the last full GC (the live heap), and when that GC ended; needs the GC addon. */
    heapAfterGc?: number; heapAfterGcAt?: number;
  };
  /** Cumulative since start, by GC kind (major, minor, incremental, weakcb); reclaimed bytes need the GC addon. */
  gc?: Record<string, { count: number; durationMs: number; reclaimedBytes?: number }>;
  /** Active resources (handles and requests) on the main thread, by type. */
  handles?: Record<string, number>;
}

/** Per-thread CPU, from /proc/self/task. */
export interface ThreadCpu {
  tid: number;
  /** The kernel's thread name (comm), e.g. `node`, `libuv-worker`, `V8 DefaultWorke`. */
  name: string;
  /** What the thread is, where sysprobe can tell: `main`, `sysprobe-worker`, `libuv`, `v8`, or `other` (Node 20 names most of its threads `node`). */
  role: string;
  userMs: number;
  systemMs: number;
  /** Share of one CPU over the last interval, 0..1 (per thread, so at most ~1). */
  utilization: number;
}

/** One entry of the flight recorder. Every field is a number or a small record of numbers. */
export interface Sample {
  /** Wall-clock time the worker recorded it, ms since the epoch. */
  time: number;
  /** Length of the interval this sample covers, ms. */
  intervalMs: number;
  /**
   * True when the main thread was blocked: the worker recorded this sample during a
   * stall, and main-thread values (heap, GC, handles, utilization) are from its last reading.
   */
  mainStale: boolean;
  /**
   * sysprobe itself paused the main thread in this interval (a heap snapshot): the event-loop
   * figures include that pause, so rules on them skip this sample.
   */
  selfPaused?: boolean;
  eventLoop?: {
    /** The longest the loop went without turning during the interval, as the main thread measured it afterwards, ms. */
    delayMaxMs: number;
    /** Live samples only (mainStale): how long the loop had been blocked when the worker recorded this, ms; else 0. */
    lagMs: number;
    /** The larger of the two: the longest the loop went without turning, as far as this sample knows, ms. */
    lagMaxMs: number;
    utilization: number;
  };
  cpu?: {
    /** Cumulative process CPU since process start, ms. */
    userMs: number; systemMs: number;
    /** Share of one CPU over the interval (can exceed 1 with several threads busy). */
    utilization: number;
    /** The system's load average (1, 5, 15 min), where the worker read it (the samples that carry `threads`). */
    loadAverage?: [number, number, number];
    /** `utilization` as a share of the cgroup's CPU quota (1 = all of it), when there is a quota (Linux). */
    quotaUtilization?: number;
  };
  /** Per-thread CPU, read by the worker when it wakes (every few seconds, and each sample during a stall): present on those samples only. */
  threads?: ThreadCpu[];
  /** Heap figures each sample; `rss` where the worker read it (the samples that carry `threads`). */
  memory?: MainSample['memory'] & {
    rss?: number;
    /**
     * Sustained growth of the heap's floor (the low points the GCs bring it back to), fitted over
     * the last `growthWindowMs` (10 minutes by default, in floors of a twentieth of it), bytes per
     * minute; `heapGrowthR2` says how well a line fits (0..1). Absent until three floors are complete.
     */
    heapGrowthPerMin?: number;
    heapGrowthR2?: number;
    /** The same fit over RSS (read every few seconds): native memory a heap-only view misses. */
    rssGrowthPerMin?: number;
    rssGrowthR2?: number;
    /** The same fit over external memory (ArrayBuffers, Buffers, native objects held from JS). */
    externalGrowthPerMin?: number;
    externalGrowthR2?: number;
  };
  gc?: MainSample['gc'];
  /** The GC picture over the interval (from the cumulative totals of this sample and the one before). */
  gcRates?: {
    /** GCs per minute, all kinds. */
    perMin: number;
    /** Share of the interval spent in GC pauses, 0..1. */
    pauseShare: number;
    /** Bytes freed per minor or major GC on average; absent without the GC addon or when none ran. */
    reclaimedPerGc?: number;
  };
  handles?: MainSample['handles'];
  /**
   * This process's TCP sockets from the latest socket sweep (option `sockets`; Linux), on the
   * samples the worker read it for. The full picture is `probe.sockets()`.
   */
  sockets?: {
    total: number;
    /** By kernel state name: ESTABLISHED, SYN_SENT, CLOSE_WAIT, TIME_WAIT, LISTEN, ... */
    byState: Record<string, number>;
    sendQueueBytes: number;
    recvQueueBytes: number;
    /** The namespace's retransmitted TCP segments per second over the last sweep interval. */
    retransmitsPerSec?: number;
    /** Connections waiting for accept() on this process's listeners. */
    acceptQueue?: number;
    /** The namespace's cumulative TCP counters (for exporters). */
    tcp?: { outSegs: number; retransSegs: number; timeouts: number; listenOverflows: number; listenDrops: number };
    /** From ss: segments retransmitted over the lives of this process's sockets, summed. */
    socketRetransmits?: number;
  };
  /** This process's cgroup (Linux): CPU quota and throttling, memory limit and usage, on the samples the worker read it for (src/containers). */
  cgroup?: CgroupValues;
}

/** How the stack of a stall was taken, or why it was not. */
export interface StallCapture {
  /**
   * `debugger-pause`: paused in the JS that blocked the loop, while it was blocking.
   * `blocked-in-native`: the loop was blocked in native code (execSync, a sync crypto call, …);
   * the pause landed only when JS resumed, so the stack shows where, not the culprit.
   * `skipped`: not taken, see `reason` (the capture budget was spent, or the stall was sysprobe's
   * own heap snapshot). `failed`: see `reason`.
   */
  how: 'debugger-pause' | 'blocked-in-native' | 'skipped' | 'failed';
  /** When the worker learned of the stall (it had lasted the threshold), ms since the epoch. */
  detectedAt: number;
  /** When the main thread paused, ms since the epoch. */
  takenAt?: number;
  /** How long the main thread took to answer the capture's first (trivial) inspector command, ms: ~1 ms when it runs JS. */
  latencyMs?: number;
  reason?: string;
}

/** What a CPU profile capture wrote, and what it found. */
export interface CpuProfileResult {
  /** The .cpuprofile file (Chrome DevTools, speedscope). */
  file: string;
  /** The same profile as gzipped pprof (profile back ends such as Pyroscope). */
  pprofFile: string;
  /** The .cpuprofile's JSON sidecar: the summary, and the rule that triggered the capture, if one did. */
  sidecarFile: string;
  summary: ProfileSummary;
  /** The rule firing that triggered this capture; absent for a capture asked for directly. */
  trigger?: RuleFiring;
}

/** What an allocation profile capture wrote, and what it found. */
export interface AllocationProfileResult {
  /** The .heapprofile file (Chrome DevTools, Memory tab). */
  file: string;
  /** Its JSON sidecar: the summary, and the rule that triggered the capture, if one did. */
  sidecarFile: string;
  summary: AllocationSummary;
  trigger?: RuleFiring;
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

/** What the main thread can ask the worker. */
export type Request =
  | { kind: 'recent'; sinceMs: number | undefined }
  | { kind: 'captureStack' }
  | { kind: 'captureCpuProfile'; durationMs: number }
  | { kind: 'captureAllocationProfile'; durationMs: number }
  | { kind: 'sockets' }
  | { kind: 'probeStatus' }
  /** Writes an incident's samples.json: what it holds, plus the recorder's samples since `sinceTime` (src/worker/incident-samples.ts). */
  | { kind: 'writeSamples'; file: string; sinceTime: number; max: number };

/** What a `writeSamples` request wrote: how many samples, from and to when. */
export interface SamplesWritten { count: number; from: number | undefined; to: number | undefined }

export type MainToWorker =
  | { type: 'request'; id: number; request: Request }
  /** The main thread is about to pause itself on purpose (a heap snapshot), or has resumed: not a stall to capture. */
  | { type: 'selfPause'; active: boolean; reason: string }
  /** The open incident closed: each kind of rule capture may be taken again (src/agent/incidents.ts). */
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
  /** `throttledMs`: how long the cgroup's CPU quota stopped the process during the stall (Linux, with a CPU controller). */
  | { type: 'stall'; startedAt: number; durationMs: number; stack: Frame[] | undefined; capture: StallCapture; facts: StallWorkerFacts; throttledMs?: number }
  | { type: 'rule'; firing: RuleFiring; captures: RuleCaptures }
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

/** What the worker can ask the main thread. */
export type HostRequest = { kind: 'captureHeapSnapshot'; trigger: string } | { kind: 'diagnosticReport'; trigger: string };

/** Where the worker's endpoints listen (the address they bound), or why they could not. */
export interface EndpointsReady {
  health?: { address: string; port: number } | { error: string };
  control?: { address: string; port: number } | { error: string };
}

/** Settings the worker starts with (structured-cloned through workerData). */
export interface WorkerSettings {
  heartbeat: SharedArrayBuffer;
  /** A SharedJsonRing where the main thread appends a MainSample each interval. */
  mainRing: SharedArrayBuffer;
  sampleIntervalMs: number;
  heartbeatIntervalMs: number;
  stallThresholdMs: number;
  /** Where captures are written, and the most bytes they may take there. */
  dumpDir: string;
  dumpMaxBytes: number;
  serviceName: string;
  sysprobeVersion: string;
  /** How far back heap growth is fitted, ms. */
  growthWindowMs: number;
  /** Automatic captures (stall stacks, rule captures) allowed per minute. */
  capturesPerMinute: number;
  /** The rules' conditions and the captures each asks for (the rest of a rule stays on the main thread). */
  rules: Array<{ condition: RuleCondition; captureStack: boolean; cpuProfileMs: number | undefined; allocationProfileMs: number | undefined; markUnhealthy?: boolean }>;
  /** Who watches for stalls: the native addon's watchdog, or the worker reading the heartbeat. */
  loopWatch: 'native' | 'heartbeat';
  recorderWindowMs: number;
  mainTid: number;
  /** The shared table of HTTP requests in flight (src/stalls/requests.ts); absent when the requests sampler is off. */
  requestTable?: SharedArrayBuffer;
  samplers: { eventLoop: boolean; cpu: boolean; threads: boolean; memory: boolean };
  /** Incidents on: rule firings while one is open take no second capture of a kind it already has. */
  incidents?: boolean;
  /** The socket sampler's settings; absent when it is off. */
  sockets?: SocketsSettings;
  /** Synthetic transactions the worker runs (none: no runner). */
  probes: ResolvedProbe[];
  /** Health thresholds, and the endpoint's address when `health.port` is set. */
  health?: ResolvedHealthOptions;
  /** The control endpoint, when on. */
  control?: ResolvedControlOptions;
}
