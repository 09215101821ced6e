/**
 * At start: the run records in the dump directory of processes of this service, on this
 * host, that are gone without having stopped (run-record.ts). For each, what can be known
 * of how it ended, most certain first:
 *
 * - `oom-kill`: its memory cgroup's OOM-kill count is higher than the record last saw;
 * - `heap-out-of-memory`: Node wrote a diagnostic report for it at a fatal error, saying
 *   the JavaScript heap ran out (sysprobe turns `process.report.reportOnFatalError` on,
 *   into the dump directory, when the app has not configured reports itself);
 * - `exit-code`: it exited with a non-zero code without stop() (its exit note);
 * - `machine-restart`: the boot id changed;
 * - `unknown`: SIGKILL from outside, or a kill nothing counted.
 *
 * Plus the evidence the record holds: the last samples, a near-limit warning with the
 * files written then, and the captures the process wrote. Nothing here throws: a record
 * that cannot be read is skipped with a problem.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { readMemoryAt } from '../containers/cgroup-reader.js';
import { readBoundedFile } from '../internal/files.js';
import {
  asRunRecord,
  exitFileName,
  RECORD_NAME,
  RUNS_DIR,
  stillRunning,
  type ExitNote,
  type ProcessIdentity,
  type RunRecord,
} from './run-record.js';

/** Node's report file names: report.<YYYYMMDD>.<HHMMSS>.<pid>.<thread>.<seq>.json. */
const REPORT_NAME = /^report\.\d{8}\.\d{6}\.(\d+)\.\d+\.\d+\.json$/;
/** sysprobe's capture names end in `-<stamp>-<pid>[-<seq>]<extension>` (sink/file-sink.ts). */
const CAPTURE_PID = /-(\d{4}-\d\d-\d\dT\d{6}\.\d{3}Z)-(\d+)(?:-\d+)?(?:\.[a-z0-9]+)+$/i;
const MAX_RECORDS = 20;
const MAX_RECORD_BYTES = 16 << 20;
const MAX_REPORT_BYTES = 32 << 20;
const MAX_FILES_LISTED = 50;

export type EndCause = 'oom-kill' | 'heap-out-of-memory' | 'exit-code' | 'machine-restart' | 'unknown';

/** A Node diagnostic report of the dead process. */
export interface ReportFact {
  file: string;
  /** `header.event`, e.g. "Allocation failed - JavaScript heap out of memory". */
  event?: string;
  /** `header.trigger`, e.g. "OOMError", "FatalError", "API". */
  trigger?: string;
  heapUsed?: number;
  heapLimit?: number;
}

export interface PreviousRun {
  record: RunRecord;
  /** The record's path. */
  recordFile: string;
  exitNote?: ExitNote;
  cause: EndCause;
  /** One sentence per thing known about the end. */
  evidence: string[];
  reports: ReportFact[];
  /** Capture files in the dump directory the process wrote (names), oldest first. */
  files: string[];
}

export interface FindOptions {
  dumpDir: string;
  service: string;
  /** This process: its own record is not a previous run. */
  self: ProcessIdentity;
  procRoot?: string;
}

/** The records of dead runs of this service on this host, oldest first, and what could not be read. */
export async function findPreviousRuns(options: FindOptions): Promise<{ runs: PreviousRun[]; problems: string[] }> {
  const problems: string[] = [];
  const runsDir = path.join(options.dumpDir, RUNS_DIR);
  const names = (await fs.promises.readdir(runsDir).catch(() => [] as string[]))
    .filter((n) => RECORD_NAME.test(n))
    .sort()
    .slice(0, MAX_RECORDS);
  if (names.length === 0) return { runs: [], problems };
  const dumpFiles = await fs.promises.readdir(options.dumpDir).catch(() => [] as string[]);
  const runs: PreviousRun[] = [];
  for (const name of names) {
    const file = path.join(runsDir, name);
    const record = await readRecord(file, problems);
    if (!record || record.service !== options.service || record.process.hostname !== options.self.hostname) continue;
    const p = record.process;
    if (p.pid === options.self.pid && p.procStart === options.self.procStart && p.bootId === options.self.bootId)
      continue;
    if (stillRunning(p, options.procRoot)) continue;
    runs.push(await explain(record, file, dumpFiles, options, problems));
  }
  return { runs: runs.sort((a, b) => a.record.startedAt - b.record.startedAt), problems };
}

async function readRecord(file: string, problems: string[]): Promise<RunRecord | undefined> {
  try {
    const record = asRunRecord(JSON.parse(await readBoundedFile(file, MAX_RECORD_BYTES)));
    if (!record) problems.push(`${path.basename(file)}: not a run record`);
    return record;
  } catch (err) {
    const { code } = err as NodeJS.ErrnoException;
    problems.push(
      `${path.basename(file)}: ${code === 'EFBIG' ? `larger than ${MAX_RECORD_BYTES} bytes` : (code ?? (err as Error).message)}`,
    );
    return undefined;
  }
}

/** Parsed JSON, or undefined when the file is too big; throws when it is missing, not a regular file, or a link. */
async function readJsonBounded(file: string, maxBytes: number): Promise<unknown> {
  let text: string;
  try {
    text = await readBoundedFile(file, maxBytes);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EFBIG') return undefined;
    throw err;
  }
  return JSON.parse(text);
}

async function explain(
  record: RunRecord,
  recordFile: string,
  dumpFiles: string[],
  options: FindOptions,
  problems: string[],
): Promise<PreviousRun> {
  const evidence: string[] = [];
  const p = record.process;
  const run: PreviousRun = { record, recordFile, cause: 'unknown', evidence, reports: [], files: [] };
  const causes = new Set<EndCause>();

  // The kernel's OOM killer: the cgroup counts its kills.
  const cgroup = record.cgroup;
  if (cgroup) {
    const now = readMemoryAt({ version: cgroup.version, dir: cgroup.memoryDir });
    if (!now) {
      evidence.push(
        `its memory cgroup ${cgroup.memoryDir} is gone (a new container?), so an OOM kill there cannot be checked`,
      );
    } else if (
      now.memory.oomKills !== undefined &&
      cgroup.oomKills !== undefined &&
      now.memory.oomKills > cgroup.oomKills
    ) {
      causes.add('oom-kill');
      evidence.push(
        `the kernel's OOM killer struck its memory cgroup ${cgroup.memoryDir}: oom_kill went from ${cgroup.oomKills} to ${now.memory.oomKills}` +
          (cgroup.limitBytes !== undefined ? ` (limit ${cgroup.limitBytes} bytes)` : ''),
      );
    }
  }

  // Node's diagnostic reports for that pid, written after it started.
  for (const name of dumpFiles) {
    const match = REPORT_NAME.exec(name);
    if (!match || Number(match[1]) !== p.pid) continue;
    const file = path.join(options.dumpDir, name);
    try {
      const report = (await readJsonBounded(file, MAX_REPORT_BYTES)) as
        { header?: Record<string, unknown>; javascriptHeap?: Record<string, unknown> } | undefined;
      const header = report?.header;
      if (!header || header.processId !== p.pid) continue;
      const fact: ReportFact = { file };
      if (typeof header.event === 'string') fact.event = header.event;
      if (typeof header.trigger === 'string') fact.trigger = header.trigger;
      const heap = report.javascriptHeap;
      if (typeof heap?.usedMemory === 'number') fact.heapUsed = heap.usedMemory;
      if (typeof heap?.memoryLimit === 'number') fact.heapLimit = heap.memoryLimit;
      run.reports.push(fact);
      if (/heap out of memory/i.test(fact.event ?? '') || fact.trigger === 'OOMError') {
        causes.add('heap-out-of-memory');
        evidence.push(
          `V8 ran out of heap: Node's fatal-error report ${name} says "${fact.event}"` +
            (fact.heapUsed !== undefined && fact.heapLimit !== undefined
              ? ` (${fact.heapUsed} of ${fact.heapLimit} bytes used)`
              : ''),
        );
      } else if (fact.trigger !== undefined && fact.trigger !== 'API' && fact.trigger !== 'GetReport') {
        evidence.push(`Node wrote a diagnostic report ${name} at a fatal error: ${fact.trigger}: ${fact.event ?? ''}`);
      }
    } catch (err) {
      problems.push(`${name}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  }

  try {
    const note = (await readJsonBounded(path.join(path.dirname(recordFile), exitFileName(p)), 4096)) as
      ExitNote | undefined;
    if (note && Number.isInteger(note.code) && typeof note.at === 'number') {
      run.exitNote = note;
      causes.add('exit-code');
      evidence.push(
        `it exited with code ${note.code} at ${new Date(note.at).toISOString()} without stop() (process.exit or an uncaught exception)`,
      );
    }
  } catch {
    // No note: it did not reach its 'exit' event.
  }

  if (p.bootId !== undefined && options.self.bootId !== undefined && p.bootId !== options.self.bootId) {
    causes.add('machine-restart');
    evidence.push('the machine restarted since (the boot id changed)');
  }

  if (record.nearLimit) {
    evidence.push(
      `it came near its limit at ${new Date(record.nearLimit.at).toISOString()}: ${record.nearLimit.reason}`,
    );
  }
  const last = record.samples.at(-1);
  if (last?.memory) {
    const share = last.memory.heapUsed / last.memory.heapLimit;
    evidence.push(
      `its last persisted sample (${new Date(last.time).toISOString()}): heap ${last.memory.heapUsed} of ${last.memory.heapLimit} bytes (${Math.round(share * 100)}%)` +
        (last.cgroup?.memory?.usageRatio !== undefined
          ? `, cgroup memory at ${Math.round(last.cgroup.memory.usageRatio * 100)}% of its limit`
          : ''),
    );
  }
  evidence.push(`it was last known alive at ${new Date(record.updatedAt).toISOString()}`);

  run.cause =
    (['oom-kill', 'heap-out-of-memory', 'exit-code', 'machine-restart'] as const).find((c) => causes.has(c)) ??
    'unknown';
  if (run.cause === 'unknown')
    evidence.push(
      'nothing says how it ended: SIGKILL from outside, a kill no cgroup counted, or a crash without a report',
    );

  // Captures it wrote: named with its pid, stamped after it started (a reused pid's are older).
  const startedStamp = stampOf(record.startedAt - 1000);
  run.files = dumpFiles
    .filter((name) => {
      const match = CAPTURE_PID.exec(name);
      return match !== null && Number(match[2]) === p.pid && match[1]! >= startedStamp;
    })
    .sort()
    .slice(-MAX_FILES_LISTED);
  return run;
}

/** The sink's file-name stamp (ISO time without colons) of a time, for comparing names as strings. */
function stampOf(ms: number): string {
  return new Date(ms).toISOString().replace(/:/g, '');
}

/**
 * Done with a previous run: its record, exit note and fatal-error reports move into `intoDir`
 * (an incident's folder), or are removed when there is none, so it is reported once.
 */
export async function settlePreviousRun(run: PreviousRun, intoDir: string | undefined): Promise<void> {
  const files = [
    run.recordFile,
    path.join(path.dirname(run.recordFile), exitFileName(run.record.process)),
    ...run.reports.map((r) => r.file),
  ];
  for (const file of files) {
    try {
      if (intoDir) await fs.promises.rename(file, path.join(intoDir, path.basename(file)));
      else await fs.promises.rm(file, { force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
      await fs.promises.rm(file, { force: true }).catch(() => undefined);
    }
  }
}
