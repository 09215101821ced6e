/**
 * The typed messages between the main thread (agent) and the probe worker, and
 * the shape of a sample. Both sides import this file; nothing here runs code
 * except the layout constants of the shared heartbeat.
 */

/** Slots of the heartbeat's shared BigInt64Array; all values are process.hrtime nanoseconds. */
export const Beat = {
  /** When the main thread's heartbeat last ran. */
  LAST: 0,
  /** Number of slots. */
  SIZE: 1,
} as const;

/** Values only the main thread can read (its own isolate and loop), left in shared memory for the worker each sample. */
export interface MainSample {
  /** Wall-clock time of the reading, ms since the epoch. */
  time: number;
  eventLoop?: { utilization: number; activeMs: number; idleMs: number };
  memory?: {
    heapUsed: number;
    heapTotal: number;
    heapLimit: number;
    external: number;
    arrayBuffers: number;
    spaces: Array<{ name: string; used: number; size: number; available: number; physical: number }>;
  };
  /** Cumulative since start, by GC kind (major, minor, incremental, weakcb). */
  gc?: Record<string, { count: number; durationMs: number }>;
  /** Active resources (handles and requests) on the main thread, by type. */
  handles?: Record<string, number>;
}

/** Per-thread CPU, from /proc/self/task. */
export interface ThreadCpu {
  tid: number;
  /** The kernel's thread name (comm), e.g. `node`, `libuv-worker`, `V8 DefaultWorke`. */
  name: string;
  /** What the thread is, where sysprobe can tell: `main`, `sysprobe-worker`, `libuv`, `v8`, or `other` (Node 20 names most of its threads `node`). */
  role: string;
  userMs: number;
  systemMs: number;
  /** Share of one CPU over the last interval, 0..1 (per thread, so at most ~1). */
  utilization: number;
}

/** One entry of the flight recorder. Every field is a number or a small record of numbers. */
export interface Sample {
  /** Wall-clock time the worker recorded it, ms since the epoch. */
  time: number;
  /** Length of the interval this sample covers, ms. */
  intervalMs: number;
  /** True when the main thread did not answer for this sample: main-thread values are from its last answer. */
  mainStale: boolean;
  eventLoop?: {
    /** Heartbeat interval statistics over the sample interval, ms (like monitorEventLoopDelay, they include the heartbeat period). */
    delayMinMs: number; delayMaxMs: number; delayMeanMs: number; delayP50Ms: number; delayP90Ms: number; delayP99Ms: number;
    /** The worker's view: time since the main thread's heartbeat last ran, when sampled, ms. */
    lagMs: number;
    /** The longest time without a heartbeat during the interval, ms: the longest completed gap, or the live lag if longer. */
    lagMaxMs: number;
    utilization: number;
  };
  cpu?: {
    /** Cumulative process CPU since process start, ms. */
    userMs: number; systemMs: number;
    /** Share of one CPU over the interval (can exceed 1 with several threads busy). */
    utilization: number;
    loadAverage: [number, number, number];
  };
  threads?: ThreadCpu[];
  memory?: MainSample['memory'] & { rss: number };
  gc?: MainSample['gc'];
  handles?: MainSample['handles'];
}

/** What the main thread can ask the worker. */
export type Request =
  | { kind: 'recent'; sinceMs: number | undefined };

export type MainToWorker =
  | { type: 'request'; id: number; request: Request }
  | { type: 'stop' };

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

export type WorkerToMain =
  | { type: 'ready'; tid: number | undefined }
  | { type: 'response'; id: number; ok: true; value: unknown }
  | { type: 'response'; id: number; ok: false; error: { code: string; message: string } }
  | { type: 'log'; level: LogLevel; msg: string; fields: Record<string, unknown> }
  | { type: 'stall'; startedAt: number; durationMs: number };

/** Settings the worker starts with (structured-cloned through workerData). */
export interface WorkerSettings {
  heartbeat: SharedArrayBuffer;
  /** A SharedJsonSlot where the main thread leaves its latest MainSample. */
  mainSlot: SharedArrayBuffer;
  sampleIntervalMs: number;
  heartbeatIntervalMs: number;
  stallThresholdMs: number;
  recorderWindowMs: number;
  mainTid: number;
  samplers: { eventLoop: boolean; cpu: boolean; threads: boolean; memory: boolean };
  /** Delay histogram shared with the main thread (a node:perf_hooks RecordableHistogram handle). */
  delayHistogram: unknown;
}
