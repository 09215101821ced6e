/**
 * The library door to heap analysis. By default the work runs in a child process with
 * its own memory limit and a timeout, so analysing a large snapshot never grows or
 * stalls the service's own heap; `{ inProcess: true }` runs it in the caller.
 */
import { fork } from 'node:child_process';
import * as path from 'node:path';
import { SysprobeError, ErrorCode, errorFromReply } from '../errors.js';
import { checkInteger, checkKnownKeys, checkPlainObject, describe, invalid } from '../internal/check-options.js';
import { diff, summarize, type HeapDiff, type HeapSummary } from './analysis.js';
import type { RunnerReply, RunnerRequest } from './runner.js';

/** Options of {@link summarizeHeapSnapshot} and {@link diffHeapSnapshots}. */
export interface HeapAnalysisOptions {
  /** How many classes, retainers and leak groups to list. Default 50. */
  top?: number;
  /** Run in this process instead of a child process. Default false. */
  inProcess?: boolean;
  /**
   * A diff reads its last file on a worker thread, on a second core, while it analyses the first
   * ones (about 1.2× faster on two cores, about 1.3× the peak memory). Default: when free memory
   * is at least the files' total size. True always, false never (one core).
   */
  parallel?: boolean;
  /** The child's `--max-old-space-size`, in MB (256 to 65536). Default 4096. The typed arrays live outside it, about 0.7× the file size. */
  maxMemoryMb?: number;
  /** Kill the child and reject with `SYSPROBE_ERR_TIMEOUT` after this many ms (1000 to 3600000). Default 600000. */
  timeoutMs?: number;
  /** Called as each file is read. */
  onProgress?: (progress: HeapAnalysisProgress) => void;
}

export interface HeapAnalysisProgress {
  file: string;
  fileIndex: number;
  bytesRead: number;
  totalBytes: number;
}

interface Resolved {
  top: number;
  inProcess: boolean;
  parallel: boolean | undefined;
  maxMemoryMb: number;
  timeoutMs: number;
  onProgress: ((p: HeapAnalysisProgress) => void) | undefined;
}

function resolve(input: HeapAnalysisOptions): Resolved {
  const given = checkPlainObject('(heap analysis options)', input);
  checkKnownKeys('', given, ['top', 'inProcess', 'parallel', 'maxMemoryMb', 'timeoutMs', 'onProgress']);
  const options = given as HeapAnalysisOptions;
  const { inProcess = false, parallel, onProgress } = options;
  if (typeof inProcess !== 'boolean')
    throw invalid(`Option inProcess must be true or false; got ${describe(inProcess)}.`);
  if (parallel !== undefined && typeof parallel !== 'boolean')
    throw invalid(`Option parallel must be true or false; got ${describe(parallel)}.`);
  if (onProgress !== undefined && typeof onProgress !== 'function')
    throw invalid(`Option onProgress must be a function; got ${describe(onProgress)}.`);
  return Object.freeze({
    top: checkInteger('top', options.top, 1, 10_000, 50),
    inProcess,
    parallel,
    maxMemoryMb: checkInteger('maxMemoryMb', options.maxMemoryMb, 256, 65_536, 4096),
    timeoutMs: checkInteger('timeoutMs', options.timeoutMs, 1000, 3_600_000, 600_000),
    onProgress,
  });
}

function checkFiles(files: unknown, min: number, max: number): string[] {
  if (
    !Array.isArray(files) ||
    files.length < min ||
    files.length > max ||
    !files.every((f) => typeof f === 'string' && f.length > 0)
  ) {
    throw invalid(
      min === max
        ? 'expected one snapshot file path'
        : `expected ${min} to ${max} snapshot file paths (baseline, target[, final])`,
    );
  }
  return files.map((f: string) => path.resolve(f));
}

/** Totals by constructor, the largest retainers and their retainer paths for one `.heapsnapshot` file. */
export async function summarizeHeapSnapshot(file: string, options: HeapAnalysisOptions = {}): Promise<HeapSummary> {
  const o = resolve(options);
  const [f] = checkFiles([file], 1, 1);
  const progress = o.onProgress
    ? (i: number, r: number, t: number) => o.onProgress!({ file: f!, fileIndex: i, bytesRead: r, totalBytes: t })
    : undefined;
  if (o.inProcess) return summarize(f!, { top: o.top, ...(progress ? { onProgress: progress } : {}) });
  return runInChild({ kind: 'summary', files: [f!], top: o.top }, o) as Promise<HeapSummary>;
}

/**
 * Two files: per-constructor deltas and new objects. Three (baseline, target, final):
 * also leak candidates, ranked by retained size, each with its retainer path.
 */
export async function diffHeapSnapshots(files: string[], options: HeapAnalysisOptions = {}): Promise<HeapDiff> {
  const o = resolve(options);
  const fs = checkFiles(files, 2, 3);
  const progress = o.onProgress
    ? (i: number, r: number, t: number) => o.onProgress!({ file: fs[i]!, fileIndex: i, bytesRead: r, totalBytes: t })
    : undefined;
  if (o.inProcess) return diff(fs, { top: o.top, parallel: o.parallel, ...(progress ? { onProgress: progress } : {}) });
  return runInChild({ kind: 'diff', files: fs, top: o.top, parallel: o.parallel }, o) as Promise<HeapDiff>;
}

function runInChild(request: RunnerRequest, o: Resolved): Promise<HeapSummary | HeapDiff> {
  return new Promise((resolvePromise, reject) => {
    const child = fork(path.join(__dirname, 'runner.js'), [], {
      execArgv: [`--max-old-space-size=${o.maxMemoryMb}`],
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
      serialization: 'advanced',
    });
    let stderr = '';
    child.stderr?.setEncoding('utf8').on('data', (d: string) => {
      if (stderr.length < 4096) stderr += d;
    });
    let settled = false;
    const finish = (err: Error | undefined, value?: HeapSummary | HeapDiff): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      if (err) reject(err);
      else resolvePromise(value!);
    };
    const timer = setTimeout(() => {
      finish(
        new SysprobeError(
          ErrorCode.TIMEOUT,
          `heap analysis did not finish in ${o.timeoutMs} ms; the child process was killed`,
        ),
      );
    }, o.timeoutMs);
    timer.unref();
    child.on('message', (m: RunnerReply) => {
      if (m.type === 'progress') {
        try {
          o.onProgress?.({
            file: request.files[m.fileIndex]!,
            fileIndex: m.fileIndex,
            bytesRead: m.bytesRead,
            totalBytes: m.totalBytes,
          });
        } catch {
          /* a user callback must not end the analysis */
        }
      } else if (m.type === 'result') {
        finish(undefined, m.result);
      } else if (m.type === 'error') {
        finish(errorFromReply(m.code, m.message, ErrorCode.ANALYSIS_FAILED));
      }
    });
    child.on('error', (err) =>
      finish(
        new SysprobeError(ErrorCode.ANALYSIS_FAILED, `heap analysis child process failed: ${err.message}`, {
          cause: err,
        }),
      ),
    );
    child.on('exit', (code, signal) => {
      const why = signal ? `was killed by ${signal}` : `exited with code ${code}`;
      const oom = /heap out of memory|Allocation failed/.test(stderr)
        ? ` (out of memory: raise maxMemoryMb above ${o.maxMemoryMb})`
        : '';
      finish(new SysprobeError(ErrorCode.ANALYSIS_FAILED, `heap analysis child process ${why}${oom}`));
    });
    child.send({ ...request, progress: o.onProgress !== undefined });
  });
}
