/**
 * The control endpoint's routes (served by the probe worker, off by default). Order
 * of refusals: size limits (the server), then the rate limit, then the token, then
 * the route: an unauthenticated client learns nothing about what exists.
 *
 * Capture names never become paths: a download is served only when the name equals
 * one the dump directory's listing returned, and the file is opened without following
 * links and streamed with its size checked.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { IncomingMessage } from 'node:http';
import { describeError, ErrorCode } from '../errors.js';
import { isCaptureName } from '../sink/file-sink.js';
import type { Reply, Route } from '../internal/http-endpoint.js';
import { tokenMatches } from './options.js';
import { OpenFile } from '../internal/open-file.js';

/** What the control endpoint can do; the worker supplies it. */
export interface ControlActions {
  captureStack(): Promise<unknown>;
  captureCpuProfile(durationMs: number): Promise<unknown>;
  captureAllocationProfile(durationMs: number): Promise<unknown>;
  captureHeapSnapshot(): Promise<unknown>;
  /** The newest `last` samples of the flight recorder. */
  samples(last: number): unknown[];
  dumpDir: string;
  /** The largest file a download streams (dumpMaxBytes). */
  maxDownloadBytes: number;
  /** A refused request, for a warn log (never with the token). */
  refused(status: number, why: string, request: { method: string; path: string; remote: string }): void;
}

export interface StoredCaptureInfo {
  name: string;
  bytes: number;
  modifiedAt: number;
}

const MAX_LISTED = 1000;
const MAX_SAMPLES = 1000;
const DURATION = { min: 10, max: 60_000 };

/** A token bucket: `perMinute` requests a minute, bursts of up to `burst`. */
export class TokenBucket {
  readonly #perMs: number;
  readonly #burst: number;
  #tokens: number;
  #at: number;

  constructor(
    perMinute: number,
    burst: number,
    readonly now: () => number = () => performance.now(),
  ) {
    this.#perMs = perMinute / 60_000;
    this.#burst = burst;
    this.#tokens = burst;
    this.#at = now();
  }

  /** Takes one token; else returns the ms until one is due. */
  take(): { ok: true } | { ok: false; retryAfterMs: number } {
    const now = this.now();
    this.#tokens = Math.min(this.#burst, this.#tokens + (now - this.#at) * this.#perMs);
    this.#at = now;
    if (this.#tokens >= 1) {
      this.#tokens -= 1;
      return { ok: true };
    }
    return { ok: false, retryAfterMs: (1 - this.#tokens) / this.#perMs };
  }
}

/** `tokenDigest` is the SHA-256 of the token (ControlToken.digest()): the worker never holds the token itself. */
export function controlRoute(tokenDigest: Uint8Array, ratePerMinute: number, actions: ControlActions): Route {
  const expected = Uint8Array.from(tokenDigest);
  const bucket = new TokenBucket(ratePerMinute, Math.max(1, Math.ceil(ratePerMinute / 6)));
  return async (req, url, body) => {
    const refuse = (status: number, why: string, extra: Omit<Reply, 'status'> = {}): Reply => {
      actions.refused(status, why, {
        method: String(req.method).slice(0, 16),
        path: url.pathname.slice(0, 200),
        remote: req.socket.remoteAddress ?? '',
      });
      return { status, json: { error: why }, ...extra };
    };
    const rate = bucket.take();
    if (!rate.ok)
      return refuse(429, 'rate limit', {
        headers: { 'retry-after': String(Math.max(1, Math.ceil(rate.retryAfterMs / 1000))) },
      });
    // Only the Authorization header counts: a token in the query string would end up in logs.
    const auth = /^Bearer ([\x21-\x7e]{1,1024})$/.exec(req.headers.authorization ?? '');
    if (!auth || !tokenMatches(auth[1]!, expected)) {
      return refuse(401, auth ? 'wrong token' : 'missing bearer token', {
        headers: { 'www-authenticate': 'Bearer realm="sysprobe"' },
      });
    }
    return route(req, url, body, actions, refuse);
  };
}

async function route(
  req: IncomingMessage,
  url: URL,
  body: Buffer,
  actions: ControlActions,
  refuse: (status: number, why: string, extra?: Omit<Reply, 'status'>) => Reply,
): Promise<Reply> {
  const method = req.method ?? '';
  const { pathname } = url;
  const only = (allowed: string) => refuse(405, 'method not allowed', { headers: { allow: allowed } });

  const capture = /^\/captures\/(stack|cpu-profile|allocation-profile|heap-snapshot)$/.exec(pathname);
  if (capture) {
    if (method !== 'POST') return only('POST');
    const params = parseParams(url, body);
    if ('error' in params) return refuse(400, params.error);
    const kind = capture[1]!;
    if (kind === 'stack') return settle(actions.captureStack());
    if (kind === 'heap-snapshot') return settle(actions.captureHeapSnapshot());
    const durationMs = params.durationMs ?? 5000;
    if (!Number.isInteger(durationMs) || durationMs < DURATION.min || durationMs > DURATION.max) {
      return refuse(400, `durationMs must be an integer from ${DURATION.min} to ${DURATION.max}`);
    }
    return settle(
      kind === 'cpu-profile' ? actions.captureCpuProfile(durationMs) : actions.captureAllocationProfile(durationMs),
    );
  }
  if (pathname === '/captures') {
    if (method !== 'GET' && method !== 'HEAD') return only('GET, HEAD');
    return { status: 200, json: { captures: await listCaptures(actions.dumpDir) } };
  }
  const download = /^\/captures\/([^/]{1,255})$/.exec(pathname);
  if (download) {
    if (method !== 'GET' && method !== 'HEAD') return only('GET, HEAD');
    return downloadCapture(download[1]!, actions, refuse);
  }
  if (pathname === '/samples') {
    if (method !== 'GET' && method !== 'HEAD') return only('GET, HEAD');
    const raw = url.searchParams.get('last') ?? '60';
    if (!/^\d{1,4}$/.test(raw) || Number(raw) < 1 || Number(raw) > MAX_SAMPLES)
      return refuse(400, `last must be an integer from 1 to ${MAX_SAMPLES}`);
    return { status: 200, json: { samples: actions.samples(Number(raw)) } };
  }
  return refuse(404, 'not found');
}

/** A capture's answer; a refused or failed capture is a 409 (busy) or 503 (budget, inspector, disk) with the reason. */
async function settle(capture: Promise<unknown>): Promise<Reply> {
  try {
    return { status: 200, json: await capture };
  } catch (err) {
    const { code, message } = describeError(err);
    return { status: code === ErrorCode.CAPTURE_BUSY ? 409 : 503, json: { error: message, ...(code ? { code } : {}) } };
  }
}

/** durationMs from the query string or a JSON body `{ "durationMs": n }`; an empty body is fine. */
function parseParams(url: URL, body: Buffer): { durationMs?: number } | { error: string } {
  let durationMs: number | undefined;
  const query = url.searchParams.get('durationMs');
  if (query !== null) {
    if (!/^\d{1,9}$/.test(query)) return { error: 'durationMs must be an integer' };
    durationMs = Number(query);
  }
  if (body.length > 0) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(body.toString('utf8'));
    } catch {
      return { error: 'malformed JSON body' };
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
      return { error: 'the JSON body must be an object' };
    const value = (parsed as Record<string, unknown>).durationMs;
    if (value !== undefined) {
      if (typeof value !== 'number') return { error: 'durationMs must be an integer' };
      durationMs = value;
    }
  }
  return durationMs === undefined ? {} : { durationMs };
}

/**
 * The captures in dumpDir named the way the sink names them (regular files only, never a
 * `.partial` being written or left by a crash), newest first.
 * Incident folders (`<dumpDir>/incidents/<id>/`) hold hard links to these same files; their
 * manifests, samples and logs are not served here.
 */
export async function listCaptures(dir: string): Promise<StoredCaptureInfo[]> {
  let names: string[];
  try {
    names = await fs.promises.readdir(dir);
  } catch {
    return [];
  }
  const out: StoredCaptureInfo[] = [];
  for (const name of names.filter(isCaptureName).sort().reverse().slice(0, MAX_LISTED)) {
    const stat = await fs.promises.lstat(path.join(dir, name)).catch(() => undefined);
    if (stat?.isFile()) out.push({ name, bytes: stat.size, modifiedAt: stat.mtimeMs });
  }
  return out;
}

async function downloadCapture(
  rawName: string,
  actions: ControlActions,
  refuse: (status: number, why: string) => Reply,
): Promise<Reply> {
  let name: string;
  try {
    name = decodeURIComponent(rawName);
  } catch {
    return refuse(404, 'not found');
  }
  // The name must be one the listing returns; only then is it joined to the directory.
  const listed = (await listCaptures(actions.dumpDir)).find((c) => c.name === name);
  if (!listed) return refuse(404, 'not found');
  const handle = await OpenFile.open(
    path.join(actions.dumpDir, listed.name),
    // O_NONBLOCK: a FIFO swapped in after the listing is refused below, never waited on (a worker
    // terminated with an open waiting on the pool could not exit until it returned).
    fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK,
  ).catch(() => undefined);
  if (!handle) return refuse(404, 'not found');
  const stat = await handle.stat();
  if (!stat.isFile() || stat.size > actions.maxDownloadBytes) {
    await handle.close();
    return refuse(stat.isFile() ? 413 : 404, stat.isFile() ? 'capture larger than dumpMaxBytes' : 'not found');
  }
  return {
    status: 200,
    headers: {
      'content-type': 'application/octet-stream',
      'content-length': String(stat.size),
      'content-disposition': `attachment; filename="${listed.name}"`,
    },
    stream: (res) => {
      if (res.req.method === 'HEAD') {
        void handle.close();
        res.end();
        return;
      }
      // Exactly the size stat gave: a file that grows meanwhile is cut at it.
      const stream = handle.createReadStream({ start: 0, end: Math.max(0, stat.size - 1) });
      if (stat.size === 0) {
        stream.destroy();
        res.end();
        return;
      }
      stream.on('error', () => res.destroy());
      stream.pipe(res);
    },
  };
}
