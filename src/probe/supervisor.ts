import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { describeError, ErrorCode, errorFromReply, SysprobeError } from '../errors.js';
import { PendingRequests } from '../internal/pending-requests.js';
import type { Logger } from './options.js';
import type { MainToWorker, Request, WorkerToMain } from '../protocol.js';
import type { WorkerSettings } from '../worker/settings.js';

const WORKER_FILE = path.join(__dirname, '..', 'worker', 'probe-worker.js');
/** Small limits: the worker holds the recorder and a few buffers, never the app's data. */
const RESOURCE_LIMITS = { maxOldGenerationSizeMb: 64, maxYoungGenerationSizeMb: 8, stackSizeMb: 4 } as const;
const READY_TIMEOUT_MS = 10_000;
const STOP_TIMEOUT_MS = 1_000;
const BACKOFF_FIRST_MS = 100;
const BACKOFF_MAX_MS = 30_000;
/** A worker that ran this long without dying resets the backoff. */
const BACKOFF_RESET_AFTER_MS = 60_000;

/** Receives the worker's own messages (logs, stall reports); responses are settled here. */
export type WorkerMessageHandler = (message: WorkerToMain) => void;

/**
 * Owns the probe worker: starts it, restarts it with exponential backoff when it
 * dies, and carries requests to it with bounded waits. The worker is unref()ed,
 * so it never keeps the process alive.
 */
export class WorkerSupervisor {
  readonly #settings: WorkerSettings;
  readonly #logger: Logger;
  readonly #onMessage: WorkerMessageHandler;
  readonly #pending = new PendingRequests();
  #worker: Worker | undefined;
  #ready = false;
  #restarts = 0;
  #backoffMs = BACKOFF_FIRST_MS;
  #startedAt = 0;
  #restartTimer: NodeJS.Timeout | undefined;
  #stopping = false;
  /** The worker's kernel thread id, once it said ready. */
  workerTid: number | undefined;

  constructor(settings: WorkerSettings, logger: Logger, onMessage: WorkerMessageHandler) {
    this.#settings = settings;
    this.#logger = logger;
    this.#onMessage = onMessage;
  }

  get restarts(): number {
    return this.#restarts;
  }

  get running(): boolean {
    return this.#ready;
  }

  /** Starts the worker and resolves once it said ready. */
  start(): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(
          new SysprobeError(
            ErrorCode.WORKER_UNAVAILABLE,
            `The probe worker did not start within ${READY_TIMEOUT_MS} ms.`,
          ),
        );
        void this.#worker?.terminate();
      }, READY_TIMEOUT_MS);
      this.#spawn((err) => {
        clearTimeout(timer);
        if (err) reject(err);
        else resolve();
      });
    });
  }

  #spawn(onReady?: (err?: Error) => void): void {
    const worker = new Worker(WORKER_FILE, {
      workerData: this.#settings,
      resourceLimits: RESOURCE_LIMITS,
      // Not the app's flags: `--import sysprobe/register` would start sysprobe again inside the worker.
      execArgv: [],
      stdout: false,
      stderr: false,
    });
    this.#worker = worker;
    this.#startedAt = Date.now();
    worker.on('message', (message: WorkerToMain) => {
      if (message.type === 'ready') {
        this.#ready = true;
        this.workerTid = message.tid;
        this.#onMessage(message); // the probe reads where the endpoints listen
        onReady?.();
        onReady = undefined;
        return;
      }
      if (message.type === 'response') {
        this.#settle(message);
        return;
      }
      this.#onMessage(message);
    });
    worker.on('error', (err) => {
      this.#logger.error({ err: describeError(err) }, 'sysprobe worker failed');
    });
    worker.on('exit', (exitCode) => {
      this.#ready = false;
      if (this.#worker === worker) this.#worker = undefined;
      this.#pending.failAll(
        new SysprobeError(ErrorCode.WORKER_UNAVAILABLE, `The probe worker exited (code ${exitCode}) before answering.`),
      );
      if (onReady) {
        onReady(
          new SysprobeError(ErrorCode.WORKER_UNAVAILABLE, `The probe worker exited (code ${exitCode}) while starting.`),
        );
        onReady = undefined;
        return;
      }
      if (!this.#stopping) this.#scheduleRestart(exitCode);
    });
    // After the listeners: adding a 'message' listener re-refs the worker's port.
    worker.unref();
  }

  #scheduleRestart(exitCode: number | undefined): void {
    if (Date.now() - this.#startedAt > BACKOFF_RESET_AFTER_MS) this.#backoffMs = BACKOFF_FIRST_MS;
    const delay = this.#backoffMs;
    this.#backoffMs = Math.min(BACKOFF_MAX_MS, this.#backoffMs * 2);
    this.#restarts += 1;
    this.#logger.warn({ exitCode, restarts: this.#restarts, backoffMs: delay }, 'sysprobe worker exited; restarting');
    this.#restartTimer = setTimeout(() => {
      this.#restartTimer = undefined;
      if (this.#stopping) return;
      this.#spawn((err) => {
        if (!err) {
          this.#logger.info({ restarts: this.#restarts, workerTid: this.workerTid }, 'sysprobe worker restarted');
          return;
        }
        this.#logger.error({ err: describeError(err) }, 'sysprobe worker restart failed');
        // One that died while starting is tried again, later (the backoff keeps growing): never left without a worker.
        if (!this.#stopping) this.#scheduleRestart(undefined);
      });
    }, delay);
    this.#restartTimer.unref();
  }

  post(message: MainToWorker): void {
    if (!this.#ready || !this.#worker) return; // a restart is pending; the next sample will get through
    try {
      this.#worker.postMessage(message);
    } catch (err) {
      this.#logger.warn({ err: describeError(err) }, 'sysprobe could not message its worker');
    }
  }

  /**
   * Asks the worker; rejects with SYSPROBE_ERR_WORKER_UNAVAILABLE or SYSPROBE_ERR_TIMEOUT rather than wait forever.
   * The timeout timer stays ref'd: someone is awaiting the answer, and the wait is bounded.
   */
  request(request: Request, timeoutMs: number): Promise<unknown> {
    if (!this.#ready || !this.#worker) {
      return Promise.reject(
        new SysprobeError(
          ErrorCode.WORKER_UNAVAILABLE,
          'The probe worker is not running (it may be restarting); try again shortly.',
        ),
      );
    }
    return this.#pending.add(
      (id) => this.post({ type: 'request', id, request }),
      timeoutMs,
      () =>
        new SysprobeError(
          ErrorCode.TIMEOUT,
          `The probe worker did not answer a '${request.kind}' request within ${timeoutMs} ms.`,
        ),
    );
  }

  #settle(message: Extract<WorkerToMain, { type: 'response' }>): void {
    this.#pending.settle(
      message.id,
      message.ok
        ? { ok: true, value: message.value }
        : { ok: false, error: errorFromReply(message.error.code, message.error.message, ErrorCode.WORKER_UNAVAILABLE) },
    );
  }

  /** Asks the worker to stop, and terminates it if it has not within a second. */
  async stop(): Promise<void> {
    this.#stopping = true;
    clearTimeout(this.#restartTimer);
    const worker = this.#worker;
    if (!worker) return;
    const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
    this.post({ type: 'stop' });
    const overdue = setTimeout(() => void worker.terminate(), STOP_TIMEOUT_MS);
    await exited;
    clearTimeout(overdue);
    this.#pending.failAll(new SysprobeError(ErrorCode.STOPPED, 'sysprobe stopped before the worker answered.'));
  }

  /** For benchmarks (bench/soak.js): a heap snapshot of the probe worker's isolate, streamed by Node. */
  workerHeapSnapshotForBench(): Promise<NodeJS.ReadableStream> | undefined {
    return this.#worker?.getHeapSnapshot();
  }

  /** For tests: kills the worker as a crash would. */
  crashForTest(): Promise<number> | undefined {
    return this.#worker?.terminate();
  }
}
