/**
 * Builds a probe's parts on the main thread and wires them to each other: the logger (with the
 * incidents' log ring), the OpenTelemetry exporter, the loop watch, the GC observer, the
 * heartbeat, the worker supervisor (whose messages go to probe/worker-messages.ts), the
 * incident recorder, the sinks, the crash evidence and the heap snapshot writer. Refuses
 * (SYSPROBE_ERR_UNSUPPORTED) before anything is started.
 */
import type { EventEmitter } from 'node:events';
import { isMainThread } from 'node:worker_threads';
import { metrics } from '@opentelemetry/api';
import { describeError, ErrorCode, SysprobeError } from '../errors.js';
import { defaultLogger } from '../internal/logger.js';
import type { ResolvedOptions } from './options.js';
import type { Sample } from '../samples/sample.js';
import type { SamplesWritten } from '../incidents/samples.js';
import { OtelExporter } from '../metrics/otel.js';
import { LagSamples, loadLoopWatch, parkWatchdogs } from '../stalls/loop-watch.js';
import { registerHost } from '../captures/thread-stack.js';
import { HostProfiler } from '../captures/host-profiler.js';
import { GcObserver } from '../memory/gc.js';
import { JobGuard } from '../jobs/guard.js';
import { Heartbeat } from '../stalls/heartbeat.js';
import { HeapSnapshots, snapshotWriter as chooseSnapshotWriter } from '../heap/snapshots.js';
import { FileSink } from '../sink/file-sink.js';
import { functionSink, type WrittenCapture } from '../sink/sink.js';
import { WorkerSupervisor } from './supervisor.js';
import { workerSettings } from '../worker/settings.js';
import { IncidentRecorder, LogRing, registerLogRing, ringLogger } from '../incidents/recorder.js';
import { DependencyMap, type Dependency } from '../dependencies/map.js';
import { RequestTracker } from '../stalls/requests.js';
import { StallExplainer } from '../stalls/explain.js';
import { CrashEvidence } from '../crash/startup.js';
import { UnhealthyRules } from '../health/unhealthy.js';
import { onWorkerMessage } from './worker-messages.js';
import { processThreadTable } from '../stalls/thread-table.js';
import type { LoopWatchChoice, ProbeParts } from './parts.js';

export const REQUEST_TIMEOUT_MS = 2_000;
/** An incident's samples.json: up to 20,000 samples read back, joined and written by the worker. */
const WRITE_SAMPLES_TIMEOUT_MS = 10_000;
const PACKAGE_VERSION: string = (require('../../../package.json') as { version: string }).version;

/** What the parts need of the Probe that holds them. */
export interface ProbeHost {
  /** Where the app's listeners are ('stall', 'rule', 'capture', …). */
  emitter: EventEmitter;
  stopped(): boolean;
  /** probe.dependencies(), for an incident's dependencies.json. */
  dependencies(): Promise<Dependency[]>;
}

type Building = { -readonly [K in keyof ProbeParts]: ProbeParts[K] };

export function wireProbe(options: ResolvedOptions, host: ProbeHost): ProbeParts {
  const parts = {
    options,
    version: PACKAGE_VERSION,
    servers: {},
    caches: new Map(),
    watchers: new Map(),
    unhealthy: new UnhealthyRules(),
    probeRuns: new Map(),
    stopped: () => host.stopped(),
  } as Partial<Building> as Building;
  let logger = (options.logger ?? defaultLogger()).child({ component: 'sysprobe', service: options.serviceName });
  // Incidents keep sysprobe's own recent log events (and the app's, through incidentLogStream) for logs.jsonl.
  const logs = new LogRing();
  if (options.incidents.enabled) {
    registerLogRing(host.emitter, logs);
    logger = ringLogger(logger, logs);
  }
  parts.logger = logger;
  parts.emit = (event, payload) => emitSafely(host.emitter, logger, event, payload);
  parts.failed = (component, err) => {
    parts.exporter.countError(component);
    logger.error({ component, err: describeError(err) }, `sysprobe ${component} failed`);
  };
  parts.captured = (capture) => onCaptured(parts, capture);
  parts.recentSamples = (sinceMs) => {
    // Whoever reads samples (recent(), an OpenTelemetry collection, an incident) gets a fresh reading first.
    parts.heartbeat.refresh();
    return parts.supervisor.request({ kind: 'recent', sinceMs }, REQUEST_TIMEOUT_MS) as Promise<Sample[]>;
  };
  let lastSamples: Sample[] = [];
  const samplesSince = async (sinceMs: number): Promise<Sample[]> => {
    try {
      lastSamples = await parts.recentSamples(sinceMs);
    } catch (err) {
      // The collection goes on with what we had: a restarting worker must not fail the app's exporter.
      parts.exporter.countError('exporter');
      logger.debug({ err: describeError(err) }, 'sysprobe metrics used cached samples');
      return lastSamples.slice(-1);
    }
    return lastSamples;
  };

  const meter = (options.meterProvider ?? metrics.getMeterProvider()).getMeter('sysprobe', PACKAGE_VERSION);
  // First what can refuse (nothing to undo yet), then the exporter, which everything reports to.
  const snapshotWriter = chooseSnapshotWriter(options.heapSnapshotWriter, isMainThread);
  parts.loopWatch = chooseLoopWatch(options);
  // A probe inside a worker thread: the probe worker takes this thread's stacks through V8 (the inspector reaches only the main thread).
  const stackHost = isMainThread ? undefined : registerHost();
  // ...and asks this thread for its profiles, which it takes of itself (captures/host-profiler.ts).
  parts.hostProfiler = isMainThread ? undefined : new HostProfiler();
  parts.exporter = new OtelExporter(
    meter,
    {
      samplesSince,
      drainDelays: () => parts.loopWatch.lag?.drain((ms) => parts.exporter.recordDelay(ms)),
      gcTotals: () => parts.gc?.totals,
      workerRestarts: () => parts.supervisor.restarts,
      caches: () => [...parts.caches.values()].map((c) => c.stats()),
      watchedCaches: () => [...parts.watchers.values()].map((w) => w.stats()),
      failed: (component, err) => parts.failed(component, err),
    },
    options,
  );
  parts.requests = options.samplers.requests ? new RequestTracker() : undefined;
  parts.stallExplainer = new StallExplainer(parts.requests, options.samplers.gc);
  parts.gc = options.samplers.gc
    ? new GcObserver(
        (kind, ms, startedAt) => {
          parts.exporter.recordGc(kind, ms);
          parts.stallExplainer.recordGc(startedAt, ms);
        },
        (err) => parts.failed('gc', err),
      )
    : undefined;
  // Without the native watch, the main thread's timer is also the stall detector's heartbeat.
  const beats = options.samplers.eventLoop && parts.loopWatch.kind === 'heartbeat';
  const heartbeatIntervalMs = beats
    ? Math.min(options.stallThresholdMs, options.sampleIntervalMs)
    : options.sampleIntervalMs;
  const { addon } = parts.loopWatch;
  parts.heartbeat = new Heartbeat(
    options,
    {
      intervalMs: heartbeatIntervalMs,
      beats,
      takeMaxDelayMs: addon && (() => addon.takeLongestTurn()),
      // Watched caches are checked (and trimmed, when asked) once per sample, on the thread that owns them.
      onSample: () => {
        checkWatchedCaches(parts);
        parts.requests?.sweep();
      },
      // A request's start ends a stretched (idle) period: the same channel the request table listens to.
      ...(parts.requests ? { activity: parts.requests } : {}),
    },
    parts.gc,
    (gapMs) => parts.exporter.recordDelay(gapMs),
    (capacityBytes) => logger.warn({ capacityBytes }, 'sysprobe main-thread reading too large for its slot; skipped'),
  );
  // The app's worker threads reach this probe through the process's thread table (stalls/thread-table.ts).
  parts.threadTable = isMainThread && options.samplers.eventLoop ? processThreadTable() : undefined;
  parts.supervisor = new WorkerSupervisor(
    workerSettings(options, {
      heartbeat: parts.heartbeat.shared,
      mainRing: parts.heartbeat.mainRing.buffer,
      heartbeatIntervalMs,
      loopWatch: parts.loopWatch.kind,
      loopId: parts.loopWatch.loopId,
      mainTid: stackHost?.tid ?? process.pid,
      stackHost: isMainThread ? 0 : (stackHost?.hostId ?? -1),
      ...(parts.requests ? { requestTable: parts.requests.buffer } : {}),
      ...(parts.threadTable ? { threadTable: parts.threadTable.buffer } : {}),
      sysprobeVersion: PACKAGE_VERSION,
    }),
    logger,
    (message) => onWorkerMessage(parts, message),
  );
  const files = new FileSink({
    dir: options.dumpDir,
    maxBytes: options.dumpMaxBytes,
    service: options.serviceName,
    sysprobeVersion: PACKAGE_VERSION,
    logger,
  });
  parts.incidents = options.incidents.enabled
    ? new IncidentRecorder({
        dumpDir: options.dumpDir,
        options: options.incidents,
        service: options.serviceName,
        sysprobeVersion: PACKAGE_VERSION,
        logger,
        logs,
        recent: (sinceMs) => parts.recentSamples(sinceMs),
        writeSamples: (file, sinceTime, max) =>
          parts.supervisor.request(
            { kind: 'writeSamples', file, sinceTime, max },
            WRITE_SAMPLES_TIMEOUT_MS,
          ) as Promise<SamplesWritten>,
        emit: (event) => parts.emit('incident', event),
        closed: () => {
          if (!host.stopped()) parts.supervisor.post({ type: 'incidentClosed' });
        },
        rotate: () => files.rotate(),
        dependencies: () => host.dependencies(),
      })
    : undefined;
  parts.dependencies = options.dependencies ? new DependencyMap() : undefined;
  parts.jobs = new JobGuard(logger, (event) => parts.exporter.recordJob(event));
  parts.sink = functionSink(files, (capture) => parts.captured(capture));
  const incidents = parts.incidents;
  parts.crash = new CrashEvidence({
    dumpDir: options.dumpDir,
    service: options.serviceName,
    logger,
    ...(incidents ? { incident: (trigger, write) => incidents.evidence(trigger, write) } : {}),
    emit: (event) => parts.emit('previousRun', event),
  });
  // sysprobe's own pause: in shared memory first (a stall seen now is known as ours at once), then a message (the samples it falls in).
  parts.snapshots = new HeapSnapshots(
    parts.sink,
    { perDay: options.heapSnapshotsPerDay },
    logger,
    undefined,
    (active) => {
      parts.heartbeat.selfPause(active);
      parts.supervisor.post({ type: 'selfPause', active });
    },
    snapshotWriter,
  );
  return parts;
}

/** Native when asked for (or 'auto') and the addon loads and can hook this thread's loop; else the heartbeat. */
function chooseLoopWatch(options: ResolvedOptions): LoopWatchChoice {
  const heartbeat = (why: string) => {
    if (options.loopWatch === 'native')
      throw new SysprobeError(ErrorCode.UNSUPPORTED, `Option loopWatch is 'native' but ${why}.`);
    return { kind: 'heartbeat' as const, addon: undefined, loopId: 0, lag: undefined, why, parks: false };
  };
  if (options.loopWatch === 'heartbeat' || !options.samplers.eventLoop)
    return { kind: 'heartbeat', addon: undefined, loopId: 0, lag: undefined, why: undefined, parks: false };
  const { addon, error } = loadLoopWatch();
  if (!addon) return heartbeat(`the native loop watch did not load (${error})`);
  const loopId = addon.attach();
  if (!loopId) return heartbeat("the native loop watch could not hook this thread's loop");
  return { kind: 'native', addon, loopId, lag: new LagSamples(addon), why: undefined, parks: parkWatchdogs() };
}

/** Checks (and trims, when asked) each watched cache; a new episode of growth or of being over the limit is logged and emitted. */
function checkWatchedCaches(parts: ProbeParts): void {
  for (const watcher of parts.watchers.values()) {
    for (const alert of watcher.check()) {
      parts.logger.warn(
        { ...alert },
        alert.reason === 'growing'
          ? 'sysprobe watched cache is growing fast'
          : 'sysprobe watched cache is over its limit',
      );
      parts.emit('cache', alert);
    }
  }
}

/** A capture is complete in dumpDir: tell the app. Never throws, never waits: the capture is done either way. */
function onCaptured(parts: ProbeParts, capture: WrittenCapture): void {
  parts.emit('capture', capture);
  const { onCapture } = parts.options;
  if (!onCapture) return;
  const failed = (err: unknown) =>
    parts.logger.error(
      { file: capture.file, err: describeError(err) },
      'sysprobe onCapture failed; the capture stays in dumpDir',
    );
  try {
    Promise.resolve(onCapture(capture)).catch(failed);
  } catch (err) {
    failed(err);
  }
}

/** A listener that throws must not take the host down through sysprobe's stack. */
function emitSafely(emitter: EventEmitter, logger: ProbeParts['logger'], event: string, payload: unknown): void {
  for (const listener of emitter.listeners(event)) {
    try {
      (listener as (p: unknown) => void)(payload);
    } catch (err) {
      logger.error({ event, err: describeError(err) }, 'a sysprobe event listener threw');
    }
  }
}
