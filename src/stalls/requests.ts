/**
 * The HTTP requests in flight on the main thread, kept where the probe worker can
 * read them while the main thread is blocked: a table of fixed-size slots in a
 * SharedArrayBuffer, one writer (the main thread, from Node's
 * `http.server.request.start` and `http.server.response.finish` diagnostics
 * channels), one reader (the worker, when a stall starts or /health asks during one).
 *
 * Slot layout (128 bytes; Int32 indexes, byte offsets):
 *
 *     int 0   seq        sequence lock and state: 4k free, 4k+1 being written (a start), 4k+2 in flight; a finish makes it 4k+4
 *     int 1   method     index into http.METHODS (the same table on both threads), -1 unknown
 *     int 2   pathLength bytes of the path (≤ PATH_BYTES)
 *     int 3   traceLength 32 when a trace id is there, else 0
 *     int 4   flags      TRUNCATED (the path was longer), SEEN (the worker saw it during a stall)
 *     f64 3   startedAt  ms since the epoch                          (bytes 24–31)
 *     bytes 32–63        trace id, 32 lowercase hex characters
 *     bytes 64–127       path: request.url up to the query string (never the query: it can hold secrets), latin1
 *
 * A finished request's slot is freed at once. A request whose client went away before the
 * response finished never gets `response.finish` (Node publishes it on the response's
 * 'finish' event), so its slot is reclaimed by `sweep()` (the main thread's sample timer,
 * and whenever the table is full) once the response is destroyed.
 *
 * Per request the main thread does: a clock read, pop a free slot, two atomic stores, a
 * handful of plain ones, the path's characters (up to 64), a look for `traceparent` among the
 * raw headers, a symbol property on the response; at finish, a property read and one atomic store.
 * With Fastify, its handler's start adds a property read and one array store (the route).
 * bench/requests.js measures it.
 */
import * as dc from 'node:diagnostics_channel';
import { METHODS, type IncomingMessage, type ServerResponse } from 'node:http';

/** How many requests can be in flight at once and be named; more are counted as untracked. */
export const REQUEST_SLOTS = 256;
/** The most path bytes kept per request. */
export const PATH_BYTES = 64;
const TRACE_BYTES = 32;
const SLOT_BYTES = 128;
const SLOT_INTS = SLOT_BYTES / 4;
// Per-slot Int32 fields.
const SEQ = 0;
const METHOD = 1;
const PATH_LENGTH = 2;
const TRACE_LENGTH = 3;
const FLAGS = 4;
// The Float64 field, as an index into the slot's Float64s.
const STARTED_AT = 3;
const TRACE_AT = 32;
const PATH_AT = 64;
// Flags.
const TRUNCATED = 1;
const SEEN = 2;
// The header: one slot's worth, before the slots.
const HEADER_BYTES = SLOT_BYTES;
const H_SLOTS = 0;
/** Requests not tracked because every slot was taken. */
const H_UNTRACKED = 1;

const START_CHANNEL = 'http.server.request.start';
const FINISH_CHANNEL = 'http.server.response.finish';
/**
 * Fastify 5 publishes the matched route here as a handler starts (its docs, Hooks.md, "Diagnostics
 * Channel Hooks"); the message is Fastify's own, built only while someone subscribes (on Node with
 * `TracingChannel#hasSubscribers`: 20.13+, 22+): `{ request, reply, route: { url, method } }`.
 */
const FASTIFY_HANDLER_START = 'tracing:fastify.request.handler:start';
const QUESTION_MARK = 0x3f;
const HASH = 0x23;
/** `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>` */
const TRACEPARENT_LENGTH = 55;
/** The slot index a tracked response carries. */
const SLOT = Symbol('sysprobe.requestSlot');
/** How many recent request start times the main thread keeps, to count the requests that queued behind a stall. */
const RECENT_STARTS = 1024;

/** A request in flight, as the worker reads it from the table. */
export interface InFlightRequest {
  method: string;
  /** The request's path, without the query string; ends in `…` when cut at PATH_BYTES. */
  path: string;
  /** When the request started (its headers were parsed), ms since the epoch. */
  startedAt: number;
  /** The W3C trace id from the request's `traceparent` header, when it had one. */
  traceId?: string;
  /** The slot and its sequence number: which request this is, for the main thread to add what only it knows. */
  slot: number;
  seq: number;
}

/** What the table holds beside the requests. */
export interface InFlightSnapshot {
  requests: InFlightRequest[];
  /** Requests that started while every slot was taken (since the table was made). */
  untracked: number;
}

interface RequestMessage {
  request: IncomingMessage;
  response: ServerResponse & { [SLOT]?: number };
}

interface FastifyHandlerMessage {
  reply?: { raw?: ServerResponse & { [SLOT]?: number } };
  route?: { url?: unknown };
}

function newTableBuffer(slots: number): SharedArrayBuffer {
  const buffer = new SharedArrayBuffer(HEADER_BYTES + slots * SLOT_BYTES);
  new Int32Array(buffer)[H_SLOTS] = slots;
  return buffer;
}

/** The worker's side: reads the requests in flight without the main thread's help. */
export class InFlightReader {
  readonly #ints: Int32Array;
  readonly #floats: Float64Array;
  readonly #bytes: Uint8Array;
  readonly #slots: number;

  constructor(buffer: SharedArrayBuffer) {
    this.#ints = new Int32Array(buffer);
    this.#floats = new Float64Array(buffer);
    this.#bytes = new Uint8Array(buffer);
    this.#slots = this.#ints[H_SLOTS]!;
  }

  /**
   * The requests in flight now, oldest first. `markSeen`: flag them, so that the main
   * thread, when one finishes, keeps what it knows of it (its route) for the stall's report.
   */
  read(markSeen = false): InFlightSnapshot {
    const requests: InFlightRequest[] = [];
    for (let slot = 0; slot < this.#slots; slot++) {
      const request = this.#readSlot(slot, markSeen);
      if (request) requests.push(request);
    }
    requests.sort((a, b) => a.startedAt - b.startedAt);
    return { requests, untracked: Atomics.load(this.#ints, H_UNTRACKED) };
  }

  #readSlot(slot: number, markSeen: boolean): InFlightRequest | undefined {
    const base = (HEADER_BYTES + slot * SLOT_BYTES) / 4;
    // A slot being written is a request starting this instant: one retry, then skip it.
    for (let attempt = 0; attempt < 2; attempt++) {
      const seq = Atomics.load(this.#ints, base + SEQ);
      if (seq % 4 === 0) return undefined; // free
      if (seq % 4 !== 2) continue;
      const startedAt = this.#floats[base / 2 + STARTED_AT]!;
      const methodIndex = this.#ints[base + METHOD]!;
      const pathLength = Math.min(this.#ints[base + PATH_LENGTH]!, PATH_BYTES);
      const traceLength = Math.min(this.#ints[base + TRACE_LENGTH]!, TRACE_BYTES);
      const flags = this.#ints[base + FLAGS]!;
      const at = base * 4;
      const path = latin1(this.#bytes, at + PATH_AT, pathLength);
      const trace = latin1(this.#bytes, at + TRACE_AT, traceLength);
      if (Atomics.load(this.#ints, base + SEQ) !== seq) continue;
      if (markSeen) Atomics.or(this.#ints, base + FLAGS, SEEN);
      const request: InFlightRequest = {
        method: METHODS[methodIndex] ?? 'UNKNOWN',
        path: flags & TRUNCATED ? `${path}…` : path,
        startedAt,
        slot,
        seq,
      };
      // Checked here, not on the main thread: an all-zero id is invalid by the W3C spec.
      if (/^[0-9a-f]{32}$/.test(trace) && !/^0+$/.test(trace)) request.traceId = trace;
      return request;
    }
    return undefined;
  }
}

function latin1(bytes: Uint8Array, from: number, length: number): string {
  let text = '';
  for (let i = 0; i < length; i++) text += String.fromCharCode(bytes[from + i]!);
  return text;
}

/** What the main thread adds to a request the worker named: what only it can read. */
export interface RequestDetails {
  /** The framework's route pattern (Express: `req.baseUrl + req.route.path`; Fastify: the route's url), when the request reached one. */
  route?: string;
}

/** The main thread's side: keeps the table up to date from the HTTP server's diagnostics channels. */
export class RequestTracker {
  readonly buffer: SharedArrayBuffer;
  readonly #ints: Int32Array;
  readonly #floats: Float64Array;
  readonly #bytes: Uint8Array;
  readonly #slots: number;
  /** The response in each slot (to free it at finish, reclaim it when destroyed, and read its route). */
  readonly #live: Array<(ServerResponse & { [SLOT]?: number }) | undefined>;
  /** The route each slot's request reached, from a framework's channel (Fastify): an existing string, kept by slot. */
  readonly #routes: Array<string | undefined>;
  /** Free slot indexes, a stack. */
  readonly #free: Int32Array;
  #freeCount: number;
  /** Start times of the most recent requests, a ring: requests that queued behind a stall start right after it. */
  readonly #recentStarts = new Float64Array(RECENT_STARTS);
  #starts = 0;
  /** Details of requests a stall saw that finished before the stall was reported, by `slot:seq`. */
  readonly #finishedSeen = new Map<string, RequestDetails>();
  readonly #methodIndex = new Map<string, number>(METHODS.map((m, i) => [m, i]));
  #subscribed = false;
  /** Called once at the next start (the heartbeat's wake while its period is stretched). */
  #onNextStart: (() => void) | undefined;
  readonly #onStart = (message: unknown): void => this.#start(message as RequestMessage);
  readonly #onFinish = (message: unknown): void => this.#finish(message as RequestMessage);
  readonly #onRoute = (message: unknown): void => this.#route(message as FastifyHandlerMessage);

  constructor(slots = REQUEST_SLOTS) {
    this.buffer = newTableBuffer(slots);
    this.#slots = slots;
    this.#ints = new Int32Array(this.buffer);
    this.#floats = new Float64Array(this.buffer);
    this.#bytes = new Uint8Array(this.buffer);
    this.#live = new Array<ServerResponse | undefined>(slots).fill(undefined);
    this.#routes = new Array<string | undefined>(slots).fill(undefined);
    this.#free = new Int32Array(slots);
    // Lowest slots first, so a quiet service uses the start of the table.
    for (let i = 0; i < slots; i++) this.#free[i] = slots - 1 - i;
    this.#freeCount = slots;
  }

  /** Starts listening to the HTTP server's channels (Node publishes to them only while someone listens). */
  start(): void {
    if (this.#subscribed) return;
    this.#subscribed = true;
    dc.subscribe(START_CHANNEL, this.#onStart);
    dc.subscribe(FINISH_CHANNEL, this.#onFinish);
    dc.subscribe(FASTIFY_HANDLER_START, this.#onRoute);
  }

  stop(): void {
    if (!this.#subscribed) return;
    this.#subscribed = false;
    dc.unsubscribe(START_CHANNEL, this.#onStart);
    dc.unsubscribe(FINISH_CHANNEL, this.#onFinish);
    dc.unsubscribe(FASTIFY_HANDLER_START, this.#onRoute);
  }

  /** Requests started so far. */
  get started(): number {
    return this.#starts;
  }

  /** Calls `callback` once, at the next request's start (undefined: none). */
  onNextStart(callback: (() => void) | undefined): void {
    this.#onNextStart = callback;
  }

  /** Frees the slots of requests whose client went away before the response finished (no 'finish' comes for them). */
  sweep(): void {
    for (let slot = 0; slot < this.#slots; slot++) {
      const response = this.#live[slot];
      if (response && (response.destroyed || response.writableFinished)) this.#release(slot);
    }
  }

  /** What the main thread knows of a request the worker named, if it is still in flight or finished after a stall saw it. */
  details(slot: number, seq: number): RequestDetails {
    const finished = this.#finishedSeen.get(`${slot}:${seq}`);
    if (finished) return finished;
    const response = this.#live[slot];
    // The request whose start wrote seq `seq` is still there while the slot's seq is seq (a finish moves it on).
    if (response && Atomics.load(this.#ints, this.#base(slot) + SEQ) === seq) return this.#detailsOf(slot, response);
    return {};
  }

  /** Forgets the details kept for a reported stall. */
  clearDetails(): void {
    this.#finishedSeen.clear();
  }

  /** How many requests started in [fromMs, toMs] (ms since the epoch), among the RECENT_STARTS most recent. */
  startedBetween(fromMs: number, toMs: number): number {
    let count = 0;
    const oldest = Math.max(0, this.#starts - RECENT_STARTS);
    for (let i = this.#starts - 1; i >= oldest; i--) {
      const at = this.#recentStarts[i % RECENT_STARTS]!;
      if (at < fromMs) break;
      if (at <= toMs) count++;
    }
    return count;
  }

  /**
   * Requests started per ms over the `spanMs` before `beforeMs` (ms since the epoch); over a
   * shorter span when the RECENT_STARTS most recent starts do not reach back that far.
   */
  rateBefore(beforeMs: number, spanMs: number): number {
    let count = 0;
    let from = beforeMs - spanMs;
    const oldest = Math.max(0, this.#starts - RECENT_STARTS);
    for (let i = this.#starts - 1; i >= oldest; i--) {
      const at = this.#recentStarts[i % RECENT_STARTS]!;
      if (at >= beforeMs) continue;
      if (at < from) return count / spanMs;
      count++;
      if (i === oldest && this.#starts > RECENT_STARTS) from = at; // the ring ends here: the span it covers
    }
    return count / Math.max(1, beforeMs - from);
  }

  #wakeOnce(): void {
    const callback = this.#onNextStart!;
    this.#onNextStart = undefined;
    callback();
  }

  #base(slot: number): number {
    return (HEADER_BYTES + slot * SLOT_BYTES) / 4;
  }

  #start({ request, response }: RequestMessage): void {
    const now = Date.now();
    this.#recentStarts[this.#starts++ % RECENT_STARTS] = now;
    if (this.#onNextStart !== undefined) this.#wakeOnce();
    if (this.#freeCount === 0) this.sweep();
    if (this.#freeCount === 0) {
      Atomics.add(this.#ints, H_UNTRACKED, 1);
      return;
    }
    const slot = this.#free[--this.#freeCount]!;
    this.#live[slot] = response;
    response[SLOT] = slot;
    const base = this.#base(slot);
    const ints = this.#ints;
    const seq = ints[base + SEQ]!; // free (4k): only this thread writes it
    Atomics.store(ints, base + SEQ, seq + 1); // being written
    ints[base + METHOD] = this.#methodIndex.get(request.method ?? '') ?? -1;
    const url = request.url ?? '';
    const bytes = this.#bytes;
    const pathAt = base * 4 + PATH_AT;
    let length = 0;
    let flags = 0;
    for (; length < url.length; length++) {
      const code = url.charCodeAt(length);
      if (code === QUESTION_MARK || code === HASH) break;
      if (length === PATH_BYTES) {
        flags = TRUNCATED;
        break;
      }
      bytes[pathAt + length] = code;
    }
    ints[base + PATH_LENGTH] = length;
    ints[base + TRACE_LENGTH] = writeTraceId(request.rawHeaders, bytes, base * 4 + TRACE_AT);
    ints[base + FLAGS] = flags;
    this.#floats[base / 2 + STARTED_AT] = now;
    Atomics.store(ints, base + SEQ, seq + 2); // in flight
  }

  /** Fastify's handler starts: one array store of the route string it already has; nothing allocated. */
  #route({ reply, route }: FastifyHandlerMessage): void {
    const response = reply?.raw;
    const slot = response?.[SLOT];
    const url = route?.url;
    if (slot !== undefined && this.#live[slot] === response && typeof url === 'string') this.#routes[slot] = url;
  }

  #finish({ response }: RequestMessage): void {
    const slot = response[SLOT];
    if (slot !== undefined && this.#live[slot] === response) this.#release(slot);
  }

  #release(slot: number): void {
    const base = this.#base(slot);
    const ints = this.#ints;
    const seq = ints[base + SEQ]!;
    if (ints[base + FLAGS]! & SEEN) this.#keepSeen(slot, seq);
    Atomics.store(ints, base + SEQ, seq + 2); // free
    this.#live[slot] = undefined;
    this.#routes[slot] = undefined;
    this.#free[this.#freeCount++] = slot;
  }

  /** A request a stall saw is finishing: keep its details until the stall is reported (bounded by the table's size). */
  #keepSeen(slot: number, seq: number): void {
    if (this.#finishedSeen.size >= this.#slots) this.#finishedSeen.clear();
    this.#finishedSeen.set(`${slot}:${seq}`, this.#detailsOf(slot, this.#live[slot]!));
  }

  #detailsOf(slot: number, response: ServerResponse): RequestDetails {
    const route = this.#routes[slot];
    return route !== undefined ? { route } : expressDetails(response);
  }
}

function expressDetails(response: ServerResponse): RequestDetails {
  // Express keeps the matched route on the request (and the mount path in baseUrl) once routing reached a handler.
  const request = response.req as (IncomingMessage & { route?: { path?: unknown }; baseUrl?: unknown }) | undefined;
  const path = request?.route?.path;
  if (typeof path !== 'string') return {};
  const baseUrl = typeof request?.baseUrl === 'string' ? request.baseUrl : '';
  return { route: baseUrl + path };
}

/** Copies the trace id of a `traceparent` header among `rawHeaders` into `bytes` at `at`; returns its length (32), or 0 without one. */
function writeTraceId(rawHeaders: string[], bytes: Uint8Array, at: number): number {
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!;
    // Header names compare by length first: almost every header is rejected by one comparison.
    if (name.length !== 11 || name.toLowerCase() !== 'traceparent') continue;
    const value = rawHeaders[i + 1]!;
    if (value.length < TRACEPARENT_LENGTH || value.charCodeAt(2) !== 0x2d) return 0;
    for (let c = 0; c < TRACE_BYTES; c++) bytes[at + c] = value.charCodeAt(3 + c) | 0x20; // lowercase hex
    return TRACE_BYTES;
  }
  return 0;
}
