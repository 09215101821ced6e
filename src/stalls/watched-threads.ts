/**
 * The probe worker's half of the watched threads (the app worker's is stalls/watch-thread.ts):
 * it reads the process's thread table (stalls/thread-table.ts), runs one native watchdog per
 * registered thread's loop, and when one stalls, looks at that thread in /proc and takes its
 * JS stack while it is still stuck (a V8 interrupt, native/thread_stack.cc). The stall is
 * reported once the thread runs again, as the main thread's are.
 *
 * Between changes to the table it waits on the table's generation word: no timer, no wake-up.
 * A thread that ends is dropped when its watchdog says its loop is gone, and its slot freed.
 */
import { loadLoopWatch } from './loop-watch.js';
import { NativeStallWatch, type StallReport } from './stall-watch.js';
import { observeThread, type ThreadObservation } from './cause.js';
import { lateStallCapture, type StallCapture, type StallThread } from './stall.js';
import type { Frame } from '../captures/cpuprofile.js';
import type { LogLevel } from '../protocol.js';
import type { ThreadEntry, ThreadTable } from './thread-table.js';

/** A safety net only: a change wakes the wait at once (Atomics.notify). */
const TABLE_WAIT_MS = 60_000;

/** A watched thread's stall, once it is over. */
export interface WatchedStall {
  thread: StallThread;
  startedAt: number;
  durationMs: number;
  stack: Frame[] | undefined;
  capture: StallCapture;
  observations: ThreadObservation[];
}

/** A watched thread blocked now (for GET /health). */
export interface BlockedThread {
  thread: StallThread;
  forMs: number;
  stack: Promise<Frame[] | undefined>;
}

export interface WatchedThreadsHooks {
  /** The stall's stack, taken now: `stackHost` is the thread's id in native/thread_stack.cc (-1: none). */
  /** `tid`: the thread's kernel id (0: unknown), so that its waits for a CPU are not read as native code. */
  stallStack(stackHost: number, tid: number): Promise<{ stack: Frame[] | undefined; capture: StallCapture }>;
  /** A watched thread's stall is over. */
  stalled(stall: WatchedStall): void;
  log(level: LogLevel, msg: string, fields: Record<string, unknown>): void;
}

interface Watched {
  entry: ThreadEntry;
  thread: StallThread;
  watch: NativeStallWatch;
  /** The stall in progress. */
  stall?: { stack: Promise<{ stack: Frame[] | undefined; capture: StallCapture }>; observations: ThreadObservation[] };
}

export class WatchedThreads {
  readonly #table: ThreadTable;
  readonly #thresholdMs: number;
  readonly #hooks: WatchedThreadsHooks;
  /** By the registration's serial. */
  readonly #watched = new Map<number, Watched>();
  #stopped = false;

  constructor(table: ThreadTable, thresholdMs: number, hooks: WatchedThreadsHooks) {
    this.#table = table;
    this.#thresholdMs = thresholdMs;
    this.#hooks = hooks;
    void this.#follow();
  }

  /** The watched threads blocked now. */
  blocked(): BlockedThread[] {
    const blocked: BlockedThread[] = [];
    for (const w of this.#watched.values()) {
      if (w.stall)
        blocked.push({ thread: w.thread, forMs: w.watch.lagMs(), stack: w.stall.stack.then((s) => s.stack) });
    }
    return blocked;
  }

  stop(): void {
    this.#stopped = true;
    for (const serial of [...this.#watched.keys()]) this.#drop(serial);
    this.#table.poke(); // ends the wait below
  }

  async #follow(): Promise<void> {
    while (!this.#stopped) {
      const seen = this.#table.generation;
      try {
        this.#scan();
      } catch (err) {
        this.#hooks.log('error', 'sysprobe watched threads failed', { component: 'threads', err: String(err) });
      }
      await this.#table.changed(seen, TABLE_WAIT_MS);
    }
  }

  /** Starts watching new registrations, and stops watching the ones gone from the table. */
  #scan(): void {
    const live = new Set<number>();
    for (const entry of this.#table.entries()) {
      live.add(entry.serial);
      if (!this.#watched.has(entry.serial)) this.#add(entry);
    }
    for (const serial of [...this.#watched.keys()]) if (!live.has(serial)) this.#drop(serial);
  }

  #add(entry: ThreadEntry): void {
    const { addon, error } = loadLoopWatch();
    const thread: StallThread = { id: entry.threadId, name: entry.name };
    let watch: NativeStallWatch;
    try {
      if (!addon) throw new Error(error);
      watch = new NativeStallWatch(
        addon,
        entry.loopId,
        entry.thresholdMs || this.#thresholdMs,
        (report) => this.#onStall(entry.serial, report),
        // Out of the addon's callback before its watchdog is joined.
        () => setImmediate(() => this.#gone(entry.serial)),
      );
    } catch (err) {
      // Its loop is gone already (the thread ended while no probe watched it): free the slot.
      this.#table.release(entry.serial);
      this.#hooks.log('debug', 'sysprobe dropped a watched thread that had ended', {
        component: 'threads',
        thread,
        err: String(err),
      });
      return;
    }
    this.#watched.set(entry.serial, { entry, thread, watch });
    this.#hooks.log('debug', 'sysprobe watches a thread', { component: 'threads', thread });
  }

  #drop(serial: number): void {
    const watched = this.#watched.get(serial);
    if (!watched) return;
    this.#watched.delete(serial);
    watched.watch.stop();
  }

  /** The thread ended (its loop is gone): stop watching and free its slot. */
  #gone(serial: number): void {
    if (!this.#watched.has(serial)) return;
    this.#drop(serial);
    this.#table.release(serial);
  }

  #onStall(serial: number, report: StallReport): void {
    const watched = this.#watched.get(serial);
    if (!watched) return;
    if (!report.ended) {
      const { tid, stackHost } = watched.entry;
      // What the thread is doing in the kernel, then its JS stack while it is still stuck.
      const observation = tid ? observeThread(tid) : undefined;
      watched.stall = {
        observations: observation ? [observation] : [],
        stack: this.#hooks.stallStack(stackHost || -1, tid),
      };
      return;
    }
    // A late stall had no start: its stack was never asked for.
    const stall =
      watched.stall ??
      (report.late
        ? { observations: [], stack: Promise.resolve({ stack: undefined, capture: lateStallCapture() }) }
        : undefined);
    watched.stall = undefined;
    if (!stall) return;
    void stall.stack.then(({ stack, capture }) =>
      this.#hooks.stalled({
        thread: watched.thread,
        startedAt: report.startedAt,
        durationMs: report.durationMs,
        stack,
        capture,
        observations: stall.observations,
      }),
    );
  }
}
