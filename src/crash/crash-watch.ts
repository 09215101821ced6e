/**
 * The probe worker's part of surviving the worst: it keeps the run record (the last minutes
 * of samples, refreshed when it drains, at most once a minute) and watches each sample for
 * the process coming near its heap or memory limit. What to capture then is the worker's
 * call; this says when, and makes sure the record has the samples before anything else.
 */
import type { Sample } from '../samples/sample.js';
import type { CgroupWatch } from '../containers/cgroup-watch.js';
import { NearLimitWatch, type NearLimit } from './near-limit.js';
import { RunKeeper, type RunFacts } from './run-keeper.js';
import { processOldSpaceFlag } from './old-space-flag.js';

export class CrashWatch {
  readonly #keeper: RunKeeper;
  readonly #near = new NearLimitWatch({ oldSpaceFlag: processOldSpaceFlag() });
  readonly #cgroup: CgroupWatch | undefined;
  readonly #failed: (err: unknown) => void;
  #nearLimit: RunFacts['nearLimit'];
  #heapLimit: number | undefined;

  constructor(
    options: { dumpDir: string; service: string },
    cgroup: CgroupWatch | undefined,
    failed: (err: unknown) => void,
  ) {
    this.#keeper = new RunKeeper(options);
    this.#cgroup = cgroup;
    this.#failed = failed;
  }

  begin(): void {
    this.#keeper.begin(this.#facts()).catch(this.#failed);
  }

  /** The worker drained: persist if a minute has passed since the last write. */
  drained(samples: () => Sample[]): void {
    // Checked here first: most drains write nothing, and then make no promise either.
    if (!this.#keeper.due) return;
    this.#keeper.maybePersist(samples, this.#facts()).catch(this.#failed);
  }

  /** While memory is within the approach to a limit (80%), the worker drains every sample interval instead of every few seconds. */
  get approaching(): boolean {
    return this.#near.approaching;
  }

  /** Each new sample: a near-limit event when this one crosses into it. */
  observe(sample: Sample): NearLimit | undefined {
    const memory = sample.memory;
    if (memory) this.#heapLimit = memory.heapLimit;
    const cgroup = sample.cgroup?.memory;
    return this.#near.observe({
      time: sample.time,
      heapUsed: memory?.heapUsed,
      heapLimit: memory?.heapLimit,
      heapAfterGc: memory?.heapAfterGc,
      gcPauseShare: sample.gcRates?.pauseShare,
      cgroupWorkingSet: cgroup?.workingSetBytes ?? cgroup?.usageBytes,
      cgroupLimit: cgroup?.limitBytes,
    });
  }

  /** Near a limit: the samples go to disk now (what is not written now may never be). */
  persistNow(samples: Sample[], near: NearLimit, files: string[] = []): Promise<void> {
    this.#nearLimit = { at: near.at, reason: near.reason, files };
    return this.#keeper.persistNow(samples, this.#facts()).catch(this.#failed);
  }

  /** The worker stops: no write after this (the main thread removes the record). */
  end(): void {
    this.#keeper.end();
  }

  #facts(): RunFacts {
    const where = this.#cgroup?.memoryLocation;
    const memory = this.#cgroup?.latest?.memory;
    return {
      heapLimit: this.#heapLimit,
      cgroup: where && {
        memoryDir: where.dir,
        version: where.version,
        oomKills: memory?.oomKills,
        limitBytes: memory?.limitBytes,
      },
      nearLimit: this.#nearLimit,
    };
  }
}
