/**
 * Reads a snapshot on another core: a worker thread runs {@link readHeapSnapshot} and
 * hands the columns and the string table back by transfer (no copy).
 * A diff reads its last file this way while the main thread reads and analyses the
 * first ones, so parsing is mostly off the critical path on a machine with two cores.
 */
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { SysprobeError, ErrorCode, describeError, errorFromReply } from '../errors.js';
import { readHeapSnapshot, type RawSnapshot, type ReadOptions } from './reader.js';
import { StringTable } from './strings.js';

interface Request {
  sysprobeHeapRead: true;
  file: string;
  edges: boolean;
  edgeNames: boolean;
  progress: boolean;
}
type Reply =
  | { type: 'progress'; bytesRead: number; total: number }
  | { type: 'done'; raw: RawSnapshot; parseMs: number }
  | { type: 'error'; code: string | undefined; message: string };

/** A read in progress on a worker thread; `cancel()` ends it (the promise then rejects). */
export interface ThreadRead {
  result: Promise<{ raw: RawSnapshot; parseMs: number }>;
  cancel(): void;
}

const TRANSFERRED = [
  'nodeTypes',
  'nodeNames',
  'nodeIds',
  'selfSizes',
  'firstEdge',
  'edgeTypes',
  'edgeNames',
  'edgeTargets',
] as const;

export function readHeapSnapshotInThread(
  file: string,
  options: Pick<ReadOptions, 'edges' | 'edgeNames' | 'onProgress'> = {},
): ThreadRead {
  const request: Request = {
    sysprobeHeapRead: true,
    file,
    edges: options.edges ?? true,
    edgeNames: options.edgeNames ?? true,
    progress: options.onProgress !== undefined,
  };
  const worker = new Worker(__filename, { workerData: request });
  let settled = false;
  const result = new Promise<{ raw: RawSnapshot; parseMs: number }>((resolve, reject) => {
    const finish = (err: Error | undefined, value?: { raw: RawSnapshot; parseMs: number }): void => {
      if (settled) return;
      settled = true;
      void worker.terminate();
      if (err) reject(err);
      else resolve(value!);
    };
    worker.on('message', (m: Reply) => {
      if (m.type === 'progress') options.onProgress?.(m.bytesRead, m.total);
      else if (m.type === 'done')
        finish(undefined, { raw: { ...m.raw, strings: StringTable.revive(m.raw.strings) }, parseMs: m.parseMs });
      else finish(errorFromReply(m.code, m.message, ErrorCode.ANALYSIS_FAILED));
    });
    worker.on('error', (err) =>
      finish(
        new SysprobeError(ErrorCode.ANALYSIS_FAILED, `reading ${file} on a worker thread failed: ${err.message}`, {
          cause: err,
        }),
      ),
    );
    worker.on('exit', (code) =>
      finish(new SysprobeError(ErrorCode.ANALYSIS_FAILED, `the thread reading ${file} exited with code ${code}`)),
    );
  });
  return {
    result,
    cancel: () => {
      if (settled) return;
      void worker.terminate();
    },
  };
}

async function serve(req: Request): Promise<void> {
  const port = parentPort!;
  const t = process.hrtime.bigint();
  try {
    const raw = await readHeapSnapshot(req.file, {
      edges: req.edges,
      edgeNames: req.edgeNames,
      ...(req.progress
        ? {
            onProgress: (bytesRead: number, total: number) =>
              port.postMessage({ type: 'progress', bytesRead, total } satisfies Reply),
          }
        : {}),
    });
    const parseMs = Number(process.hrtime.bigint() - t) / 1e6;
    port.postMessage({ type: 'done', raw, parseMs } satisfies Reply, [
      ...TRANSFERRED.map((k) => raw[k].buffer as ArrayBuffer),
      ...raw.strings.transferables(),
    ]);
  } catch (err) {
    const d = describeError(err);
    port.postMessage({ type: 'error', code: d.code, message: d.message } satisfies Reply);
  }
}

if (!isMainThread && (workerData as Request | undefined)?.sysprobeHeapRead) void serve(workerData as Request);
