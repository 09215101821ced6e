/**
 * The probe worker's view of its cgroup: the latest reading (refreshed each time the worker
 * drains a new reading), the values a sample carries, and the throttled time
 * across a stall (cpu.stat read when the stall is seen and when it ends).
 */
import { CgroupReader, type CgroupReading } from './cgroup-reader.js';
import type { CgroupCpu } from './cgroup-parse.js';
import { cgroupValues, throttledBetween, type CgroupValues } from './cgroup-values.js';

/** Distinct problems logged per watch: a file that stays malformed is named once, not every 10 s. */
const MAX_PROBLEMS_LOGGED = 20;

export class CgroupWatch {
  readonly #reader: CgroupReader;
  readonly #log: (problem: string) => void;
  readonly #logged = new Set<string>();
  #previous: CgroupReading | undefined;
  #current: CgroupReading | undefined;
  #stallStart: Promise<CgroupCpu | undefined> | undefined;

  /** `log` is told of each distinct problem once (unreadable files, no cgroup). */
  constructor(log: (problem: string) => void, reader = new CgroupReader()) {
    this.#reader = reader;
    this.#log = log;
    for (const problem of reader.location.problems) this.#note(problem);
  }

  get supported(): boolean {
    return this.#reader.supported;
  }

  /** The memory cgroup's directory and version, for the run record (crash evidence). */
  get memoryLocation(): { dir: string; version: 1 | 2 } | undefined {
    return this.#reader.location.memory;
  }

  get latest(): CgroupReading | undefined {
    return this.#current;
  }

  /**
   * Reads the cgroup now (synchronously: a few small pseudo-files, the limits only once a minute; see
   * CgroupReader); its result serves the samples after it. The promise is settled already: it is kept
   * for callers that chain on it.
   */
  refresh(): Promise<void> {
    if (!this.supported) return Promise.resolve();
    try {
      const reading = this.#reader.readSync();
      this.#previous = this.#current;
      this.#current = reading;
      for (const problem of reading.problems ?? []) this.#note(problem);
      return Promise.resolve();
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
  }

  /** The values for a sample: the latest reading, with rates since the one before. */
  values(): CgroupValues | undefined {
    return this.#current && cgroupValues(this.#current, this.#previous);
  }

  /** The CPU quota in CPUs, as last read; undefined without one. */
  get quotaCores(): number | undefined {
    return this.#current?.cpu?.quotaCores;
  }

  /** A stall began: read the throttled time now. */
  stallStarted(): void {
    this.#stallStart = this.supported ? this.#reader.readCpu().catch(() => undefined) : undefined;
  }

  /** A stall ended: how long the cgroup was throttled during it, ms (undefined without a CPU controller). */
  async stallEnded(): Promise<number | undefined> {
    const start = this.#stallStart;
    this.#stallStart = undefined;
    if (!start) return undefined;
    const [before, after] = await Promise.all([start, this.#reader.readCpu().catch(() => undefined)]);
    return throttledBetween(before, after);
  }

  #note(problem: string): void {
    if (this.#logged.has(problem) || this.#logged.size >= MAX_PROBLEMS_LOGGED) return;
    this.#logged.add(problem);
    this.#log(problem);
  }
}
