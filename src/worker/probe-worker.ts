/**
 * The probe worker's entry point. It samples what need not run on the main
 * thread (/proc, process CPU), keeps the flight recorder, and watches the main
 * thread's heartbeat so it sees a stall while the stall lasts.
 *
 * Nothing here may throw out of a handler: every failure becomes a 'log'
 * message to the main thread, which logs and counts it.
 */
import * as fs from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import type { RecordableHistogram } from 'node:perf_hooks';
import { describeError, ErrorCode } from '../errors.js';
import { Beat, type LogLevel, type MainSample, type MainToWorker, type Request, type Sample, type WorkerSettings, type WorkerToMain } from '../protocol.js';
import { ProcessCpuSampler, ThreadCpuSampler } from '../samplers/cpu.js';
import { SharedJsonSlot } from '../shared-slot.js';
import { FlightRecorder } from './recorder.js';

const NS_PER_MS = 1e6;

function ownThreadId(): number | undefined {
  try {
    // "/proc/thread-self" links to "<pid>/task/<tid>" for the calling thread.
    const tid = Number(fs.readlinkSync('/proc/thread-self').split('/').pop());
    return Number.isInteger(tid) ? tid : undefined;
  } catch {
    return undefined;
  }
}

class ProbeWorker {
  readonly #port: NonNullable<typeof parentPort>;
  readonly #settings: WorkerSettings;
  readonly #beat: BigInt64Array;
  readonly #mainSlot: SharedJsonSlot;
  readonly #delay: RecordableHistogram | undefined;
  readonly #recorder: FlightRecorder<Sample>;
  readonly #processCpu = new ProcessCpuSampler();
  readonly #threadCpu: ThreadCpuSampler;
  #lastMain: MainSample | undefined;
  #lastMainVersion = 0;
  #lastSampleAt = performance.now();
  #timer: NodeJS.Timeout | undefined;
  #stalled = false;
  #stopped = false;

  constructor(port: NonNullable<typeof parentPort>, settings: WorkerSettings) {
    this.#port = port;
    this.#settings = settings;
    this.#beat = new BigInt64Array(settings.heartbeat);
    this.#mainSlot = new SharedJsonSlot(settings.mainSlot);
    this.#delay = settings.delayHistogram as RecordableHistogram | undefined;
    const capacity = Math.ceil(settings.recorderWindowMs / settings.sampleIntervalMs) + 1;
    this.#recorder = new FlightRecorder<Sample>(capacity);
    const tid = ownThreadId();
    this.#threadCpu = new ThreadCpuSampler(settings.mainTid, tid);
    if (settings.samplers.threads && !this.#threadCpu.supported) {
      this.#log('info', 'per-thread CPU sampler unsupported on this platform', { sampler: 'threads', platform: process.platform });
    }
    port.on('message', (message: MainToWorker) => this.#onMessage(message));
    this.#send({ type: 'ready', tid });
    this.#arm();
  }

  #send(message: WorkerToMain): void {
    if (!this.#stopped) this.#port.postMessage(message);
  }

  #log(level: LogLevel, msg: string, fields: Record<string, unknown> = {}): void {
    this.#send({ type: 'log', level, msg, fields });
  }

  /** Runs a handler so that nothing it throws escapes: it is logged as a sampler failure instead. */
  #guarded(component: string, fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.#log('error', 'sysprobe sampler failed', { component, err: describeError(err) });
    }
  }

  #onMessage(message: MainToWorker): void {
    switch (message.type) {
      case 'request':
        this.#guarded('recorder', () => this.#collect());
        this.#answer(message.id, message.request);
        return;
      case 'stop':
        this.#stop();
        return;
      default: {
        // An unknown message means the two sides disagree on the protocol: stop rather than guess.
        const unknown: never = message;
        this.#log('error', 'sysprobe worker got an unknown message; stopping', { message: String((unknown as { type?: unknown }).type) });
        this.#stop();
      }
    }
  }

  #answer(id: number, request: Request): void {
    try {
      let value: unknown;
      switch (request.kind) {
        case 'recent': value = this.#recorder.since(request.sinceMs === undefined ? undefined : Date.now() - request.sinceMs); break;
        default: throw new Error(`unknown request ${(request as { kind?: unknown }).kind}`);
      }
      this.#send({ type: 'response', id, ok: true, value });
    } catch (err) {
      this.#send({ type: 'response', id, ok: false, error: { code: ErrorCode.WORKER_UNAVAILABLE, message: describeError(err).message } });
    }
  }

  /**
   * The worker's one timer. It wakes for whichever comes first: the moment a stall
   * would be certain (see #watchDueMs), or the next sample when nothing else wakes it.
   */
  #arm(): void {
    if (this.#stopped || this.#stalled) return;
    const { sampleIntervalMs, samplers } = this.#settings;
    const sampleDue = sampleIntervalMs * (samplers.eventLoop ? 1.5 : 1) - (performance.now() - this.#lastSampleAt);
    const due = samplers.eventLoop ? Math.min(this.#watchDueMs(), sampleDue) : sampleDue;
    this.#timer = setTimeout(() => this.#wake(), Math.max(1, due));
    this.#timer.unref();
  }

  #wake(): void {
    this.#guarded('recorder', () => this.#collect());
    if (this.#settings.samplers.eventLoop) this.#guarded('watchdog', () => this.#watch());
    this.#arm();
  }

  /** Records a sample when the main thread left new readings, or when one is overdue (main blocked). */
  #collect(): void {
    const news = this.#mainSlot.version !== this.#lastMainVersion ? this.#mainSlot.read<MainSample>() : undefined;
    if (news) {
      this.#lastMainVersion = news.version;
      this.#lastMain = news.value;
      this.#record(false);
    } else if (performance.now() - this.#lastSampleAt >= this.#settings.sampleIntervalMs * 1.5) {
      this.#record(true);
    }
  }

  /** Builds one sample from the main thread's last readings and the worker's own. */
  #record(mainStale: boolean): void {
    const now = performance.now();
    const intervalMs = now - this.#lastSampleAt;
    this.#lastSampleAt = now;
    const { samplers } = this.#settings;
    const main = this.#lastMain;
    const sample: Sample = { time: Date.now(), intervalMs, mainStale };
    if (samplers.eventLoop) sample.eventLoop = this.#eventLoop(main);
    if (samplers.cpu) sample.cpu = this.#processCpu.sample();
    if (samplers.threads && this.#threadCpu.supported) sample.threads = this.#threadCpu.sample();
    if (samplers.memory && main?.memory) sample.memory = { ...main.memory, rss: process.memoryUsage.rss() };
    if (main?.gc) sample.gc = main.gc;
    if (main?.handles) sample.handles = main.handles;
    this.#recorder.push(sample);
  }

  #eventLoop(main: MainSample | undefined): NonNullable<Sample['eventLoop']> {
    const lagMs = this.#lagMs();
    const h = this.#delay;
    const stats = h && h.count > 0
      ? {
        delayMinMs: h.min / NS_PER_MS, delayMaxMs: h.max / NS_PER_MS, delayMeanMs: h.mean / NS_PER_MS,
        delayP50Ms: h.percentile(50) / NS_PER_MS, delayP90Ms: h.percentile(90) / NS_PER_MS, delayP99Ms: h.percentile(99) / NS_PER_MS,
      }
      // No heartbeat in the whole interval: the loop was blocked throughout; the lag is the only measure.
      : { delayMinMs: lagMs, delayMaxMs: lagMs, delayMeanMs: lagMs, delayP50Ms: lagMs, delayP90Ms: lagMs, delayP99Ms: lagMs };
    h?.reset();
    // The histogram holds the gaps that ended; an ongoing one is only visible as the live lag.
    const lagMaxMs = Math.max(stats.delayMaxMs, lagMs);
    return { ...stats, lagMs, lagMaxMs, utilization: main?.eventLoop?.utilization ?? 0 };
  }

  /** Time since the main thread's heartbeat last ran. */
  #lagMs(): number {
    const last = Atomics.load(this.#beat, Beat.LAST);
    return Math.max(0, Number(process.hrtime.bigint() - last) / NS_PER_MS);
  }

  /**
   * A stall is certain once the heartbeat is `stallThresholdMs` overdue: the next
   * beat was due at LAST + heartbeat, so none by LAST + heartbeat + threshold means
   * the loop has been blocked at least the threshold. A healthy loop thus costs one
   * wake-up per heartbeat + threshold, not one per beat.
   */
  #watchDueMs(): number {
    const { heartbeatIntervalMs, stallThresholdMs } = this.#settings;
    return heartbeatIntervalMs + stallThresholdMs - this.#lagMs();
  }

  #watch(): void {
    if (this.#watchDueMs() > 0) return;
    const last = Atomics.load(this.#beat, Beat.LAST);
    const startedAt = Date.now() - this.#lagMs();
    this.#stalled = true;
    void this.#awaitBeat(last).then((durationMs) => {
      this.#stalled = false;
      this.#send({ type: 'stall', startedAt, durationMs });
      this.#arm();
    });
  }

  /** Resolves with the whole gap once the heartbeat moves past `last`, recording samples meanwhile. */
  async #awaitBeat(last: bigint): Promise<number> {
    for (;;) {
      // The heartbeat's Atomics.notify wakes us the moment the loop runs again.
      const result = Atomics.waitAsync(this.#beat, Beat.LAST, last, this.#settings.sampleIntervalMs);
      const outcome = result.async ? await result.value : result.value;
      const now = Atomics.load(this.#beat, Beat.LAST);
      if (outcome !== 'timed-out' || now !== last || this.#stopped) {
        return Number(now - last) / NS_PER_MS;
      }
      // Still stalled after a full interval: keep the recorder going, flagged stale.
      this.#guarded('recorder', () => this.#record(true));
    }
  }

  #stop(): void {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#port.close();
  }
}

if (parentPort) new ProbeWorker(parentPort, workerData as WorkerSettings);
