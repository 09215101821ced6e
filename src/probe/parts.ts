/**
 * What a running probe is made of on the main thread: built once by `wireProbe()`
 * (probe/wiring.ts), read by the public facade (probe/probe.ts) and by the handling of the
 * worker's messages (probe/worker-messages.ts). Types only.
 */
import type { Logger, ResolvedOptions } from './options.js';
import type { EndpointsReady } from '../protocol.js';
import type { OtelExporter } from '../metrics/otel.js';
import type { LagSamples, LoopWatchAddon, LoopWatchKind } from '../stalls/loop-watch.js';
import type { GcObserver } from '../memory/gc.js';
import type { JobGuard } from '../jobs/guard.js';
import type { Heartbeat } from '../stalls/heartbeat.js';
import type { Sample } from '../samples/sample.js';
import type { HeapSnapshots } from '../heap/snapshots.js';
import type { HostProfiler } from '../captures/host-profiler.js';
import type { BoundedCache, CacheWatcher } from '../caches/caches.js';
import type { CaptureSink, WrittenCapture } from '../sink/sink.js';
import type { WorkerSupervisor } from './supervisor.js';
import type { IncidentRecorder } from '../incidents/recorder.js';
import type { DependencyMap } from '../dependencies/map.js';
import type { ProbeResult } from '../synthetics/runner.js';
import type { RequestTracker } from '../stalls/requests.js';
import type { StallExplainer } from '../stalls/explain.js';
import type { CrashEvidence } from '../crash/startup.js';
import type { UnhealthyRules } from '../health/unhealthy.js';
import type { ThreadTable } from '../stalls/thread-table.js';

/** Which loop watch runs, and why not the native one when it does not. */
export interface LoopWatchChoice {
  kind: LoopWatchKind;
  addon: LoopWatchAddon | undefined;
  /** The hooked loop's id in the addon (0 with the heartbeat). */
  loopId: number;
  lag: LagSamples | undefined;
  why: string | undefined;
  /** The watchdog parks while the loop waits (woken by its next JS entry); false: it looks every threshold. */
  parks: boolean;
}

export interface ProbeParts {
  readonly options: ResolvedOptions;
  readonly version: string;
  readonly logger: Logger;
  readonly exporter: OtelExporter;
  readonly loopWatch: LoopWatchChoice;
  readonly gc: GcObserver | undefined;
  /** The HTTP requests in flight, in a table the worker reads during a stall (samplers.requests). */
  readonly requests: RequestTracker | undefined;
  /** Explains each stall once it is over: its requests, what queued behind it, its cause. */
  readonly stallExplainer: StallExplainer;
  readonly heartbeat: Heartbeat;
  /** The process's table of threads registered with watchThread(): open while this probe runs (a main-thread probe only). */
  readonly threadTable: ThreadTable | undefined;
  readonly supervisor: WorkerSupervisor;
  /** Undefined when the `incidents` option is false. */
  readonly incidents: IncidentRecorder | undefined;
  /** The remotes this process talks to (option `dependencies`). */
  readonly dependencies: DependencyMap | undefined;
  readonly jobs: JobGuard;
  /** The main thread's captures (heap snapshots, diagnostic reports) go through it. */
  readonly sink: CaptureSink;
  readonly snapshots: HeapSnapshots;
  /** A worker-hosted probe's profiles of its own thread, which the probe worker asks for (absent on the main thread). */
  readonly hostProfiler: HostProfiler | undefined;
  /** Fatal-error reports, the exit note, dead previous runs (src/crash). */
  readonly crash: CrashEvidence;
  readonly caches: Map<string, BoundedCache<{}, {}>>;
  readonly watchers: Map<string, CacheWatcher>;
  /** Rules with markUnhealthy that fired, as the worker decided them (src/health/unhealthy.ts). */
  readonly unhealthy: UnhealthyRules;
  /** Each synthetic probe's latest run and whether it is failing, as the worker reported (for health()). */
  readonly probeRuns: Map<string, { name: string; target: string; lastResult: ProbeResult; failing: boolean }>;
  /** Where the worker's endpoints listen, as it last said. */
  servers: EndpointsReady;
  /** Tells the app's listeners; a listener that throws is logged, never thrown into the host. */
  emit(event: string, payload: unknown): void;
  /** Something of ours failed in the background: logged and counted, never thrown into the host. */
  failed(component: string, err: unknown): void;
  /** A capture is complete in dumpDir: 'capture' and onCapture. */
  captured(capture: WrittenCapture): void;
  /** The worker's samples of the last `sinceMs` ms (all it holds when undefined), after a fresh main-thread reading. */
  recentSamples(sinceMs: number | undefined): Promise<Sample[]>;
  /** True once stop() was called. */
  stopped(): boolean;
}
