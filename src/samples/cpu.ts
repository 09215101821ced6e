import * as fs from 'node:fs';
import * as os from 'node:os';
import type { MainSample, ThreadCpu } from './sample.js';
import { parseTaskStat, threadRole } from './proc.js';

/** Reading more threads than this is a sign of something else going wrong; the rest are skipped. */
const MAX_THREADS = 512;
/** A stat line is ~300 bytes; a bigger read means it is not what we expect. */
const STAT_READ_BYTES = 1024;

/** Process CPU since process start: process-wide, so either thread may read it. */
export function readProcessCpu(): NonNullable<MainSample['cpu']> {
  const { user, system } = process.cpuUsage();
  return { userMs: user / 1000, systemMs: system / 1000 };
}

/** The system's load average; ~90 µs cold here, so the worker reads it, not the main thread. */
export function readLoadAverage(): [number, number, number] {
  const [one = 0, five = 0, fifteen = 0] = os.loadavg();
  return [one, five, fifteen];
}

/**
 * CPU per thread from /proc/self/task (Linux). `supported` is false elsewhere.
 *
 * Each thread's stat file stays open and is read again from offset 0: the worker reads these once a drain, cold,
 * and an open and a close per thread were most of it. The worker's descriptors close when it ends (Node tracks
 * the ones fs.openSync opened in a worker); a thread that ended has its own closed at the next sample.
 */
export class ThreadCpuSampler {
  readonly supported: boolean;
  readonly #taskDir: string;
  readonly #mainTid: number;
  readonly #workerTid: number | undefined;
  readonly #buffer = Buffer.alloc(STAT_READ_BYTES);
  /** Open stat files by tid (the directory entry's name). */
  #files = new Map<string, number>();
  #last = new Map<number, { userMs: number; systemMs: number }>();
  #lastTime = performance.now();

  constructor(mainTid: number, workerTid: number | undefined, taskDir = '/proc/self/task') {
    this.#taskDir = taskDir;
    this.#mainTid = mainTid;
    this.#workerTid = workerTid;
    this.supported = process.platform === 'linux' && fs.existsSync(taskDir);
  }

  sample(): ThreadCpu[] {
    if (!this.supported) return [];
    const now = performance.now();
    const elapsedMs = Math.max(1, now - this.#lastTime);
    const next = new Map<number, { userMs: number; systemMs: number }>();
    const files = new Map<string, number>();
    const threads: ThreadCpu[] = [];
    const tids = fs
      .readdirSync(this.#taskDir)
      .sort((a, b) => Number(a) - Number(b))
      .slice(0, MAX_THREADS);
    for (const entry of tids) {
      const text = this.#read(entry, files);
      const stat = text === undefined ? undefined : parseTaskStat(text);
      if (stat === undefined) continue;
      next.set(stat.tid, { userMs: stat.userMs, systemMs: stat.systemMs });
      const before = this.#last.get(stat.tid);
      const busyMs = before ? stat.userMs - before.userMs + (stat.systemMs - before.systemMs) : 0;
      threads.push({
        tid: stat.tid,
        name: stat.comm,
        role: threadRole(stat.tid, stat.comm, this.#mainTid, this.#workerTid),
        userMs: stat.userMs,
        systemMs: stat.systemMs,
        utilization: Math.max(0, busyMs / elapsedMs),
      });
    }
    for (const fd of this.#files.values()) closeQuietly(fd); // threads that ended
    this.#files = files;
    this.#last = next;
    this.#lastTime = now;
    return threads;
  }

  /**
   * One thread's stat, from its open file if it has one (moved into `files`), else opened now. A file whose thread
   * ended fails to read (a new thread that reuses the id has a new file): it is opened again once.
   */
  #read(entry: string, files: Map<string, number>): string | undefined {
    const kept = this.#files.get(entry);
    this.#files.delete(entry);
    for (const reuse of kept === undefined ? [false] : [true, false]) {
      let fd: number | undefined;
      try {
        fd = reuse ? kept! : fs.openSync(`${this.#taskDir}/${entry}/stat`, 'r');
        const n = fs.readSync(fd, this.#buffer, 0, this.#buffer.length, 0);
        if (n === 0) throw new Error('empty stat');
        files.set(entry, fd);
        return this.#buffer.toString('latin1', 0, n);
      } catch {
        if (fd !== undefined) closeQuietly(fd); // the thread exited between readdir and read: not an error
      }
    }
    return undefined;
  }
}

function closeQuietly(fd: number): void {
  try {
    fs.closeSync(fd);
  } catch {
    // Already closed: nothing to do.
  }
}
