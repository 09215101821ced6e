/**
 * The shape of a sample: the main thread's reading (MainSample, through the shared ring) and
 * the worker's Sample built from it. A leaf: the rules, health, exporters, incidents and the
 * report all read samples, so nothing here imports them.
 */
import type { CgroupValues } from '../containers/cgroup-values.js';
/**
 * The main thread's readings, one per sample interval, appended to a shared ring
 * for the worker: what only the main thread can read (its isolate, its loop) and
 * the process-wide counters that cost a syscall or two, so the worker need not wake
 * each interval to read them.
 */
export interface MainSample {
  /** Wall-clock time of the reading, ms since the epoch. */
  time: number;
  eventLoop?: {
    utilization: number;
    /** The longest the loop went without turning since the previous reading, ms (native watch: the longest turn; heartbeat: the longest gap between beats). */
    maxDelayMs: number;
  };
  /** Process CPU since process start, ms. */
  cpu?: { userMs: number; systemMs: number };
  /** V8's heap figures (one cheap call); RSS, ArrayBuffers and per-space figures are read elsewhere (see Sample, and the exporter). */
  memory?: {
    heapUsed: number;
    heapTotal: number;
    heapLimit: number;
    external: number;
    /** Heap used right after the last full GC (the live heap), and when that GC ended; needs the GC addon. */
    heapAfterGc?: number;
    heapAfterGcAt?: number;
  };
  /** Cumulative since start, by GC kind (major, minor, incremental, weakcb); reclaimed bytes need the GC addon. */
  gc?: Record<string, { count: number; durationMs: number; reclaimedBytes?: number }>;
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
  /**
   * True when the main thread was blocked: the worker recorded this sample during a
   * stall, and main-thread values (heap, GC, handles, utilization) are from its last reading.
   */
  mainStale: boolean;
  /**
   * sysprobe itself paused the main thread in this interval (a heap snapshot): the event-loop
   * figures include that pause, so rules on them skip this sample.
   */
  selfPaused?: boolean;
  eventLoop?: {
    /** The longest the loop went without turning during the interval, as the main thread measured it afterwards, ms. */
    delayMaxMs: number;
    /** Live samples only (mainStale): how long the loop had been blocked when the worker recorded this, ms; else 0. */
    lagMs: number;
    /** The larger of the two: the longest the loop went without turning, as far as this sample knows, ms. */
    lagMaxMs: number;
    utilization: number;
  };
  cpu?: {
    /** Cumulative process CPU since process start, ms. */
    userMs: number;
    systemMs: number;
    /** Share of one CPU over the interval (can exceed 1 with several threads busy). */
    utilization: number;
    /** The system's load average (1, 5, 15 min), where the worker read it (the samples that carry `threads`). */
    loadAverage?: [number, number, number];
    /** `utilization` as a share of the cgroup's CPU quota (1 = all of it), when there is a quota (Linux). */
    quotaUtilization?: number;
  };
  /** Per-thread CPU, read by the worker when it wakes (every few seconds, and each sample during a stall): present on those samples only. */
  threads?: ThreadCpu[];
  /** Heap figures each sample; `rss` where the worker read it (the samples that carry `threads`). */
  memory?: MainSample['memory'] & {
    rss?: number;
    /**
     * Sustained growth of the heap's floor (the low points the GCs bring it back to), fitted over
     * the last `growthWindowMs` (10 minutes by default, in floors of a twentieth of it), bytes per
     * minute; `heapGrowthR2` says how well a line fits (0..1). Absent until three floors are complete.
     */
    heapGrowthPerMin?: number;
    heapGrowthR2?: number;
    /** The same fit over RSS (read every few seconds): native memory a heap-only view misses. */
    rssGrowthPerMin?: number;
    rssGrowthR2?: number;
    /** The same fit over external memory (ArrayBuffers, Buffers, native objects held from JS). */
    externalGrowthPerMin?: number;
    externalGrowthR2?: number;
  };
  gc?: MainSample['gc'];
  /** The GC picture over the interval (from the cumulative totals of this sample and the one before). */
  gcRates?: {
    /** GCs per minute, all kinds. */
    perMin: number;
    /** Share of the interval spent in GC pauses, 0..1. */
    pauseShare: number;
    /** Bytes freed per minor or major GC on average; absent without the GC addon or when none ran. */
    reclaimedPerGc?: number;
  };
  handles?: MainSample['handles'];
  /**
   * This process's TCP sockets from the latest socket sweep (option `sockets`; Linux), on the
   * samples the worker read it for. The full picture is `probe.sockets()`.
   */
  sockets?: {
    total: number;
    /** By kernel state name: ESTABLISHED, SYN_SENT, CLOSE_WAIT, TIME_WAIT, LISTEN, ... */
    byState: Record<string, number>;
    sendQueueBytes: number;
    recvQueueBytes: number;
    /** The namespace's retransmitted TCP segments per second over the last sweep interval. */
    retransmitsPerSec?: number;
    /** Connections waiting for accept() on this process's listeners. */
    acceptQueue?: number;
    /** The namespace's cumulative TCP counters (for exporters). */
    tcp?: { outSegs: number; retransSegs: number; timeouts: number; listenOverflows: number; listenDrops: number };
    /** From ss: segments retransmitted over the lives of this process's sockets, summed. */
    socketRetransmits?: number;
  };
  /** This process's cgroup (Linux): CPU quota and throttling, memory limit and usage, on the samples the worker read it for (src/containers). */
  cgroup?: CgroupValues;
}
