/**
 * Heap snapshots, on demand and from rules. A snapshot pauses the process while
 * V8 walks the heap, and needs about as much memory again as the heap holds (in
 * native memory, outside the JS heap) plus as much disk; a snapshot that pushes
 * a leaking process over its memory limit kills the service it was meant to save.
 * So before each one it checks, and refuses with a logged reason when it is not
 * safe. The writer is Node's own `v8.writeHeapSnapshot`, which streams straight to
 * the file (nothing held in JS), or the optional `heapdump` addon; either runs on the
 * main thread because the isolate it snapshots is the main thread's.
 */
import * as os from 'node:os';
import * as v8 from 'node:v8';
import { ErrorCode, SysprobeError } from '../errors.js';
import type { Logger } from '../internal/logger.js';
import { RateBudget } from '../internal/rate-budget.js';
import type { CaptureSink } from '../sink/sink.js';
import { CgroupReader, readMemoryAt } from '../containers/cgroup-reader.js';

/** What a heap snapshot capture wrote. */
export interface HeapSnapshotResult {
  /** The .heapsnapshot file (Chrome DevTools, memlab). */
  file: string;
  /** Its JSON sidecar: what triggered it and the values at the time. */
  sidecarFile: string;
  bytes: number;
  /** How long the main thread was paused writing it, ms. */
  pauseMs: number;
}

export interface HeapSnapshotLimits {
  /** At most this many in any 24 hours. */
  perDay: number;
}

/** Writes a snapshot of the calling thread's heap to `file`, synchronously. */
export type SnapshotWriter = (file: string) => void;

/** The writers `heapSnapshotWriter` can name. */
export type SnapshotWriterKind = 'v8' | 'heapdump';

/**
 * The writer of that name. `heapdump` is an optional peer dependency, and a main-thread-only
 * one: its native code snapshots whichever isolate calls it and is not safe in worker threads.
 * Throws SYSPROBE_ERR_UNSUPPORTED when it cannot be used here.
 */
export function snapshotWriter(kind: SnapshotWriterKind, isMainThread: boolean): SnapshotWriter {
  if (kind === 'v8')
    return (file) => {
      v8.writeHeapSnapshot(file);
    };
  if (!isMainThread) {
    throw new SysprobeError(
      ErrorCode.UNSUPPORTED,
      "Option heapSnapshotWriter is 'heapdump', which is unsafe in worker threads; use 'v8' there.",
    );
  }
  const heapdump = loadHeapdump();
  return (file) => {
    if (!heapdump.writeSnapshot(file)) throw new Error(`heapdump could not write ${file}`);
  };
}

function loadHeapdump(): { writeSnapshot(file: string): boolean } {
  // heapdump installs a SIGUSR2 handler when loaded unless told not to: the app's signals are not ours to take.
  const before = process.env.NODE_HEAPDUMP_OPTIONS;
  process.env.NODE_HEAPDUMP_OPTIONS = 'nosignal';
  try {
    return require('heapdump') as { writeSnapshot(file: string): boolean };
  } catch (err) {
    throw new SysprobeError(
      ErrorCode.UNSUPPORTED,
      `Option heapSnapshotWriter is 'heapdump', but it did not load (${err instanceof Error ? err.message.split('\n')[0] : String(err)}); npm install heapdump, or use 'v8'.`,
    );
  } finally {
    if (before === undefined) delete process.env.NODE_HEAPDUMP_OPTIONS;
    else process.env.NODE_HEAPDUMP_OPTIONS = before;
  }
}

/** The memory figures the checks read; injectable so tests can stage a process near its limits. */
export interface MemoryState {
  heapUsed: number;
  heapLimit: number;
  /** Memory the system (or the cgroup) can still give this process, bytes. */
  available: number;
}

/** The heap must keep this share of its limit free: V8 runs a full GC and allocates while it snapshots. */
const MIN_HEAP_HEADROOM = 0.1;
/** The snapshot's own structures take about as much native memory as the heap, and more for small heaps. */
const MEMORY_PER_HEAP_BYTE = 1.5;
/** A .heapsnapshot is typically 1–2× the heap used; the sink refuses below this plus its reserve, and caps at twice it. */
const FILE_PER_HEAP_BYTE = 2;
const DAY_MS = 24 * 3600_000;

export class HeapSnapshots {
  readonly #sink: CaptureSink;
  readonly #logger: Logger;
  readonly #memory: () => MemoryState;
  readonly #budget: RateBudget;
  readonly #write: SnapshotWriter;
  #busy = false;

  readonly #onPause: (active: boolean) => void;

  /** `onPause` is told just before the snapshot pauses the main thread and just after, so the stall watch can tell it apart. */
  constructor(
    sink: CaptureSink,
    limits: HeapSnapshotLimits,
    logger: Logger,
    memory: () => MemoryState = readMemoryState,
    onPause: (active: boolean) => void = () => undefined,
    write: SnapshotWriter = snapshotWriter('v8', true),
  ) {
    this.#onPause = onPause;
    this.#write = write;
    this.#sink = sink;
    this.#budget = new RateBudget(limits.perDay, DAY_MS);
    this.#logger = logger;
    this.#memory = memory;
  }

  /** Why a snapshot would not be safe now, or undefined when it would be. */
  refusal(now = Date.now()): string | undefined {
    if (this.#busy) return 'a heap snapshot is already being written';
    if (!this.#budget.available(now)) return `the budget of ${this.#budget.limit} heap snapshots per 24 hours is spent`;
    const { heapUsed, heapLimit, available } = this.#memory();
    if (heapLimit - heapUsed < MIN_HEAP_HEADROOM * heapLimit) {
      return `the heap is too close to its limit (${heapUsed} of ${heapLimit} bytes used; a snapshot needs ${MIN_HEAP_HEADROOM * 100}% free)`;
    }
    if (available < MEMORY_PER_HEAP_BYTE * heapUsed) {
      return `too little memory left for it (${available} bytes available, a snapshot of a ${heapUsed}-byte heap needs about ${Math.round(MEMORY_PER_HEAP_BYTE * heapUsed)})`;
    }
    return undefined;
  }

  /** Takes a snapshot into the sink, or rejects with SYSPROBE_ERR_CAPTURE_FAILED saying why not (and logs it). */
  async capture(sidecar: Record<string, unknown>): Promise<HeapSnapshotResult> {
    const refused = this.refusal();
    if (refused) {
      this.#logger.warn({ reason: refused, ...sidecar }, 'sysprobe refused a heap snapshot');
      throw new SysprobeError(ErrorCode.CAPTURE_FAILED, `No heap snapshot: ${refused}.`);
    }
    this.#busy = true;
    this.#budget.take();
    try {
      const before = this.#memory();
      let pauseMs = 0;
      // The sink serializes the sidecar once the body is written, so the pause measured below lands in it.
      const facts: Record<string, unknown> = {
        ...sidecar,
        heapUsed: before.heapUsed,
        heapLimit: before.heapLimit,
        rss: process.memoryUsage.rss(),
      };
      const written = await this.#sink.write({
        kind: 'heap-snapshot',
        extension: '.heapsnapshot',
        expectedBytes: FILE_PER_HEAP_BYTE * before.heapUsed,
        sidecar: facts,
        body: {
          writeTo: (partialFile) => {
            this.#onPause(true);
            const started = performance.now();
            try {
              this.#write(partialFile);
            } finally {
              pauseMs = performance.now() - started;
              facts.pauseMs = Math.round(pauseMs);
              this.#onPause(false);
            }
          },
        },
      });
      const result = { ...written, pauseMs };
      this.#logger.info({ ...result, ...sidecar }, 'sysprobe wrote a heap snapshot');
      return result;
    } catch (err) {
      this.#logger.warn({ err, ...sidecar }, 'sysprobe heap snapshot failed');
      throw err;
    } finally {
      this.#busy = false;
    }
  }
}

/** Heap figures from V8; available memory from the cgroup's limit when there is one, else the system's. */
export function readMemoryState(): MemoryState {
  const heap = v8.getHeapStatistics();
  return {
    heapUsed: heap.used_heap_size,
    heapLimit: heap.heap_size_limit,
    available: Math.min(os.freemem(), cgroupAvailable()),
  };
}

/** Where the memory cgroup is, found once (src/containers). */
let cgroup: CgroupReader | undefined;

/**
 * What the memory cgroup can still give (v1 or v2): its limit less its working set (usage less
 * the inactive file cache the kernel reclaims before any OOM kill), or less its usage when
 * memory.stat is unreadable; Infinity when unlimited, absent or unreadable.
 */
export function cgroupAvailable(reader: CgroupReader = (cgroup ??= new CgroupReader())): number {
  const where = reader.location.memory;
  const memory = where && readMemoryAt(where)?.memory;
  const used = memory?.workingSetBytes ?? memory?.usageBytes;
  return memory?.limitBytes !== undefined && used !== undefined ? Math.max(0, memory.limitBytes - used) : Infinity;
}
