/**
 * The child process that {@link summarizeHeapSnapshot} and {@link diffHeapSnapshots}
 * fork: takes one request over IPC, answers with the result or a coded error, exits.
 */
import { describeError } from '../errors.js';
import { diff, summarize, type HeapDiff, type HeapSummary } from './analysis.js';
import { dedicateProcessToAnalysis } from './arrays.js';

export interface RunnerRequest {
  kind: 'summary' | 'diff';
  files: string[];
  top: number;
  parallel?: boolean;
  progress?: boolean;
}

export type RunnerReply =
  | { type: 'progress'; fileIndex: number; bytesRead: number; totalBytes: number }
  | { type: 'result'; result: HeapSummary | HeapDiff }
  | { type: 'error'; code: string | undefined; message: string };

function reply(m: RunnerReply): Promise<void> {
  return new Promise((resolve) => {
    process.send!(m, undefined, {}, () => resolve());
  });
}

async function run(req: RunnerRequest): Promise<void> {
  const onProgress = req.progress
    ? (fileIndex: number, bytesRead: number, totalBytes: number) => {
        process.send!({ type: 'progress', fileIndex, bytesRead, totalBytes });
      }
    : undefined;
  const options = {
    top: req.top,
    ...(req.parallel !== undefined ? { parallel: req.parallel } : {}),
    ...(onProgress ? { onProgress } : {}),
  };
  dedicateProcessToAnalysis(); // this process exists for the analysis
  try {
    const result = req.kind === 'summary' ? await summarize(req.files[0]!, options) : await diff(req.files, options);
    await reply({ type: 'result', result });
  } catch (err) {
    const d = describeError(err);
    await reply({ type: 'error', code: d.code, message: d.message });
  }
  process.disconnect();
}

if (require.main === module && process.send) {
  process.once('message', (req: RunnerRequest) => {
    void run(req);
  });
}
