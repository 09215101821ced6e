// Child processes for the example and register tests: spawned from the repo root (so
// `sysprobe` resolves to this package by its own name), their output kept for assertions,
// and killed for sure in after hooks.
import { spawn, type ChildProcess } from 'node:child_process';
import assert from 'node:assert/strict';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';

export const ROOT = path.resolve(__dirname, '..', '..'); // dist/test -> repo root

export interface Child {
  readonly proc: ChildProcess;
  stdout(): string;
  stderr(): string;
  exited(): boolean;
}

/** Starts `node ...args` in the repo root with `env` added to this process' environment. */
export function spawnNode(args: string[], env: Record<string, string> = {}): Child {
  const proc = spawn(process.execPath, args, {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  proc.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
    out = (out + chunk).slice(-200_000);
  });
  proc.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    err = (err + chunk).slice(-20_000);
  });
  return {
    proc,
    stdout: () => out,
    stderr: () => err,
    exited: () => proc.exitCode !== null || proc.signalCode !== null,
  };
}

/** Everything a child said, for failure messages. */
export const output = (child: Child | undefined): string =>
  child ? `--- stdout ---\n${child.stdout().slice(-3000)}\n--- stderr ---\n${child.stderr()}` : '(no child)';

/** Polls until `fn` returns a value; fails naming `what` after `timeoutMs`, or at once if the child exited. */
export async function until<T>(
  child: Child,
  what: string,
  fn: () => T | undefined | Promise<T | undefined>,
  timeoutMs = 10_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await fn();
      if (value !== undefined) return value;
    } catch (err) {
      lastError = err;
    }
    if (child.exited()) throw new Error(`the child exited while waiting for ${what}\n${output(child)}`);
    if (Date.now() > deadline)
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${what}${lastError ? ` (last error: ${String(lastError)})` : ''}\n${output(child)}`,
      );
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Waits for a stdout line matching `re` and returns the match. */
export function line(child: Child, re: RegExp, timeoutMs = 10_000): Promise<RegExpMatchArray> {
  return until(child, `a line matching ${re}`, () => child.stdout().match(re) ?? undefined, timeoutMs);
}

/** Stops a child with SIGTERM, then SIGKILL after 3 s; resolves once it has exited. */
export async function kill(child: Child | undefined): Promise<void> {
  if (!child || child.exited()) return;
  const exited = new Promise<void>((resolve) => child.proc.once('exit', () => resolve()));
  child.proc.kill('SIGTERM');
  const grace = setTimeout(() => child.proc.kill('SIGKILL'), 3000);
  await exited;
  clearTimeout(grace);
}

/** fetch with a bound, so a hung server fails the test instead of hanging it. */
export async function getText(url: string): Promise<string> {
  const res = await fetch(url, { signal: AbortSignal.timeout(3000) });
  if (!res.ok) throw new Error(`GET ${url}: HTTP ${res.status}`);
  return res.text();
}

/** One sample of the Prometheus text format. */
export interface PromSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses the Prometheus text exposition format (enough of it for our metrics: no escapes in label values). */
export function parsePrometheus(text: string): PromSample[] {
  const samples: PromSample[] = [];
  for (const raw of text.split('\n')) {
    if (raw === '' || raw.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(raw);
    if (!m) throw new Error(`not a Prometheus sample line: ${raw}`);
    const labels: Record<string, string> = {};
    for (const [, key, value] of (m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)) labels[key!] = value!;
    samples.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return samples;
}

/** The values of the samples named `name` (optionally matching `labels`). */
export function values(samples: PromSample[], name: string, labels: Record<string, string> = {}): number[] {
  return samples
    .filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
    .map((s) => s.value);
}

/** A real OTLP/HTTP receiver on loopback: keeps the JSON bodies posted to /v1/metrics. */
export async function otlpReceiver(): Promise<{
  endpoint: string;
  payloads: OtlpPayload[];
  contentTypes: string[];
  close(): Promise<void>;
}> {
  const payloads: OtlpPayload[] = [];
  const contentTypes: string[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (req.method !== 'POST' || req.url !== '/v1/metrics') return void res.writeHead(404).end();
      contentTypes.push(String(req.headers['content-type']));
      try {
        payloads.push(JSON.parse(Buffer.concat(chunks).toString('utf8')) as OtlpPayload);
      } catch {
        return void res.writeHead(400).end();
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  return {
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    payloads,
    contentTypes,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** The parts of an OTLP JSON ExportMetricsServiceRequest the tests read. */
export interface OtlpPayload {
  resourceMetrics: Array<{
    resource?: { attributes?: Array<{ key: string; value: { stringValue?: string } }> };
    scopeMetrics: Array<{
      metrics: Array<{
        name: string;
        unit?: string;
        sum?: { dataPoints: OtlpPoint[] };
        gauge?: { dataPoints: OtlpPoint[] };
        histogram?: { dataPoints: unknown[] };
      }>;
    }>;
  }>;
}
export interface OtlpPoint {
  asInt?: number | string;
  asDouble?: number;
  attributes?: Array<{ key: string; value: Record<string, unknown> }>;
}

/** Metric name → its number data points, over all payloads received so far (the latest last). */
export function otlpMetrics(payloads: OtlpPayload[]): Map<string, number[]> {
  const byName = new Map<string, number[]>();
  for (const payload of payloads) {
    for (const rm of payload.resourceMetrics) {
      for (const sm of rm.scopeMetrics) {
        for (const metric of sm.metrics) {
          const points = metric.sum?.dataPoints ?? metric.gauge?.dataPoints ?? [];
          const list = byName.get(metric.name) ?? [];
          for (const p of points) list.push(Number(p.asDouble ?? p.asInt));
          byName.set(metric.name, list);
        }
      }
    }
  }
  return byName;
}

/** The service.name of the payloads' resources. */
export function otlpServiceNames(payloads: OtlpPayload[]): string[] {
  return payloads.flatMap((p) =>
    p.resourceMetrics.map(
      (rm) => rm.resource?.attributes?.find((a) => a.key === 'service.name')?.value.stringValue ?? '',
    ),
  );
}

/** The sysprobe metrics every example exports, with sane values; `service` is the resource's service.name. */
export function assertSysprobeMetrics(samples: PromSample[], service: string, context: string): void {
  const one = (name: string, labels: Record<string, string> = {}) => {
    const found = values(samples, name, labels);
    assert.ok(found.length > 0, `${name} missing\n${context}`);
    return found;
  };
  const utilization = one('nodejs_eventloop_utilization')[0]!;
  assert.ok(utilization >= 0 && utilization <= 1, `nodejs_eventloop_utilization = ${utilization}`);
  const heapUsed = one('sysprobe_memory_heap_used')[0]!;
  const heapLimit = one('sysprobe_memory_heap_limit')[0]!;
  const rss = one('process_memory_usage')[0]!;
  assert.ok(heapUsed > 1e6 && heapUsed < heapLimit, `heap used ${heapUsed} B, limit ${heapLimit} B`);
  assert.ok(rss > heapUsed, `RSS ${rss} B should exceed the heap used ${heapUsed} B`);
  const cpu = one('process_cpu_time_total').reduce((a, b) => a + b, 0);
  assert.ok(cpu > 0 && cpu < 600, `process_cpu_time_total = ${cpu} s`);
  assert.ok(one('v8js_memory_heap_used').length >= 3, 'v8js_memory_heap_used has one series per heap space');
  assert.deepEqual(one('sysprobe_worker_restarts_total'), [0]);
  one('target_info', { service_name: service });
}
