/**
 * profileThread(): a CPU profile of the calling thread, for the threads the probe
 * worker cannot profile from outside, such as an app's own worker threads.
 * Default backend: node:inspector (a session into the calling thread's own
 * isolate; no native addon). Optional backend: the v8-profiler-next package,
 * if the app installed it (it profiles the isolate it is loaded in). Files are
 * written like every other capture, through the sink: .cpuprofile and pprof, with sidecars.
 */
import * as inspector from 'node:inspector';
import { isMainThread, threadId } from 'node:worker_threads';
import { ErrorCode, SysprobeError } from '../errors.js';
import type { CpuProfileResult } from './results.js';
import type { CpuProfile } from './cpuprofile.js';
import { FileSink } from '../sink/file-sink.js';
import { writeProfileFiles } from './profile-files.js';

/** Options for {@link profileThread}. */
export interface ThreadProfileOptions {
  /** How long to profile, ms (10 to 600000). */
  durationMs: number;
  /** Where to write the files. */
  dumpDir: string;
  /** `inspector` (default, built in) or `v8-profiler-next` (needs that package installed). */
  backend?: 'inspector' | 'v8-profiler-next';
}

interface V8ProfilerNext {
  setGenerateType(type: number): void;
  startProfiling(title: string, recordSamples: boolean): void;
  stopProfiling(title: string): { export(cb: (err: Error | null, json: string) => void): void; delete(): void };
}

/**
 * Profiles the calling thread for `durationMs` and writes the files into `dumpDir`. The
 * thread must be running JS meanwhile for the profile to show anything; this only waits.
 * Rejects with SYSPROBE_ERR_INVALID_OPTION, SYSPROBE_ERR_UNSUPPORTED (backend not installed)
 * or SYSPROBE_ERR_CAPTURE_FAILED.
 */
export async function profileThread(options: ThreadProfileOptions): Promise<CpuProfileResult> {
  const { durationMs, dumpDir, backend = 'inspector' } = options ?? ({} as ThreadProfileOptions);
  if (!Number.isInteger(durationMs) || durationMs < 10 || durationMs > 600_000) {
    throw new SysprobeError(
      ErrorCode.INVALID_OPTION,
      `profileThread({ durationMs }) needs an integer from 10 to 600000; got ${String(durationMs)}.`,
    );
  }
  if (typeof dumpDir !== 'string' || dumpDir.length === 0)
    throw new SysprobeError(ErrorCode.INVALID_OPTION, 'profileThread({ dumpDir }) needs a directory path.');
  if (backend !== 'inspector' && backend !== 'v8-profiler-next') {
    throw new SysprobeError(
      ErrorCode.INVALID_OPTION,
      `profileThread({ backend }) must be 'inspector' or 'v8-profiler-next'; got ${String(backend)}.`,
    );
  }
  const startedAtMs = Date.now();
  const profile = backend === 'inspector' ? await withInspector(durationMs) : await withV8ProfilerNext(durationMs);
  return writeProfileFiles(new FileSink({ dir: dumpDir }), profile, {
    startedAtMs,
    durationMs,
    thread: isMainThread ? 'main' : `thread-${threadId}`,
  });
}

async function withInspector(durationMs: number): Promise<CpuProfile> {
  const session = new inspector.Session();
  session.connect();
  const post = <T>(method: string, params?: object) =>
    new Promise<T>((resolve, reject) =>
      session.post(method, params ?? {}, (err, result) =>
        err
          ? reject(
              new SysprobeError(ErrorCode.CAPTURE_FAILED, `inspector ${method} failed: ${err.message}`, { cause: err }),
            )
          : resolve(result as T),
      ),
    );
  try {
    await post('Profiler.enable');
    await post('Profiler.setSamplingInterval', { interval: 1000 });
    await post('Profiler.start');
    await new Promise((resolve) => setTimeout(resolve, durationMs));
    return (await post<{ profile: CpuProfile }>('Profiler.stop')).profile;
  } finally {
    session.disconnect();
  }
}

async function withV8ProfilerNext(durationMs: number): Promise<CpuProfile> {
  let profiler: V8ProfilerNext;
  try {
    profiler = require('v8-profiler-next') as V8ProfilerNext;
  } catch (err) {
    // Not installed, or no binary for this Node: it is on V8's C++ API, one build per ABI, and does not compile on Node 26.
    throw new SysprobeError(
      ErrorCode.UNSUPPORTED,
      `profileThread({ backend: 'v8-profiler-next' }) needs the v8-profiler-next package built for this Node ` +
        `(${process.version}, ABI ${process.versions.modules}); the 'inspector' backend needs nothing: ` +
        (err as Error).message.split('\n')[0],
    );
  }
  const title = `sysprobe-${process.hrtime.bigint()}`;
  profiler.setGenerateType(1); // the current .cpuprofile format (nodes with children, samples, timeDeltas)
  profiler.startProfiling(title, true);
  await new Promise((resolve) => setTimeout(resolve, durationMs));
  const result = profiler.stopProfiling(title);
  try {
    const json = await new Promise<string>((resolve, reject) =>
      result.export((err, text) => (err ? reject(err) : resolve(text))),
    );
    return JSON.parse(json) as CpuProfile;
  } finally {
    result.delete();
  }
}
