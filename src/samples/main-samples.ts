/**
 * The probe worker's sample bookkeeping: it drains the main thread's readings from the shared
 * ring, turns each into a Sample (CPU utilization from consecutive readings, GC rates, memory
 * growth fits, sysprobe's own pauses marked), adds what the worker reads itself to the newest
 * (per-thread CPU, RSS, load, sockets, the cgroup), and keeps them in the flight recorder.
 * During a stall it records samples of its own (`recordStale`), flagged mainStale.
 */
import * as fs from 'node:fs';
import type { MainSample, Sample } from './sample.js';
import type { WorkerSettings } from '../worker/settings.js';
import type { CgroupWatch } from '../containers/cgroup-watch.js';
import { readLoadAverage, readProcessCpu, ThreadCpuSampler } from './cpu.js';
import { FlightRecorder } from './recorder.js';
import { SharedJsonRing } from '../internal/shared-ring.js';
import { GrowthTracker } from '../memory/growth.js';
import { gcRates } from '../memory/gc-rates.js';

/** Heap growth is fitted over this many floors of the window (30 s each at the default 10 minutes: tens of GC cycles). */
const GROWTH_FLOORS = 20;
/** sysprobe's own pauses remembered to mark the samples they fall in (a few cover any batch of readings). */
const MAX_SELF_PAUSES = 8;

/** What the samples take from the rest of the worker. */
export interface SampleSources {
  /** The stall watch's live lag, ms (0 without a watch). */
  lagMs(): number;
  /** The socket sampler's latest summary (option `sockets`). */
  sockets(): Sample['sockets'] | undefined;
  cgroup: Pick<CgroupWatch, 'quotaCores' | 'values'>;
  /** Each new sample, once recorded. */
  recorded(sample: Sample, mainStale: boolean): void;
  /** Readings were lost (the worker fell behind the ring). */
  lost(count: number): void;
}

type SampleSettings = Pick<
  WorkerSettings,
  'mainRing' | 'mainTid' | 'samplers' | 'sampleIntervalMs' | 'recorderWindowMs' | 'growthWindowMs'
>;

/** This thread's id ("/proc/thread-self" links to "<pid>/task/<tid>"), undefined off Linux. */
export function ownThreadId(): number | undefined {
  try {
    const tid = Number(fs.readlinkSync('/proc/thread-self').split('/').pop());
    return Number.isInteger(tid) ? tid : undefined;
  } catch {
    return undefined;
  }
}

export class MainSamples {
  readonly recorder: FlightRecorder<Sample>;
  readonly #settings: SampleSettings;
  readonly #sources: SampleSources;
  readonly #mainRing: SharedJsonRing;
  readonly #threadCpu: ThreadCpuSampler;
  /** Sustained growth of the heap, RSS and external memory (floors fitted over growthWindowMs). */
  readonly #growth: Record<'heap' | 'rss' | 'external', GrowthTracker>;
  /** sysprobe's own recent pauses of the main thread (heap snapshots), oldest first; `to` unset while one lasts. */
  readonly #selfPauses: Array<{ from: number; to: number | undefined }> = [];
  #cursor = 0;
  #lastMain: MainSample | undefined;
  #last: Sample | undefined;
  /** When the ring was last drained (performance.now()). */
  lastDrainAt = performance.now();

  constructor(settings: SampleSettings, workerTid: number | undefined, sources: SampleSources) {
    this.#settings = settings;
    this.#sources = sources;
    this.#mainRing = new SharedJsonRing(settings.mainRing);
    this.#threadCpu = new ThreadCpuSampler(settings.mainTid, workerTid);
    const tracker = () => new GrowthTracker(settings.growthWindowMs, settings.growthWindowMs / GROWTH_FLOORS);
    this.#growth = { heap: tracker(), rss: tracker(), external: tracker() };
    this.recorder = new FlightRecorder<Sample>(Math.ceil(settings.recorderWindowMs / settings.sampleIntervalMs) + 1);
  }

  /** Whether per-thread CPU can be read here (Linux, /proc). */
  get threadsSupported(): boolean {
    return this.#threadCpu.supported;
  }

  /** The newest sample. */
  get latest(): Sample | undefined {
    return this.#last;
  }

  /** The recorder's samples since `time` (ms since the epoch), or all. */
  since(time: number | undefined): Sample[] {
    return this.recorder.since(time);
  }

  /** sysprobe's own pause of the main thread began (`active`) or ended: the samples it falls in are marked. */
  selfPause(active: boolean): void {
    if (active) {
      this.#selfPauses.push({ from: Date.now(), to: undefined });
      if (this.#selfPauses.length > MAX_SELF_PAUSES) this.#selfPauses.shift();
    } else {
      const last = this.#selfPauses.at(-1);
      if (last && last.to === undefined) last.to = Date.now();
    }
  }

  /**
   * Turns the main thread's readings since the last drain into samples; per-thread CPU, RSS and
   * load, read now, go on the newest. Returns how many there were (none while the readings are
   * stretched between two drains: then nothing is read at all).
   */
  drain(): number {
    this.lastDrainAt = performance.now();
    const { values, next, lost } = this.#mainRing.readSince<MainSample>(this.#cursor);
    this.#cursor = next;
    if (lost > 0) this.#sources.lost(lost);
    values.forEach((main, i) => this.#record(main, false, i === values.length - 1));
    return values.length;
  }

  /** A sample taken while the main thread is blocked: its values are the last it left, the rest is read now. */
  recordStale(): void {
    const main = this.#lastMain;
    const now: MainSample = { time: Date.now() };
    if (main?.eventLoop) now.eventLoop = { ...main.eventLoop, utilization: 1, maxDelayMs: 0 };
    if (this.#settings.samplers.cpu) now.cpu = readProcessCpu();
    if (main?.memory) now.memory = main.memory;
    if (main?.gc) now.gc = main.gc;
    if (main?.handles) now.handles = main.handles;
    this.#record(now, true, true);
    // Keep the main thread's own reading as the base for the next interval's deltas.
    this.#lastMain = main;
  }

  /** Builds one sample from a main-thread reading (and, `withWorkerReadings`, per-thread CPU, RSS and load read now). */
  #record(main: MainSample, mainStale: boolean, withWorkerReadings: boolean): void {
    const { samplers } = this.#settings;
    const previous = this.#last;
    const sample: Sample = { time: main.time, intervalMs: previous ? main.time - previous.time : 0, mainStale };
    // Readings reach the worker in batches, so whether a pause is in this one is a matter of times, not
    // of order. The loop hook records a turn's length when the turn ends, so a pause shows in the
    // reading after the one taken right after it: a pause counts for one more interval.
    const since = (previous?.time ?? 0) - this.#settings.sampleIntervalMs;
    if (this.#selfPauses.some((p) => p.from <= main.time && (p.to ?? Infinity) >= since)) sample.selfPaused = true;
    if (samplers.eventLoop && main.eventLoop) {
      const lagMs = mainStale ? this.#sources.lagMs() : 0;
      const delayMaxMs = main.eventLoop.maxDelayMs;
      sample.eventLoop = {
        delayMaxMs,
        lagMs,
        lagMaxMs: Math.max(delayMaxMs, lagMs),
        utilization: main.eventLoop.utilization,
      };
    }
    if (samplers.cpu && main.cpu) {
      const before = previous?.cpu;
      const busyMs = before ? main.cpu.userMs - before.userMs + (main.cpu.systemMs - before.systemMs) : 0;
      sample.cpu = { ...main.cpu, utilization: before && sample.intervalMs > 0 ? busyMs / sample.intervalMs : 0 };
      if (withWorkerReadings) sample.cpu.loadAverage = readLoadAverage();
    }
    if (samplers.threads && withWorkerReadings && this.#threadCpu.supported) sample.threads = this.#threadCpu.sample();
    if (samplers.memory && main.memory) {
      const memory: NonNullable<Sample['memory']> = withWorkerReadings
        ? { ...main.memory, rss: process.memoryUsage.rss() }
        : { ...main.memory };
      sample.memory = memory;
      // Stale samples repeat the last reading: feeding them would flatten the floors.
      if (!mainStale) {
        // The heap after a full GC is a true floor: it sharpens the fit when the GCs are rare.
        const afterGcAt = memory.heapAfterGcAt;
        if (
          memory.heapAfterGc !== undefined &&
          afterGcAt !== undefined &&
          afterGcAt !== previous?.memory?.heapAfterGcAt &&
          afterGcAt <= main.time
        ) {
          this.#growth.heap.add(afterGcAt, memory.heapAfterGc);
        }
        this.#growth.heap.add(main.time, memory.heapUsed);
        this.#growth.external.add(main.time, memory.external);
        if (memory.rss !== undefined) this.#growth.rss.add(main.time, memory.rss);
      }
      const heap = this.#growth.heap.growth();
      if (heap) {
        memory.heapGrowthPerMin = heap.perMinute;
        memory.heapGrowthR2 = heap.r2;
      }
      const rss = this.#growth.rss.growth();
      if (rss) {
        memory.rssGrowthPerMin = rss.perMinute;
        memory.rssGrowthR2 = rss.r2;
      }
      const external = this.#growth.external.growth();
      if (external) {
        memory.externalGrowthPerMin = external.perMinute;
        memory.externalGrowthR2 = external.r2;
      }
    }
    if (main.gc) {
      sample.gc = main.gc;
      if (previous?.gc && sample.intervalMs > 0) sample.gcRates = gcRates(previous.gc, main.gc, sample.intervalMs);
    }
    if (main.handles) sample.handles = main.handles;
    if (withWorkerReadings) {
      const sockets = this.#sources.sockets();
      if (sockets) sample.sockets = sockets;
    }
    const quota = this.#sources.cgroup.quotaCores;
    if (sample.cpu && quota !== undefined && quota > 0) sample.cpu.quotaUtilization = sample.cpu.utilization / quota;
    if (withWorkerReadings) {
      const cgroup = this.#sources.cgroup.values();
      if (cgroup) sample.cgroup = cgroup;
    }
    this.#lastMain = main;
    this.#last = sample;
    this.recorder.push(sample);
    this.#sources.recorded(sample, mainStale);
  }
}
