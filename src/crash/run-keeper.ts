/**
 * Keeps this process's run record (run-record.ts) in the dump directory: written at
 * start, rewritten with the last minutes of samples at most once per `minIntervalMs`
 * (the worker calls `maybePersist` when it drains, so it adds no wake-up of its own),
 * at once when the process comes near a limit, and removed at stop().
 *
 * Cost: one small write a minute (a few hundred KB at most: 5 minutes of samples at 1 s),
 * measured in docs/containers.md. Failures are reported to the caller, never thrown at it.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Sample } from '../samples/sample.js';
import { writeFileAtomically } from '../internal/files.js';
import {
  exitFileName,
  identify,
  RECORD_VERSION,
  recordFileName,
  RUNS_DIR,
  type ExitNote,
  type ProcessIdentity,
  type RunRecord,
} from './run-record.js';

export interface RunKeeperOptions {
  dumpDir: string;
  service: string;
  /** At most one periodic write per this long, ms. Default 60 s. */
  minIntervalMs?: number;
  /** How far back the persisted samples go, ms. Default 5 minutes. */
  windowMs?: number;
  /** And at most this many. Default 600. */
  maxSamples?: number;
  now?: () => number;
}

/** What the record says besides the samples; the caller refreshes it at each write. */
export type RunFacts = Pick<RunRecord, 'heapLimit' | 'cgroup' | 'nearLimit'>;

export class RunKeeper {
  readonly file: string;
  readonly identity: ProcessIdentity;
  readonly #options: Required<Omit<RunKeeperOptions, 'now'>> & { now: () => number };
  readonly #startedAt: number;
  #lastWriteAt = -Infinity;
  #queue: Promise<void> = Promise.resolve();
  #ended = false;

  constructor(options: RunKeeperOptions, identity: ProcessIdentity = identify()) {
    this.#options = { minIntervalMs: 60_000, windowMs: 5 * 60_000, maxSamples: 600, now: Date.now, ...options };
    this.identity = identity;
    this.file = path.join(options.dumpDir, RUNS_DIR, recordFileName(identity));
    this.#startedAt = this.#options.now();
  }

  /** Writes the first record (no samples yet). */
  async begin(facts: RunFacts): Promise<void> {
    await this.#write([], facts);
  }

  /** Whether the last write is `minIntervalMs` old (a periodic write is due). */
  get due(): boolean {
    return this.#options.now() - this.#lastWriteAt >= this.#options.minIntervalMs;
  }

  /** Writes the record if the last write is `minIntervalMs` old; true when it wrote. */
  async maybePersist(samples: () => Sample[], facts: RunFacts): Promise<boolean> {
    if (!this.due) return false;
    await this.#write(samples(), facts);
    return true;
  }

  /** Writes the record now (near a limit: what is not written now may never be). */
  async persistNow(samples: Sample[], facts: RunFacts): Promise<void> {
    await this.#write(samples, facts);
  }

  /** Removes the record: the process stopped as it should. Synchronous, so it also runs from an exit path. */
  end(): void {
    this.#ended = true;
    for (const file of [this.file, path.join(path.dirname(this.file), exitFileName(this.identity))]) {
      try {
        fs.rmSync(file, { force: true });
      } catch {
        // Nothing to do about it; the next start would report a run that did stop, with its exit note if any.
      }
    }
  }

  /** Writes run one at a time, in call order (they share the `.partial` name). */
  #write(samples: Sample[], facts: RunFacts): Promise<void> {
    this.#lastWriteAt = this.#options.now();
    const run = this.#queue.then(() => this.#writeNow(samples, facts));
    this.#queue = run.catch(() => undefined);
    return run;
  }

  async #writeNow(samples: Sample[], facts: RunFacts): Promise<void> {
    if (this.#ended) return;
    const now = this.#options.now();
    const since = now - this.#options.windowMs;
    const kept = samples.filter((s) => s.time >= since).slice(-this.#options.maxSamples);
    const record: RunRecord = {
      version: RECORD_VERSION,
      service: this.#options.service,
      process: this.identity,
      startedAt: this.#startedAt,
      updatedAt: now,
      ...definedOnly(facts),
      samples: kept,
    };
    // The directory may be gone (the dump directory cleaned by hand) or not made yet (a write before begin's).
    await fs.promises.mkdir(path.dirname(this.file), { recursive: true, mode: 0o700 });
    await writeFileAtomically(this.file, JSON.stringify(record));
    // stop() may have removed the record while this write was in flight: remove what it put back.
    if (this.#ended) this.end();
  }
}

function definedOnly<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/**
 * Notes beside the record that the process is exiting with a non-zero code without stop()
 * (process.exit(1), an uncaught exception): the 'exit' event runs no async work, so this
 * is one small synchronous write, and only on that path.
 */
export function writeExitNote(dumpDir: string, identity: ProcessIdentity, code: number, now = Date.now()): void {
  const note: ExitNote = { code, at: now };
  try {
    const fd = fs.openSync(
      path.join(dumpDir, RUNS_DIR, exitFileName(identity)),
      fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_TRUNC | fs.constants.O_NOFOLLOW,
      0o600,
    );
    try {
      fs.writeSync(fd, JSON.stringify(note));
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    // The process is exiting; the record alone still says it did not stop.
  }
}
