/**
 * Node's diagnostic report (`process.report`): a JSON document of the process's state
 * (JS and native stacks, heap spaces and limits, resource usage, libuv handles, the
 * worker threads). It is what is safe to write near a memory limit: Node builds it in
 * C++, and it is small (9 KB, 6 ms here), where a heap snapshot needs as much memory again
 * as the heap holds. `getReport()` rather than `writeReport(file)`: the latter also
 * prints two lines to the host's stderr, which may be its structured log stream.
 * Environment variable values are redacted (names kept) except a few that explain a
 * runtime (NODE_OPTIONS, ...): the dump directory must not become where secrets leak.
 *
 * Two uses: written on purpose through the sink when the process comes near a limit, and
 * written by Node itself at a fatal error (V8's out-of-memory abort) when sysprobe turns
 * `reportOnFatalError` on; the next start finds that file (previous-runs.ts).
 */
import type { CaptureSink, WrittenCapture } from '../sink/sink.js';

/** Environment variables whose values a report keeps. */
const KEPT_ENV = new Set(['NODE_OPTIONS', 'NODE_ENV', 'UV_THREADPOOL_SIZE', 'TZ', 'LANG']);

/** The calling thread's report (call it on the main thread: its stack and heap are the ones that matter), env values redacted. */
export function diagnosticReport(): string {
  const report = process.report.getReport() as { environmentVariables?: Record<string, string> };
  const env = report.environmentVariables;
  if (env) for (const name of Object.keys(env)) if (!KEPT_ENV.has(name)) env[name] = '<redacted>';
  return JSON.stringify(report);
}

/** Writes the calling thread's diagnostic report through the sink. */
export function writeDiagnosticReport(sink: CaptureSink, sidecar: Record<string, unknown>): Promise<WrittenCapture> {
  const body = diagnosticReport();
  return sink.write({ kind: 'diagnostic-report', extension: '.json', expectedBytes: body.length, sidecar, body });
}

/**
 * Has Node write a report into `dir` if the process dies of a fatal error (V8 out of
 * memory included), unless the app configured reports itself (then its settings stand and
 * the next start looks for reports in the dump directory only). Returns the undo, for stop().
 */
export function reportFatalErrorsInto(dir: string): () => void {
  const report = process.report;
  if (report.reportOnFatalError || report.directory !== '') return () => undefined;
  report.directory = dir;
  report.reportOnFatalError = true;
  return () => {
    // Put back only what is still ours: the app may have changed it since.
    if (report.directory !== dir) return;
    report.directory = '';
    report.reportOnFatalError = false;
  };
}
