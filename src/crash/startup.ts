/**
 * The main thread's part of surviving the worst, run by start() and stop():
 *
 * - Node writes a diagnostic report into the dump directory if the process dies of a
 *   fatal error (V8 out of memory), unless the app configured reports itself.
 * - An exit without stop() is told apart from a death: exit code 0 removes the run
 *   record, any other code notes it beside the record (one small synchronous write).
 * - The runs of this service that did not stop (previous-runs.ts) each open an incident
 *   "previous process did not stop": its evidence (previous-run.json), the samples it had
 *   persisted (previous-samples.json), its fatal-error report and the captures it wrote.
 * - stop() removes the record: this process stopped as it should.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describeError } from '../errors.js';
import type { Logger } from '../internal/logger.js';
import { writeFileAtomically } from '../internal/files.js';
import type { IncidentCapture, IncidentTrigger } from '../incidents/recorder.js';
import { reportFatalErrorsInto } from './diagnostic-report.js';
import { findPreviousRuns, settlePreviousRun, type PreviousRun } from './previous-runs.js';
import { writeExitNote } from './run-keeper.js';
import { identify, recordFileName, RUNS_DIR, type ProcessIdentity } from './run-record.js';

/** The rule name an incident for a dead previous run carries. */
export const PREVIOUS_RUN_RULE = 'previous-run';
export const PREVIOUS_RUN_FILE = 'previous-run.json';
export const PREVIOUS_SAMPLES_FILE = 'previous-samples.json';

export interface CrashEvidenceDeps {
  dumpDir: string;
  service: string;
  logger: Logger;
  /** Opens (or joins) an incident with files `write` puts in its folder; absent when incidents are off. */
  incident?: (trigger: IncidentTrigger, write: (dir: string) => Promise<IncidentCapture[]>) => void;
  /** Tells the app (the 'previousRun' event). */
  emit: (run: PreviousRunEvent) => void;
}

/** The `'previousRun'` event: an earlier process of this service on this host did not stop. */
export interface PreviousRunEvent {
  pid: number;
  startedAt: number;
  /** When it was last known alive (its record's last write). */
  lastSeenAt: number;
  cause: PreviousRun['cause'];
  evidence: string[];
  /** Files it left in the dump directory (its captures, its fatal-error report). */
  files: string[];
}

export class CrashEvidence {
  readonly #deps: CrashEvidenceDeps;
  readonly #identity: ProcessIdentity = identify();
  #undoReports: () => void = () => undefined;
  readonly #onExit = (code: number): void => {
    if (code === 0) this.#removeRecord();
    else writeExitNote(this.#deps.dumpDir, this.#identity, code);
  };

  constructor(deps: CrashEvidenceDeps) {
    this.#deps = deps;
  }

  /** Turns on fatal-error reports and the exit note, then looks for dead runs (resolves when they are reported). */
  async start(): Promise<void> {
    this.#undoReports = reportFatalErrorsInto(this.#deps.dumpDir);
    process.on('exit', this.#onExit);
    try {
      const { runs, problems } = await findPreviousRuns({
        dumpDir: this.#deps.dumpDir,
        service: this.#deps.service,
        self: this.#identity,
      });
      for (const problem of problems)
        this.#deps.logger.debug({ component: 'crash', problem }, 'sysprobe skipped a run record');
      for (const run of runs) this.#report(run);
    } catch (err) {
      this.#deps.logger.warn(
        { component: 'crash', err: describeError(err) },
        'sysprobe could not look for previous runs',
      );
    }
  }

  stop(): void {
    this.#undoReports();
    process.removeListener('exit', this.#onExit);
    this.#removeRecord();
  }

  #report(run: PreviousRun): void {
    const { record } = run;
    const files = [...run.files, ...run.reports.map((r) => path.basename(r.file))];
    this.#deps.logger.error(
      {
        component: 'crash',
        pid: record.process.pid,
        startedAt: record.startedAt,
        lastSeenAt: record.updatedAt,
        cause: run.cause,
        evidence: run.evidence,
        files,
      },
      'sysprobe: the previous process did not stop',
    );
    this.#deps.emit({
      pid: record.process.pid,
      startedAt: record.startedAt,
      lastSeenAt: record.updatedAt,
      cause: run.cause,
      evidence: run.evidence,
      files,
    });
    if (!this.#deps.incident) {
      void settlePreviousRun(run, undefined);
      return;
    }
    const trigger: IncidentTrigger = {
      kind: 'previous-run',
      rule: PREVIOUS_RUN_RULE,
      value: `previousRun.${run.cause}`,
      observed: 1,
      threshold: 0,
      at: record.updatedAt,
    };
    this.#deps.incident(trigger, (dir) => this.#writeInto(dir, run));
  }

  /** The previous run's evidence into an incident folder; its record and reports move there, so it is reported once. */
  async #writeInto(dir: string, run: PreviousRun): Promise<IncidentCapture[]> {
    const { record } = run;
    const captures: IncidentCapture[] = [];
    const write = async (kind: string, name: string, body: unknown) => {
      const text = JSON.stringify(body, null, 1);
      await writeFileAtomically(path.join(dir, name), text);
      captures.push({ kind, file: name, bytes: Buffer.byteLength(text) });
    };
    const { samples, ...facts } = record;
    await write('previous-run', PREVIOUS_RUN_FILE, {
      summary: 'the previous process did not stop',
      cause: run.cause,
      evidence: run.evidence,
      ...facts,
      exitNote: run.exitNote,
      reports: run.reports.map((r) => ({ ...r, file: path.basename(r.file) })),
      files: run.files,
    });
    await write('previous-samples', PREVIOUS_SAMPLES_FILE, samples);
    // Its captures stay in dumpDir under the sink's rotation; the incident holds hard links.
    for (const name of run.files) {
      try {
        await fs.promises.link(path.join(this.#deps.dumpDir, name), path.join(dir, name));
        captures.push({
          kind: 'previous-run-capture',
          file: name,
          bytes: (await fs.promises.stat(path.join(dir, name))).size,
        });
      } catch {
        // Rotated away meanwhile, or another file system: named in previous-run.json still.
      }
    }
    await settlePreviousRun(run, dir);
    for (const report of run.reports) {
      const name = path.basename(report.file);
      const size = await fs.promises.stat(path.join(dir, name)).then(
        (s) => s.size,
        () => undefined,
      );
      if (size !== undefined) captures.push({ kind: 'fatal-error-report', file: name, bytes: size });
    }
    return captures;
  }

  #removeRecord(): void {
    try {
      fs.rmSync(path.join(this.#deps.dumpDir, RUNS_DIR, recordFileName(this.#identity)), { force: true });
    } catch {
      // Left behind, it would report a run that did stop; nothing more can be done on the way out.
    }
  }
}
