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
import * as fs from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { describeError, ErrorCode, SysprobeError } from '../errors.js';
import { loadLoopWatch } from '../stalls/loop-watch.js';
import type { LogLevel, MainToWorker, Request, WorkerToMain } from '../protocol.js';
import type { AllocationProfileResult, CpuProfileResult, RuleCaptures } from '../captures/results.js';
import type { Frame } from '../captures/cpuprofile.js';
import type { MainSample, Sample } from '../samples/sample.js';
import type { StallCapture } from '../stalls/stall.js';
import type { WorkerSettings } from './settings.js';
import { writeAllocationFiles, writeProfileFiles } from '../captures/profile-files.js';
import { readLoadAverage, readProcessCpu, ThreadCpuSampler } from '../samples/cpu.js';
import { PendingRequests } from '../internal/pending-requests.js';
import { RateBudget } from '../internal/rate-budget.js';
import { FileSink } from '../sink/file-sink.js';
import { functionSink, type CaptureSink } from '../sink/sink.js';
import { SharedJsonRing } from '../internal/shared-ring.js';
import { MainInspector } from '../captures/main-inspector.js';
import { SourceMaps } from '../sourcemaps/source-maps.js';
import { FlightRecorder } from '../samples/recorder.js';
import { GrowthTracker } from '../memory/growth.js';
import { gcRates } from '../memory/gc-rates.js';
import { NEAR_LIMIT_RULE, RuleEngine } from '../rules/engine.js';
import { isProbeRuleValue } from '../rules/firing.js';
import type { RuleFiring } from '../rules/firing.js';
import { SocketWatch } from '../sockets/watch.js';
import { HeartbeatStallWatch, NativeStallWatch, type StallReport, type StallWatch } from '../stalls/stall-watch.js';
import { ProbeRunner, type ProbeResult } from '../synthetics/runner.js';
import { ProbeBook } from '../synthetics/book.js';
import { WorkerEndpoints } from './endpoints.js';
import { ruleReason, type HealthReason } from '../health/evaluate.js';
import type { HostRequest } from '../protocol.js';
import { writeIncidentSamples } from '../incidents/samples.js';
import { InFlightReader } from '../stalls/requests.js';
import { observeThread } from '../stalls/cause.js';
import type { StallWorkerFacts } from '../protocol.js';
import { CgroupWatch } from '../containers/cgroup-watch.js';
import { CrashWatch } from '../crash/crash-watch.js';
import type { NearLimit } from '../crash/near-limit.js';

/** Drain the main thread's ring after at most this many readings: half the ring, so it never wraps. */
const DRAIN_SLOTS = 32;
/** ...and at least this often, so per-thread CPU has a useful resolution. */
const DRAIN_MAX_MS = 10_000;
/** sysprobe's own pauses remembered to mark the samples they fall in (a few cover any batch of readings). */
const MAX_SELF_PAUSES = 8;
/** A stall's stack must come while the stall lasts; a pause that takes longer than this is reported as failed. */
const STALL_STACK_TIMEOUT_MS = 2_000;
/** Heap growth is fitted over this many floors of the window (30 s each at the default 10 minutes: tens of GC cycles). */
const GROWTH_FLOORS = 20;
/** V8's default for the sampling heap profiler: one sample per 32 KB allocated, cheap enough to run for minutes. */
const ALLOCATION_SAMPLING_BYTES = 32 * 1024;
/** How long the worker lingers after closing its inspector session, before it exits. */
const SESSION_TEARDOWN_MS = 100;
/** V8's default sampling interval: fine enough for a spike of a few seconds, cheap enough to leave on during one. */
const PROFILE_SAMPLING_INTERVAL_US = 1000;
/** The most looks at the blocked main thread kept per stall (one when it is seen, then one per sample interval). */
const MAX_STALL_OBSERVATIONS = 8;
/** A heap snapshot asked for over the control endpoint: the main thread writes it (seconds for a big heap). */
const HOST_REQUEST_TIMEOUT_MS = 120_000;
/** Near a memory limit: a short allocation profile (the stacks allocating now), and the main thread's diagnostic report. */
const NEAR_LIMIT_PROFILE_MS = 1_000;
const NEAR_LIMIT_REPORT_TIMEOUT_MS = 10_000;

function ownThreadId(): number | undefined {
  try {
    // "/proc/thread-self" links to "<pid>/task/<tid>" for the calling thread.
    const tid = Number(fs.readlinkSync('/proc/thread-self').split('/').pop());
    return Number.isInteger(tid) ? tid : undefined;
  } catch {
    return undefined;
  }
}

class ProbeWorker {
  readonly #port: NonNullable<typeof parentPort>;
  readonly #settings: WorkerSettings;
  readonly #mainRing: SharedJsonRing;
  readonly #drainIntervalMs: number;
  readonly #watch: StallWatch | undefined;
  readonly #recorder: FlightRecorder<Sample>;
  readonly #threadCpu: ThreadCpuSampler;
  /** Source maps of the main thread's scripts, read when a position is shown (stacks, profile summaries, pprof). */
  readonly #sourceMaps = new SourceMaps({ readTimeoutMs: 1000 });
  readonly #inspector = new MainInspector(this.#sourceMaps);
  readonly #budget: RateBudget;
  /** The worker's own sink on the dump directory (the main thread has one for heap snapshots; they share its naming and limits). */
  readonly #sink: CaptureSink;
  readonly #rules: RuleEngine;
  /** Sustained growth of the heap, RSS and external memory (floors fitted over growthWindowMs). */
  readonly #growth: Record<'heap' | 'rss' | 'external', GrowthTracker>;
  /** The stack capture of the stall in progress, settled before the stall is reported. */
  #stallStack: Promise<{ stack: Frame[] | undefined; capture: StallCapture; selfPaused: boolean }> | undefined;
  #cursor = 0;
  #lastMain: MainSample | undefined;
  #lastSample: Sample | undefined;
  #lastDrainAt = performance.now();
  #stalled = false;
  /** Set while the main thread pauses itself on purpose (a heap snapshot): its stalls are reported, not captured. */
  #selfPause: string | undefined;
  /** sysprobe's own recent pauses of the main thread (heap snapshots), oldest first; `to` unset while one lasts. */
  readonly #selfPauses: Array<{ from: number; to: number | undefined }> = [];
  #timer: NodeJS.Timeout | undefined;
  #stopped = false;
  /** The capture kinds taken for the open incident (incidents on): concurrent firings join it without a second capture of a kind. */
  readonly #incidentKinds = new Set<string>();
  /** The socket sampler, on its own interval (option `sockets`). */
  readonly #sockets: SocketWatch | undefined;
  /** Synthetic transactions and their book (counts, latencies, baseline rules); absent without `probes`. */
  readonly #probes: { runner: ProbeRunner; book: ProbeBook } | undefined;
  /** The HTTP endpoints (health, control), when asked for. */
  readonly #endpoints: WorkerEndpoints;
  /** Rules with markUnhealthy that fired here, by name, until their cooldown ends (for GET /health). */
  readonly #unhealthy = new Map<string, HealthReason>();
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

  constructor(port: NonNullable<typeof parentPort>, settings: WorkerSettings) {
    this.#port = port;
    this.#settings = settings;
    this.#mainRing = new SharedJsonRing(settings.mainRing);
    this.#requests = settings.requestTable && new InFlightReader(settings.requestTable);
    this.#drainIntervalMs = Math.min(DRAIN_MAX_MS, DRAIN_SLOTS * settings.sampleIntervalMs);
    this.#budget = new RateBudget(settings.capturesPerMinute, 60_000);
    // Each finished capture is announced to the main thread, which tells the app (onCapture, 'capture').
    this.#sink = functionSink(
      new FileSink({ dir: settings.dumpDir, maxBytes: settings.dumpMaxBytes, service: settings.serviceName, sysprobeVersion: settings.sysprobeVersion }),
      (capture) => this.#send({ type: 'captured', capture }));
    this.#rules = new RuleEngine(settings.rules.map((r) => r.condition));
    const tracker = () => new GrowthTracker(settings.growthWindowMs, settings.growthWindowMs / GROWTH_FLOORS);
    this.#growth = { heap: tracker(), rss: tracker(), external: tracker() };
    const capacity = Math.ceil(settings.recorderWindowMs / settings.sampleIntervalMs) + 1;
    this.#recorder = new FlightRecorder<Sample>(capacity);
    const tid = ownThreadId();
    this.#threadCpu = new ThreadCpuSampler(settings.mainTid, tid);
    if (settings.samplers.threads && !this.#threadCpu.supported) {
      this.#log('info', 'per-thread CPU sampler unsupported on this platform', { sampler: 'threads', platform: process.platform });
    }
    this.#sockets = settings.sockets && new SocketWatch(settings.sockets,
      (level, msg, fields) => this.#log(level, msg, fields),
      (err) => this.#log('error', 'sysprobe sampler failed', { component: 'sockets', err: describeError(err) }));
    this.#cgroup = new CgroupWatch((problem) => this.#log('debug', 'sysprobe cgroup reader', { component: 'cgroup', problem }));
    this.#crash = new CrashWatch({ dumpDir: settings.dumpDir, service: settings.serviceName }, this.#cgroup,
      (err) => this.#log('warn', 'sysprobe could not write its run record', { component: 'crash', err: describeError(err) }));
    // The record starts with the cgroup's OOM-kill count, so the next start can tell whether the kernel struck.
    void this.#cgroup.refresh().finally(() => this.#crash.begin());
    port.on('message', (message: MainToWorker) => this.#onMessage(message));
    this.#watch = settings.samplers.eventLoop ? this.#startWatch() : undefined;
    this.#probes = this.#startProbes(settings);
    this.#endpoints = new WorkerEndpoints(settings, {
      latestSample: () => this.#latestSample(),
      stall: () => (this.#stallNow && this.#stalled
        ? { forMs: this.#watch?.lagMs() ?? 0, stack: this.#stallNow.stack, requests: this.#requests?.read().requests, observation: this.#stallFacts?.observations.at(-1) }
        : undefined),
      ruleReasons: (now) => {
        for (const [rule, reason] of this.#unhealthy) if ((reason.until ?? 0) <= now) this.#unhealthy.delete(rule);
        return [...this.#unhealthy.values()];
      },
      probeStatuses: () => this.#probes?.book.status() ?? [],
      control: {
        captureStack: () => this.#inspector.captureStack(STALL_STACK_TIMEOUT_MS),
        captureCpuProfile: (durationMs) => this.#captureCpuProfile(durationMs),
        captureAllocationProfile: (durationMs) => this.#captureAllocationProfile(durationMs),
        captureHeapSnapshot: () => this.#askHost({ kind: 'captureHeapSnapshot', trigger: 'control endpoint' }, HOST_REQUEST_TIMEOUT_MS),
        samples: (last) => { this.#drain(); return this.#recorder.since(undefined).slice(-last); },
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
      return new NativeStallWatch(addon, this.#settings.stallThresholdMs, onStall);
    } catch (err) {
      // The main thread found the addon, so this is unexpected; without a heartbeat nobody can watch.
      this.#log('error', 'sysprobe stall watch failed to start; stalls will not be seen', { component: 'watchdog', err: describeError(err) });
      return undefined;
    }
  }

  #startProbes(settings: WorkerSettings): { runner: ProbeRunner; book: ProbeBook } | undefined {
    if (!settings.probes?.length) return undefined;
    const book = new ProbeBook(settings.probes);
    const runner = new ProbeRunner(settings.probes, (result) => this.#guarded('probes', () => this.#onProbeResult(book, result)));
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
        this.#selfPause = message.active ? message.reason : undefined;
        if (message.active) {
          this.#selfPauses.push({ from: Date.now(), to: undefined });
          if (this.#selfPauses.length > MAX_SELF_PAUSES) this.#selfPauses.shift();
        } else {
          const last = this.#selfPauses.at(-1);
          if (last && last.to === undefined) last.to = Date.now();
        }
        return;
      case 'incidentClosed':
        this.#incidentKinds.clear();
        return;
      case 'hostResponse': {
        this.#hostRequests.settle(message.id, message.ok
          ? { ok: true, value: message.value }
          : { ok: false, error: Object.assign(new Error(message.error.message), { code: message.error.code }) });
        return;
      }
      case 'stop':
        this.#stop();
        return;
      default: {
        // An unknown message means the two sides disagree on the protocol: stop rather than guess.
        const unknown: never = message;
        this.#log('error', 'sysprobe worker got an unknown message; stopping', { message: String((unknown as { type?: unknown }).type) });
        this.#stop();
      }
    }
  }

  async #answer(id: number, request: Request): Promise<void> {
    try {
      let value: unknown;
      switch (request.kind) {
        case 'recent': value = this.#recorder.since(request.sinceMs === undefined ? undefined : Date.now() - request.sinceMs); break;
        case 'captureStack': value = await this.#inspector.captureStack(STALL_STACK_TIMEOUT_MS); break;
        case 'captureCpuProfile': value = await this.#captureCpuProfile(request.durationMs); break;
        case 'captureAllocationProfile': value = await this.#captureAllocationProfile(request.durationMs); break;
        case 'sockets':
          if (!this.#sockets) throw new SysprobeError(ErrorCode.UNSUPPORTED, 'The socket sampler is off; start sysprobe with sockets: true.');
          value = await this.#sockets.latest();
          break;
        case 'probeStatus': value = this.#probes?.book.status() ?? []; break;
        case 'writeSamples': value = await writeIncidentSamples(this.#recorder, request.file, request.sinceTime, request.max); break;
        default: throw new Error(`unknown request ${(request as { kind?: unknown }).kind}`);
      }
      this.#send({ type: 'response', id, ok: true, value });
    } catch (err) {
      const { message, code } = describeError(err);
      this.#send({ type: 'response', id, ok: false, error: { code: code?.startsWith('SYSPROBE_') ? code : ErrorCode.WORKER_UNAVAILABLE, message } });
    }
  }

  /** Asks the main thread for what only it can do; bounded by `timeoutMs`. */
  #askHost(request: HostRequest, timeoutMs: number): Promise<unknown> {
    return this.#hostRequests.add(
      (id) => this.#send({ type: 'hostRequest', id, request }),
      timeoutMs,
      () => Object.assign(new Error(`the main thread did not answer '${request.kind}' within ${timeoutMs} ms`), { code: ErrorCode.TIMEOUT }),
      true);
  }

  /** The newest sample; pending main-thread readings are drained first, at most once per sample interval. */
  #latestSample(): Sample | undefined {
    if (!this.#stalled && performance.now() - this.#lastDrainAt >= this.#settings.sampleIntervalMs) this.#drain();
    return this.#lastSample;
  }

  /** Profiles the main thread and writes .cpuprofile and pprof, with their sidecars (summary, trigger), through the sink. */
  async #captureCpuProfile(durationMs: number, trigger?: RuleFiring): Promise<CpuProfileResult> {
    const { profile, startedAtMs } = await this.#inspector.captureCpuProfile(durationMs, PROFILE_SAMPLING_INTERVAL_US, { stalled: this.#stalled });
    return writeProfileFiles(this.#sink, profile, { startedAtMs, durationMs, thread: 'main', trigger, sourceMaps: this.#sourceMaps });
  }

  /** Samples the main thread's allocations and writes the .heapprofile, with its sidecar (summary, trigger), through the sink. */
  async #captureAllocationProfile(durationMs: number, trigger?: RuleFiring): Promise<AllocationProfileResult> {
    const { profile, startedAtMs } = await this.#inspector.captureAllocationProfile(durationMs, ALLOCATION_SAMPLING_BYTES);
    return writeAllocationFiles(this.#sink, profile, { startedAtMs, durationMs, thread: 'main', trigger, sourceMaps: this.#sourceMaps });
  }

  /** Runs the captures a fired rule asks for (within the budget) and reports the firing to the main thread. */
  async #onRuleFired(firing: RuleFiring): Promise<void> {
    const rule = this.#settings.rules.find((r) => r.condition.name === firing.rule);
    const captures: RuleCaptures = {};
    const notTaken: string[] = [];
    const take = async (kind: string, capture: () => Promise<void>) => {
      if (this.#incidentKinds.has(kind)) return void notTaken.push(`${kind}: already taken for the open incident`);
      if (!this.#budget.take()) return void notTaken.push(`${kind}: capture budget spent (${this.#settings.capturesPerMinute} per minute)`);
      if (this.#settings.incidents) this.#incidentKinds.add(kind);
      await capture().catch((err: unknown) => {
        this.#incidentKinds.delete(kind); // a failed capture may be tried again by the next firing
        notTaken.push(`${kind}: ${describeError(err).message}`);
      });
    };
    // A slow dependency: how this process's connections look right then (queues, states, retransmits per remote).
    if (isProbeRuleValue(firing.value) && this.#sockets) {
      await this.#sockets.fresh().then((picture) => { captures.sockets = picture; }, (err: unknown) => { notTaken.push(`sockets: ${describeError(err).message}`); });
    }
    if (rule?.captureStack) await take('stack', async () => { captures.stack = (await this.#inspector.captureStack(STALL_STACK_TIMEOUT_MS)).frames; });
    // CPU and allocation profiles use different profilers, so both run at once.
    await Promise.all([
      rule?.cpuProfileMs && take('cpuProfile', async () => { captures.cpuProfile = await this.#captureCpuProfile(rule.cpuProfileMs!, firing); }),
      rule?.allocationProfileMs && take('allocationProfile', async () => { captures.allocationProfile = await this.#captureAllocationProfile(rule.allocationProfileMs!, firing); }),
    ]);
    if (notTaken.length > 0) captures.notTaken = notTaken;
    this.#send({ type: 'rule', firing, captures });
  }

  #onStall(report: StallReport): void {
    if (report.ended) {
      this.#stalled = false;
      this.#stallNow = undefined;
      const stallStack = this.#stallStack ?? Promise.resolve({ stack: undefined, capture: { how: 'skipped' as const, detectedAt: Date.now(), reason: 'no capture started' }, selfPaused: false });
      this.#stallStack = undefined;
      const facts = this.#stallFacts ?? { observations: [], selfPaused: this.#selfPause !== undefined };
      this.#stallFacts = undefined;
      // The capture has its own timeout, so the report is late by at most that.
      void Promise.all([stallStack, this.#cgroup.stallEnded().catch(() => undefined)]).then(([{ stack, capture, selfPaused }, throttledMs]) =>
        this.#send({ type: 'stall', startedAt: report.startedAt, durationMs: report.durationMs, stack, capture, facts: { ...facts, selfPaused: facts.selfPaused || selfPaused }, ...(throttledMs !== undefined ? { throttledMs } : {}) }));
    } else {
      // First what the blocked thread is doing and which requests it holds: a look at /proc and at shared memory, before anything else.
      this.#guarded('stalls', () => {
        const facts: StallWorkerFacts = { observations: [], selfPaused: this.#selfPause !== undefined };
        if (this.#requests) facts.requests = this.#requests.read(true);
        this.#stallFacts = facts;
        this.#observeMain();
      });
      // Take the stack now, while the loop is still blocked: that is the whole point.
      this.#stallStack = this.#captureStallStack();
      this.#cgroup.stallStarted();
      this.#stallNow = { stack: this.#stallStack.then((s) => s.stack) };
      // From now until the loop runs again, the worker records a sample of its own each interval.
      this.#drain();
      this.#stalled = true;
      this.#guarded('recorder', () => this.#recordStale());
    }
    clearTimeout(this.#timer);
    this.#arm();
  }

  async #captureStallStack(): Promise<{ stack: Frame[] | undefined; capture: StallCapture; selfPaused: boolean }> {
    const detectedAt = Date.now();
    // The main thread is in native code on purpose; a capture would only wait and fail.
    if (this.#selfPause) return { stack: undefined, capture: { how: 'skipped', detectedAt, reason: this.#selfPause }, selfPaused: true };
    return { ...(await this.#takeStallStack(detectedAt)), selfPaused: false };
  }

  async #takeStallStack(detectedAt: number): Promise<{ stack: Frame[] | undefined; capture: StallCapture }> {
    if (!this.#budget.take()) {
      return { stack: undefined, capture: { how: 'skipped', detectedAt, reason: `capture budget spent (${this.#settings.capturesPerMinute} per minute)` } };
    }
    try {
      const { frames, how, takenAt, latencyMs } = await this.#inspector.captureStack(STALL_STACK_TIMEOUT_MS);
      return { stack: frames, capture: { how, detectedAt, takenAt, latencyMs } };
    } catch (err) {
      return { stack: undefined, capture: { how: 'failed', detectedAt, reason: describeError(err).message } };
    }
  }

  /** The worker's one timer: the next drain, a sample during a stall, or sooner when the heartbeat watch needs a look. */
  #arm(): void {
    if (this.#stopped) return;
    // Near a memory limit the process may have seconds left: every reading counts then.
    const next = this.#stalled || this.#crash.approaching
      ? this.#settings.sampleIntervalMs
      : this.#drainIntervalMs - (performance.now() - this.#lastDrainAt);
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
    if (this.#stalled) this.#guarded('recorder', () => this.#recordStale());
    else if (this.#crash.approaching || performance.now() - this.#lastDrainAt >= this.#drainIntervalMs - 5) this.#drain();
    this.#arm();
  }

  /** Turns the main thread's readings since the last drain into samples; per-thread CPU, RSS and load, read now, go on the newest. */
  #drain(): void {
    this.#lastDrainAt = performance.now();
    this.#guarded('recorder', () => {
      const { values, next, lost } = this.#mainRing.readSince<MainSample>(this.#cursor);
      this.#cursor = next;
      if (lost > 0) this.#log('warn', 'sysprobe worker fell behind; main-thread readings were lost', { component: 'recorder', lost });
      values.forEach((main, i) => this.#record(main, false, i === values.length - 1));
    });
    // Read for the next drain's samples (the reading lags by one drain, never blocks one).
    void this.#cgroup.refresh();
    this.#crash.drained(() => this.#recorder.since(undefined));
  }

  /** A sample taken while the main thread is blocked: its values are the last it left, the rest is read now. */
  #recordStale(): void {
    const main = this.#lastMain;
    const now: MainSample = { time: Date.now() };
    if (main?.eventLoop) now.eventLoop = { ...main.eventLoop, utilization: 1, maxDelayMs: 0 };
    if (this.#settings.samplers.cpu) now.cpu = readProcessCpu();
    if (main?.memory) now.memory = main.memory;
    if (main?.gc) now.gc = main.gc;
    if (main?.handles) now.handles = main.handles;
    this.#record(now, true, true);
    // Keep the main thread's own reading as the base for the next interval's deltas.
    this.#lastMain = main;
  }

  /** Builds one sample from a main-thread reading (and, `withWorkerReadings`, per-thread CPU, RSS and load read now). */
  #record(main: MainSample, mainStale: boolean, withWorkerReadings: boolean): void {
    const { samplers } = this.#settings;
    const previous = this.#lastSample;
    const sample: Sample = { time: main.time, intervalMs: previous ? main.time - previous.time : 0, mainStale };
    // Readings reach the worker in batches, so whether a pause is in this one is a matter of times, not
    // of order. The loop hook records a turn's length when the turn ends, so a pause shows in the
    // reading after the one taken right after it: a pause counts for one more interval.
    const since = (previous?.time ?? 0) - this.#settings.sampleIntervalMs;
    if (this.#selfPauses.some((p) => p.from <= main.time && (p.to ?? Infinity) >= since)) sample.selfPaused = true;
    if (samplers.eventLoop && main.eventLoop) {
      const lagMs = mainStale ? this.#watch?.lagMs() ?? 0 : 0;
      const delayMaxMs = main.eventLoop.maxDelayMs;
      sample.eventLoop = { delayMaxMs, lagMs, lagMaxMs: Math.max(delayMaxMs, lagMs), utilization: main.eventLoop.utilization };
    }
    if (samplers.cpu && main.cpu) {
      const before = previous?.cpu;
      const busyMs = before ? main.cpu.userMs - before.userMs + (main.cpu.systemMs - before.systemMs) : 0;
      sample.cpu = { ...main.cpu, utilization: before && sample.intervalMs > 0 ? busyMs / sample.intervalMs : 0 };
      if (withWorkerReadings) sample.cpu.loadAverage = readLoadAverage();
    }
    if (samplers.threads && withWorkerReadings && this.#threadCpu.supported) sample.threads = this.#threadCpu.sample();
    if (samplers.memory && main.memory) {
      const memory: NonNullable<Sample['memory']> = withWorkerReadings ? { ...main.memory, rss: process.memoryUsage.rss() } : { ...main.memory };
      sample.memory = memory;
      // Stale samples repeat the last reading: feeding them would flatten the floors.
      if (!mainStale) {
        // The heap after a full GC is a true floor: it sharpens the fit when the GCs are rare.
        const afterGcAt = memory.heapAfterGcAt;
        if (memory.heapAfterGc !== undefined && afterGcAt !== undefined && afterGcAt !== previous?.memory?.heapAfterGcAt && afterGcAt <= main.time) {
          this.#growth.heap.add(afterGcAt, memory.heapAfterGc);
        }
        this.#growth.heap.add(main.time, memory.heapUsed);
        this.#growth.external.add(main.time, memory.external);
        if (memory.rss !== undefined) this.#growth.rss.add(main.time, memory.rss);
      }
      const heap = this.#growth.heap.growth();
      if (heap) { memory.heapGrowthPerMin = heap.perMinute; memory.heapGrowthR2 = heap.r2; }
      const rss = this.#growth.rss.growth();
      if (rss) { memory.rssGrowthPerMin = rss.perMinute; memory.rssGrowthR2 = rss.r2; }
      const external = this.#growth.external.growth();
      if (external) { memory.externalGrowthPerMin = external.perMinute; memory.externalGrowthR2 = external.r2; }
    }
    if (main.gc) {
      sample.gc = main.gc;
      if (previous?.gc && sample.intervalMs > 0) sample.gcRates = gcRates(previous.gc, main.gc, sample.intervalMs);
    }
    if (main.handles) sample.handles = main.handles;
    if (withWorkerReadings && this.#sockets) {
      const sockets = this.#sockets.summary();
      if (sockets) sample.sockets = sockets;
    }
    const quota = this.#cgroup.quotaCores;
    if (sample.cpu && quota !== undefined && quota > 0) sample.cpu.quotaUtilization = sample.cpu.utilization / quota;
    if (withWorkerReadings) {
      const cgroup = this.#cgroup.values();
      if (cgroup) sample.cgroup = cgroup;
    }
    this.#lastMain = main;
    this.#lastSample = sample;
    this.#recorder.push(sample);
    if (!mainStale) {
      const near = this.#crash.observe(sample);
      if (near) void this.#onNearLimit(near);
    }
    for (const firing of this.#rules.observe(sample)) {
      const rule = this.#settings.rules.find((r) => r.condition.name === firing.rule);
      if (rule?.markUnhealthy) this.#unhealthy.set(firing.rule, ruleReason(firing, firing.firedAt + rule.condition.cooldownMs));
      void this.#onRuleFired(firing);
    }
  }

  /**
   * Near the heap or memory limit: what is safe to write, before a crash may take everything.
   * The samples go to the run record first; then a short allocation profile (the stacks
   * allocating now) and the main thread's diagnostic report (no heap snapshot: it would need
   * as much memory again as the heap), reported as the `near-limit` rule firing.
   */
  async #onNearLimit(near: NearLimit): Promise<void> {
    this.#log('warn', 'sysprobe: the process is near its memory limit', { component: 'crash', kind: near.kind, share: near.share, reason: near.reason });
    await this.#crash.persistNow(this.#recorder.since(undefined), near);
    const firing: RuleFiring = {
      rule: NEAR_LIMIT_RULE, value: near.kind === 'heap' ? 'memory.liveHeapLimitShare' : 'cgroup.memoryWorkingSetRatio',
      threshold: 0.9, observed: near.share, aboveForMs: 0, firedAt: near.at,
    };
    const captures: RuleCaptures = {};
    const notTaken: string[] = [];
    await Promise.all([
      this.#budget.take()
        ? this.#captureAllocationProfile(NEAR_LIMIT_PROFILE_MS, firing).then((p) => { captures.allocationProfile = p; }, (err: unknown) => { notTaken.push(`allocationProfile: ${describeError(err).message}`); })
        : notTaken.push(`allocationProfile: capture budget spent (${this.#settings.capturesPerMinute} per minute)`),
      this.#askHost({ kind: 'diagnosticReport', trigger: NEAR_LIMIT_RULE }, NEAR_LIMIT_REPORT_TIMEOUT_MS)
        .then((report) => { captures.diagnosticReport = report as RuleCaptures['diagnosticReport']; }, (err: unknown) => { notTaken.push(`diagnosticReport: ${describeError(err).message}`); }),
    ]);
    if (notTaken.length > 0) captures.notTaken = notTaken;
    const files = [captures.allocationProfile?.file, captures.diagnosticReport?.file].filter((f): f is string => f !== undefined);
    await this.#crash.persistNow(this.#recorder.since(undefined), near, files.map((f) => f.split('/').pop()!));
    this.#send({ type: 'rule', firing, captures });
  }

  #stop(): void {
    this.#stopped = true;
    this.#crash.end();
    clearTimeout(this.#timer);
    this.#probes?.runner.stop();
    this.#watch?.stop();
    this.#sockets?.stop();
    this.#endpoints.stop();
    this.#hostRequests.failAll(new SysprobeError(ErrorCode.STOPPED, 'the probe worker stopped before the main thread answered'));
    // Node 20 can abort the process when a worker exits while the main thread is still
    // tearing down that worker's inspector session; give the main thread a moment first.
    if (this.#inspector.close()) setTimeout(() => this.#port.close(), SESSION_TEARDOWN_MS);
    else this.#port.close();
  }
}

if (parentPort) new ProbeWorker(parentPort, workerData as WorkerSettings);
