/**
 * The probe worker's HTTP endpoints: `GET /health` (health.port) and the control
 * endpoint (control.port). They live in the worker so they answer while the main
 * thread is blocked; nothing here ever waits on the main thread, except a heap
 * snapshot asked for over the control endpoint (the writer runs in the snapshotted
 * isolate), which is bounded by its own timeout.
 */
import type * as http from 'node:http';
import { describeError } from '../errors.js';
import {
  combine,
  dependencyReasons,
  readingsFromSample,
  thresholdReasons,
  type BlockedInfo,
  type BlockedThreadInfo,
  type Health,
  type HealthReason,
} from '../health/evaluate.js';
import { healthRoute } from '../health/server.js';
import { controlRoute, type ControlActions } from '../control/server.js';
import { RefusalLog } from '../control/refusal-log.js';
import type { EndpointsReady } from '../protocol.js';
import type { Frame } from '../captures/cpuprofile.js';
import type { Sample } from '../samples/sample.js';
import type { WorkerSettings } from './settings.js';
import type { ProbeStatus } from '../synthetics/book.js';
import type { InFlightRequest } from '../stalls/requests.js';
import type { ThreadObservation } from '../stalls/cause.js';
import type { StallThread } from '../stalls/stall.js';
import { close, listen, type OnRefused } from '../internal/http-endpoint.js';

/** How long a health answer during a stall waits for the stall's stack, if its capture is still running. */
const BLOCKED_STACK_WAIT_MS = 50;

/** What the endpoints need from the worker. */
export interface WorkerView {
  /** The newest sample, after turning any pending main-thread readings into samples (at most once per interval). */
  latestSample(): Sample | undefined;
  /**
   * The stall in progress: how long so far, its stack capture (settled or not), the requests in flight and the
   * main thread's state as last seen; undefined when the loop runs.
   */
  stall():
    | {
        forMs: number;
        stack: Promise<Frame[] | undefined>;
        requests: InFlightRequest[] | undefined;
        observation: ThreadObservation | undefined;
      }
    | undefined;
  /** The watched worker threads (watchThread()) blocked now, with their stall's stack capture. */
  blockedThreads(): Array<{ thread: StallThread; forMs: number; stack: Promise<Frame[] | undefined> }>;
  /** Rules with markUnhealthy that fired in the worker and are within their cooldown. */
  ruleReasons(now: number): HealthReason[];
  /** The synthetic probes' state: those failing are `dependency` reasons. */
  probeStatuses(): ProbeStatus[];
  control: Omit<ControlActions, 'refused' | 'dumpDir' | 'maxDownloadBytes'>;
  log(level: 'warn' | 'error', msg: string, fields: Record<string, unknown>): void;
}

export class WorkerEndpoints {
  readonly #settings: WorkerSettings;
  readonly #view: WorkerView;
  readonly #servers: http.Server[] = [];
  #stopped = false;
  /** Refusals (which anyone can cause, token or not) are logged a few a minute, the rest counted: a flood must not drown the log ring. */
  readonly #refusals = new RefusalLog((msg, fields) =>
    this.#view.log('warn', msg, { component: 'control', ...fields }),
  );

  constructor(settings: WorkerSettings, view: WorkerView) {
    this.#settings = settings;
    this.#view = view;
  }

  /** Listens where asked; a server that cannot listen is reported in the result, not thrown. */
  async start(): Promise<EndpointsReady> {
    const ready: EndpointsReady = {};
    const { health, control } = this.#settings;
    const onError = (err: unknown) =>
      this.#view.log('error', 'sysprobe endpoint failed', { component: 'endpoint', err: describeError(err) });
    if (health?.port !== undefined) {
      ready.health = await this.#listen(
        health.host,
        health.port,
        healthRoute(() => this.health(), health.retryAfterSeconds),
        onError,
      );
    }
    if (control) {
      const actions: ControlActions = {
        ...this.#view.control,
        dumpDir: this.#settings.dumpDir,
        maxDownloadBytes: this.#settings.dumpMaxBytes,
        refused: (status, why, request) => this.#refusals.refused(status, why, request),
      };
      ready.control = await this.#listen(
        control.host,
        control.port,
        controlRoute(control.tokenDigest, control.ratePerMinute, actions),
        onError,
        actions.refused,
      );
    }
    return ready;
  }

  async #listen(
    host: string,
    port: number,
    route: Parameters<typeof listen>[2],
    onError: (err: unknown) => void,
    onRefused?: OnRefused,
  ): Promise<EndpointsReady['health']> {
    try {
      const { server, address } = await listen(host, port, route, onError, onRefused);
      if (this.#stopped) close(server);
      else this.#servers.push(server);
      return address;
    } catch (err) {
      return { error: describeError(err).message };
    }
  }

  /** Health as the worker sees it; during a stall, unhealthy with where the main thread is stuck. */
  async health(): Promise<Health> {
    const thresholds = this.#settings.health!.thresholds;
    const now = Date.now();
    const reasons = [
      ...thresholdReasons(readingsFromSample(this.#view.latestSample()), thresholds),
      ...this.#view.ruleReasons(now),
      ...dependencyReasons(this.#view.probeStatuses()),
    ];
    const stall = this.#view.stall();
    let blocked: BlockedInfo | undefined;
    if (stall) {
      const frames = await withinMs(stall.stack, BLOCKED_STACK_WAIT_MS);
      const top = frames?.[0];
      blocked = {
        forMs: Math.round(stall.forMs),
        ...(top ? { function: top.functionName, file: top.url, line: top.lineNumber + 1 } : {}),
      };
      if (stall.requests?.length) {
        blocked.requests = stall.requests.map(({ method, path, startedAt, traceId }) => ({
          method,
          path,
          startedAt,
          runningMs: Math.max(0, now - startedAt),
          ...(traceId ? { traceId } : {}),
        }));
      }
      const { syscall, waitingOn } = stall.observation ?? {};
      if (syscall) blocked.syscall = syscall;
      if (waitingOn) blocked.waitingOn = waitingOn;
      const where = top ? ` in ${top.functionName} (${top.url}:${top.lineNumber + 1})` : '';
      reasons.unshift({
        kind: 'blocked',
        status: 'unhealthy',
        value: blocked.forMs,
        threshold: this.#settings.stallThresholdMs,
        message: `event loop blocked for ${blocked.forMs} ms${where}`,
      });
    }
    const health = combine(reasons, now, blocked);
    const blockedThreads = await Promise.all(
      this.#view.blockedThreads().map(async ({ thread, forMs, stack }): Promise<BlockedThreadInfo> => {
        const top = (await withinMs(stack, BLOCKED_STACK_WAIT_MS))?.[0];
        return {
          thread,
          forMs: Math.round(forMs),
          ...(top ? { function: top.functionName, file: top.url, line: top.lineNumber + 1 } : {}),
        };
      }),
    );
    if (blockedThreads.length > 0) health.blockedThreads = blockedThreads;
    return health;
  }

  stop(): void {
    this.#stopped = true;
    this.#refusals.flush();
    for (const server of this.#servers.splice(0)) close(server);
  }
}

/** The promise's value if it settles within `ms`, else undefined; never rejects. */
function withinMs<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise.catch(() => undefined),
    new Promise<undefined>((resolve) => {
      timer = setTimeout(() => resolve(undefined), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}
