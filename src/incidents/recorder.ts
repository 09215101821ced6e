/**
 * Incidents: when a rule fires (or the loop stalls), everything about that moment goes
 * into one folder, `<dumpDir>/incidents/<id>/`, that a person can hand to someone else:
 * manifest.json (what fired, when, where, which captures), the captures themselves
 * (hard links to the files in dumpDir, so no bytes are copied), the flight recorder's
 * samples from `beforeMs` before the trigger to the close (samples.json), and the log
 * events in that window (logs.jsonl). Triggers while an incident is open join it; it
 * closes after `quietMs` without a trigger, after `maxOpenMs`, or at stop().
 *
 * Runs on the main thread, where the triggers and the app's trace context are; the work
 * is a few small async file writes per incident, one at a time. samples.json, the one
 * large file, is serialized and written by the worker, which holds the samples.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import { isSpanContextValid, trace } from '@opentelemetry/api';
import { describeError } from '../errors.js';
import type { ResolvedIncidentOptions } from './options.js';
import type { Logger } from '../internal/logger.js';
import type { Frame } from '../captures/cpuprofile.js';
import type { RuleCaptures } from '../captures/results.js';
import type { Sample } from '../samples/sample.js';
import type { SamplesWritten } from './samples.js';
import type { StallCapture, StallThread } from '../stalls/stall.js';
import type { StallExplanation, StallRequest } from '../stalls/explain.js';
import type { StallCause } from '../stalls/cause.js';
import { DIR_MODE, ensurePrivateDir, FILE_MODE, writeFileAtomically } from '../internal/files.js';
import { HEAP_DIFF, INCIDENTS_DIR, LOGS, MANIFEST, OPEN_MARKER, SAMPLES } from './files.js';
import { diffHeapSnapshots } from '../heap/api.js';

/** The diff's child process: its heap limit (the snapshots' arrays come on top) and how long it may take. */
const HEAP_DIFF_MEMORY_MB = 2048;
const HEAP_DIFF_TIMEOUT_MS = 5 * 60_000;
/** Bounds: what one incident may hold in memory and write. */
const MAX_TRIGGERS = 200;
const MAX_TRACES = 20;
/** 30 minutes at 100 ms; at the defaults (1 s, 5 + 30 minutes) an incident holds about 2100. */
const MAX_SAMPLES = 20_000;
const MAX_LISTED = 100;
/** After forcing the worker to drain, how long its rule reports get to arrive before a quiet incident closes. */
const QUIET_SETTLE_MS = 200;
/** sysprobe's own and the app's log events kept for incidents (the newest), and the most bytes one may take. */
const LOG_RING_SIZE = 1000;
const MAX_LOG_LINE = 4096;

/** What opened an incident or joined it. */
export interface IncidentTrigger {
  /** `rule` for a rule firing, `stall` for a stall of the event loop, `previous-run` for an earlier process that did not stop (src/crash). */
  kind: 'rule' | 'stall' | 'previous-run';
  /** The rule's name, or `stall`. */
  rule: string;
  /** The rule's value (`eventLoop.utilization`, …), or `eventLoop.stallMs`. */
  value: string;
  observed: number;
  threshold: number;
  /** When it fired (a stall: when the loop stopped answering), ms since the epoch. */
  at: number;
  /** A stall: why the loop stalled (src/stalls/cause.ts). */
  cause?: StallCause;
  /** A stall: the HTTP requests in flight while the loop was blocked. */
  requests?: StallRequest[];
  /** A stall: how long the cgroup's CPU quota stopped the process during it, ms (Linux). */
  throttledMs?: number;
  /** A stall of a thread registered with watchThread() (absent: the probe's host thread). */
  thread?: StallThread;
}

/** A file of the incident, relative to its folder. */
export interface IncidentCapture {
  /** `cpu-profile`, `cpu-profile-pprof`, `allocation-profile`, `heap-snapshot`, `stall-stack`, `rule-stack`, or `<kind>-sidecar`. */
  kind: string;
  file: string;
  bytes: number;
}

/** manifest.json. */
export interface IncidentManifest {
  id: string;
  status: 'open' | 'closed';
  /** The distinct rules that fired in it, first first. */
  rules: string[];
  triggers: IncidentTrigger[];
  /** Triggers beyond the first MAX_TRIGGERS, counted only. */
  triggersDropped: number;
  openedAt: number;
  closedAt?: number;
  /** Why it closed: `quiet`, `maxOpen` or `stop`. */
  closeReason?: string;
  service: string;
  pid: number;
  hostname: string;
  versions: { node: string; v8: string; sysprobe: string };
  /** The app's active OpenTelemetry span at each trigger, when there was one. */
  traces: Array<{ rule: string; traceId: string; spanId: string }>;
  captures: IncidentCapture[];
  /** Captures that were skipped or failed, and why. */
  notTaken: string[];
  samples?: { file: string; count: number; from?: number; to?: number };
  logs?: { file: string; count: number };
  /** Distinct trace ids in the window's log lines (`trace_id` or `traceId`, as OpenTelemetry's pino instrumentation writes them), at most 50. */
  logTraceIds?: string[];
  /** From `probe.dependencies()` at close, when the probe has it (shape in docs/incidents.md). */
  dependencies?: unknown[];
  /** heap-diff.json (option `incidents.heapDiff`) and the snapshots it compares. */
  heapDiff?: { file: string; snapshots: string[] };
}

/** The `'incident'` event. */
export interface IncidentEvent {
  phase: 'open' | 'update' | 'closed';
  id: string;
  dir: string;
  rules: string[];
  openedAt: number;
  closedAt?: number;
  /** The trigger that opened or joined it (absent on `closed`). */
  trigger?: IncidentTrigger;
}

/** One entry of {@link Probe.incidents}. */
export interface IncidentSummary {
  id: string;
  dir: string;
  status: 'open' | 'closed';
  rules: string[];
  openedAt: number;
  closedAt?: number;
  captures: number;
}

/** What the recorder needs from the probe. */
export interface IncidentDeps {
  dumpDir: string;
  options: ResolvedIncidentOptions;
  service: string;
  sysprobeVersion: string;
  logger: Logger;
  logs: LogRing;
  /** Asks the worker for its latest samples (it drains the main thread's readings, so rules see them now). */
  recent(sinceMs: number): Promise<Sample[]>;
  /** Has the worker write samples.json: what the file holds plus its samples since `sinceTime`, the newest `max`. */
  writeSamples(file: string, sinceTime: number, max: number): Promise<SamplesWritten>;
  emit(event: IncidentEvent): void;
  /** The incident closed: the worker may take each kind of capture again. */
  closed(): void;
  /** Rotates the dump directory (a new incident folder counts against its limits). */
  rotate(): Promise<void>;
  /** `probe.dependencies()`; its result lands in manifest.dependencies. */
  dependencies?: () => Promise<unknown[]>;
}

interface OpenIncident {
  manifest: IncidentManifest;
  dir: string;
  quietTimer: NodeJS.Timeout | undefined;
  maxTimer: NodeJS.Timeout;
  /** Settles once the folder exists; every later write waits for it. */
  ready: Promise<boolean>;
}

export class IncidentRecorder {
  readonly #deps: IncidentDeps;
  readonly #root: string;
  #open: OpenIncident | undefined;
  #closed: IncidentSummary[] = [];
  /** File work runs one step at a time, in trigger order. */
  #queue: Promise<unknown> = Promise.resolve();

  constructor(deps: IncidentDeps) {
    this.#deps = deps;
    this.#root = path.join(deps.dumpDir, INCIDENTS_DIR);
  }

  /**
   * Whether the open incident already holds a file of this kind (the first stall's stack.json is
   * kept). Not capture dedupe: the worker decides which captures are taken (captures/worker-captures.ts).
   */
  #holds(kind: string): boolean {
    return this.#open?.manifest.captures.some((c) => c.kind === kind) ?? false;
  }

  list(): IncidentSummary[] {
    const open = this.#open ? [summary(this.#open.manifest, this.#open.dir)] : [];
    return [...this.#closed, ...open];
  }

  /** A rule fired and the worker's captures for it are done. */
  ruleFired(trigger: IncidentTrigger, captures: RuleCaptures): void {
    const incident = this.#join(trigger);
    const files: Array<[string, string | undefined]> = [];
    if (captures.cpuProfile)
      files.push(
        ['cpu-profile', captures.cpuProfile.file],
        ['cpu-profile-sidecar', captures.cpuProfile.sidecarFile],
        ['cpu-profile-pprof', captures.cpuProfile.pprofFile],
      );
    if (captures.allocationProfile)
      files.push(
        ['allocation-profile', captures.allocationProfile.file],
        ['allocation-profile-sidecar', captures.allocationProfile.sidecarFile],
      );
    if (captures.heapSnapshot)
      files.push(
        ['heap-snapshot', captures.heapSnapshot.file],
        ['heap-snapshot-sidecar', captures.heapSnapshot.sidecarFile],
      );
    if (captures.diagnosticReport)
      files.push(
        ['diagnostic-report', captures.diagnosticReport.file],
        ['diagnostic-report-sidecar', captures.diagnosticReport.sidecarFile],
      );
    for (const reason of captures.notTaken ?? [])
      if (incident.manifest.notTaken.length < 50) incident.manifest.notTaken.push(`${trigger.rule}: ${reason}`);
    this.#step(incident, async () => {
      for (const [kind, file] of files) if (file) await this.#link(incident, kind, file);
      if (captures.stack)
        await this.#writeCapture(incident, 'rule-stack', `stack-${safeName(trigger.rule)}.json`, {
          rule: trigger.rule,
          frames: captures.stack,
        });
      if (captures.sockets)
        await this.#writeCapture(incident, 'sockets', `sockets-${safeName(trigger.rule)}.json`, {
          rule: trigger.rule,
          picture: captures.sockets,
        });
      await this.#writeManifest(incident);
    });
  }

  /**
   * A stall ended; its stack (taken while it lasted) goes into the incident, and once it is explained
   * (src/stalls/explain.ts: within a few tens of ms) its cause and requests go into the trigger and the stack file.
   */
  stalled(
    trigger: IncidentTrigger,
    stack: Frame[] | undefined,
    capture: StallCapture,
    explanation: Promise<StallExplanation>,
  ): void {
    const incident = this.#join(trigger);
    this.#step(incident, async () => {
      const explained = await explanation.catch(() => undefined);
      if (explained) {
        trigger.cause = explained.diagnosis.cause;
        trigger.requests = explained.requests;
      }
      if (!this.#holds('stall-stack')) {
        await this.#writeCapture(incident, 'stall-stack', 'stall-stack.json', {
          startedAt: trigger.at,
          durationMs: trigger.observed,
          ...(trigger.thread ? { thread: trigger.thread } : {}),
          capture,
          frames: stack ?? [],
          ...(explained
            ? {
                cause: explained.diagnosis.cause,
                diagnosis: explained.diagnosis,
                requests: explained.requests,
                queued: explained.queued,
              }
            : {}),
        });
      }
      await this.#writeManifest(incident);
    });
  }

  /**
   * Evidence from elsewhere opens or joins an incident (a previous run that did not stop,
   * src/crash): `write` puts its files in the folder and says what they are.
   */
  evidence(trigger: IncidentTrigger, write: (dir: string) => Promise<IncidentCapture[]>): void {
    const incident = this.#join(trigger);
    this.#step(incident, async () => {
      incident.manifest.captures.push(...(await write(incident.dir)));
      await this.#writeManifest(incident);
    });
  }

  /** Closes the open incident (at stop()); resolves once its files are written. */
  async stop(): Promise<void> {
    if (this.#open) this.#close('stop');
    await this.#queue;
  }

  /** Opens an incident for the trigger, or adds the trigger to the open one. */
  #join(trigger: IncidentTrigger): OpenIncident {
    const { options } = this.#deps;
    let incident = this.#open;
    const phase = incident ? 'update' : 'open';
    if (!incident) {
      incident = this.#create(trigger);
      this.#open = incident;
    } else {
      const { manifest } = incident;
      if (manifest.triggers.length < MAX_TRIGGERS) manifest.triggers.push(trigger);
      else manifest.triggersDropped += 1;
      if (!manifest.rules.includes(trigger.rule)) manifest.rules.push(trigger.rule);
    }
    const span = trace.getActiveSpan()?.spanContext();
    if (span && isSpanContextValid(span) && incident.manifest.traces.length < MAX_TRACES) {
      incident.manifest.traces.push({ rule: trigger.rule, traceId: span.traceId, spanId: span.spanId });
    }
    // Quiet for quietMs after the last trigger, and open at least afterMs: then it closes.
    clearTimeout(incident.quietTimer);
    const closeIn = Math.max(options.quietMs, incident.manifest.openedAt + options.afterMs - Date.now());
    incident.quietTimer = setTimeout(() => this.#quietElapsed(incident), closeIn);
    incident.quietTimer.unref();
    const opened = incident;
    void opened.ready.then(
      (ok) =>
        ok &&
        this.#deps.emit({
          phase,
          id: opened.manifest.id,
          dir: opened.dir,
          rules: [...opened.manifest.rules],
          openedAt: opened.manifest.openedAt,
          trigger,
        }),
    );
    return incident;
  }

  #create(trigger: IncidentTrigger): OpenIncident {
    const { options, service, sysprobeVersion } = this.#deps;
    const openedAt = Date.now();
    const manifest: IncidentManifest = {
      id: '',
      status: 'open',
      rules: [trigger.rule],
      triggers: [trigger],
      triggersDropped: 0,
      openedAt,
      service,
      pid: process.pid,
      hostname: os.hostname(),
      versions: { node: process.version, v8: process.versions.v8, sysprobe: sysprobeVersion },
      traces: [],
      captures: [],
      notTaken: [],
    };
    const base = `${new Date(openedAt).toISOString().replace(/:/g, '')}-${safeName(trigger.rule)}`;
    const incident: OpenIncident = {
      manifest,
      dir: path.join(this.#root, base),
      quietTimer: undefined,
      maxTimer: setTimeout(() => this.#close('maxOpen'), options.maxOpenMs),
      ready: Promise.resolve(false),
    };
    incident.maxTimer.unref();
    manifest.id = base;
    incident.ready = this.#enqueue(async () => {
      incident.dir = await this.#makeFolder(base);
      manifest.id = path.basename(incident.dir);
      await fs.promises.writeFile(path.join(incident.dir, OPEN_MARKER), `${process.pid}\n`, {
        flag: 'wx',
        mode: FILE_MODE,
      });
      // The samples before the trigger now, while the recorder still holds them; the rest at the close.
      await this.#writeSamples(incident);
      await this.#writeManifest(incident);
      // Incidents without a capture must not pile up: the new folder counts now (its .open marker keeps it).
      void this.#deps.rotate();
      this.#deps.logger.warn(
        {
          incident: manifest.id,
          dir: incident.dir,
          rule: trigger.rule,
          observed: trigger.observed,
          threshold: trigger.threshold,
        },
        'sysprobe opened an incident',
      );
      return true;
    }).then(
      () => true,
      (err: unknown) => {
        this.#deps.logger.error(
          { err: describeError(err), dir: incident.dir },
          'sysprobe could not create an incident folder; the incident is not recorded',
        );
        return false;
      },
    );
    return incident;
  }

  /** `<base>`, or `<base>-2`, … when taken. */
  async #makeFolder(base: string): Promise<string> {
    await ensurePrivateDir(this.#root);
    for (let seq = 1; ; seq++) {
      const dir = path.join(this.#root, seq === 1 ? base : `${base}-${seq}`);
      try {
        await fs.promises.mkdir(dir, { mode: DIR_MODE });
        return dir;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || seq > 100) throw err;
      }
    }
  }

  /**
   * The worker evaluates rules on the readings it drains every few seconds, so a firing can
   * arrive after the quiet period although it happened within it. Asking for the latest
   * samples makes the worker drain (and report what fired) now; a trigger that arrives
   * meanwhile re-arms the timer instead of closing.
   */
  #quietElapsed(incident: OpenIncident): void {
    const seen = incident.manifest.triggers.length + incident.manifest.triggersDropped;
    const settle = () => new Promise((resolve) => setTimeout(resolve, QUIET_SETTLE_MS).unref());
    void this.#deps
      .recent(1)
      .catch(() => undefined)
      .then(settle)
      .then(() => {
        if (this.#open === incident && incident.manifest.triggers.length + incident.manifest.triggersDropped === seen)
          this.#close('quiet');
      });
  }

  #close(reason: string): void {
    const incident = this.#open;
    if (!incident) return;
    this.#open = undefined;
    clearTimeout(incident.quietTimer);
    clearTimeout(incident.maxTimer);
    const { manifest } = incident;
    manifest.status = 'closed';
    manifest.closedAt = Date.now();
    manifest.closeReason = reason;
    this.#closed.push(summary(manifest, incident.dir));
    if (this.#closed.length > MAX_LISTED) this.#closed.shift();
    this.#deps.closed();
    this.#step(incident, async () => {
      await this.#writeSamples(incident);
      const lines = this.#deps.logs.between(this.#windowStart(incident), manifest.closedAt!);
      await writeFileAtomically(path.join(incident.dir, LOGS), lines.length ? `${lines.join('\n')}\n` : '');
      manifest.logs = { file: LOGS, count: lines.length };
      manifest.logTraceIds = traceIdsIn(lines);
      if (this.#deps.dependencies) {
        manifest.dependencies = await this.#deps.dependencies().catch((err: unknown) => {
          this.#deps.logger.warn(
            { err: describeError(err) },
            'sysprobe could not read the dependencies for an incident',
          );
          return undefined;
        });
      }
      if (this.#deps.options.heapDiff) await this.#diffHeapSnapshots(incident);
      await this.#writeManifest(incident);
      await fs.promises.rm(path.join(incident.dir, OPEN_MARKER), { force: true });
      this.#deps.logger.info(
        { incident: manifest.id, dir: incident.dir, reason, captures: manifest.captures.length },
        'sysprobe closed an incident',
      );
      this.#deps.emit({
        phase: 'closed',
        id: manifest.id,
        dir: incident.dir,
        rules: [...manifest.rules],
        openedAt: manifest.openedAt,
        closedAt: manifest.closedAt,
      });
    });
  }

  /**
   * heap-diff.json from the incident's snapshots, in a child process: with three or more, the
   * first two and the last (objects new between the first two and still alive at the end are
   * the leak candidates); with two, what grew between them.
   */
  async #diffHeapSnapshots(incident: OpenIncident): Promise<void> {
    const snapshots = incident.manifest.captures
      .filter((c) => c.kind === 'heap-snapshot')
      .map((c) => path.join(incident.dir, c.file));
    if (snapshots.length < 2) return;
    const files = snapshots.length === 2 ? snapshots : [snapshots[0]!, snapshots[1]!, snapshots.at(-1)!];
    try {
      // One core: the service being diagnosed keeps the other.
      const diff = await diffHeapSnapshots(files, {
        maxMemoryMb: HEAP_DIFF_MEMORY_MB,
        timeoutMs: HEAP_DIFF_TIMEOUT_MS,
        parallel: false,
      });
      await writeFileAtomically(path.join(incident.dir, HEAP_DIFF), `${JSON.stringify(diff)}\n`);
      incident.manifest.heapDiff = { file: HEAP_DIFF, snapshots: files.map((f) => path.basename(f)) };
    } catch (err) {
      this.#deps.logger.warn(
        { incident: incident.manifest.id, err: describeError(err) },
        'sysprobe could not diff the heap snapshots of an incident',
      );
    }
  }

  /** Runs `work` on the queue once the incident's folder exists; failures are logged, never thrown. */
  #step(incident: OpenIncident, work: () => Promise<void>): void {
    void this.#enqueue(async () => {
      if (!(await incident.ready)) return;
      await work();
    }).catch((err: unknown) => {
      this.#deps.logger.error(
        { err: describeError(err), incident: incident.manifest.id },
        'sysprobe could not write to an incident folder',
      );
    });
  }

  #enqueue<T>(work: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(work);
    this.#queue = run.catch(() => undefined);
    return run;
  }

  /**
   * Hard-links a capture into the folder (no bytes copied; dumpDir's rotation can remove its own
   * name); copies when links fail, never over an existing name (COPYFILE_EXCL: a planted link is
   * not written through).
   */
  async #link(incident: OpenIncident, kind: string, file: string): Promise<void> {
    const target = path.join(incident.dir, path.basename(file));
    try {
      await fs.promises.link(file, target).catch(async (err: NodeJS.ErrnoException) => {
        if (err.code === 'EEXIST') return;
        await fs.promises.copyFile(file, target, fs.constants.COPYFILE_EXCL);
      });
      const stat = await fs.promises.lstat(target);
      if (!stat.isFile()) throw new Error(`${path.basename(target)} in the incident folder is not a regular file`);
      const { size } = stat;
      incident.manifest.captures.push({ kind, file: path.basename(file), bytes: size });
    } catch (err) {
      incident.manifest.notTaken.push(
        `${kind}: could not be put into the incident folder: ${describeError(err).message}`,
      );
    }
  }

  async #writeCapture(incident: OpenIncident, kind: string, name: string, body: unknown): Promise<void> {
    const text = JSON.stringify(body, null, 1);
    await writeFileAtomically(path.join(incident.dir, name), text);
    incident.manifest.captures.push({ kind, file: name, bytes: Buffer.byteLength(text) });
  }

  /** Where the incident's window starts: `beforeMs` before its first trigger. */
  #windowStart(incident: OpenIncident): number {
    const { manifest } = incident;
    return manifest.openedAt - this.#deps.options.beforeMs - Math.max(0, manifest.openedAt - manifest.triggers[0]!.at);
  }

  async #writeSamples(incident: OpenIncident): Promise<void> {
    try {
      const { count, from, to } = await this.#deps.writeSamples(
        path.join(incident.dir, SAMPLES),
        this.#windowStart(incident),
        MAX_SAMPLES,
      );
      incident.manifest.samples = { file: SAMPLES, count, from, to };
    } catch (err) {
      this.#deps.logger.warn(
        { err: describeError(err), incident: incident.manifest.id },
        'sysprobe could not write the samples of an incident',
      );
    }
  }

  async #writeManifest(incident: OpenIncident): Promise<void> {
    await writeFileAtomically(path.join(incident.dir, MANIFEST), JSON.stringify(incident.manifest, null, 2));
  }
}

const TRACE_ID = /"(?:trace_id|traceId)"\s*:\s*"([0-9a-f]{32})"/i;

/** The distinct trace ids the log lines name: the requests in flight around the incident. */
function traceIdsIn(lines: string[]): string[] {
  const ids = new Set<string>();
  for (const line of lines) {
    const id = TRACE_ID.exec(line)?.[1];
    if (id && id !== '0'.repeat(32)) ids.add(id.toLowerCase());
    if (ids.size >= 50) break;
  }
  return [...ids];
}

function summary(manifest: IncidentManifest, dir: string): IncidentSummary {
  const { id, status, openedAt, closedAt } = manifest;
  return {
    id,
    dir,
    status,
    rules: [...manifest.rules],
    openedAt,
    ...(closedAt === undefined ? {} : { closedAt }),
    captures: manifest.captures.length,
  };
}

/** Letters, digits, dots and dashes only: a rule name becomes part of a folder name. */
function safeName(name: string): string {
  return name.replace(/[^a-z0-9.-]+/gi, '_').slice(0, 60) || 'rule';
}

/**
 * The newest log events (sysprobe's own, and the app's when it feeds them through
 * {@link incidentLogStream}), as JSON lines, bounded in count and line size.
 */
export class LogRing {
  readonly #lines: Array<{ time: number; line: string } | undefined> = new Array(LOG_RING_SIZE);
  #next = 0;

  push(time: number, line: string): void {
    const bounded =
      line.length <= MAX_LOG_LINE ? line : JSON.stringify({ time, truncated: true, start: line.slice(0, 1024) });
    this.#lines[this.#next] = { time, line: bounded };
    this.#next = (this.#next + 1) % LOG_RING_SIZE;
  }

  /** The lines with `from <= time <= to`, oldest first. */
  between(from: number, to: number): string[] {
    const out: Array<{ time: number; line: string }> = [];
    for (let i = 0; i < LOG_RING_SIZE; i++) {
      const entry = this.#lines[(this.#next + i) % LOG_RING_SIZE];
      if (entry && entry.time >= from && entry.time <= to) out.push(entry);
    }
    return out.sort((a, b) => a.time - b.time).map((e) => e.line);
  }
}

/** A logger that writes through `logger` and keeps a copy of each info-or-higher event in `ring`. */
export function ringLogger(logger: Logger, ring: LogRing, bindings: Record<string, unknown> = {}): Logger {
  const level = (name: 'debug' | 'info' | 'warn' | 'error') => (obj: object, msg?: string) => {
    logger[name](obj, msg);
    if (name === 'debug') return;
    const time = Date.now();
    let line: string;
    try {
      line = JSON.stringify({ time, level: name, msg, ...bindings, ...obj });
    } catch {
      line = JSON.stringify({ time, level: name, msg, ...bindings });
    }
    ring.push(time, line);
  };
  return {
    debug: level('debug'),
    info: level('info'),
    warn: level('warn'),
    error: level('error'),
    child: (more) => ringLogger(logger.child(more), ring, { ...bindings, ...more }),
  };
}

const rings = new WeakMap<object, LogRing>();

/** @internal The probe registers its ring so {@link incidentLogStream} can find it. */
export function registerLogRing(probe: object, ring: LogRing): void {
  rings.set(probe, ring);
}

/**
 * A writable stream for pino (a destination, or one of `pino.multistream`'s streams) that
 * keeps the app's log lines for the probe's incidents: they land in logs.jsonl of an
 * incident whose window they fall in. Lines without a numeric `time` get the time they arrive.
 */
export function incidentLogStream(probe: object): Writable {
  const ring = rings.get(probe);
  let rest = '';
  return new Writable({
    decodeStrings: false,
    write(chunk: Buffer | string, _encoding, done) {
      if (!ring) return done();
      const lines = (rest + chunk.toString()).split('\n');
      rest = (lines.pop() ?? '').slice(0, MAX_LOG_LINE);
      for (const line of lines) {
        if (!line.trim()) continue;
        let time = Date.now();
        const match = /"time"\s*:\s*(\d{10,})/.exec(line.slice(0, 512));
        if (match) time = Number(match[1]);
        ring.push(time, line);
      }
      done();
    },
  });
}
