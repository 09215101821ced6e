import { performance } from 'node:perf_hooks';
import { Worker, type ResourceLimits } from 'node:worker_threads';
import { describeError, ErrorCode, SysprobeError } from '../errors.js';
import { checkInteger, checkKnownKeys, checkPlainObject, describe, invalid } from '../internal/check-options.js';
import type { Logger } from '../internal/logger.js';

/** How one guarded run ended; the Probe turns these into metrics. */
export interface JobEvent {
  /** The name the run was guarded under. */
  job: string;
  /** `refused`: not started, because a run of the same name was going (or its queue was full). */
  outcome: 'ok' | 'failed' | 'timeout' | 'refused';
  /** From the start of the run to its end, ms; time spent queued is not counted, and a refused run is 0. */
  durationMs: number;
  /** `async`: a function on the main thread; `worker`: a module in its own thread. */
  kind: 'async' | 'worker';
}

/** Receives one event per run that started or was refused. Runs ended by {@link JobGuard.stop} are not reported. */
export type JobMetricHandler = (event: JobEvent) => void;

/**
 * What a run does while another of the same name is going: `refuse` rejects with
 * SYSPROBE_ERR_JOB_RUNNING, `queue` waits for every running one to end, `allow` runs alongside.
 */
export type JobOverlap = 'refuse' | 'queue' | 'allow';

export interface GuardOptions {
  /** How long the run may take, ms (1 to 24 h). The wait in the queue is not counted. */
  timeoutMs: number;
  /** Default `refuse`. */
  overlap?: JobOverlap;
}

export interface GuardWorkerOptions extends GuardOptions {
  /** Handed to the job's thread as `workerData` (structured-cloned). */
  workerData?: unknown;
  /** Heap and stack limits for the job's thread, as for `new Worker()`. */
  resourceLimits?: ResourceLimits;
}

type Kind = JobEvent['kind'];
type Start<T> = (signal: AbortSignal) => Promise<T>;
/** The runs of one name: how many are going, and the queued ones waiting for none to be. */
interface Lane {
  running: number;
  queued: Array<{ start: () => void; reject: (err: Error) => void }>;
}

const MAX_NAME_LENGTH = 200;
const MAX_TIMEOUT_MS = 24 * 3600_000;
/** Per name. A job slower than its schedule would otherwise pile up callers without end. */
const MAX_QUEUED = 100;
const OVERLAPS: readonly unknown[] = ['refuse', 'queue', 'allow'];
const GUARD_OPTION_NAMES = ['timeoutMs', 'overlap'] as const;
const WORKER_OPTION_NAMES = [...GUARD_OPTION_NAMES, 'workerData', 'resourceLimits'] as const;

/**
 * Runs jobs with a deadline. The deadline timer is ref'd: the caller awaits the run, so the
 * process should stay up for it as it would for the job itself, and never past timeoutMs; the
 * timer is cleared as soon as the run ends. An unref'd timer would let the process exit under a
 * job that holds no handle of its own, with the caller's await never answered.
 */
export class JobGuard {
  readonly #logger: Logger;
  readonly #onMetric: JobMetricHandler;
  readonly #lanes = new Map<string, Lane>();
  /** The runs going, by their controller, with the name each runs under. */
  readonly #running = new Map<AbortController, string>();
  readonly #workers = new Set<Worker>();
  #stopped = false;

  constructor(logger: Logger, onMetric: JobMetricHandler) {
    this.#logger = logger;
    this.#onMetric = onMetric;
  }

  /**
   * Runs `job` with a signal that aborts at `timeoutMs`; the call then rejects with
   * SYSPROBE_ERR_TIMEOUT at once, whether or not the job listens. JavaScript cannot stop a
   * promise, so a job that ignores its signal keeps running in the background: its result is
   * dropped, and it may overlap the next run of its name. A job that fails rejects the call with
   * its own error. Bad arguments reject with SYSPROBE_ERR_INVALID_OPTION.
   */
  async guard<T>(name: string, job: (signal: AbortSignal) => Promise<T> | T, options: GuardOptions): Promise<T> {
    checkName(name);
    if (typeof job !== 'function') throw invalid(`Option job must be a function; got ${describe(job)}.`);
    const { timeoutMs, overlap } = checkRunOptions(options, GUARD_OPTION_NAMES);
    return this.#admit(name, 'async', timeoutMs, overlap, async (signal) => job(signal));
  }

  /**
   * Runs the JS module `file` in its own worker thread, for CPU-bound work that would not see a
   * signal: its first message (via `parentPort.postMessage`) is the result. At `timeoutMs` the
   * thread is terminated and the call rejects with SYSPROBE_ERR_TIMEOUT; the thread is ended as
   * soon as the run is over, whichever way. An error thrown in the thread rejects the call with it.
   * Like the deadline timer, the thread keeps the process up only while the run is pending.
   */
  async guardWorker<T>(name: string, file: string | URL, options: GuardWorkerOptions): Promise<T> {
    checkName(name);
    if (!(file instanceof URL) && (typeof file !== 'string' || file.length === 0)) {
      throw invalid(`Option file must be a path string or a file URL; got ${describe(file)}.`);
    }
    const { timeoutMs, overlap } = checkRunOptions(options, WORKER_OPTION_NAMES);
    if (options.resourceLimits !== undefined) checkPlainObject('resourceLimits', options.resourceLimits);
    return this.#admit(name, 'worker', timeoutMs, overlap, (signal) => this.#runWorker<T>(file, options, signal));
  }

  /**
   * Rejects every queued and running run with SYSPROBE_ERR_STOPPED (aborting their signals and
   * terminating their threads), and every later call. Resolves once the job threads have exited;
   * an async job that ignores its signal may still be running.
   */
  async stop(): Promise<void> {
    this.#stopped = true;
    for (const [name, lane] of this.#lanes) {
      for (const run of lane.queued.splice(0)) run.reject(stoppedError(name));
    }
    for (const [controller, name] of [...this.#running]) controller.abort(stoppedError(name));
    await Promise.all([...this.#workers].map((worker) => new Promise((resolve) => worker.once('exit', resolve))));
  }

  #admit<T>(name: string, kind: Kind, timeoutMs: number, overlap: JobOverlap, start: Start<T>): Promise<T> {
    if (this.#stopped) return Promise.reject(stoppedError(name));
    const lane = this.#lanes.get(name) ?? { running: 0, queued: [] };
    this.#lanes.set(name, lane);
    if (lane.running === 0 || overlap === 'allow') return this.#run(name, kind, timeoutMs, lane, start);
    if (overlap === 'refuse')
      return this.#refuse(name, kind, `Job '${name}' is still running, so this run was refused (overlap: 'refuse').`);
    if (lane.queued.length >= MAX_QUEUED) {
      return this.#refuse(
        name,
        kind,
        `Job '${name}' is still running and its queue is full (${MAX_QUEUED} runs waiting), so this run was refused.`,
      );
    }
    return new Promise((resolve, reject) => {
      lane.queued.push({
        start: () => void this.#run(name, kind, timeoutMs, lane, start).then(resolve, reject),
        reject,
      });
    });
  }

  #refuse(name: string, kind: Kind, message: string): Promise<never> {
    this.#report({ job: name, outcome: 'refused', durationMs: 0, kind });
    return Promise.reject(new SysprobeError(ErrorCode.JOB_RUNNING, message));
  }

  /** Settles with whichever comes first: the job's result, its timeout, or stop(). */
  #run<T>(name: string, kind: Kind, timeoutMs: number, lane: Lane, start: Start<T>): Promise<T> {
    lane.running += 1;
    const controller = new AbortController();
    this.#running.set(controller, name);
    const startedAt = performance.now();
    const timer = setTimeout(() => {
      controller.abort(new SysprobeError(ErrorCode.TIMEOUT, `Job '${name}' did not finish within ${timeoutMs} ms.`));
    }, timeoutMs);
    let ended = false;
    const end = (): number => {
      ended = true;
      clearTimeout(timer);
      this.#running.delete(controller);
      this.#release(name, lane);
      return performance.now() - startedAt;
    };
    return new Promise<T>((resolve, reject) => {
      controller.signal.addEventListener(
        'abort',
        () => {
          const reason = controller.signal.reason as SysprobeError;
          const durationMs = end();
          if (reason.code === ErrorCode.TIMEOUT) {
            this.#logger.warn({ job: name, timeoutMs, durationMs }, 'sysprobe guarded job timed out');
            this.#report({ job: name, outcome: 'timeout', durationMs, kind });
          }
          reject(reason);
        },
        { once: true },
      );
      // Both handlers stay attached after the run ended, so an abandoned job's late failure is no unhandledRejection.
      start(controller.signal).then(
        (value) => {
          if (ended) return;
          this.#report({ job: name, outcome: 'ok', durationMs: end(), kind });
          resolve(value);
        },
        (err: unknown) => {
          if (ended) {
            // A job that heeded its signal rejects with the reason; anything else is news worth a debug line.
            if (err !== controller.signal.reason)
              this.#logger.debug(
                { job: name, err: describeError(err) },
                'sysprobe guarded job failed after its run had ended',
              );
            return;
          }
          this.#report({ job: name, outcome: 'failed', durationMs: end(), kind });
          this.#logger.warn({ job: name, err: describeError(err) }, 'sysprobe guarded job failed');
          reject(err);
        },
      );
    });
  }

  /** The callback is the Probe's: a bug there must neither leave a caller waiting nor reach the app. */
  #report(event: JobEvent): void {
    try {
      this.#onMetric(event);
    } catch (err) {
      this.#logger.error({ job: event.job, err: describeError(err) }, 'sysprobe job metric callback failed');
    }
  }

  /** Frees the run's place; once none of the name is going, the next queued one starts. */
  #release(name: string, lane: Lane): void {
    lane.running -= 1;
    if (lane.running > 0) return;
    const next = lane.queued.shift();
    if (next) next.start();
    else this.#lanes.delete(name);
  }

  #runWorker<T>(file: string | URL, options: GuardWorkerOptions, signal: AbortSignal): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const worker = new Worker(file, {
        workerData: options.workerData,
        resourceLimits: options.resourceLimits,
        // Not the app's flags: `--import sysprobe/register` would start sysprobe again inside the job's thread.
        execArgv: [],
      });
      this.#workers.add(worker);
      const end = (): void => {
        signal.removeEventListener('abort', onAbort);
        void worker.terminate();
      };
      const fail = (err: unknown): void => {
        reject(err);
        end();
      };
      const onAbort = (): void => fail(signal.reason);
      signal.addEventListener('abort', onAbort, { once: true });
      worker.once('message', (value: T) => {
        resolve(value);
        end();
      });
      worker.once('messageerror', fail);
      worker.once('error', fail);
      worker.once('exit', (exitCode) => {
        this.#workers.delete(worker);
        signal.removeEventListener('abort', onAbort);
        reject(new Error(`The thread of a guarded job exited (code ${exitCode}) without posting a result.`));
      });
    });
  }
}

function stoppedError(name: string): SysprobeError {
  return new SysprobeError(ErrorCode.STOPPED, `Job '${name}' was ended: the job guard stopped.`);
}

function checkName(name: unknown): void {
  if (typeof name !== 'string' || name.length === 0 || name.length > MAX_NAME_LENGTH) {
    throw invalid(
      `Option name must be a non-empty string of at most ${MAX_NAME_LENGTH} characters; got ${describe(name)}.`,
    );
  }
}

function checkRunOptions(input: unknown, known: readonly string[]): { timeoutMs: number; overlap: JobOverlap } {
  const options = checkPlainObject('(the options argument)', input);
  checkKnownKeys('', options, known);
  if (options.timeoutMs === undefined) {
    throw invalid(`Option timeoutMs is required: how long the job may run, an integer from 1 to ${MAX_TIMEOUT_MS} ms.`);
  }
  // The value is defined here, so the fallback never applies.
  const timeoutMs = checkInteger('timeoutMs', options.timeoutMs, 1, MAX_TIMEOUT_MS, 0);
  const overlap = options.overlap === undefined ? 'refuse' : options.overlap;
  if (!OVERLAPS.includes(overlap))
    throw invalid(`Option overlap must be one of ${OVERLAPS.join(', ')}; got ${describe(overlap)}.`);
  return { timeoutMs, overlap: overlap as JobOverlap };
}
