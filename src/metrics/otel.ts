import * as os from 'node:os';
import * as v8 from 'node:v8';
import { createHistogram, performance, type EventLoopUtilization, type RecordableHistogram } from 'node:perf_hooks';
import type { Attributes, BatchObservableResult, Counter, Histogram, Meter, Observable } from '@opentelemetry/api';
import type { ResolvedOptions } from '../probe/options.js';
import type { Sample } from '../samples/sample.js';
import type { JobEvent } from '../jobs/guard.js';
import type { CacheStats, WatchedCacheStats } from '../caches/caches.js';
import type { GcTotal } from '../memory/gc.js';
import { socketMetrics } from '../sockets/metrics.js';
import type { ProbeResult } from '../synthetics/runner.js';
import { ProbeMetrics } from '../synthetics/metrics.js';
import { cgroupMetrics } from '../containers/cgroup-metrics.js';
import { cpuShareOfAvailable } from '../containers/cgroup-values.js';

/** Bucket bounds (s) for the event-loop delay histogram: fine below the heartbeat, coarse for stalls. */
const DELAY_BUCKETS_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.5, 0.75, 1, 2.5, 5, 10];
/** The semantic conventions' buckets for v8js.gc.duration. */
const GC_BUCKETS_S = [0.01, 0.1, 1, 10];
const NS_PER_S = 1e9;

/** What the exporter needs from the probe, read at collection time only. */
export interface MetricsSource {
  /** Samples recorded since `sinceMs` ago, oldest first; cached values when the worker cannot answer. */
  samplesSince(sinceMs: number): Promise<Sample[]>;
  /** Hands over event-loop delays observed elsewhere (recordDelay), just before they are read. */
  drainDelays(): void;
  gcTotals(): Record<string, GcTotal> | undefined;
  workerRestarts(): number;
  caches(): CacheStats[];
  watchedCaches(): WatchedCacheStats[];
  /** Called when reading an instrument failed; the collection goes on without it. */
  failed(component: string, err: unknown): void;
}

/**
 * sysprobe's OpenTelemetry instruments. Observable instruments are read in one
 * batch callback at collection time, so nothing runs between collections;
 * the two histograms are recorded as events happen (a heartbeat, a GC).
 */
export class OtelExporter {
  readonly #meter: Meter;
  readonly #source: MetricsSource;
  readonly #observables: Observable[] = [];
  readonly #callback: (result: BatchObservableResult) => Promise<void>;
  readonly #delayHistogram: Histogram;
  /** The same delays (ns), for the percentile gauges; reset each collection. */
  readonly #delayStats: RecordableHistogram = createHistogram();
  readonly #gcDuration: Histogram;
  readonly #errors: Counter;
  readonly #stalls: Counter;
  readonly #stallDuration: Histogram;
  readonly #jobRuns: Counter;
  readonly #ruleFirings: Counter;
  readonly #jobDuration: Histogram;
  readonly #probes: ProbeMetrics;
  #lastCollectAt = Date.now();
  #lastElu: EventLoopUtilization = performance.eventLoopUtilization();
  #lastSample: Sample | undefined;

  constructor(meter: Meter, source: MetricsSource, options: ResolvedOptions) {
    this.#meter = meter;
    this.#source = source;
    this.#delayHistogram = meter.createHistogram('sysprobe.eventloop.delay', {
      description:
        'Event-loop delay observations: the lag sampled once per stall threshold plus each stall whole (heartbeat fallback: gaps between beats); aggregatable across instances.',
      unit: 's',
      advice: { explicitBucketBoundaries: DELAY_BUCKETS_S },
    });
    this.#gcDuration = meter.createHistogram('v8js.gc.duration', {
      description: 'Garbage collection duration.',
      unit: 's',
      advice: { explicitBucketBoundaries: GC_BUCKETS_S },
    });
    this.#stalls = meter.createCounter('sysprobe.eventloop.stalls', {
      description: 'Stalls of the event loop (blocked longer than stallThresholdMs), by how their stack was taken.',
      unit: '{stall}',
    });
    this.#stallDuration = meter.createHistogram('sysprobe.eventloop.stall.duration', {
      description: 'How long each stall of the event loop lasted.',
      unit: 's',
      advice: { explicitBucketBoundaries: DELAY_BUCKETS_S },
    });
    this.#ruleFirings = meter.createCounter('sysprobe.rule.firings', {
      description: 'Rules that fired, by rule.',
      unit: '{firing}',
    });
    this.#jobRuns = meter.createCounter('sysprobe.job.runs', {
      description: 'Guarded job runs, by job, outcome (ok, failed, timeout, refused) and kind (async, worker).',
      unit: '{run}',
    });
    this.#jobDuration = meter.createHistogram('sysprobe.job.duration', {
      description: 'How long each guarded job run took (refused runs excluded).',
      unit: 's',
    });
    this.#probes = new ProbeMetrics(meter);
    this.#errors = meter.createCounter('sysprobe.errors', {
      description: 'Failures inside sysprobe that it survived, by component.',
      unit: '{error}',
    });

    const gauge = (name: string, unit: string, description: string) =>
      this.#track(meter.createObservableGauge(name, { unit, description }));
    const counter = (name: string, unit: string, description: string) =>
      this.#track(meter.createObservableCounter(name, { unit, description }));
    const upDown = (name: string, unit: string, description: string) =>
      this.#track(meter.createObservableUpDownCounter(name, { unit, description }));

    const { samplers } = options;
    const observe: Array<(result: BatchObservableResult, recent: Sample[], latest: Sample | undefined) => void> = [];

    if (samplers.eventLoop) {
      const delay = Object.fromEntries(
        ['min', 'max', 'mean', 'stddev', 'p50', 'p90', 'p99'].map((stat) => [
          stat,
          gauge(
            `nodejs.eventloop.delay.${stat}`,
            's',
            `Event loop delay ${stat} since the last collection (see sysprobe.eventloop.delay for what is observed).`,
          ),
        ]),
      );
      const utilization = gauge(
        'nodejs.eventloop.utilization',
        '1',
        'Event loop utilization since the last collection.',
      );
      const time = counter('nodejs.eventloop.time', 's', 'Cumulative time the event loop spent in each state.');
      const lag = gauge(
        'sysprobe.eventloop.lag',
        's',
        'Longest time without a heartbeat since the last collection, as the worker saw it (it sees a stall while it lasts).',
      );
      observe.push((result, recent) => {
        const h = this.#delayStats;
        if (h.count > 0) {
          const values: Record<string, number> = {
            min: h.min,
            max: h.max,
            mean: h.mean,
            stddev: h.stddev,
            p50: h.percentile(50),
            p90: h.percentile(90),
            p99: h.percentile(99),
          };
          for (const [stat, instrument] of Object.entries(delay))
            result.observe(instrument, (values[stat] ?? 0) / NS_PER_S);
          h.reset();
        }
        const elu = performance.eventLoopUtilization();
        result.observe(utilization, performance.eventLoopUtilization(elu, this.#lastElu).utilization);
        this.#lastElu = elu;
        result.observe(time, elu.active / 1000, { 'nodejs.eventloop.state': 'active' });
        result.observe(time, elu.idle / 1000, { 'nodejs.eventloop.state': 'idle' });
        const lagMaxMs = recent.reduce((max, s) => Math.max(max, s.eventLoop?.lagMaxMs ?? 0), 0);
        if (recent.length > 0) result.observe(lag, lagMaxMs / 1000);
      });
    }

    if (samplers.cpu) {
      const time = counter('process.cpu.time', 's', 'Total CPU seconds of the process, by mode.');
      const utilization = gauge(
        'process.cpu.utilization',
        '1',
        "CPU time over the last sample interval, divided by elapsed time and the CPUs available to the process (the cgroup's quota when it has one).",
      );
      const load = gauge('sysprobe.system.load_average', '{thread}', 'System load average, by window.');
      const cpus = os.availableParallelism();
      let quotaCores: number | undefined;
      observe.push((result, recent, latest) => {
        const cpu = latest?.cpu;
        if (!cpu) return;
        // The quota comes with the samples that carry a cgroup reading; it rarely changes.
        const cgroup = recent.findLast((s) => s.cgroup?.cpu)?.cgroup?.cpu;
        if (cgroup) quotaCores = cgroup.quotaCores;
        result.observe(time, cpu.userMs / 1000, { 'cpu.mode': 'user' });
        result.observe(time, cpu.systemMs / 1000, { 'cpu.mode': 'system' });
        result.observe(utilization, cpuShareOfAvailable(cpu.utilization, quotaCores, cpus));
        cpu.loadAverage?.forEach((value, i) =>
          result.observe(load, value, { 'sysprobe.load.window': ['1m', '5m', '15m'][i] }),
        );
      });
    }

    if (samplers.threads) {
      const time = counter(
        'sysprobe.thread.cpu.time',
        's',
        'CPU seconds per thread (Linux, /proc/self/task), by mode.',
      );
      const utilization = gauge(
        'sysprobe.thread.cpu.utilization',
        '1',
        'Share of one CPU each thread used over the last sample interval.',
      );
      observe.push((result, recent, latest) => {
        for (const thread of latest?.threads ?? []) {
          const attributes: Attributes = {
            'thread.id': thread.tid,
            'thread.name': thread.name,
            'sysprobe.thread.role': thread.role,
          };
          result.observe(time, thread.userMs / 1000, { ...attributes, 'cpu.mode': 'user' });
          result.observe(time, thread.systemMs / 1000, { ...attributes, 'cpu.mode': 'system' });
          result.observe(utilization, thread.utilization, attributes);
        }
      });
    }

    if (samplers.memory) {
      const used = upDown('v8js.memory.heap.used', 'By', 'Heap memory used, by V8 heap space.');
      const limit = upDown('v8js.memory.heap.limit', 'By', 'Heap memory reserved, by V8 heap space.');
      const available = upDown(
        'v8js.memory.heap.space.available_size',
        'By',
        'Heap space available, by V8 heap space.',
      );
      const physical = upDown(
        'v8js.memory.heap.space.physical_size',
        'By',
        'Committed physical memory of each V8 heap space.',
      );
      const heapUsed = upDown('sysprobe.memory.heap.used', 'By', 'V8 heap used, all spaces.');
      const heapTotal = upDown('sysprobe.memory.heap.total', 'By', 'V8 heap allocated, all spaces.');
      const heapLimit = upDown('sysprobe.memory.heap.limit', 'By', 'The V8 heap size limit (the OOM line).');
      const rss = upDown('process.memory.usage', 'By', 'Resident set size of the process.');
      const external = upDown(
        'sysprobe.memory.external',
        'By',
        'Memory of C++ objects bound to JS objects (includes array buffers).',
      );
      const arrayBuffers = upDown(
        'sysprobe.memory.array_buffers',
        'By',
        'Memory of ArrayBuffers and SharedArrayBuffers.',
      );
      const afterGc = upDown(
        'sysprobe.memory.heap.after_gc',
        'By',
        'Heap used right after the last full GC: the live heap, without garbage (needs the GC addon).',
      );
      // The same fit over three figures: the heap, RSS (native memory too) and external memory (ArrayBuffers, Buffers).
      const fits = (['heap', 'rss', 'external'] as const).map((kind) => ({
        kind,
        rate: gauge(
          `sysprobe.memory.${kind}.growth_rate`,
          'By/min',
          `Sustained growth of the ${kind === 'heap' ? 'heap' : kind === 'rss' ? 'RSS' : 'external memory'} floor, fitted over the growth window.`,
        ),
        fit: gauge(
          `sysprobe.memory.${kind}.growth_fit`,
          '1',
          'How well a line explains that floor over the window (r², 0..1); trust the growth rate when it is high.',
        ),
      }));
      observe.push((result, recent, latest) => {
        const memory = latest?.memory;
        if (!memory) return;
        if (memory.heapAfterGc !== undefined) result.observe(afterGc, memory.heapAfterGc);
        for (const { kind, rate, fit } of fits) {
          const perMin = memory[`${kind}GrowthPerMin`];
          if (perMin === undefined) continue;
          result.observe(rate, perMin);
          result.observe(fit, memory[`${kind}GrowthR2`] ?? 0);
        }
      });
      // Read here, at collection time, on the main thread: fresher than the last sample, and the
      // per-space and ArrayBuffer figures cost the main thread nothing between collections.
      observe.push((result) => {
        for (const space of v8.getHeapSpaceStatistics()) {
          const attributes = { 'v8js.heap.space.name': space.space_name };
          result.observe(used, space.space_used_size, attributes);
          result.observe(limit, space.space_size, attributes);
          result.observe(available, space.space_available_size, attributes);
          result.observe(physical, space.physical_space_size, attributes);
        }
        const heap = v8.getHeapStatistics();
        const usage = process.memoryUsage();
        result.observe(heapUsed, heap.used_heap_size);
        result.observe(heapTotal, heap.total_heap_size);
        result.observe(heapLimit, heap.heap_size_limit);
        result.observe(rss, usage.rss);
        result.observe(external, usage.external);
        result.observe(arrayBuffers, usage.arrayBuffers);
      });
    }

    if (samplers.gc) {
      const count = counter('sysprobe.gc.count', '{gc}', 'Garbage collections, by kind.');
      const reclaimed = counter(
        'sysprobe.gc.reclaimed',
        'By',
        'Heap bytes the GCs freed (used before minus used after each GC), by kind; needs the GC addon.',
      );
      const rate = gauge(
        'sysprobe.gc.rate',
        '{gc}/min',
        'Garbage collections per minute over the last sample interval, all kinds.',
      );
      const pauseShare = gauge(
        'sysprobe.gc.pause_share',
        '1',
        'Share of the last sample interval spent in GC pauses, 0..1.',
      );
      observe.push((result, recent, latest) => {
        for (const [kind, total] of Object.entries(this.#source.gcTotals() ?? {})) {
          result.observe(count, total.count, { 'v8js.gc.type': kind });
          if (total.reclaimedBytes !== undefined)
            result.observe(reclaimed, total.reclaimedBytes, { 'v8js.gc.type': kind });
        }
        // A sample the worker took during a stall has no main-thread reading, so no rates: the newest that has them.
        const rates = latest?.gcRates ?? recent.findLast((s) => s.gcRates)?.gcRates;
        if (rates) {
          result.observe(rate, rates.perMin);
          result.observe(pauseShare, rates.pauseShare);
        }
      });
    }

    if (samplers.handles) {
      const resources = gauge(
        'sysprobe.active_resources',
        '{resource}',
        'Active handles and requests keeping the main event loop alive, by type.',
      );
      observe.push((result, recent, latest) => {
        for (const [type, n] of Object.entries(latest?.handles ?? {}))
          result.observe(resources, n, { 'sysprobe.resource.type': type });
      });
    }

    if (options.sockets) observe.push(socketMetrics(meter, (instrument) => this.#track(instrument)));
    if (process.platform === 'linux' && (samplers.cpu || samplers.memory))
      observe.push(cgroupMetrics(meter, (instrument) => this.#track(instrument)));

    const cacheSize = upDown(
      'sysprobe.cache.size',
      '{entry}',
      'Entries in each cache (probe.cache, and watched caches with sysprobe.cache.kind = watched).',
    );
    const cacheBytes = upDown(
      'sysprobe.cache.bytes',
      'By',
      'Estimated bytes held by each probe.cache with a byte limit.',
    );
    const cacheOps = counter(
      'sysprobe.cache.operations',
      '{operation}',
      'Cache lookups and what happened to entries, by sysprobe.cache.result: hit, miss, eviction, load_failure, rejected.',
    );
    const cacheEvicted = counter(
      'sysprobe.cache.watched.evicted',
      '{entry}',
      'Entries a watched cache lost to the fallback eviction above its hard limit.',
    );
    observe.push((result) => {
      for (const c of this.#source.caches()) {
        const name = { 'sysprobe.cache': c.name };
        result.observe(cacheSize, c.size, { ...name, 'sysprobe.cache.kind': 'bounded' });
        result.observe(cacheBytes, c.bytes, name);
        for (const [outcome, n] of [
          ['hit', c.hits],
          ['miss', c.misses],
          ['eviction', c.evictions],
          ['load_failure', c.loadFailures],
          ['rejected', c.rejected],
        ] as const) {
          result.observe(cacheOps, n, { ...name, 'sysprobe.cache.result': outcome });
        }
      }
      for (const w of this.#source.watchedCaches()) {
        result.observe(cacheSize, w.size, { 'sysprobe.cache': w.name, 'sysprobe.cache.kind': 'watched' });
        result.observe(cacheEvicted, w.evicted, { 'sysprobe.cache': w.name });
      }
    });

    const restarts = counter('sysprobe.worker.restarts', '{restart}', 'Times the probe worker died and was restarted.');
    observe.push((result) => result.observe(restarts, this.#source.workerRestarts()));

    this.#callback = async (result) => {
      this.#guard(() => this.#source.drainDelays());
      const now = Date.now();
      const recent = await this.#source.samplesSince(Math.max(options.sampleIntervalMs, now - this.#lastCollectAt));
      this.#lastCollectAt = now;
      const latest = recent.at(-1) ?? this.#lastSample;
      this.#lastSample = latest;
      for (const fn of observe) this.#guard(() => fn(result, recent, latest));
    };
    meter.addBatchObservableCallback(this.#callback, this.#observables);
  }

  #track<T extends Observable>(instrument: T): T {
    this.#observables.push(instrument);
    return instrument;
  }

  #guard(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.#source.failed('exporter', err);
    }
  }

  /** One observation of the event-loop delay, ms. */
  recordDelay(delayMs: number): void {
    this.#delayHistogram.record(delayMs / 1000);
    // RecordableHistogram takes integers >= 1 (ns).
    this.#delayStats.record(Math.max(1, Math.round(delayMs * 1e6)));
  }

  /** `watched`: a thread registered with watchThread() (attribute `sysprobe.thread: worker`; the probe's host thread has none). */
  recordStall(durationMs: number, capture: string, watched = false): void {
    const attributes = watched ? { 'sysprobe.thread': 'worker' } : undefined;
    this.#stalls.add(1, { 'sysprobe.capture': capture, ...attributes });
    this.#stallDuration.record(durationMs / 1000, attributes);
  }

  recordRule(rule: string): void {
    this.#ruleFirings.add(1, { 'sysprobe.rule': rule });
  }

  recordJob(event: JobEvent): void {
    const attributes = {
      'sysprobe.job': event.job,
      'sysprobe.job.outcome': event.outcome,
      'sysprobe.job.kind': event.kind,
    };
    this.#jobRuns.add(1, attributes);
    if (event.outcome !== 'refused') this.#jobDuration.record(event.durationMs / 1000, attributes);
  }

  /** A synthetic probe's run, from the worker (exporters/probe-metrics.ts). */
  recordProbe(result: ProbeResult): void {
    this.#probes.record(result);
  }

  recordGc(kind: string, durationMs: number): void {
    this.#gcDuration.record(durationMs / 1000, { 'v8js.gc.type': kind });
  }

  countError(component: string): void {
    this.#errors.add(1, { component });
  }

  /** Unregisters the observable callback; the synchronous histograms simply stop receiving values. */
  stop(): void {
    this.#meter.removeBatchObservableCallback(this.#callback, this.#observables);
  }
}
