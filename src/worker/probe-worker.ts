/**
 * The probe worker's entry point. It keeps the flight recorder, reads what need
 * not be read on the main thread (per-thread CPU from /proc), and runs the stall
 * watch, which sees a stall of the main thread while the stall lasts.
 *
 * It wakes rarely: the main thread appends its readings to a shared ring, and the
 * worker turns them into samples in batches (every DRAIN_SLOTS readings at most,
 * before answering a request, when a stall starts). During a stall it records a
 * sample of its own each interval, flagged mainStale.
 *
 * Nothing here may throw out of a handler: every failure becomes a 'log'
 * message to the main thread, which logs and counts it.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { describeError, ErrorCode, SysprobeError } from '../errors.js';
import { loadLoopWatch } from '../stalls/loop-watch.js';
import type { HostRequest, LogLevel, MainToWorker, Request, StallWorkerFacts, WorkerToMain } from '../protocol.js';
import type { Frame } from '../captures/cpuprofile.js';
import type { Sample } from '../samples/sample.js';
import { selfPausedNow, Beat, lateStallCapture } from '../stalls/stall.js';
import type { WorkerSettings } from './settings.js';
import { PendingRequests } from '../internal/pending-requests.js';
import { WorkerCaptures, type StallStack } from '../captures/worker-captures.js';
import { MainSamples, ownThreadId } from '../samples/main-samples.js';
import { NEAR_LIMIT_RULE, RuleEngine } from '../rules/engine.js';
import { isProbeRuleValue, type RuleFiring } from '../rules/firing.js';
import { SocketWatch } from '../sockets/watch.js';
import { HeartbeatStallWatch, NativeStallWatch, type StallReport, type StallWatch } from '../stalls/stall-watch.js';
import { ProbeRunner, type ProbeResult } from '../synthetics/runner.js';
import { ProbeBook } from '../synthetics/book.js';
import { WorkerEndpoints } from './endpoints.js';
import { UnhealthyRules } from '../health/unhealthy.js';
import { writeIncidentSamples } from '../incidents/samples.js';
import { InFlightReader } from '../stalls/requests.js';
import { observeThread } from '../stalls/cause.js';
import { CgroupWatch } from '../containers/cgroup-watch.js';
import { CrashWatch } from '../crash/crash-watch.js';
import type { NearLimit } from '../crash/near-limit.js';
import { WatchedThreads, type WatchedStall } from '../stalls/watched-threads.js';
import { ThreadTable } from '../stalls/thread-table.js';

/** Drain the main thread's ring after at most this many readings: half the ring, so it never wraps. */
const DRAIN_SLOTS = 32;
/** ...and at least this often, so per-thread CPU has a useful resolution. */
const DRAIN_MAX_MS = 10_000;
/** How long the worker lingers after closing its inspector session, before it exits. */
const SESSION_TEARDOWN_MS = 100;
/** The most looks at the blocked main thread kept per stall (one when it is seen, then one per sample interval). */
const MAX_STALL_OBSERVATIONS = 8;
/** A heap snapshot asked for over the control endpoint: the main thread writes it (seconds for a big heap). */
const HOST_REQUEST_TIMEOUT_MS = 120_000;
/** Near a memory limit: the main thread's diagnostic report. */
const NEAR_LIMIT_REPORT_TIMEOUT_MS = 10_000;

class ProbeWorker {
  readonly #port: NonNullable<typeof parentPort>;
  readonly #settings: WorkerSettings;
  readonly #drainIntervalMs: number;
  readonly #watch: StallWatch | undefined;
  /** The main thread's readings turned into samples, and the flight recorder (src/samples/main-samples.ts). */
  readonly #samples: MainSamples;
  /** Every capture of the main thread, its budget and its dedupe (src/captures/worker-captures.ts). */
  readonly #captures: WorkerCaptures;
  readonly #rules: RuleEngine;
  /** The heartbeat's shared slots: sysprobe's own pause is read there when a stall is seen. */
  readonly #beat: BigInt64Array;
  /** The stack capture of the stall in progress, settled before the stall is reported. */
  #stallStack: Promise<StallStack> | undefined;
  #stalled = false;
  #timer: NodeJS.Timeout | undefined;
  #stopped = false;
  /** The socket sampler, on its own interval (option `sockets`). */
  readonly #sockets: SocketWatch | undefined;
  /** Synthetic transactions and their book (counts, latencies, baseline rules); absent without `probes`. */
  readonly #probes: { runner: ProbeRunner; book: ProbeBook } | undefined;
  /** The HTTP endpoints (health, control), when asked for. */
  readonly #endpoints: WorkerEndpoints;
  /** Rules with markUnhealthy that fired, until their cooldown ends: decided here (for GET /health), told to the main thread. */
  readonly #unhealthy = new UnhealthyRules();
  /** The stall in progress: when the worker learned of it, and its stack capture. */
  #stallNow: { stack: Promise<Frame[] | undefined> } | undefined;
  /** The HTTP requests in flight on the main thread (a shared table it writes); absent when that sampler is off. */
  readonly #requests: InFlightReader | undefined;
  /** What the worker saw of the stall in progress: its requests, the main thread's state. */
  #stallFacts: StallWorkerFacts | undefined;
  /** The worker's requests to the main thread (a heap snapshot for the control endpoint). */
  readonly #hostRequests = new PendingRequests();
  /** This process's cgroup (Linux; src/containers), read when the worker drains. */
  readonly #cgroup: CgroupWatch;
  /** The run record and the near-limit watch (src/crash). */
  readonly #crash: CrashWatch;
  /** The app's worker threads registered with watchThread() (a main-thread probe only; src/stalls/watched-threads.ts). */
  readonly #threads: WatchedThreads | undefined;

  constructor(port: NonNullable<typeof parentPort>, settings: WorkerSettings) {
    this.#port = port;
    this.#settings = settings;
    this.#beat = new BigInt64Array(settings.heartbeat, 0, Beat.SIZE);
    this.#requests = settings.requestTable && new InFlightReader(settings.requestTable);
    this.#drainIntervalMs = Math.min(DRAIN_MAX_MS, DRAIN_SLOTS * settings.sampleIntervalMs);
    this.#captures = new WorkerCaptures(
      settings,
      (capture) => this.#send({ type: 'captured', capture }),
      () => this.#stalled,
      (level, msg, fields) => this.#log(level, msg, fields),
      // A worker host's profiles: it takes them of itself (captures/host-profiler.ts).
      (request, timeoutMs) => this.#askHost(request, timeoutMs),
    );
    this.#rules = new RuleEngine(settings.rules.map((r) => r.condition));
    this.#sockets =
      settings.sockets &&
      new SocketWatch(
        settings.sockets,
        (level, msg, fields) => this.#log(level, msg, fields),
        (err) => this.#log('error', 'sysprobe sampler failed', { component: 'sockets', err: describeError(err) }),
      );
    this.#cgroup = new CgroupWatch((problem) =>
      this.#log('debug', 'sysprobe cgroup reader', { component: 'cgroup', problem }),
    );
    const tid = ownThreadId();
    this.#samples = new MainSamples(settings, tid, {
      lagMs: () => this.#watch?.lagMs() ?? 0,
      sockets: () => this.#sockets?.summary(),
      cgroup: this.#cgroup,
      recorded: (sample, mainStale) => this.#onSample(sample, mainStale),
      lost: (lost) =>
        this.#log('warn', 'sysprobe worker fell behind; main-thread readings were lost', {
          component: 'recorder',
          lost,
        }),
    });
    if (settings.samplers.threads && !this.#samples.threadsSupported) {
      this.#log('info', 'per-thread CPU sampler unsupported on this platform', {
        sampler: 'threads',
        platform: process.platform,
      });
    }
    this.#crash = new CrashWatch({ dumpDir: settings.dumpDir, service: settings.serviceName }, this.#cgroup, (err) =>
      this.#log('warn', 'sysprobe could not write its run record', { component: 'crash', err: describeError(err) }),
    );
    // The record starts with the cgroup's OOM-kill count, so the next start can tell whether the kernel struck.
    void this.#cgroup.refresh().finally(() => this.#crash.begin());
    port.on('message', (message: MainToWorker) => this.#onMessage(message));
    this.#watch = settings.samplers.eventLoop ? this.#startWatch() : undefined;
    this.#threads =
      settings.threadTable && settings.samplers.eventLoop
        ? new WatchedThreads(new ThreadTable(settings.threadTable), settings.stallThresholdMs, {
            stallStack: (stackHost, tid) => this.#captures.stallStack(false, stackHost, tid),
            stalled: (stall) => this.#onThreadStall(stall),
            log: (level, msg, fields) => this.#log(level, msg, fields),
          })
        : undefined;
    this.#probes = this.#startProbes(settings);
    this.#endpoints = new WorkerEndpoints(settings, {
      latestSample: () => this.#latestSample(),
      stall: () => {
        // Read live: the loop can be stalled before the watch reports it (see StallWatch.stalledForMs).
        const liveMs = this.#watch?.stalledForMs();
        const reported = this.#stalled ? this.#stallNow : undefined;
        if (liveMs === undefined && !reported) return undefined;
        return {
          forMs: liveMs ?? this.#watch?.lagMs() ?? 0,
          stack: reported?.stack ?? Promise.resolve(undefined),
          requests: this.#requests?.read().requests,
          observation: reported ? this.#stallFacts?.observations.at(-1) : observeThread(this.#settings.mainTid),
        };
      },
      blockedThreads: () => this.#threads?.blocked() ?? [],
      ruleReasons: (now) => this.#unhealthy.reasons(now),
      probeStatuses: () => this.#probes?.book.status() ?? [],
      control: {
        captureStack: () => this.#captures.stack(),
        captureCpuProfile: (durationMs) => this.#captures.cpuProfile(durationMs),
        captureAllocationProfile: (durationMs) => this.#captures.allocationProfile(durationMs),
        captureHeapSnapshot: () =>
          this.#askHost({ kind: 'captureHeapSnapshot', trigger: 'control endpoint' }, HOST_REQUEST_TIMEOUT_MS),
        samples: (last) => {
          this.#drain();
          return this.#samples.since(undefined).slice(-last);
        },
      },
      log: (level, msg, fields) => this.#log(level, msg, fields),
    });
    // Ready once the endpoints listen (or failed to), so start() can report their addresses.
    void this.#endpoints.start().then((servers) => this.#send({ type: 'ready', tid, servers }));
    // The main thread left its first reading before starting us: a first sample now, so a collection right after start() has values.
    this.#drain();
    this.#arm();
  }

  #startWatch(): StallWatch | undefined {
    const onStall = (report: StallReport) => this.#onStall(report);
    if (this.#settings.loopWatch === 'heartbeat') return new HeartbeatStallWatch(this.#settings, onStall);
    try {
      const { addon, error } = loadLoopWatch();
      if (!addon) throw new Error(error);
      return new NativeStallWatch(addon, this.#settings.loopId, this.#settings.stallThresholdMs, onStall);
    } catch (err) {
      // The main thread found the addon, so this is unexpected; without a heartbeat nobody can watch.
      this.#log('error', 'sysprobe stall watch failed to start; stalls will not be seen', {
        component: 'watchdog',
        err: describeError(err),
      });
      return undefined;
    }
  }

  #startProbes(settings: WorkerSettings): { runner: ProbeRunner; book: ProbeBook } | undefined {
    if (!settings.probes?.length) return undefined;
    const book = new ProbeBook(settings.probes);
    const runner = new ProbeRunner(settings.probes, (result) =>
      this.#guarded('probes', () => this.#onProbeResult(book, result)),
    );
    runner.start();
    return { runner, book };
  }

  /** A probe run finished: to the main thread for metrics, the dependency map and health; a baseline firing goes out as an ordinary rule. */
  #onProbeResult(book: ProbeBook, result: ProbeResult): void {
    const firing = book.record(result);
    this.#send({ type: 'probeResult', result, failing: book.failing(result.name) });
    if (firing) void this.#onRuleFired(firing);
  }

  #send(message: WorkerToMain): void {
    if (!this.#stopped) this.#port.postMessage(message);
  }

  #log(level: LogLevel, msg: string, fields: Record<string, unknown> = {}): void {
    this.#send({ type: 'log', level, msg, fields });
  }

  /** Runs a handler so that nothing it throws escapes: it is logged as a sampler failure instead. */
  #guarded(component: string, fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.#log('error', 'sysprobe sampler failed', { component, err: describeError(err) });
    }
  }

  #onMessage(message: MainToWorker): void {
    switch (message.type) {
      case 'request':
        this.#drain();
        void this.#answer(message.id, message.request);
        return;
      case 'selfPause':
        this.#samples.selfPause(message.active);
        return;
      case 'incidentClosed':
        this.#captures.incidentClosed();
        return;
      case 'hostResponse': {
        this.#hostRequests.settle(
          message.id,
          message.ok
            ? { ok: true, value: message.value }
            : { ok: false, error: Object.assign(new Error(message.error.message), { code: message.error.code }) },
        );
        return;
      }
      case 'stop':
        this.#stop();
        return;
      default: {
        // An unknown message means the two sides disagree on the protocol: stop rather than guess.
        const unknown: never = message;
        this.#log('error', 'sysprobe worker got an unknown message; stopping', {
          message: String((unknown as { type?: unknown }).type),
        });
        this.#stop();
      }
    }
  }

  async #answer(id: number, request: Request): Promise<void> {
    try {
      let value: unknown;
      switch (request.kind) {
        case 'recent':
          value = this.#samples.since(request.sinceMs === undefined ? undefined : Date.now() - request.sinceMs);
          break;
        case 'captureStack':
          value = await this.#captures.stack();
          break;
        case 'captureCpuProfile':
          value = await this.#captures.cpuProfile(request.durationMs);
          break;
        case 'captureAllocationProfile':
          value = await this.#captures.allocationProfile(request.durationMs);
          break;
        case 'sockets':
          if (!this.#sockets)
            throw new SysprobeError(
              ErrorCode.UNSUPPORTED,
              'The socket sampler is off; start sysprobe with sockets: true.',
            );
          value = await this.#sockets.latest();
          break;
        case 'probeStatus':
          value = this.#probes?.book.status() ?? [];
          break;
        case 'writeSamples':
          value = await writeIncidentSamples(this.#samples.recorder, request.file, request.sinceTime, request.max);
          break;
        default:
          throw new Error(`unknown request ${(request as { kind?: unknown }).kind}`);
      }
      this.#send({ type: 'response', id, ok: true, value });
    } catch (err) {
      const { message, code } = describeError(err);
      this.#send({
        type: 'response',
        id,
        ok: false,
        error: { code: code?.startsWith('SYSPROBE_') ? code : ErrorCode.WORKER_UNAVAILABLE, message },
      });
    }
  }

  /** Asks the main thread for what only it can do; bounded by `timeoutMs`. */
  #askHost(request: HostRequest, timeoutMs: number): Promise<unknown> {
    return this.#hostRequests.add(
      (id) => this.#send({ type: 'hostRequest', id, request }),
      timeoutMs,
      () =>
        Object.assign(new Error(`the main thread did not answer '${request.kind}' within ${timeoutMs} ms`), {
          code: ErrorCode.TIMEOUT,
        }),
      true,
    );
  }

  /** The newest sample; pending main-thread readings are drained first, at most once per sample interval. */
  #latestSample(): Sample | undefined {
    if (!this.#stalled && performance.now() - this.#samples.lastDrainAt >= this.#settings.sampleIntervalMs)
      this.#drain();
    return this.#samples.latest;
  }

  /** Each new sample: the near-limit watch and the rules look at it. */
  #onSample(sample: Sample, mainStale: boolean): void {
    if (!mainStale) {
      const near = this.#crash.observe(sample);
      if (near) void this.#onNearLimit(near);
    }
    for (const firing of this.#rules.observe(sample)) void this.#onRuleFired(firing);
  }

  /** Runs the captures a fired rule asks for (src/captures/worker-captures.ts) and reports the firing to the main thread. */
  async #onRuleFired(firing: RuleFiring): Promise<void> {
    const rule = this.#settings.rules.find((r) => r.condition.name === firing.rule);
    const unhealthy = this.#unhealthy.mark(firing, rule);
    // A slow dependency: how this process's connections look right then (queues, states, retransmits per remote).
    const sockets = this.#sockets;
    const captures = await this.#captures.forRule(
      firing,
      rule,
      isProbeRuleValue(firing.value) && sockets ? () => sockets.fresh() : undefined,
    );
    this.#send({ type: 'rule', firing, captures, ...(unhealthy ? { unhealthy } : {}) });
  }

  #onStall(report: StallReport): void {
    if (report.ended) {
      this.#stalled = false;
      this.#stallNow = undefined;
      const stallStack =
        this.#stallStack ??
        Promise.resolve({
          stack: undefined,
          capture: report.late
            ? lateStallCapture()
            : { how: 'skipped' as const, detectedAt: Date.now(), reason: 'no capture started' },
          selfPaused: false,
        });
      this.#stallStack = undefined;
      const facts = this.#stallFacts ?? { observations: [], selfPaused: selfPausedNow(this.#beat) };
      this.#stallFacts = undefined;
      // The capture has its own timeout, so the report is late by at most that.
      void Promise.all([stallStack, this.#cgroup.stallEnded().catch(() => undefined)]).then(
        ([{ stack, capture, selfPaused }, throttledMs]) =>
          this.#send({
            type: 'stall',
            startedAt: report.startedAt,
            durationMs: report.durationMs,
            stack,
            capture,
            facts: { ...facts, selfPaused: facts.selfPaused || selfPaused },
            ...(throttledMs !== undefined ? { throttledMs } : {}),
          }),
      );
    } else {
      // sysprobe's own pause is read from shared memory: the main thread set it before pausing, so it is never late.
      const selfPaused = selfPausedNow(this.#beat);
      // First what the blocked thread is doing and which requests it holds: a look at /proc and at shared memory, before anything else.
      this.#guarded('stalls', () => {
        const facts: StallWorkerFacts = { observations: [], selfPaused };
        if (this.#requests) facts.requests = this.#requests.read(true);
        this.#stallFacts = facts;
        this.#observeMain();
      });
      // Take the stack now, while the loop is still blocked: that is the whole point.
      this.#stallStack = this.#captures.stallStack(selfPaused);
      this.#cgroup.stallStarted();
      this.#stallNow = { stack: this.#stallStack.then((s) => s.stack) };
      // From now until the loop runs again, the worker records a sample of its own each interval.
      this.#drain();
      this.#stalled = true;
      this.#guarded('recorder', () => this.#samples.recordStale());
    }
    clearTimeout(this.#timer);
    this.#arm();
  }

  /** A watched thread's stall is over: to the main thread, which explains and emits it as its own. */
  #onThreadStall(stall: WatchedStall): void {
    const { thread, startedAt, durationMs, stack, capture, observations } = stall;
    this.#send({
      type: 'stall',
      thread,
      startedAt,
      durationMs,
      stack,
      capture,
      facts: { observations, selfPaused: false },
    });
  }

  /** The worker's one timer: the next drain, a sample during a stall, or sooner when the heartbeat watch needs a look. */
  #arm(): void {
    if (this.#stopped) return;
    // Near a memory limit the process may have seconds left: every reading counts then.
    const next =
      this.#stalled || this.#crash.approaching
        ? this.#settings.sampleIntervalMs
        : this.#drainIntervalMs - (performance.now() - this.#samples.lastDrainAt);
    this.#timer = setTimeout(() => this.#wake(), Math.max(1, Math.min(this.#watch?.dueMs() ?? Infinity, next)));
    this.#timer.unref();
  }

  /** Looks at the blocked main thread's state and system call (src/stalls/cause.ts). */
  #observeMain(): void {
    const facts = this.#stallFacts;
    if (!facts || facts.observations.length >= MAX_STALL_OBSERVATIONS) return;
    const observation = observeThread(this.#settings.mainTid);
    if (observation) facts.observations.push(observation);
  }

  #wake(): void {
    if (this.#watch) this.#guarded('watchdog', () => this.#watch?.check());
    if (this.#stalled) this.#guarded('stalls', () => this.#observeMain());
    if (this.#stalled) this.#guarded('recorder', () => this.#samples.recordStale());
    else if (this.#crash.approaching || performance.now() - this.#samples.lastDrainAt >= this.#drainIntervalMs - 5)
      this.#drain();
    this.#arm();
  }

  /** The main thread's readings into samples (src/samples/main-samples.ts); then the cgroup and the run record. */
  #drain(): void {
    this.#samples.lastDrainAt = performance.now();
    let fresh = 0;
    this.#guarded('recorder', () => {
      fresh = this.#samples.drain();
    });
    // Read for the next drain's samples (the reading lags by one drain, never blocks one). Not when this drain
    // found no reading (the main thread's readings stretch while idle): nothing new will carry it, and each
    // read is a dozen file operations on libuv's pool.
    if (fresh > 0) void this.#cgroup.refresh();
    this.#crash.drained(() => this.#samples.since(undefined));
  }

  /**
   * Near the heap or memory limit: what is safe to write, before a crash may take everything.
   * The samples go to the run record first; then the near-limit captures, reported as the
   * `near-limit` rule firing.
   */
  async #onNearLimit(near: NearLimit): Promise<void> {
    this.#log('warn', 'sysprobe: the process is near its memory limit', {
      component: 'crash',
      kind: near.kind,
      share: near.share,
      reason: near.reason,
    });
    await this.#crash.persistNow(this.#samples.since(undefined), near);
    const firing: RuleFiring = {
      rule: NEAR_LIMIT_RULE,
      value: near.kind === 'heap' ? 'memory.liveHeapLimitShare' : 'cgroup.memoryWorkingSetRatio',
      threshold: 0.9,
      observed: near.share,
      aboveForMs: 0,
      firedAt: near.at,
    };
    const captures = await this.#captures.nearLimit(firing, () =>
      this.#askHost({ kind: 'diagnosticReport', trigger: NEAR_LIMIT_RULE }, NEAR_LIMIT_REPORT_TIMEOUT_MS),
    );
    const files = [captures.allocationProfile?.file, captures.diagnosticReport?.file].filter(
      (f): f is string => f !== undefined,
    );
    await this.#crash.persistNow(
      this.#samples.since(undefined),
      near,
      files.map((f) => f.split('/').pop()!),
    );
    this.#send({ type: 'rule', firing, captures });
  }

  #stop(): void {
    this.#stopped = true;
    this.#crash.end();
    clearTimeout(this.#timer);
    this.#probes?.runner.stop();
    this.#watch?.stop();
    this.#threads?.stop();
    this.#sockets?.stop();
    this.#endpoints.stop();
    this.#hostRequests.failAll(
      new SysprobeError(ErrorCode.STOPPED, 'the probe worker stopped before the main thread answered'),
    );
    // Node 20 can abort the process when a worker exits while the main thread is still
    // tearing down that worker's inspector session; give the main thread a moment first.
    if (this.#captures.close()) setTimeout(() => this.#port.close(), SESSION_TEARDOWN_MS);
    else this.#port.close();
  }
}

if (parentPort) new ProbeWorker(parentPort, workerData as WorkerSettings);
