import { EventEmitter } from 'node:events';
import { describeError, ErrorCode, SysprobeError } from '../errors.js';
import { resolveOptions, type ProbeOptions, type ResolvedOptions } from './options.js';
import type { AllocationProfileResult, CpuProfileResult, RuleEvent } from '../captures/results.js';
import type { Frame } from '../captures/cpuprofile.js';
import type { Sample } from '../samples/sample.js';
import type { LoopWatchKind } from '../stalls/loop-watch.js';
import type { GuardOptions, GuardWorkerOptions } from '../jobs/guard.js';
import type { HeapSnapshotResult } from '../heap/snapshots.js';
import {
  createCache,
  watchCache,
  type BoundedCache,
  type CacheAlert,
  type CacheOptions,
  type CacheWatcher,
  type WatchableMap,
  type WatchOptions,
} from '../caches/caches.js';
import type { WrittenCapture } from '../sink/sink.js';
import type { IncidentEvent, IncidentSummary } from '../incidents/recorder.js';
import type { SocketPicture } from '../sockets/sampler.js';
import type { Dependency } from '../dependencies/map.js';
import type { ProbeStatus } from '../synthetics/book.js';
import {
  combine,
  dependencyReasons,
  readingsFromMain,
  sourceReasons,
  thresholdReasons,
  type Health,
  type HealthReason,
} from '../health/evaluate.js';
import type { StallEvent } from '../stalls/stall-event.js';
import type { PreviousRunEvent } from '../crash/startup.js';
import { REQUEST_TIMEOUT_MS, wireProbe } from './wiring.js';
import { nativeLogFields } from '../native.js';
import { claimLoop, releaseLoop } from '../stalls/loop-claim.js';
import type { ProbeParts } from './parts.js';

/** A stack capture's own timeout is 2 s (in the worker); this covers it and the round trip. */
const STACK_REQUEST_TIMEOUT_MS = 5_000;
/** The first socket sweep may still be running (ss has 3 s of its own); this covers it and the round trip. */
const SOCKETS_REQUEST_TIMEOUT_MS = 10_000;

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

/** Each probe's parts, for src/probe/internals.ts (tests, benchmarks): not on the class, not exported from index.ts. */
const partsOf = new WeakMap<Probe, ProbeParts>();

/** @internal The parts of a probe; use src/probe/internals.ts. */
export function partsOfProbe(probe: Probe): ProbeParts | undefined {
  return partsOf.get(probe);
}

/** The single running probe, or the one starting. */
let current: Probe | undefined;
let starting = false;

/** @internal The probe running in this thread, if any (not exported by the package: the test suite's cleanup between files). */
export function runningProbe(): Probe | undefined {
  return current;
}

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
  /** What this probe is made of (probe/wiring.ts); its worker's messages go to probe/worker-messages.ts. */
  readonly #p: ProbeParts;
  readonly #healthSources = new Map<string, HealthSource>();
  readonly #startedAt = Date.now();
  #stopped: Promise<void> | undefined;

  /** @internal Use {@link start}. */
  constructor(options: ResolvedOptions) {
    super();
    this.#p = wireProbe(options, {
      emitter: this,
      stopped: () => this.#stopped !== undefined,
      // Not the public method: an incident still open at stop() closes after #stopped is set.
      dependencies: () => this.#dependencies(),
    });
    partsOf.set(this, this.#p);
  }

  /** @internal */
  async begin(): Promise<void> {
    // First readings before the worker starts, so its first sample has them.
    this.#p.heartbeat.publish();
    try {
      await this.#p.supervisor.start();
    } catch (err) {
      this.#p.gc?.stop();
      this.#p.exporter.stop();
      this.#release();
      throw err;
    }
    this.#p.heartbeat.start();
    // From now on watchThread() in the app's workers registers with this probe.
    this.#p.threadTable?.setOpen(true);
    this.#p.dependencies?.start();
    this.#p.requests?.start();
    const failed = (['health', 'control'] as const).filter(
      (name) => this.#p.servers[name] && 'error' in this.#p.servers[name]!,
    );
    if (failed.length > 0) {
      const why = failed.map((name) => `${name}: ${(this.#p.servers[name] as { error: string }).error}`).join('; ');
      await this.stop();
      throw new SysprobeError(
        ErrorCode.LISTEN_FAILED,
        `sysprobe could not listen (${why}); choose another port, or 0 for an ephemeral one.`,
      );
    }
    // Not awaited: a dead previous run is reported (event, incident) once its files are read, after start() resolves.
    void this.#p.crash.start();
    // Health has no token and control holds the captures: either beyond loopback deserves a line.
    for (const name of ['health', 'control'] as const) {
      const listening = this.#p.servers[name];
      const host = this.#p.options[name]?.host;
      if (listening && host !== undefined && !isLoopback(host)) {
        this.#p.logger.warn(
          { component: name, host, port: 'port' in listening ? listening.port : undefined },
          `sysprobe ${name} endpoint listens beyond loopback; see docs/security.md`,
        );
      }
    }
    this.#p.logger.info(
      {
        node: process.version,
        sysprobe: this.#p.version,
        workerTid: this.#p.supervisor.workerTid,
        sampleIntervalMs: this.#p.options.sampleIntervalMs,
        stallThresholdMs: this.#p.options.stallThresholdMs,
        loopWatch: this.#p.loopWatch.kind,
        // The native watchdog sleeps while the loop waits (woken by its next JS entry), or looks every threshold.
        ...(this.#p.loopWatch.kind === 'native' ? { loopWatchParks: this.#p.loopWatch.parks } : {}),
        ...(this.#p.loopWatch.why ? { loopWatchFallback: this.#p.loopWatch.why } : {}),
        // Which native parts loaded, and why not and what that costs where one did not (what `sysprobe doctor` says).
        native: nativeLogFields(),
        samplers: this.#p.options.samplers,
      },
      'sysprobe started',
    );
  }

  /** The `Retry-After` of an unhealthy answer, seconds (option `health.retryAfterSeconds`): what healthHandler() sends. */
  get retryAfterSeconds(): number {
    return this.#p.options.health.retryAfterSeconds;
  }

  /** How this probe sees stalls: `native` (no main-thread wake-ups) or `heartbeat` (the JS fallback). */
  get loopWatch(): LoopWatchKind {
    return this.#p.loopWatch.kind;
  }

  /**
   * The synthetic probes (option `probes`): per probe its last result, success, failure and
   * timeout counts, latency percentiles, the baseline its rule compares with, and whether that
   * rule's condition holds (`firing`) or the last runs all failed (`failing`).
   */
  async probeStatus(): Promise<ProbeStatus[]> {
    this.#assertRunning('probeStatus');
    return this.#probeStatus();
  }

  async #probeStatus(): Promise<ProbeStatus[]> {
    if (this.#p.options.probes.length === 0) return [];
    return (await this.#p.supervisor.request({ kind: 'probeStatus' }, REQUEST_TIMEOUT_MS)) as ProbeStatus[];
  }

  /**
   * What this process talks to: one entry per remote endpoint (address and port) with the host
   * names it was reached by, connections opened, last seen, and the probes' latency to it.
   * Empty with `dependencies: false` (probe targets included). When the worker cannot
   * answer, the entries come without probe latencies.
   */
  async dependencies(): Promise<Dependency[]> {
    this.#assertRunning('dependencies');
    return this.#dependencies();
  }

  async #dependencies(): Promise<Dependency[]> {
    if (!this.#p.dependencies) return [];
    const statuses = await this.#probeStatus().catch((err: unknown) => {
      this.#p.logger.debug({ err: describeError(err) }, 'sysprobe dependencies without probe latencies');
      return [];
    });
    const sockets = this.#p.options.sockets
      ? await this.#sockets().catch((err: unknown) => {
          this.#p.logger.debug({ err: describeError(err) }, 'sysprobe dependencies without socket states');
          return undefined;
        })
      : undefined;
    return this.#p.dependencies.entries(statuses, sockets?.byRemote);
  }

  /**
   * The process's health as the main thread sees it now: the latest readings (event-loop
   * delay and utilization, heap against its limit, RSS) against `health.thresholds`, the
   * rules with `markUnhealthy` that fired within their cooldown, synthetic probes whose last
   * runs all failed (`dependency`, degraded), and each health source.
   * `ok`, `degraded` (still serving) or `unhealthy`; the worst reason first.
   */
  health(now = Date.now()): Health {
    const { thresholds } = this.#p.options.health;
    // RSS is a /proc read: only when a threshold asks for it (off by default).
    const rss = this.#p.options.samplers.memory && thresholds.rssBytes ? process.memoryUsage.rss() : undefined;
    this.#p.heartbeat.refresh();
    const reasons = [
      ...thresholdReasons(readingsFromMain(this.#p.heartbeat.latest, rss), thresholds),
      ...this.#p.unhealthy.reasons(now),
      ...dependencyReasons([...this.#p.probeRuns.values()]),
    ];
    for (const [name, source] of this.#healthSources) {
      try {
        reasons.push(...sourceReasons(name, source()));
      } catch (err) {
        reasons.push({
          kind: 'source',
          source: name,
          status: 'unhealthy',
          message: `health source "${name}" threw: ${describeError(err).message}`,
        });
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
      throw new SysprobeError(
        ErrorCode.INVALID_OPTION,
        'addHealthSource(name, source) needs a non-empty name and a function.',
      );
    }
    if (this.#healthSources.has(name))
      throw new SysprobeError(
        ErrorCode.INVALID_OPTION,
        `A health source named "${name}" already exists on this probe.`,
      );
    this.#healthSources.set(name, source);
    return () => {
      if (this.#healthSources.get(name) === source) this.#healthSources.delete(name);
    };
  }

  /** Where the worker serves `GET /health` (`health.port`), or undefined when it does not. */
  healthAddress(): { address: string; port: number } | undefined {
    const health = this.#p.servers.health;
    return health && !('error' in health) ? { ...health } : undefined;
  }

  /** Where the worker serves the control endpoint (`control.port`), or undefined when it does not. */
  controlAddress(): { address: string; port: number } | undefined {
    const control = this.#p.servers.control;
    return control && !('error' in control) ? { ...control } : undefined;
  }

  /**
   * This process's incidents (the last 100 closed, and the open one), oldest first; [] when the
   * `incidents` option is false. Each folder holds manifest.json, the captures, samples.json
   * and logs.jsonl; `sysprobe report <dir>` turns one into an HTML page.
   */
  incidents(): IncidentSummary[] {
    return this.#p.incidents?.list() ?? [];
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
      throw new SysprobeError(
        ErrorCode.INVALID_OPTION,
        `recent({ sinceMs }) needs a number of milliseconds >= 0; got ${String(sinceMs)}.`,
      );
    }
    return this.#p.recentSamples(sinceMs);
  }

  /**
   * This process's TCP sockets as of the worker's latest sweep (option `sockets`): counts by
   * state, by remote endpoint and by listening port, queue bytes, the namespace's TCP counters
   * and, with `ss`, RTT and retransmissions. `supported: false` (and why) off Linux or without
   * /proc. Rejects with SYSPROBE_ERR_UNSUPPORTED when the sampler is off.
   */
  async sockets(): Promise<SocketPicture> {
    this.#assertRunning('sockets');
    return this.#sockets();
  }

  async #sockets(): Promise<SocketPicture> {
    if (!this.#p.options.sockets)
      throw new SysprobeError(ErrorCode.UNSUPPORTED, 'The socket sampler is off; start sysprobe with sockets: true.');
    return (await this.#p.supervisor.request({ kind: 'sockets' }, SOCKETS_REQUEST_TIMEOUT_MS)) as SocketPicture;
  }

  /**
   * The main thread's JS stack, taken from the worker through the inspector (innermost frame
   * first). Called from the main thread itself, the pause lands in the next JS the loop runs,
   * often sysprobe's own; the stack that matters is the one a stall event carries. Called while
   * a stack is being taken (a stall's, another caller's), it resolves with that one.
   * Rejects with SYSPROBE_ERR_CAPTURE_FAILED, or SYSPROBE_ERR_CAPTURE_BUSY while an earlier pause
   * has still not landed (the main thread is in native code).
   */
  async captureStack(): Promise<Frame[]> {
    this.#assertRunning('captureStack');
    const result = (await this.#p.supervisor.request({ kind: 'captureStack' }, STACK_REQUEST_TIMEOUT_MS)) as {
      frames: Frame[];
    };
    return result.frames;
  }

  /**
   * Runs V8's CPU profiler on the main thread for `durationMs` (from the worker, so it works
   * while the main thread is blocked), writes a .cpuprofile and a gzipped pprof file into
   * `dumpDir`, and resolves with their paths and a summary: top functions by self time and
   * the busy-loop signature, with when it ran (`profiledFrom`, `durationMs`).
   *
   * V8 runs one CPU profile at a time. Asked for while one runs (another call, a rule's, the
   * control endpoint's), this waits for it and resolves with its result, the same files and
   * summary, marked `shared: true`, provided it ends within the `durationMs` asked for (so the
   * wait is never longer than your own profile's, and the profile covers all of it; its own
   * duration may differ from yours). If it has longer to run, this rejects with
   * SYSPROBE_ERR_CAPTURE_BUSY, whose message says how long it has left.
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
    return this.#p.snapshots.capture({ trigger: 'captureHeapSnapshot()' });
  }

  /**
   * Runs V8's sampling heap profiler on the main thread for `durationMs` (from the worker) and
   * writes a .heapprofile (Chrome DevTools) into `dumpDir`; resolves with its path and a summary
   * of the stacks that allocated what was still live at the end. Asked for while another
   * allocation profile runs, it shares that one's result as {@link Probe.captureCpuProfile}
   * does (`shared: true`), or rejects with SYSPROBE_ERR_CAPTURE_BUSY when it has longer to run
   * than the `durationMs` asked for.
   */
  async captureAllocationProfile(options: AllocationProfileOptions = {}): Promise<AllocationProfileResult> {
    return (await this.#requestProfile(
      'captureAllocationProfile',
      options.durationMs ?? 10_000,
    )) as AllocationProfileResult;
  }

  /** Checks the duration and asks the worker; the wait covers the profile, writing it, and the round trip. */
  #requestProfile(kind: 'captureCpuProfile' | 'captureAllocationProfile', durationMs: number): Promise<unknown> {
    this.#assertRunning(kind);
    if (!Number.isInteger(durationMs) || durationMs < 10 || durationMs > 600_000) {
      throw new SysprobeError(
        ErrorCode.INVALID_OPTION,
        `${kind}({ durationMs }) needs an integer from 10 to 600000; got ${String(durationMs)}.`,
      );
    }
    return this.#p.supervisor.request({ kind, durationMs }, durationMs + 15_000);
  }

  /**
   * A cache with hard limits (`max` entries, `maxBytes`, `ttlMs`) whose eviction cannot be
   * skipped: a loader that throws leaves nothing behind. Its size, bytes, hits, misses and
   * evictions are metrics (`sysprobe.cache.*`). Names are unique per probe.
   */
  cache<K extends {}, V extends {}>(name: string, options: CacheOptions<K, V>): BoundedCache<K, V> {
    this.#assertRunning('cache');
    if (this.#p.caches.has(name) || this.#p.watchers.has(name))
      throw new SysprobeError(ErrorCode.INVALID_OPTION, `A cache named "${name}" already exists on this probe.`);
    const cache = createCache<K, V>(name, options);
    this.#p.caches.set(name, cache as unknown as BoundedCache<{}, {}>);
    return cache;
  }

  /**
   * Watches a Map- or Set-like cache the app already has: its size becomes a metric, growth
   * is reported, and with `{ maxEntries, evictOldest: true }` the oldest entries are dropped
   * above the limit, once per sample interval.
   */
  watchCache(name: string, collection: WatchableMap, options?: WatchOptions): CacheWatcher {
    this.#assertRunning('watchCache');
    if (this.#p.caches.has(name) || this.#p.watchers.has(name))
      throw new SysprobeError(ErrorCode.INVALID_OPTION, `A cache named "${name}" already exists on this probe.`);
    const watcher = watchCache(name, collection, options);
    this.#p.watchers.set(name, watcher);
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
    return this.#p.jobs.guard(name, job, options);
  }

  /**
   * Runs a CPU-bound job in its own worker thread (`file` is the module; its first message is
   * the result), terminated at `timeoutMs`: the way to stop a job that must really stop.
   */
  async guardWorker<T>(name: string, file: string | URL, options: GuardWorkerOptions): Promise<T> {
    this.#assertRunning('guardWorker');
    return this.#p.jobs.guardWorker(name, file, options);
  }

  /** Releases everything the probe started: timers, observers, the worker, the instruments' callbacks. */
  stop(): Promise<void> {
    this.#stopped ??= (async () => {
      // Registered threads stay registered (the next probe watches them); new ones are refused until then.
      this.#p.threadTable?.setOpen(false);
      this.#p.heartbeat.stop();
      this.#p.dependencies?.stop();
      this.#p.requests?.stop();
      for (const watcher of this.#p.watchers.values()) watcher.stop();
      await this.#p.jobs.stop();
      // Before the worker goes: closing has it write the samples up to now.
      await this.#p.incidents?.stop();
      this.#p.gc?.stop();
      this.#p.exporter.stop();
      await this.#p.supervisor.stop();
      this.#p.hostProfiler?.close();
      this.#p.crash.stop();
      this.#release();
      this.#p.logger.info(
        { uptimeMs: Date.now() - this.#startedAt, workerRestarts: this.#p.supervisor.restarts },
        'sysprobe stopped',
      );
    })();
    return this.#stopped;
  }

  #release(): void {
    // After the worker is gone, so its watchdog no longer reads the hook's stamps.
    this.#p.loopWatch.addon?.detach();
    if (current === this) {
      current = undefined;
      releaseLoop('start');
    }
  }

  #assertRunning(method: string): void {
    if (this.#stopped)
      throw new SysprobeError(
        ErrorCode.STOPPED,
        `probe.${method}() was called after stop(); call start() for a new probe.`,
      );
  }

  /** @internal */
  static async create(input: ProbeOptions | undefined): Promise<Probe> {
    const options = resolveOptions(input);
    if (current || starting) {
      throw new SysprobeError(
        ErrorCode.ALREADY_STARTED,
        'sysprobe is already running in this process; reuse the probe that start() returned, or await probe.stop() before starting again.',
      );
    }
    // A worker thread watched by the main thread's probe (watchThread()) is not watched a second time.
    claimLoop('start');
    starting = true;
    try {
      const probe = new Probe(options);
      current = probe;
      await probe.begin();
      return probe;
    } finally {
      starting = false;
      if (!current) releaseLoop('start'); // it did not start
    }
  }
}

function isLoopback(host: string): boolean {
  return /^(localhost|::1|0:0:0:0:0:0:0:1|(::ffff:)?127\.\d+\.\d+\.\d+)$/i.test(host);
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
