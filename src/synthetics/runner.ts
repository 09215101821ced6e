/**
 * Synthetic transactions, run in the probe worker: a TCP connect or an HTTP(S)
 * request per probe every `intervalMs`, timed by phase. A run never overlaps the
 * previous run of its probe (the next is armed when one finishes); a hard
 * timeout destroys the socket; stop() aborts the runs in flight. Nothing here
 * keeps the process alive: timers are unref'd and the worker itself is.
 */
import * as dns from 'node:dns';
import * as http from 'node:http';
import * as https from 'node:https';
import * as net from 'node:net';
import { performance } from 'node:perf_hooks';
import { isIpLiteral, type ResolvedProbe } from './options.js';

/** Bytes of a response body read before a run stops reading (and counts as done). */
export const MAX_BODY_BYTES = 64 * 1024;

/** How long each phase of a run took, ms. A phase that did not happen is absent. */
export interface ProbePhases {
  /** Host name to address (absent for IP literals). */
  dns?: number;
  /** The TCP handshake. */
  connect?: number;
  /** The TLS handshake (https). */
  tls?: number;
  /** From the connection being ready (request sent) to the response's first byte: the server's time (http(s)). */
  firstByte?: number;
  /** The whole run, start to last byte read (or to the timeout). */
  total: number;
}

/** One run of a probe. */
export interface ProbeResult {
  name: string;
  target: string;
  /** When the run finished, ms since the epoch. */
  time: number;
  outcome: 'success' | 'failure' | 'timeout';
  phases: ProbePhases;
  /** The address and port connected to (or tried, when the connect failed); absent when DNS failed. */
  remoteAddress?: string;
  remotePort?: number;
  /** The host name the target named (when it is not an IP literal). */
  hostname?: string;
  /** The HTTP status, when a response came. */
  status?: number;
  /** Why a run failed or timed out. */
  error?: string;
}

/** Resolves `host` unless it is an IP literal; the lookup cannot be cancelled, the run's timeout covers it. */
function lookup(host: string): Promise<{ address: string; family: number }> {
  if (isIpLiteral(host)) return Promise.resolve({ address: host, family: net.isIP(host) });
  return dns.promises.lookup(host);
}

/** Runs a probe once. Never rejects: every ending is a result. */
export function runProbe(
  probe: ResolvedProbe,
  signal: AbortSignal,
  agents: { http: http.Agent; https: https.Agent },
): Promise<ProbeResult> {
  const t0 = performance.now();
  const phases: ProbePhases = { total: 0 };
  let mark = t0;
  /** Time since the last mark, and move the mark. */
  const lap = () => {
    const now = performance.now();
    const ms = now - mark;
    mark = now;
    return ms;
  };
  const hostname = isIpLiteral(probe.host) ? undefined : probe.host;
  let socket: net.Socket | undefined;
  let request: http.ClientRequest | undefined;
  let remote: { remoteAddress?: string; remotePort?: number } = {};
  let status: number | undefined;

  return new Promise<ProbeResult>((resolve) => {
    let done = false;
    const finish = (outcome: ProbeResult['outcome'], error?: string) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
      phases.total = performance.now() - t0;
      request?.destroy();
      socket?.destroy();
      resolve({
        name: probe.name,
        target: probe.target,
        time: Date.now(),
        outcome,
        phases,
        ...remote,
        ...(hostname ? { hostname } : {}),
        ...(status !== undefined ? { status } : {}),
        ...(error ? { error } : {}),
      });
    };
    const onAbort = () => finish('failure', 'stopped');
    const timer = setTimeout(() => finish('timeout', `no answer within ${probe.timeoutMs} ms`), probe.timeoutMs);
    timer.unref();
    if (signal.aborted) return onAbort();
    signal.addEventListener('abort', onAbort, { once: true });

    const connected = (s: net.Socket) => {
      phases.connect = lap();
      remote = { remoteAddress: s.remoteAddress, remotePort: s.remotePort };
    };

    const begin = ({ address, family }: { address: string; family: number }) => {
      if (done) return;
      if (hostname) phases.dns = lap();
      // Known before the connect, so a target that refuses or hangs still has an address in the result.
      remote = { remoteAddress: address, remotePort: probe.port };
      if (probe.kind === 'tcp') {
        socket = net.connect({ host: address, port: probe.port, family });
        socket.once('connect', () => {
          connected(socket!);
          finish('success');
        });
        socket.once('error', (err) => finish('failure', err.message));
        return;
      }
      const secure = probe.kind === 'https';
      const options: https.RequestOptions = {
        host: address,
        family,
        port: probe.port,
        path: probe.path,
        method: probe.method,
        headers: {
          host: probe.port === (secure ? 443 : 80) ? probe.host : `${probe.host}:${probe.port}`,
          'user-agent': 'sysprobe-probe',
        },
        agent: secure ? agents.https : agents.http,
        ...(secure
          ? {
              rejectUnauthorized: probe.rejectUnauthorized,
              ...(probe.ca ? { ca: probe.ca } : {}),
              ...(hostname ? { servername: hostname } : {}),
            }
          : {}),
      };
      request = (secure ? https : http).request(options);
      request.once('socket', (s: net.Socket) => {
        socket = s;
        s.once('connect', () => connected(s));
        if (secure)
          s.once('secureConnect', () => {
            phases.tls = lap();
          });
      });
      request.once('error', (err) => finish('failure', err.message));
      request.once('response', (response) => {
        phases.firstByte = lap();
        status = response.statusCode;
        const ok =
          probe.expectStatus === undefined
            ? status !== undefined && status >= 200 && status < 400
            : status === probe.expectStatus;
        const end = () => finish(ok ? 'success' : 'failure', ok ? undefined : `unexpected status ${status}`);
        let bytes = 0;
        response.on('data', (chunk: Buffer) => {
          bytes += chunk.length;
          if (bytes >= MAX_BODY_BYTES) end(); // enough: the body's size is bounded, the rest is not read
        });
        response.once('end', end);
        response.once('error', (err) => finish('failure', err.message));
      });
      request.end();
    };
    lookup(probe.host).then(
      (found) => {
        // A synchronous throw (an option Node refuses) must end the run, not leave it to the timeout.
        try {
          begin(found);
        } catch (err) {
          finish('failure', err instanceof Error ? err.message : String(err));
        }
      },
      (err: Error) => finish('failure', `dns: ${err.message}`),
    );
  });
}

interface Scheduled {
  probe: ResolvedProbe;
  timer: NodeJS.Timeout | undefined;
  inFlight: AbortController | undefined;
}

/** Runs each probe on its interval and hands every result to `onResult`. */
export class ProbeRunner {
  readonly #scheduled: Scheduled[];
  readonly #onResult: (result: ProbeResult) => void;
  /** No keep-alive: every run pays (and times) a fresh connection, as a new client would. */
  readonly #agents = { http: new http.Agent({ keepAlive: false }), https: new https.Agent({ keepAlive: false }) };
  #stopped = false;

  constructor(probes: readonly ResolvedProbe[], onResult: (result: ProbeResult) => void) {
    this.#onResult = onResult;
    this.#scheduled = probes.map((probe) => ({ probe, timer: undefined, inFlight: undefined }));
  }

  start(): void {
    // Spread the first runs over a second, so many probes do not all connect at once.
    this.#scheduled.forEach((s, i) => this.#arm(s, Math.min(s.probe.intervalMs, (i * 1000) / this.#scheduled.length)));
  }

  /** Cancels the timers and aborts the runs in flight (their sockets are destroyed). */
  stop(): void {
    this.#stopped = true;
    for (const s of this.#scheduled) {
      clearTimeout(s.timer);
      s.inFlight?.abort();
    }
    this.#agents.http.destroy();
    this.#agents.https.destroy();
  }

  #arm(s: Scheduled, delayMs: number): void {
    if (this.#stopped) return;
    s.timer = setTimeout(() => void this.#run(s), delayMs);
    s.timer.unref();
  }

  async #run(s: Scheduled): Promise<void> {
    const startedAt = performance.now();
    s.inFlight = new AbortController();
    const result = await runProbe(s.probe, s.inFlight.signal, this.#agents);
    s.inFlight = undefined;
    if (this.#stopped) return;
    this.#onResult(result);
    this.#arm(s, Math.max(0, s.probe.intervalMs - (performance.now() - startedAt)));
  }
}
