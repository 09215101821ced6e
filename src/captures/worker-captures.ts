/**
 * Every capture the probe worker takes of the main thread: a stall's stack, the stacks and
 * profiles rules and the control endpoint ask for, the near-limit allocation profile. It owns
 * the inspector session, the source maps, the capture budget (automatic captures only), the
 * worker's sink, and capture dedupe: while an incident is open, a kind of rule capture is
 * taken once (`incidentClosed()` frees them again). A stack asked for while one is being
 * taken shares that one (src/captures/main-inspector.ts); a CPU or allocation profile asked
 * for while one of its kind runs joins it when it ends within the duration asked for
 * (src/captures/shared-run.ts), whoever asked for either (a person, a rule, the control endpoint).
 */
import { describeError, ErrorCode, SysprobeError } from '../errors.js';
import type { AllocationProfileResult, CpuProfileResult, RuleCaptures } from './results.js';
import type { Frame } from './cpuprofile.js';
import type { StallCapture } from '../stalls/stall.js';
import type { RuleFiring } from '../rules/firing.js';
import type { SocketPicture } from '../sockets/sampler.js';
import type { WorkerRule } from '../worker/settings.js';
import { writeAllocationFiles, writeProfileFiles } from './profile-files.js';
import { MainInspector, type StackCapture } from './main-inspector.js';
import { SharedRun } from './shared-run.js';
import { interruptStack, loadThreadStack } from './thread-stack.js';
import { SourceMaps } from '../sourcemaps/source-maps.js';
import { RateBudget } from '../internal/rate-budget.js';
import { FileSink } from '../sink/file-sink.js';
import { functionSink, type CaptureSink, type WrittenCapture } from '../sink/sink.js';
import type { Logger } from '../internal/logger.js';
import type { HostProfileRequest, LogLevel } from '../protocol.js';
import type { HostProfile } from './host-profiler.js';
import type { CpuProfile } from './cpuprofile.js';
import type { AllocationProfile } from './heapprofile.js';
import { ACTIVE_SPAN_EXPRESSION, parseActiveSpan } from '../stalls/active-span.js';

/** The worker's log lines go to the main thread as messages; this gives the sink a Logger's face on them. */
function messageLogger(log: (level: LogLevel, msg: string, fields: Record<string, unknown>) => void): Logger {
  const at =
    (level: LogLevel) =>
    (obj: object, msg = ''): void => {
      const { err, ...fields } = obj as { err?: unknown };
      log(level, msg, err === undefined ? fields : { ...fields, err: describeError(err) });
    };
  const logger: Logger = {
    debug: at('debug'),
    info: at('info'),
    warn: at('warn'),
    error: at('error'),
    child: () => logger,
  };
  return logger;
}

/** A stall's stack must come while the stall lasts; a pause that takes longer than this is reported as failed. */
const STACK_TIMEOUT_MS = 2_000;
/** V8's default for the sampling heap profiler: one sample per 32 KB allocated, cheap enough to run for minutes. */
const ALLOCATION_SAMPLING_BYTES = 32 * 1024;
/** V8's default sampling interval: fine enough for a spike of a few seconds, cheap enough to leave on during one. */
const PROFILE_SAMPLING_INTERVAL_US = 1000;
/** Near a memory limit: a short allocation profile (the stacks allocating now). */
const NEAR_LIMIT_PROFILE_MS = 1_000;
/**
 * A worker host's profile: how long the host thread may take to take the request from its queue (its loop
 * blocked), and the margin for the rest (a first look of the CPU profile, the answer's trip). Together with the
 * duration they stay within the probe's own wait for a profile (durationMs + 15 s, probe.ts).
 */
const HOST_START_WAIT_MS = 10_000;
const HOST_MARGIN_MS = 3_000;
/** A host thread that took the request later than this was blocked: the result says so. */
const HOST_LATE_MS = 100;
/** A host request before its deadline is set (each member of the union without it). */
type WithoutDeadline<R> = R extends unknown ? Omit<R, 'deadline'> : never;
/** The reason a stall during sysprobe's own pause (a heap snapshot) has no stack. */
const SELF_PAUSE_REASON = 'sysprobe was writing a heap snapshot';

export interface CaptureSettings {
  dumpDir: string;
  dumpMaxBytes: number;
  serviceName: string;
  sysprobeVersion: string;
  capturesPerMinute: number;
  /** Incidents on: rule captures are deduplicated per open incident. */
  incidents: boolean;
  /** The host thread's id in native/thread_stack.cc when the probe runs in a worker thread (-1: the addon is missing); 0: the main thread, through the inspector. */
  stackHost: number;
  /** The host thread's kernel thread id (its waits for a CPU are not read as native code). */
  mainTid: number;
}

/** A stall's stack, how it was taken, and whether the stall was sysprobe's own pause. */
export interface StallStack {
  stack: Frame[] | undefined;
  capture: StallCapture;
  selfPaused: boolean;
}

export class WorkerCaptures {
  readonly #settings: CaptureSettings;
  /** Source maps of the main thread's scripts, read when a position is shown (stacks, profile summaries, pprof). */
  readonly #sourceMaps = new SourceMaps({ readTimeoutMs: 1000 });
  /** Each pause also reads the OpenTelemetry span the paused code runs in (a stall names its trace). */
  readonly #inspector = new MainInspector(this.#sourceMaps, { pauseExpression: ACTIVE_SPAN_EXPRESSION });
  /** Automatic captures (stalls, rules, near-limit) per minute; what a person asks for is not counted. */
  readonly #budget: RateBudget;
  /** The worker's own sink on the dump directory (the main thread has one for heap snapshots; they share its naming and limits). */
  readonly #sink: CaptureSink;
  /** The capture kinds taken for the open incident: concurrent firings join it without a second capture of a kind. */
  readonly #incidentKinds = new Set<string>();
  /** Whether the main thread is stalled now (a profile of a stall first discards the stalled loop's optimized code). */
  readonly #stalled: () => boolean;
  /** The CPU profile running, which a request for one joins (V8 has one profiler per isolate). */
  readonly #cpuRun = new SharedRun<CpuProfileResult>('a CPU profile');
  /** The allocation profile running, likewise (one sampling heap profiler). */
  readonly #allocationRun = new SharedRun<AllocationProfileResult>('an allocation profile');
  /** A worker-hosted probe asks its host thread for profiles (captures/host-profiler.ts); absent: the main thread's, through the inspector. */
  readonly #askHost: ((request: HostProfileRequest, timeoutMs: number) => Promise<unknown>) | undefined;

  /** `captured` hears of each finished capture (the main thread tells the app: onCapture, 'capture'). */
  constructor(
    settings: CaptureSettings,
    captured: (capture: WrittenCapture) => void,
    stalled: () => boolean,
    log: (level: LogLevel, msg: string, fields: Record<string, unknown>) => void = () => undefined,
    askHost?: (request: HostProfileRequest, timeoutMs: number) => Promise<unknown>,
  ) {
    this.#settings = settings;
    // stackHost 0: the probe runs on the main thread, which the inspector reaches from here.
    this.#askHost = settings.stackHost === 0 ? undefined : askHost;
    this.#stalled = stalled;
    this.#budget = new RateBudget(settings.capturesPerMinute, 60_000);
    this.#sink = functionSink(
      new FileSink({
        dir: settings.dumpDir,
        maxBytes: settings.dumpMaxBytes,
        service: settings.serviceName,
        sysprobeVersion: settings.sysprobeVersion,
        // What rotation removes (and fails to) is logged, as the main thread's sink does.
        logger: messageLogger(log),
      }),
      captured,
    );
  }

  /**
   * The host thread's stack now (a person's request: not budgeted); or, with `stackHost`, the stack of
   * that thread (a thread registered with watchThread(); -1: it has no stack host).
   */
  stack(stackHost = this.#settings.stackHost, tid = this.#settings.mainTid): Promise<StackCapture> {
    if (stackHost === 0) return this.#inspector.captureStack(STACK_TIMEOUT_MS);
    if (stackHost < 0) {
      const why = loadThreadStack().error ?? 'it could not register the thread';
      return Promise.reject(
        new SysprobeError(ErrorCode.CAPTURE_FAILED, `a worker thread's stack needs the thread stack addon (${why})`),
      );
    }
    // The probe's host is a worker, which the inspector cannot reach from here: a V8 interrupt takes its stack.
    return interruptStack(stackHost, tid, STACK_TIMEOUT_MS).then(async (taken) => ({
      ...taken,
      frames: await this.#sourceMaps.resolve(taken.frames),
    }));
  }

  /**
   * Profiles the probe's host thread (the main thread through the inspector; a worker host profiles
   * itself when asked) and writes .cpuprofile and pprof, with their sidecars (summary, trigger), through
   * the sink. While a CPU profile runs, this joins it when it ends within `durationMs` (its result,
   * `shared: true`), else rejects with CAPTURE_BUSY (src/captures/shared-run.ts).
   */
  cpuProfile(durationMs: number, trigger?: RuleFiring): Promise<CpuProfileResult> {
    return this.#cpuRun.run(durationMs, async () => {
      const { profile, startedAtMs, ...taken } = this.#askHost
        ? await this.#fromHost<CpuProfile>({
            kind: 'hostCpuProfile',
            durationMs,
            samplingIntervalUs: PROFILE_SAMPLING_INTERVAL_US,
          })
        : {
            ...(await this.#inspector.captureCpuProfile(durationMs, PROFILE_SAMPLING_INTERVAL_US, {
              stalled: this.#stalled(),
            })),
            thread: 'main',
          };
      return writeProfileFiles(this.#sink, profile, {
        startedAtMs,
        durationMs,
        trigger,
        sourceMaps: this.#sourceMaps,
        ...taken,
      });
    });
  }

  /**
   * Samples the host thread's allocations (as cpuProfile()) and writes the .heapprofile, with its sidecar (summary,
   * trigger), through the sink. Joins an allocation profile already running as cpuProfile() joins a CPU profile.
   */
  allocationProfile(durationMs: number, trigger?: RuleFiring): Promise<AllocationProfileResult> {
    return this.#allocationRun.run(durationMs, async () => {
      const { profile, startedAtMs, ...taken } = this.#askHost
        ? await this.#fromHost<AllocationProfile>({
            kind: 'hostAllocationProfile',
            durationMs,
            samplingIntervalBytes: ALLOCATION_SAMPLING_BYTES,
          })
        : {
            ...(await this.#inspector.captureAllocationProfile(durationMs, ALLOCATION_SAMPLING_BYTES)),
            thread: 'main',
          };
      return writeAllocationFiles(this.#sink, profile, {
        startedAtMs,
        durationMs,
        trigger,
        sourceMaps: this.#sourceMaps,
        ...taken,
      });
    });
  }

  /**
   * A worker host's profile of itself, and what to say about its timing: a host whose loop was blocked takes the
   * request late (the profile then shows the work after the block, not the block), or ends it late. Bounded: the
   * host refuses a request it takes after HOST_START_WAIT_MS, and this stops waiting soon after.
   */
  async #fromHost<P>(
    request: WithoutDeadline<HostProfileRequest>,
  ): Promise<{ profile: P; startedAtMs: number; thread: string; startedLateMs?: number; note?: string }> {
    const askedAt = Date.now();
    const answer = (await this.#askHost!(
      { ...request, deadline: askedAt + HOST_START_WAIT_MS } as HostProfileRequest,
      HOST_START_WAIT_MS + request.durationMs + HOST_MARGIN_MS,
    )) as HostProfile<P>;
    const startedLateMs = answer.receivedAtMs - askedAt;
    const notes: string[] = [];
    if (startedLateMs > HOST_LATE_MS)
      notes.push(
        `the thread's loop was blocked when this profile was asked for: it started ${startedLateMs} ms later, when the loop returned, so it shows the work after the block, not the block`,
      );
    if (answer.stoppedLateMs > 0)
      notes.push(
        `the thread's loop was blocked when the profile was due to end: it ran ${answer.stoppedLateMs} ms longer than asked`,
      );
    return {
      profile: answer.profile,
      startedAtMs: answer.startedAtMs,
      thread: `thread-${answer.threadId}`,
      ...(startedLateMs > HOST_LATE_MS ? { startedLateMs } : {}),
      ...(notes.length > 0 ? { note: notes.join('; ') } : {}),
    };
  }

  /**
   * A stall's stack, taken as the stall is seen. None when the stall is sysprobe's own pause
   * (`selfPaused`: the main thread is in native code on purpose, a capture would only wait and
   * fail, and hold the debugger a person's request then needs) or the budget is spent. `stackHost`:
   * a watched thread's (see stack()); the probe's host thread's by default.
   */
  async stallStack(
    selfPaused: boolean,
    stackHost = this.#settings.stackHost,
    tid = this.#settings.mainTid,
  ): Promise<StallStack> {
    const detectedAt = Date.now();
    if (selfPaused)
      return { stack: undefined, capture: { how: 'skipped', detectedAt, reason: SELF_PAUSE_REASON }, selfPaused: true };
    if (!this.#budget.take()) {
      return {
        stack: undefined,
        capture: {
          how: 'skipped',
          detectedAt,
          reason: `capture budget spent (${this.#settings.capturesPerMinute} per minute)`,
        },
        selfPaused: false,
      };
    }
    try {
      const { frames, how, takenAt, latencyMs, evaluated } = await this.stack(stackHost, tid);
      const span = parseActiveSpan(evaluated);
      return {
        stack: frames,
        capture: { how, detectedAt, takenAt, latencyMs, ...(span ? { span } : {}) },
        selfPaused: false,
      };
    } catch (err) {
      return {
        stack: undefined,
        capture: { how: 'failed', detectedAt, reason: describeError(err).message },
        selfPaused: false,
      };
    }
  }

  /**
   * The captures a fired rule asks for, within the budget, one of each kind per open incident;
   * `sockets` (a slow dependency's firing): how the connections looked right then.
   */
  async forRule(
    firing: RuleFiring,
    rule: WorkerRule | undefined,
    sockets?: () => Promise<SocketPicture>,
  ): Promise<RuleCaptures> {
    const captures: RuleCaptures = {};
    const notTaken: string[] = [];
    const take = async (kind: string, capture: () => Promise<void>) => {
      if (this.#incidentKinds.has(kind)) return void notTaken.push(`${kind}: already taken for the open incident`);
      if (!this.#budget.take())
        return void notTaken.push(`${kind}: capture budget spent (${this.#settings.capturesPerMinute} per minute)`);
      if (this.#settings.incidents) this.#incidentKinds.add(kind);
      await capture().catch((err: unknown) => {
        this.#incidentKinds.delete(kind); // a failed capture may be tried again by the next firing
        notTaken.push(`${kind}: ${describeError(err).message}`);
      });
    };
    if (sockets)
      await sockets().then(
        (picture) => {
          captures.sockets = picture;
        },
        (err: unknown) => {
          notTaken.push(`sockets: ${describeError(err).message}`);
        },
      );
    if (rule?.captureStack)
      await take('stack', async () => {
        captures.stack = (await this.stack()).frames;
      });
    // CPU and allocation profiles use different profilers, so both run at once.
    await Promise.all([
      rule?.cpuProfileMs &&
        take('cpuProfile', async () => {
          captures.cpuProfile = await this.cpuProfile(rule.cpuProfileMs!, firing);
        }),
      rule?.allocationProfileMs &&
        take('allocationProfile', async () => {
          captures.allocationProfile = await this.allocationProfile(rule.allocationProfileMs!, firing);
        }),
    ]);
    if (notTaken.length > 0) captures.notTaken = notTaken;
    return captures;
  }

  /**
   * Near the heap or memory limit: a short allocation profile (within the budget) and the main
   * thread's diagnostic report (`diagnosticReport`), never a heap snapshot (it would need as
   * much memory again as the heap).
   */
  async nearLimit(firing: RuleFiring, diagnosticReport: () => Promise<unknown>): Promise<RuleCaptures> {
    const captures: RuleCaptures = {};
    const notTaken: string[] = [];
    await Promise.all([
      this.#budget.take()
        ? this.allocationProfile(NEAR_LIMIT_PROFILE_MS, firing).then(
            (p) => {
              captures.allocationProfile = p;
            },
            (err: unknown) => {
              notTaken.push(`allocationProfile: ${describeError(err).message}`);
            },
          )
        : notTaken.push(`allocationProfile: capture budget spent (${this.#settings.capturesPerMinute} per minute)`),
      diagnosticReport().then(
        (report) => {
          captures.diagnosticReport = report as RuleCaptures['diagnosticReport'];
        },
        (err: unknown) => {
          notTaken.push(`diagnosticReport: ${describeError(err).message}`);
        },
      ),
    ]);
    if (notTaken.length > 0) captures.notTaken = notTaken;
    return captures;
  }

  /** The open incident closed: each kind of rule capture may be taken again. */
  incidentClosed(): void {
    this.#incidentKinds.clear();
  }

  /** Closes the inspector session; true when there was one (the worker then lingers before exiting). */
  close(): boolean {
    return this.#inspector.close();
  }
}
