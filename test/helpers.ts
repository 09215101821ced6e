import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import {
  AggregationTemporality,
  InMemoryMetricExporter,
  MeterProvider,
  PeriodicExportingMetricReader,
  type DataPoint,
  type MetricData,
} from '@opentelemetry/sdk-metrics';
import type { Logger } from '../src/index.js';

/** A real pino logger whose JSON lines are kept in memory for assertions. */
export function memoryLogger(): { logger: Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split('\n'))
        if (line) lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  return { logger: pino({ level: 'debug' }, stream), lines };
}

/** A real MeterProvider with an in-memory exporter; `collect()` forces one export and returns the metrics. */
export function memoryMetrics(): {
  meterProvider: MeterProvider;
  collect(): Promise<MetricData[]>;
  shutdown(): Promise<void>;
} {
  const exporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
  const reader = new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 3_600_000 });
  const meterProvider = new MeterProvider({ readers: [reader] });
  return {
    meterProvider,
    async collect() {
      exporter.reset();
      await reader.forceFlush();
      return exporter.getMetrics().flatMap((rm) => rm.scopeMetrics.flatMap((sm) => sm.metrics));
    },
    shutdown: () => meterProvider.shutdown(),
  };
}

export function findMetric(metrics: MetricData[], name: string): MetricData {
  const metric = metrics.find((m) => m.descriptor.name === name);
  if (!metric) throw new Error(`metric ${name} not exported; got: ${metrics.map((m) => m.descriptor.name).join(', ')}`);
  return metric;
}

/** The numeric value of the first point whose attributes include `match`. */
export function pointValue(metric: MetricData, match: Record<string, unknown> = {}): number {
  const point = (metric.dataPoints as Array<DataPoint<unknown>>).find((p) =>
    Object.entries(match).every(([k, v]) => p.attributes[k] === v),
  );
  if (!point) throw new Error(`no point of ${metric.descriptor.name} with ${JSON.stringify(match)}`);
  if (typeof point.value !== 'number') throw new Error(`${metric.descriptor.name} is not a number metric`);
  return point.value;
}

/** Blocks the main thread for exactly `ms` without burning a CPU: deterministic lag. */
/**
 * Resolves once the event loop has turned freely (each 20 ms timer within 50 ms of due) for `ms`. On a loaded host
 * the loop can be held up before a test's own block, and a heartbeat stall runs from one beat to the next: waiting
 * here puts a beat between the two, so the stall a test checks is its own.
 */
export async function loopTurnsFreely(ms = 500): Promise<void> {
  for (let freeSince = Date.now(); Date.now() - freeSince < ms;) {
    const before = Date.now();
    await new Promise((r) => setTimeout(r, 20));
    if (Date.now() - before > 70) freeSince = Date.now();
  }
}

export function blockFor(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/**
 * Keeps the main thread busy until the process has used `ms` more CPU time: counted in CPU,
 * not wall time, so a loaded machine that gives us less of a core cannot shrink it.
 */
export function spinCpu(ms: number): number {
  const start = process.cpuUsage();
  let x = 0;
  for (;;) {
    // Real work between checks (1-3 ms once optimized): process.cpuUsage() is a syscall, a loop of syscalls is system
    // time, and on a contended CPU a profile charges the time the thread waited to wherever it resumes, often that
    // syscall (checks every 100,000 steps gave cpuUsage 13-53% of a profile of this function beside two CPU burners).
    for (let i = 0; i < 1_000_000; i++) x += Math.sqrt(i);
    const used = process.cpuUsage(start);
    if ((used.user + used.system) / 1000 >= ms) return x;
  }
}

/** Polls `predicate` until it returns a value, or fails after `timeoutMs` with `what` in the message. */
export async function waitFor<T>(
  what: string,
  predicate: () => T | undefined | Promise<T | undefined>,
  timeoutMs = 5000,
  everyMs = 50,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await predicate();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const madeDirs: string[] = [];

/** A fresh directory under the OS temp dir, removed with everything in it once the whole run ends. */
export function tempDir(prefix: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  madeDirs.push(dir);
  return dir;
}

// A root-level hook when mocha loads this module (child scripts load it too, without mocha):
// the directories hold heap snapshots and profiles, which are large.
if (typeof after === 'function') {
  after(() => {
    for (const dir of madeDirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
  });
}
