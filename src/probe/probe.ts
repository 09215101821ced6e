import { EventEmitter } from 'node:events';
import { isMainThread } from 'node:worker_threads';
import { metrics } from '@opentelemetry/api';
import { describeError, ErrorCode, SysprobeError } from '../errors.js';
import { defaultLogger } from '../internal/logger.js';
import { resolveOptions, type Logger, type ProbeOptions, type ResolvedOptions } from './options.js';
import type { WorkerToMain } from '../protocol.js';
import type { AllocationProfileResult, CpuProfileResult, RuleCaptures } from '../captures/results.js';
import type { Frame } from '../captures/cpuprofile.js';
import type { Sample } from '../samples/sample.js';
import type { SamplesWritten } from '../incidents/samples.js';
import type { StallCapture } from '../stalls/stall.js';
import type { RuleFiring } from '../rules/firing.js';
import { OtelExporter } from '../metrics/otel.js';
import { LagSamples, loadLoopWatch, type LoopWatchAddon, type LoopWatchKind } from '../stalls/loop-watch.js';
import { GcObserver } from '../memory/gc.js';
import { JobGuard, type GuardOptions, type GuardWorkerOptions } from '../jobs/guard.js';
import { Heartbeat } from '../stalls/heartbeat.js';
import { HeapSnapshots, snapshotWriter as chooseSnapshotWriter, type HeapSnapshotResult } from '../heap/snapshots.js';
import { createCache, watchCache, type BoundedCache, type CacheAlert, type CacheOptions, type CacheWatcher, type WatchableMap, type WatchOptions } from '../caches/caches.js';
import { FileSink } from '../sink/file-sink.js';
import { functionSink, type WrittenCapture } from '../sink/sink.js';
import { WorkerSupervisor } from './supervisor.js';
import { workerSettings } from '../worker/settings.js';
import { IncidentRecorder, LogRing, registerLogRing, ringLogger, type IncidentEvent, type IncidentSummary } from '../incidents/recorder.js';
import type { SocketPicture } from '../sockets/sampler.js';
import { DependencyMap, type Dependency } from '../dependencies/map.js';
import type { ProbeStatus } from '../synthetics/book.js';
import type { ProbeResult } from '../synthetics/runner.js';
import { combine, dependencyReasons, readingsFromMain, ruleReason, sourceReasons, thresholdReasons, type Health, type HealthReason } from '../health/evaluate.js';
import type { EndpointsReady, HostRequest } from '../protocol.js';
import { RequestTracker } from '../stalls/requests.js';
import { StallExplainer, type StallQueue, type StallRequest } from '../stalls/explain.js';
import type { StallCause, StallDiagnosis } from '../stalls/cause.js';
import type { CaptureSink } from '../sink/sink.js';
import { CrashEvidence, type PreviousRunEvent } from '../crash/startup.js';
import { writeDiagnosticReport } from '../crash/diagnostic-report.js';

const REQUEST_TIMEOUT_MS = 2_000;
/** A stack capture's own timeout is 2 s (in the worker); this covers it and the round trip. */
const STACK_REQUEST_TIMEOUT_MS = 5_000;
/** Why the main thread paused itself: the reason a stall's skipped capture gives (the worker flags the stall selfPaused). */
const SELF_PAUSE_REASON = 'sysprobe was writing a heap snapshot';
/** The first socket sweep may still be running (ss has 3 s of its own); this covers it and the round trip. */
const SOCKETS_REQUEST_TIMEOUT_MS = 10_000;
/** An incident's samples.json: up to 20,000 samples read back, joined and written by the worker. */
const WRITE_SAMPLES_TIMEOUT_MS = 10_000;
const PACKAGE_VERSION: string = (require('../../../package.json') as { version: string }).version;

/** The stall the worker saw, reported once the main thread runs again. */
export interface StallEvent {
  /** When the loop stopped answering, ms since the epoch (exact with the native loop watch; within one beat with the heartbeat). */
  startedAt: number;
  /** How long the loop was blocked, ms (with the heartbeat: the gap between beats, up to one beat more). */
  durationMs: number;
  /** The main thread's JS stack, taken by the worker while the loop was still blocked (innermost frame first); absent when not taken. */
  stack: Frame[] | undefined;
  /** How the stack was taken, or why not. */
  capture: StallCapture;
  /** Why the loop stalled: `js`, `native` (a system call or other native code), `gc`, `throttled` (the container's CPU quota) or `self` (sysprobe's own pause). */
  cause: StallCause;
  /** What decided the cause; for native code, the system call and what it waited on, and the JS function that made the call. */
  diagnosis: StallDiagnosis;
  /** The HTTP requests in flight on the main thread while it was blocked, oldest first (empty with `samplers.requests` off). */
  requests: StallRequest[];
  /** The requests that waited behind the stall (absent with `samplers.requests` off). */
  queued?: StallQueue;
  /**
   * How long the cgroup's CPU quota stopped the process during the stall, ms (Linux, with a
   * CPU controller; absent otherwise), measured from when the stall was seen (`stallThresholdMs`
   * after it began) to its end: compare it with `durationMs - stallThresholdMs`. Close to that,
   * the quota, not JavaScript, held the loop.
   */
  throttledMs?: number;
}

/** A rule that fired, and what the worker captured for it. */
export interface RuleEvent {
  firing: RuleFiring;
  captures: RuleCaptures;
}

export type { Health };

/** A source of health reasons (see {@link Probe.addHealthSource}): returns the reasons it sees now, `[]` when fine. */
export type HealthSource = () => Array<Partial<HealthReason> & { message: string }>;

/** Options for {@link Probe.captureAllocationProfile}. */
export interface AllocationProfileOptions {
  /** How long to sample allocations, ms (10 to 600000). Default 10000. */
  durationMs?: number;
}

/** Options for {@link Probe.captureCpuProfile}. */
export interface CpuProfileOptions {
  /** How long to profile, ms (10 to 600000). Default 5000. */
  durationMs?: number;
}

/** Options for {@link Probe.recent}. */
export interface RecentOptions {
  /** Only samples from the last `sinceMs` milliseconds. Default: everything the recorder holds. */
  sinceMs?: number;
}

/** The single running probe, or the one starting. */
let current: Probe | undefined;
let starting = false;

/**
 * A running sysprobe. Get one from {@link start}; release it with {@link Probe.stop}.
 *
 * Events: `'stall'` ({@link StallEvent}) once a stall of the event loop has ended;
 * `'rule'` ({@link RuleEvent}) when a rule fired, after its captures (a probe's latency rule
 * too, named `probe-latency:<name>`); `'capture'`
 * ({@link WrittenCapture}) when a capture is complete in dumpDir; `'cache'`
 * ({@link CacheAlert}) when a watched cache starts growing fast or goes over its limit;
 * `'incident'` ({@link IncidentEvent}) when an incident opens, grows or closes;
 * `'previousRun'` ({@link PreviousRunEvent}) shortly after start() when an earlier process of
 * this service on this host did not stop (a crash, an OOM kill; docs/containers.md).
 */
export class Probe extends EventEmitter {
  /** The checked, frozen options this probe runs with. */
  readonly options: ResolvedOptions;
  readonly #logger: Logger;
  readonly #gc: GcObserver | undefined;
  /** The HTTP requests in flight, in a table the worker reads during a stall (samplers.requests). */
  readonly #requests: RequestTracker | undefined;
  /** Explains each stall once it is over: its requests, what queued behind it, its cause. */
  readonly #stallExplainer: StallExplainer;
  readonly #heartbeat: Heartbeat;
  readonly #supervisor: WorkerSupervisor;
  readonly #exporter: OtelExporter;
  readonly #jobs: JobGuard;
  readonly #snapshots: HeapSnapshots;
  readonly #caches = new Map<string, BoundedCache<{}, {}>>();
  readonly #watchers = new Map<string, CacheWatcher>();
  /** Rules with markUnhealthy that fired, by name, until their cooldown ends. */
  readonly #unhealthy = new Map<string, HealthReason>();
  readonly #healthSources = new Map<string, HealthSource>();
  /** Where the worker's endpoints listen, as it last said. */
  #servers: EndpointsReady = {};
  readonly #loopWatch: { kind: LoopWatchKind; addon: LoopWatchAddon | undefined; lag: LagSamples | undefined; why: string | undefined };
  readonly #startedAt = Date.now();
  #stopped: Promise<void> | undefined;
  #lastSamples: Sample[] = [];
  /** Undefined when the `incidents` option is false. */
  readonly #incidents: IncidentRecorder | undefined;
  /** Each synthetic probe's latest run and whether it is failing, as the worker reported (for health()). */
  readonly #probeRuns = new Map<string, { name: string; target: string; lastResult: ProbeResult; failing: boolean }>();
  /** The remotes this process talks to (option `dependencies`). */
  readonly #dependencies: DependencyMap | undefined;
  /** The main thread's captures (heap snapshots, diagnostic reports) go through it. */
  readonly #sink: CaptureSink;
  /** Fatal-error reports, the exit note, dead previous runs (src/crash). */
  readonly #crash: CrashEvidence;

  /** @internal Use {@link start}. */
  constructor(options: ResolvedOptions) {
    super();
    this.options = options;
    this.#logger = (options.logger ?? defaultLogger()).child({ component: 'sysprobe', service: options.serviceName });
    // Incidents keep sysprobe's own recent log events (and the app's, through incidentLogStream) for logs.jsonl.
    const logs = new LogRing();
    if (options.incidents.enabled) {
      registerLogRing(this, logs);
      this.#logger = ringLogger(this.#logger, logs);
    }
    const meter = (options.meterProvider ?? metrics.getMeterProvider()).getMeter('sysprobe', PACKAGE_VERSION);
    // First what can refuse (nothing to undo yet), then the exporter, which everything reports to.
    const snapshotWriter = chooseSnapshotWriter(options.heapSnapshotWriter, isMainThread);
    this.#loopWatch = chooseLoopWatch(options);
    this.#exporter = new OtelExporter(meter, {
      samplesSince: (sinceMs) => this.#samplesSince(sinceMs),
      drainDelays: () => this.#loopWatch.lag?.drain((ms) => this.#exporter.recordDelay(ms)),
      gcTotals: () => this.#gc?.totals,
      workerRestarts: () => this.#supervisor.restarts,
      caches: () => [...this.#caches.values()].map((c) => c.stats()),
      watchedCaches: () => [...this.#watchers.values()].map((w) => w.stats()),
      failed: (component, err) => this.#failed(component, err),
    }, options);
    this.#requests = options.samplers.requests ? new RequestTracker() : undefined;
    this.#stallExplainer = new StallExplainer(this.#requests, options.samplers.gc);
    this.#gc = options.samplers.gc
      ? new GcObserver((kind, ms, startedAt) => {
        this.#exporter.recordGc(kind, ms);
        this.#stallExplainer.recordGc(startedAt, ms);
      }, (err) => this.#failed('gc', err))
      : undefined;
    // Without the native watch, the main thread's timer is also the stall detector's heartbeat.
    const beats = options.samplers.eventLoop && this.#loopWatch.kind === 'heartbeat';
    const heartbeatIntervalMs = beats ? Math.min(options.stallThresholdMs, options.sampleIntervalMs) : options.sampleIntervalMs;
    const { addon } = this.#loopWatch;
    this.#heartbeat = new Heartbeat(options, {
      intervalMs: heartbeatIntervalMs, beats, takeMaxDelayMs: addon && (() => addon.takeLongestTurn()),
      // Watched caches are checked (and trimmed, when asked) once per sample, on the thread that owns them.
      onSample: () => { this.#checkWatchedCaches(); this.#requests?.sweep(); },
    }, this.#gc,
      (gapMs) => this.#exporter.recordDelay(gapMs),
      (capacityBytes) => this.#logger.warn({ capacityBytes }, 'sysprobe main-thread reading too large for its slot; skipped'));
    this.#supervisor = new WorkerSupervisor(workerSettings(options, {
      heartbeat: this.#heartbeat.shared,
      mainRing: this.#heartbeat.mainRing.buffer,
      heartbeatIntervalMs,
      loopWatch: this.#loopWatch.kind,
      mainTid: process.pid,
      ...(this.#requests ? { requestTable: this.#requests.buffer } : {}),
      sysprobeVersion: PACKAGE_VERSION,
    }), this.#logger, (message) => this.#onWorkerMessage(message));
    this.#incidents = options.incidents.enabled ? new IncidentRecorder({
      dumpDir: options.dumpDir, options: options.incidents, service: options.serviceName, sysprobeVersion: PACKAGE_VERSION, logger: this.#logger, logs,
      recent: (sinceMs) => this.#supervisor.request({ kind: 'recent', sinceMs }, REQUEST_TIMEOUT_MS) as Promise<Sample[]>,
      writeSamples: (file, sinceTime, max) => this.#supervisor.request({ kind: 'writeSamples', file, sinceTime, max }, WRITE_SAMPLES_TIMEOUT_MS) as Promise<SamplesWritten>,
      emit: (event) => this.#emitSafely('incident', event),
      closed: () => { if (!this.#stopped) this.#supervisor.post({ type: 'incidentClosed' }); },
      rotate: () => files.rotate(),
      dependencies: () => this.dependencies(),
    }) : undefined;
    this.#dependencies = options.dependencies ? new DependencyMap() : undefined;
    this.#jobs = new JobGuard(this.#logger, (event) => this.#exporter.recordJob(event));
    const files = new FileSink({ dir: options.dumpDir, maxBytes: options.dumpMaxBytes, service: options.serviceName, sysprobeVersion: PACKAGE_VERSION, logger: this.#logger });
    const sink = functionSink(files, (capture) => this.#onCaptured(capture));
    this.#sink = sink;
    const incidents = this.#incidents;
    this.#crash = new CrashEvidence({
      dumpDir: options.dumpDir, service: options.serviceName, logger: this.#logger,
      ...(incidents ? { incident: (trigger, write) => incidents.evidence(trigger, write) } : {}),
      emit: (event) => this.#emitSafely('previousRun', event),
    });
    this.#snapshots = new HeapSnapshots(sink, { perDay: options.heapSnapshotsPerDay }, this.#logger, undefined,
      (active) => this.#supervisor.post({ type: 'selfPause', active, reason: SELF_PAUSE_REASON }), snapshotWriter);
  }

  /** @internal */
  async begin(): Promise<void> {
    // First readings before the worker starts, so its first sample has them.
    this.#heartbeat.publish();
    try {
      await this.#supervisor.start();
    } catch (err) {
      this.#gc?.stop();
      this.#exporter.stop();
      this.#release();
      throw err;
    }
    this.#heartbeat.start();
    this.#dependencies?.start();
    this.#requests?.start();
    const failed = (['health', 'control'] as const).filter((name) => this.#servers[name] && 'error' in this.#servers[name]!);
    if (failed.length > 0) {
      const why = failed.map((name) => `${name}: ${(this.#servers[name] as { error: string }).error}`).join('; ');
      await this.stop();
      throw new SysprobeError(ErrorCode.LISTEN_FAILED, `sysprobe could not listen (${why}); choose another port, or 0 for an ephemeral one.`);
    }
    // Not awaited: a dead previous run is reported (event, incident) once its files are read, after start() resolves.
    void this.#crash.start();
    const { control } = this.options;
    if (control && !isLoopback(control.host)) {
      this.#logger.warn({ component: 'control', host: control.host, port: this.controlAddress()?.port }, 'sysprobe control endpoint listens beyond loopback; see docs/security.md');
    }
    this.#logger.info({
      node: process.version, sysprobe: PACKAGE_VERSION, workerTid: this.#supervisor.workerTid,
      sampleIntervalMs: this.options.sampleIntervalMs, stallThresholdMs: this.options.stallThresholdMs,
      loopWatch: this.#loopWatch.kind, ...(this.#loopWatch.why ? { loopWatchFallback: this.#loopWatch.why } : {}),
      samplers: this.options.samplers,
    }, 'sysprobe started');
  }

  /** How this probe sees stalls: `native` (no main-thread wake-ups) or `heartbeat` (the JS fallback). */
  get loopWatch(): LoopWatchKind {
    return this.#loopWatch.kind;
  }

  /**
   * The synthetic probes (option `probes`): per probe its last result, success, failure and
   * timeout counts, latency percentiles, the baseline its rule compares with, and whether that
   * rule's condition holds (`firing`) or the last runs all failed (`failing`).
   */
  async probeStatus(): Promise<ProbeStatus[]> {
    this.#assertRunning('probeStatus');
    if (this.options.probes.length === 0) return [];
    return (await this.#supervisor.request({ kind: 'probeStatus' }, REQUEST_TIMEOUT_MS)) as ProbeStatus[];
  }

  /**
   * What this process talks to: one entry per remote endpoint (address and port) with the host
   * names it was reached by, connections opened, last seen, and the probes' latency to it.
   * Empty with `dependencies: false` (probe targets included). When the worker cannot
   * answer, the entries come without probe latencies.
   */
  async dependencies(): Promise<Dependency[]> {
    this.#assertRunning('dependencies');
    if (!this.#dependencies) return [];
    const statuses = await this.probeStatus().catch((err: unknown) => {
      this.#logger.debug({ err: describeError(err) }, 'sysprobe dependencies without probe latencies');
      return [];
    });
    const sockets = this.options.sockets ? await this.sockets().catch((err: unknown) => {
      this.#logger.debug({ err: describeError(err) }, 'sysprobe dependencies without socket states');
      return undefined;
    }) : undefined;
    return this.#dependencies.entries(statuses, sockets?.byRemote);
  }

  /**
   * The process's health as the main thread sees it now: the latest readings (event-loop
   * delay and utilization, heap against its limit, RSS) against `health.thresholds`, the
   * rules with `markUnhealthy` that fired within their cooldown, synthetic probes whose last
   * runs all failed (`dependency`, degraded), and each health source.
   * `ok`, `degraded` (still serving) or `unhealthy`; the worst reason first.
   */
  health(now = Date.now()): Health {
    for (const [rule, reason] of this.#unhealthy) if ((reason.until ?? 0) <= now) this.#unhealthy.delete(rule);
    const { thresholds } = this.options.health;
    // RSS is a /proc read: only when a threshold asks for it (off by default).
    const rss = this.options.samplers.memory && thresholds.rssBytes ? process.memoryUsage.rss() : undefined;
    const reasons = [
      ...thresholdReasons(readingsFromMain(this.#heartbeat.latest, rss), thresholds),
      ...this.#unhealthy.values(),
      ...dependencyReasons([...this.#probeRuns.values()]),
    ];
    for (const [name, source] of this.#healthSources) {
      try {
        reasons.push(...sourceReasons(name, source()));
      } catch (err) {
        reasons.push({ kind: 'source', source: name, status: 'unhealthy', message: `health source "${name}" threw: ${describeError(err).message}` });
      }
    }
    return combine(reasons, now);
  }

  /**
   * Adds reasons to {@link Probe.health}: `source()` runs on each call and returns the problems
   * it sees (`{ kind, message, status?: 'degraded' | 'unhealthy' }`; unhealthy when not said),
   * or `[]`. A source that throws makes the process unhealthy, saying so. Returns a remover.
   * Sources run on the main thread, so the worker's `GET /health` does not see them.
   */
  addHealthSource(name: string, source: HealthSource): () => void {
    this.#assertRunning('addHealthSource');
    if (typeof name !== 'string' || name.length === 0 || typeof source !== 'function') {
      throw new SysprobeError(ErrorCode.INVALID_OPTION, 'addHealthSource(name, source) needs a non-empty name and a function.');
    }
    if (this.#healthSources.has(name)) throw new SysprobeError(ErrorCode.INVALID_OPTION, `A health source named "${name}" already exists on this probe.`);
    this.#healthSources.set(name, source);
    return () => { if (this.#healthSources.get(name) === source) this.#healthSources.delete(name); };
  }

  /** Where the worker serves `GET /health` (`health.port`), or undefined when it does not. */
  healthAddress(): { address: string; port: number } | undefined {
    const health = this.#servers.health;
    return health && !('error' in health) ? { ...health } : undefined;
  }

  /** Where the worker serves the control endpoint (`control.port`), or undefined when it does not. */
  controlAddress(): { address: string; port: number } | undefined {
    const control = this.#servers.control;
    return control && !('error' in control) ? { ...control } : undefined;
  }

  /**
   * This process's incidents (the last 100 closed, and the open one), oldest first; [] when the
   * `incidents` option is false. Each folder holds manifest.json, the captures, samples.json
   * and logs.jsonl; `sysprobe report <dir>` turns one into an HTML page.
   */
  incidents(): IncidentSummary[] {
    return this.#incidents?.list() ?? [];
  }

  /** True until {@link Probe.stop} is called. */
  get running(): boolean {
    return this.#stopped === undefined;
  }

  /**
   * The flight recorder's samples, oldest first: the last `sinceMs` ms, or all it holds
   * (15 minutes by default). Rejects with SYSPROBE_ERR_WORKER_UNAVAILABLE while the worker restarts.
   */
  async recent(options: RecentOptions = {}): Promise<Sample[]> {
    this.#assertRunning('recent');
    const { sinceMs } = options;
    if (sinceMs !== undefined && (typeof sinceMs !== 'number' || !(sinceMs >= 0))) {
      throw new SysprobeError(ErrorCode.INVALID_OPTION, `recent({ sinceMs }) needs a number of milliseconds >= 0; got ${String(sinceMs)}.`);
    }
    return (await this.#supervisor.request({ kind: 'recent', sinceMs }, REQUEST_TIMEOUT_MS)) as Sample[];
  }

  /**
   * This process's TCP sockets as of the worker's latest sweep (option `sockets`): counts by
   * state, by remote endpoint and by listening port, queue bytes, the namespace's TCP counters
   * and, with `ss`, RTT and retransmissions. `supported: false` (and why) off Linux or without
   * /proc. Rejects with SYSPROBE_ERR_UNSUPPORTED when the sampler is off.
   */
  async sockets(): Promise<SocketPicture> {
    this.#assertRunning('sockets');
    if (!this.options.sockets) throw new SysprobeError(ErrorCode.UNSUPPORTED, 'The socket sampler is off; start sysprobe with sockets: true.');
    return (await this.#supervisor.request({ kind: 'sockets' }, SOCKETS_REQUEST_TIMEOUT_MS)) as SocketPicture;
  }

  /**
   * The main thread's JS stack, taken from the worker through the inspector (innermost frame
   * first). Called from the main thread itself, the pause lands in the next JS the loop runs,
   * often sysprobe's own; the stack that matters is the one a stall event carries.
   * Rejects with SYSPROBE_ERR_CAPTURE_BUSY or SYSPROBE_ERR_CAPTURE_FAILED.
   */
  async captureStack(): Promise<Frame[]> {
    this.#assertRunning('captureStack');
    const result = (await this.#supervisor.request({ kind: 'captureStack' }, STACK_REQUEST_TIMEOUT_MS)) as { frames: Frame[] };
    return result.frames;
  }

  /**
   * Runs V8's CPU profiler on the main thread for `durationMs` (from the worker, so it works
   * while the main thread is blocked), writes a .cpuprofile and a gzipped pprof file into
   * `dumpDir`, and resolves with their paths and a summary: top functions by self time and
   * the busy-loop signature. Rejects with SYSPROBE_ERR_CAPTURE_BUSY while another profile runs.
   */
  async captureCpuProfile(options: CpuProfileOptions = {}): Promise<CpuProfileResult> {
    return (await this.#requestProfile('captureCpuProfile', options.durationMs ?? 5000)) as CpuProfileResult;
  }

  /**
   * Writes a heap snapshot of the main thread's heap into `dumpDir` (with a JSON sidecar),
   * after checking that it is safe: heap and system memory to spare, disk space for it plus a
   * reserve, the daily budget (`heapSnapshotsPerDay`), no other snapshot running. The process is
   * paused while V8 writes it. Rejects with SYSPROBE_ERR_CAPTURE_FAILED saying why when refused.
   */
  async captureHeapSnapshot(): Promise<HeapSnapshotResult> {
    this.#assertRunning('captureHeapSnapshot');
    return this.#snapshots.capture({ trigger: 'captureHeapSnapshot()' });
  }

  /**
   * Runs V8's sampling heap profiler on the main thread for `durationMs` (from the worker) and
   * writes a .heapprofile (Chrome DevTools) into `dumpDir`; resolves with its path and a summary
   * of the stacks that allocated what was still live at the end. Rejects with CAPTURE_BUSY
   * while another allocation profile runs.
   */
  async captureAllocationProfile(options: AllocationProfileOptions = {}): Promise<AllocationProfileResult> {
    return (await this.#requestProfile('captureAllocationProfile', options.durationMs ?? 10_000)) as AllocationProfileResult;
  }

  /** Checks the duration and asks the worker; the wait covers the profile, writing it, and the round trip. */
  #requestProfile(kind: 'captureCpuProfile' | 'captureAllocationProfile', durationMs: number): Promise<unknown> {
    this.#assertRunning(kind);
    if (!Number.isInteger(durationMs) || durationMs < 10 || durationMs > 600_000) {
      throw new SysprobeError(ErrorCode.INVALID_OPTION, `${kind}({ durationMs }) needs an integer from 10 to 600000; got ${String(durationMs)}.`);
    }
    return this.#supervisor.request({ kind, durationMs }, durationMs + 15_000);
  }

  /**
   * A cache with hard limits (`max` entries, `maxBytes`, `ttlMs`) whose eviction cannot be
   * skipped: a loader that throws leaves nothing behind. Its size, bytes, hits, misses and
   * evictions are metrics (`sysprobe.cache.*`). Names are unique per probe.
   */
  cache<K extends {}, V extends {}>(name: string, options: CacheOptions<K, V>): BoundedCache<K, V> {
    this.#assertRunning('cache');
    if (this.#caches.has(name) || this.#watchers.has(name)) throw new SysprobeError(ErrorCode.INVALID_OPTION, `A cache named "${name}" already exists on this probe.`);
    const cache = createCache<K, V>(name, options);
    this.#caches.set(name, cache as unknown as BoundedCache<{}, {}>);
    return cache;
  }

  /**
   * Watches a Map- or Set-like cache the app already has: its size becomes a metric, growth
   * is reported, and with `{ maxEntries, evictOldest: true }` the oldest entries are dropped
   * above the limit, once per sample interval.
   */
  watchCache(name: string, collection: WatchableMap, options?: WatchOptions): CacheWatcher {
    this.#assertRunning('watchCache');
    if (this.#caches.has(name) || this.#watchers.has(name)) throw new SysprobeError(ErrorCode.INVALID_OPTION, `A cache named "${name}" already exists on this probe.`);
    const watcher = watchCache(name, collection, options);
    this.#watchers.set(name, watcher);
    return watcher;
  }

  /**
   * Runs an async job with a deadline. The job gets an AbortSignal that aborts at `timeoutMs`;
   * the call then rejects with SYSPROBE_ERR_TIMEOUT (a job that ignores its signal runs on in
   * the background: a JS function on the main thread cannot be stopped safely). Overlapping
   * runs of the same name are refused (SYSPROBE_ERR_JOB_RUNNING), queued or allowed
   * (`overlap`). Runs, outcomes and durations are metrics (`sysprobe.job.*`).
   */
  async guard<T>(name: string, job: (signal: AbortSignal) => Promise<T> | T, options: GuardOptions): Promise<T> {
    this.#assertRunning('guard');
    return this.#jobs.guard(name, job, options);
  }

  /**
   * Runs a CPU-bound job in its own worker thread (`file` is the module; its first message is
   * the result), terminated at `timeoutMs`: the way to stop a job that must really stop.
   */
  async guardWorker<T>(name: string, file: string | URL, options: GuardWorkerOptions): Promise<T> {
    this.#assertRunning('guardWorker');
    return this.#jobs.guardWorker(name, file, options);
  }

  /** Releases everything the probe started: timers, observers, the worker, the instruments' callbacks. */
  stop(): Promise<void> {
    this.#stopped ??= (async () => {
      this.#heartbeat.stop();
      this.#dependencies?.stop();
      this.#requests?.stop();
      for (const watcher of this.#watchers.values()) watcher.stop();
      await this.#jobs.stop();
      // Before the worker goes: closing has it write the samples up to now.
      await this.#incidents?.stop();
      this.#gc?.stop();
      this.#exporter.stop();
      await this.#supervisor.stop();
      this.#crash.stop();
      this.#release();
      this.#logger.info({ uptimeMs: Date.now() - this.#startedAt, workerRestarts: this.#supervisor.restarts }, 'sysprobe stopped');
    })();
    return this.#stopped;
  }

  /** Something of ours failed in the background: logged and counted, never thrown into the host. */
  #failed(component: string, err: unknown): void {
    this.#exporter.countError(component);
    this.#logger.error({ component, err: describeError(err) }, `sysprobe ${component} failed`);
  }

  #release(): void {
    // After the worker is gone, so its watchdog no longer reads the hook's stamps.
    this.#loopWatch.addon?.detach();
    if (current === this) current = undefined;
  }

  #assertRunning(method: string): void {
    if (this.#stopped) throw new SysprobeError(ErrorCode.STOPPED, `probe.${method}() was called after stop(); call start() for a new probe.`);
  }

  async #samplesSince(sinceMs: number): Promise<Sample[]> {
    try {
      this.#lastSamples = (await this.#supervisor.request({ kind: 'recent', sinceMs }, REQUEST_TIMEOUT_MS)) as Sample[];
    } catch (err) {
      // The collection goes on with what we had: a restarting worker must not fail the app's exporter.
      this.#exporter.countError('exporter');
      this.#logger.debug({ err: describeError(err) }, 'sysprobe metrics used cached samples');
      return this.#lastSamples.slice(-1);
    }
    return this.#lastSamples;
  }

  #onWorkerMessage(message: WorkerToMain): void {
    switch (message.type) {
      case 'log':
        this.#logger[message.level](message.fields, message.msg);
        if (message.level === 'error') this.#exporter.countError(String(message.fields.component ?? 'worker'));
        return;
      case 'stall': {
        const { startedAt, durationMs, stack, capture, facts, throttledMs } = message;
        const { selfPaused } = facts;
        // Explained once the requests that queued behind it have started (a few tens of ms after it ended).
        const explanation = this.#stallExplainer.explain({
          startedAt, durationMs, stack, captureHow: capture.how, selfPaused, requests: facts.requests, observations: facts.observations,
          ...(throttledMs !== undefined ? { throttledMs } : {}),
        });
        this.#exporter.recordStall(durationMs, capture.how);
        // The heartbeat's gaps already hold the stall; the native watch reports it only here.
        if (this.#loopWatch.kind === 'native' && this.options.samplers.eventLoop) this.#exporter.recordDelay(durationMs);
        if (!selfPaused) this.#incidents?.stalled({ kind: 'stall', rule: 'stall', value: 'eventLoop.stallMs', observed: durationMs, threshold: this.options.stallThresholdMs, at: startedAt,
          ...(throttledMs !== undefined ? { throttledMs } : {}) }, stack, capture, explanation);
        void explanation.then(({ requests, queued, diagnosis }) => {
          const event: StallEvent = { startedAt, durationMs, stack, capture, cause: diagnosis.cause, diagnosis, requests, ...(queued ? { queued } : {}), ...(throttledMs !== undefined ? { throttledMs } : {}) };
          this.#logger.warn({
            startedAt, durationMs, thresholdMs: this.options.stallThresholdMs, capture, cause: diagnosis.cause, why: diagnosis.why, throttledMs,
            // The top frames and requests are what a person reads first; the event carries them all.
            top: stack?.slice(0, 5).map((f) => `${f.functionName} (${f.url}:${f.lineNumber + 1}:${f.columnNumber + 1})`),
            requests: requests.slice(0, 5).map((r) => `${r.method} ${r.route ?? r.path}${r.traceId ? ` trace ${r.traceId}` : ''}`),
            ...(queued ? { queued: queued.count } : {}),
          }, 'event loop stalled');
          this.#emitSafely('stall', event);
        }).catch((err: unknown) => this.#failed('stalls', err));
        return;
      }
      case 'rule':
        void this.#onRule({ firing: message.firing, captures: message.captures });
        return;
      case 'captured':
        this.#onCaptured(message.capture);
        return;
      case 'probeResult':
        this.#exporter.recordProbe(message.result);
        this.#dependencies?.noteProbe(message.result);
        if (message.result.outcome !== 'success') this.#logger.debug({ probe: message.result.name, target: message.result.target, outcome: message.result.outcome, error: message.result.error }, 'sysprobe probe run failed');
        this.#probeRuns.set(message.result.name, { name: message.result.name, target: message.result.target, lastResult: message.result, failing: message.failing });
        return;
      case 'hostRequest':
        void this.#answerHost(message.id, message.request);
        return;
      case 'ready':
        if (message.servers) this.#servers = message.servers;
        // At start, begin() turns a failed bind into an error; after a worker restart it can only be logged.
        for (const [name, server] of Object.entries(this.#servers)) {
          if (server && 'error' in server && this.#supervisor.restarts) this.#logger.error({ component: name, err: { message: server.error } }, `sysprobe ${name} endpoint could not listen after a worker restart`);
        }
        return;
      case 'response':
        return; // handled by the supervisor
      default: {
        const unknown: never = message;
        this.#logger.error({ message: String((unknown as { type?: unknown }).type) }, 'sysprobe got an unknown message from its worker');
      }
    }
  }

  async #onRule(event: RuleEvent): Promise<void> {
    const { firing, captures } = event;
    const rule = this.options.rules.find((r) => r.condition.name === firing.rule);
    // Heap snapshots are not deduplicated within an incident: a diff needs two or more; heapSnapshotsPerDay bounds them.
    if (rule?.captureHeapSnapshot && !this.#stopped) {
      try {
        captures.heapSnapshot = await this.#snapshots.capture({ trigger: firing });
      } catch (err) {
        (captures.notTaken ??= []).push(`heapSnapshot: ${describeError(err).message}`);
      }
    }
    this.#exporter.recordRule(firing.rule);
    this.#incidents?.ruleFired({ kind: 'rule', rule: firing.rule, value: firing.value, observed: firing.observed, threshold: firing.threshold, at: firing.firedAt }, captures);
    this.#logger.warn({ ...firing, profile: captures.cpuProfile?.file, allocationProfile: captures.allocationProfile?.file, heapSnapshot: captures.heapSnapshot?.file, stackTop: captures.stack?.[0]?.functionName, notTaken: captures.notTaken }, 'sysprobe rule fired');
    if (rule?.markUnhealthy) this.#unhealthy.set(firing.rule, ruleReason(firing, firing.firedAt + rule.condition.cooldownMs));
    for (const callback of rule?.callbacks ?? []) {
      try {
        callback(firing);
      } catch (err) {
        this.#logger.error({ rule: firing.rule, err: describeError(err) }, 'a sysprobe rule action threw');
      }
    }
    this.#emitSafely('rule', event);
  }

  /** Does what the worker asked of the main thread (a heap snapshot for the control endpoint) and answers. */
  async #answerHost(id: number, request: HostRequest): Promise<void> {
    try {
      let value: unknown;
      if (request.kind === 'captureHeapSnapshot') value = await this.#snapshots.capture({ trigger: request.trigger });
      // Near a memory limit: what is safe instead of a snapshot (src/crash).
      else if (request.kind === 'diagnosticReport') value = await writeDiagnosticReport(this.#sink, { trigger: request.trigger });
      else throw new SysprobeError(ErrorCode.CAPTURE_FAILED, `unknown host request ${String((request as { kind?: unknown }).kind)}`);
      this.#supervisor.post({ type: 'hostResponse', id, ok: true, value });
    } catch (err) {
      const { message, code } = describeError(err);
      this.#supervisor.post({ type: 'hostResponse', id, ok: false, error: { code: code ?? ErrorCode.CAPTURE_FAILED, message } });
    }
  }

  /** Checks (and trims, when asked) each watched cache; a new episode of growth or of being over the limit is logged and emitted. */
  #checkWatchedCaches(): void {
    for (const watcher of this.#watchers.values()) {
      for (const alert of watcher.check()) {
        this.#logger.warn({ ...alert }, alert.reason === 'growing' ? 'sysprobe watched cache is growing fast' : 'sysprobe watched cache is over its limit');
        this.#emitSafely('cache', alert);
      }
    }
  }

  /** A capture is complete in dumpDir: tell the app. Never throws, never waits: the capture is done either way. */
  #onCaptured(capture: WrittenCapture): void {
    this.#emitSafely('capture', capture);
    const { onCapture } = this.options;
    if (!onCapture) return;
    const failed = (err: unknown) => this.#logger.error({ file: capture.file, err: describeError(err) }, 'sysprobe onCapture failed; the capture stays in dumpDir');
    try {
      Promise.resolve(onCapture(capture)).catch(failed);
    } catch (err) {
      failed(err);
    }
  }

  /** A listener that throws must not take the host down through sysprobe's stack. */
  #emitSafely(event: string, payload: unknown): void {
    for (const listener of this.listeners(event)) {
      try {
        (listener as (p: unknown) => void)(payload);
      } catch (err) {
        this.#logger.error({ event, err: describeError(err) }, 'a sysprobe event listener threw');
      }
    }
  }

  /** @internal For tests and benchmarks only (not exported from index.ts): a look inside. */
  static unsafeExposeInternals(probe: Probe): { supervisor: WorkerSupervisor } {
    return { supervisor: probe.#supervisor };
  }

  /** @internal */
  static async create(input: ProbeOptions | undefined): Promise<Probe> {
    const options = resolveOptions(input);
    if (current || starting) {
      throw new SysprobeError(ErrorCode.ALREADY_STARTED,
        'sysprobe is already running in this process; reuse the probe that start() returned, or await probe.stop() before starting again.');
    }
    starting = true;
    try {
      const probe = new Probe(options);
      current = probe;
      await probe.begin();
      return probe;
    } finally {
      starting = false;
    }
  }
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\./.test(host);
}

/** Native when asked for (or 'auto') and the addon loads and can hook this thread's loop; else the heartbeat. */
function chooseLoopWatch(options: ResolvedOptions): { kind: LoopWatchKind; addon: LoopWatchAddon | undefined; lag: LagSamples | undefined; why: string | undefined } {
  const heartbeat = (why: string) => {
    if (options.loopWatch === 'native') throw new SysprobeError(ErrorCode.UNSUPPORTED, `Option loopWatch is 'native' but ${why}.`);
    return { kind: 'heartbeat' as const, addon: undefined, lag: undefined, why };
  };
  if (options.loopWatch === 'heartbeat' || !options.samplers.eventLoop) return { kind: 'heartbeat', addon: undefined, lag: undefined, why: undefined };
  const { addon, error } = loadLoopWatch();
  if (!addon) return heartbeat(`the native loop watch did not load (${error})`);
  if (!addon.attach()) return heartbeat('another thread of this process already watches its loop natively');
  return { kind: 'native', addon, lag: new LagSamples(addon), why: undefined };
}

/**
 * Starts sysprobe: checks the options, starts the probe worker and the main thread's
 * heartbeat, and registers the OpenTelemetry instruments. One probe runs per process:
 * a second `start()` while one runs (or starts) rejects with SYSPROBE_ERR_ALREADY_STARTED;
 * after `stop()`, `start()` may be called again.
 *
 * Rejects with SYSPROBE_ERR_INVALID_OPTION when an option is unknown, of the wrong type
 * or out of range; the message names the option and what is allowed.
 */
export function start(options?: ProbeOptions): Promise<Probe> {
  return Probe.create(options);
}
