/**
 * The `probes` option: synthetic transactions against the services this process
 * depends on. Checked once at start(); the worker runs what comes out.
 */
import * as net from 'node:net';
import {
  checkInteger,
  checkKnownKeys,
  checkNumber,
  checkPlainObject,
  describe,
  invalid,
} from '../internal/check-options.js';

/** When a probe's latency departs from its own recent baseline, a rule fires (`probe-latency:<name>`). */
export interface ProbeBaselineOptions {
  /** Fire when the recent latency exceeds this many times the baseline (1.1 to 1000). Default 3. */
  factor?: number;
  /** The recent window: its median latency (or its failure ratio) is compared with the baseline, ms (100 to 3600000). Default 60000. */
  forMs?: number;
  /** How far back, before the recent window, the baseline reaches, ms (1000 to 86400000). Default 600000. */
  windowMs?: number;
  /** Rest after a firing, ms (0 to 86400000). Default 300000. */
  cooldownMs?: number;
}

/** One synthetic transaction, run from the probe worker every `intervalMs`. */
export interface ProbeTargetOptions {
  /** Names the probe in metrics, status and its rule. Default: the target. Unique. */
  name?: string;
  /** `tcp://host:port` (a connect), `http://…` or `https://…` (a request, body read up to 64 KiB). */
  target: string;
  /** Time between the starts of two runs, ms (100 to 3600000); runs never overlap. Default 10000. */
  intervalMs?: number;
  /** A run that has not finished by then is aborted and counted as a timeout, ms (10 to 120000). Default 5000. */
  timeoutMs?: number;
  /** HTTP method. Default `GET`. */
  method?: string;
  /** The status that counts as success. Default: any 2xx or 3xx. */
  expectStatus?: number;
  /** The latency rule; `false` turns it off. Default `{ factor: 3, forMs: 60000, windowMs: 600000 }`. */
  baseline?: ProbeBaselineOptions | false;
  /** https: verify the server's certificate. Default true. */
  rejectUnauthorized?: boolean;
  /** https: PEM certificate(s) to trust besides the system's (e.g. a private CA). */
  ca?: string;
}

/** A checked probe, ready to be structured-cloned to the worker. */
export interface ResolvedProbe {
  name: string;
  target: string;
  kind: 'tcp' | 'http' | 'https';
  /** Host name or IP literal, without IPv6 brackets. */
  host: string;
  port: number;
  /** The path and query for http(s). */
  path: string;
  intervalMs: number;
  timeoutMs: number;
  method: string;
  expectStatus: number | undefined;
  rejectUnauthorized: boolean;
  ca: string | undefined;
  baseline: Required<ProbeBaselineOptions> | false;
}

const PROBE_KEYS = [
  'name',
  'target',
  'intervalMs',
  'timeoutMs',
  'method',
  'expectStatus',
  'baseline',
  'rejectUnauthorized',
  'ca',
] as const;
const BASELINE_KEYS = ['factor', 'forMs', 'windowMs', 'cooldownMs'] as const;
const MAX_PROBES = 100;
const SCHEMES: Record<string, ResolvedProbe['kind']> = { 'tcp:': 'tcp', 'http:': 'http', 'https:': 'https' };
const METHOD = /^[A-Z]{1,16}$/;

export function resolveProbes(input: unknown): ResolvedProbe[] {
  if (input === undefined) return [];
  if (!Array.isArray(input))
    throw invalid(`Option probes must be an array of { target, ... }; got ${describe(input)}.`);
  if (input.length > MAX_PROBES)
    throw invalid(`Option probes may hold at most ${MAX_PROBES} probes; got ${input.length}.`);
  const names = new Set<string>();
  return input.map((raw, i) => {
    const probe = resolveProbe(`probes[${i}]`, raw);
    if (names.has(probe.name))
      throw invalid(`Option probes[${i}].name "${probe.name}" is used twice; give each probe its own name.`);
    names.add(probe.name);
    return probe;
  });
}

function resolveProbe(where: string, raw: unknown): ResolvedProbe {
  const probe = checkPlainObject(where, raw);
  checkKnownKeys(where, probe, PROBE_KEYS);
  const {
    target,
    name = target,
    method = 'GET',
    expectStatus,
    baseline = {},
    rejectUnauthorized = true,
    ca,
  } = probe as Partial<ProbeTargetOptions>;
  if (typeof target !== 'string' || target.length === 0 || target.length > 2048) {
    throw invalid(
      `Option ${where}.target must be a URL string such as 'tcp://db:5432' or 'https://api/health'; got ${describe(target)}.`,
    );
  }
  let url: URL;
  try {
    url = new URL(target);
  } catch {
    throw invalid(
      `Option ${where}.target is not a valid URL: ${JSON.stringify(target.slice(0, 100))}; write it like 'tcp://host:port' or 'http://host/path'.`,
    );
  }
  const kind = SCHEMES[url.protocol];
  if (!kind)
    throw invalid(
      `Option ${where}.target has the unsupported scheme ${JSON.stringify(url.protocol)}; use tcp:, http: or https:.`,
    );
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  if (host.length === 0) throw invalid(`Option ${where}.target has no host: ${JSON.stringify(target)}.`);
  if (kind === 'tcp' && url.port === '')
    throw invalid(`Option ${where}.target needs a port for tcp: (tcp://host:port); got ${JSON.stringify(target)}.`);
  const port = url.port === '' ? (kind === 'https' ? 443 : 80) : Number(url.port);
  if (port === 0) throw invalid(`Option ${where}.target has port 0; name the port the service listens on.`);
  if (typeof name !== 'string' || name.length === 0 || name.length > 200)
    throw invalid(`Option ${where}.name must be a non-empty string of at most 200 characters; got ${describe(name)}.`);
  const intervalMs = checkInteger(`${where}.intervalMs`, probe.intervalMs, 100, 3600_000, 10_000);
  const timeoutMs = checkInteger(`${where}.timeoutMs`, probe.timeoutMs, 10, 120_000, 5000);
  if (typeof method !== 'string' || !METHOD.test(method))
    throw invalid(
      `Option ${where}.method must be an HTTP method in capitals such as 'GET' or 'HEAD'; got ${describe(method)}.`,
    );
  if (kind === 'tcp' && (probe.method !== undefined || expectStatus !== undefined))
    throw invalid(
      `Option ${where}: method and expectStatus apply to http(s) targets only; ${JSON.stringify(target)} is tcp.`,
    );
  if (expectStatus !== undefined) checkInteger(`${where}.expectStatus`, expectStatus, 100, 599, 200);
  if (typeof rejectUnauthorized !== 'boolean')
    throw invalid(`Option ${where}.rejectUnauthorized must be true or false; got ${describe(rejectUnauthorized)}.`);
  if (ca !== undefined && (typeof ca !== 'string' || !ca.includes('-----BEGIN')))
    throw invalid(`Option ${where}.ca must be PEM text (-----BEGIN CERTIFICATE-----…); got ${describe(ca)}.`);
  return {
    name,
    target,
    kind,
    host,
    port,
    path: `${url.pathname}${url.search}`,
    intervalMs,
    timeoutMs,
    method,
    expectStatus,
    rejectUnauthorized,
    ca,
    baseline: resolveBaseline(`${where}.baseline`, baseline),
  };
}

function resolveBaseline(where: string, raw: unknown): Required<ProbeBaselineOptions> | false {
  if (raw === false) return false;
  const baseline = checkPlainObject(where, raw);
  checkKnownKeys(where, baseline, BASELINE_KEYS);
  return Object.freeze({
    factor: checkNumber(`${where}.factor`, baseline.factor ?? 3, 1.1, 1000),
    forMs: checkInteger(`${where}.forMs`, baseline.forMs, 100, 3600_000, 60_000),
    windowMs: checkInteger(`${where}.windowMs`, baseline.windowMs, 1000, 24 * 3600_000, 600_000),
    cooldownMs: checkInteger(`${where}.cooldownMs`, baseline.cooldownMs, 0, 24 * 3600_000, 300_000),
  });
}

/** True for an IP literal: no DNS lookup, no TLS servername. */
export function isIpLiteral(host: string): boolean {
  return net.isIP(host) !== 0;
}
