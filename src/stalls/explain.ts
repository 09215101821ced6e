/**
 * The main thread's half of explaining a stall, once the loop runs again: the requests
 * the worker found in flight get what only the main thread knows (their route), the
 * requests that queued behind the stall are counted, the GC pauses that fell in it are
 * summed, and the cause is decided (src/stalls/cause.ts).
 */
import { classifyStall, type StallDiagnosis, type ThreadObservation } from './cause.js';
import type { InFlightSnapshot, RequestTracker } from './requests.js';
import type { Frame } from '../captures/cpuprofile.js';

/**
 * Requests that start within this long after a stall ends are counted as having waited behind
 * it: their bytes arrived during the stall and were parsed in the loop's first turns after it.
 */
export const QUEUE_WINDOW_MS = 50;
/** The request rate before a stall is measured over this long. */
export const BASELINE_MS = 10_000;
/** GC pauses remembered, newest last (a stall of seconds under heavy GC has a few hundred). */
const GC_PAUSES = 512;

/** A request that was in flight on the main thread while it was blocked. */
export interface StallRequest {
  method: string;
  /** The request's path, without its query string. */
  path: string;
  /** The framework's route pattern, when it could be read (Express). */
  route?: string;
  /** When the request started, ms since the epoch. */
  startedAt: number;
  /** The W3C trace id from its `traceparent` header, when it had one. */
  traceId?: string;
  /** How long it had run when the stall ended, ms; the stall added its whole length to it. */
  runningMs: number;
}

/** The requests that waited behind a stall. */
export interface StallQueue {
  /** Requests that started within `windowMs` after the stall ended: those that arrived while the loop was blocked, plus ordinary arrivals. */
  count: number;
  windowMs: number;
  /** How many start in such a window on average, from the rate over the BASELINE_MS before the stall: the ordinary arrivals in `count`. */
  usual: number;
  /** The most a queued request could have waited: the stall's length, ms. */
  maxAddedMs: number;
}

/** What a stall event carries beyond its time and stack. */
export interface StallExplanation {
  /** The requests in flight while the loop was blocked, oldest first. */
  requests: StallRequest[];
  queued?: StallQueue;
  diagnosis: StallDiagnosis;
}

/** What the worker reports with a stall, for the explanation. */
export interface StallFacts {
  startedAt: number;
  durationMs: number;
  stack: Frame[] | undefined;
  captureHow: string;
  selfPaused: boolean;
  requests?: InFlightSnapshot | undefined;
  observations?: ThreadObservation[] | undefined;
  throttledMs?: number | undefined;
  /** A stall of another thread (registered with watchThread()): this thread's GC, requests and queue are not its. */
  otherThread?: boolean;
}

export class StallExplainer {
  readonly #requests: RequestTracker | undefined;
  /** Recent GC pauses as [start, end] pairs, ms since the epoch; undefined when GC is not timed. */
  readonly #gc: Float64Array | undefined;
  #gcCount = 0;

  constructor(requests: RequestTracker | undefined, timesGc: boolean) {
    this.#requests = requests;
    this.#gc = timesGc ? new Float64Array(GC_PAUSES * 2) : undefined;
  }

  /** One GC pause (from the GC observer): when it started, ms since the epoch, and how long it took. */
  recordGc(startedAt: number, durationMs: number): void {
    if (!this.#gc) return;
    const at = (this.#gcCount++ % GC_PAUSES) * 2;
    this.#gc[at] = startedAt;
    this.#gc[at + 1] = startedAt + durationMs;
  }

  /** GC pause time within [from, to], ms; undefined when GC is not timed. */
  gcMsBetween(from: number, to: number): number | undefined {
    if (!this.#gc) return undefined;
    let total = 0;
    for (let i = 0; i < Math.min(this.#gcCount, GC_PAUSES); i++) {
      const start = this.#gc[i * 2]!;
      const end = this.#gc[i * 2 + 1]!;
      total += Math.max(0, Math.min(end, to) - Math.max(start, from));
    }
    return total;
  }

  #inGcPause(at: number): boolean {
    if (!this.#gc) return false;
    for (let i = 0; i < Math.min(this.#gcCount, GC_PAUSES); i++) {
      if (this.#gc[i * 2]! <= at && at <= this.#gc[i * 2 + 1]!) return true;
    }
    return false;
  }

  /**
   * The explanation of a stall that is over. Waits until QUEUE_WINDOW_MS after its end (the
   * queued requests start then, and the GC entries of its pauses are delivered by then).
   */
  async explain(facts: StallFacts, now: () => number = Date.now): Promise<StallExplanation> {
    const endedAt = facts.startedAt + facts.durationMs;
    if (facts.otherThread) return this.#explainOther(facts);
    const wait = endedAt + QUEUE_WINDOW_MS - now();
    if (wait > 0) await new Promise<void>((resolve) => setTimeout(resolve, wait).unref());
    const requests: StallRequest[] = (facts.requests?.requests ?? []).map((r) => {
      const request: StallRequest = {
        method: r.method,
        path: r.path,
        startedAt: r.startedAt,
        runningMs: Math.max(0, Math.round(endedAt - r.startedAt)),
      };
      const { route } = this.#requests?.details(r.slot, r.seq) ?? {};
      if (route !== undefined) request.route = route;
      if (r.traceId !== undefined) request.traceId = r.traceId;
      return request;
    });
    this.#requests?.clearDetails();
    const explanation: StallExplanation = {
      requests,
      diagnosis: classifyStall({
        durationMs: facts.durationMs,
        selfPaused: facts.selfPaused,
        gcMs: this.gcMsBetween(facts.startedAt, endedAt),
        throttledMs: facts.throttledMs,
        captureHow: facts.captureHow,
        // A look that fell in a GC pause saw V8 collecting (often waiting for its helper threads), not the app.
        observations: (facts.observations ?? []).filter((o) => !this.#inGcPause(o.at)),
        stack: facts.stack,
      }),
    };
    if (this.#requests) {
      explanation.queued = {
        count: this.#requests.startedBetween(endedAt, endedAt + QUEUE_WINDOW_MS),
        windowMs: QUEUE_WINDOW_MS,
        usual: Math.round(this.#requests.rateBefore(facts.startedAt, BASELINE_MS) * QUEUE_WINDOW_MS * 10) / 10,
        maxAddedMs: Math.round(facts.durationMs),
      };
    }
    return explanation;
  }

  /** Another thread's stall: its stack and what /proc showed of it; its GC is not observed here. */
  #explainOther(facts: StallFacts): StallExplanation {
    return {
      requests: [],
      diagnosis: classifyStall({
        durationMs: facts.durationMs,
        selfPaused: false,
        gcMs: undefined,
        throttledMs: facts.throttledMs,
        captureHow: facts.captureHow,
        observations: facts.observations ?? [],
        stack: facts.stack,
      }),
    };
  }
}
