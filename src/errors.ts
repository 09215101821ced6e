/**
 * Every error sysprobe raises is a {@link SysprobeError} with a stable `code`,
 * so callers can branch on `err.code` instead of parsing messages.
 * The codes are listed in docs/errors.md.
 */
export const ErrorCode = {
  /** An option is unknown, has the wrong type, or is out of range. */
  INVALID_OPTION: 'SYSPROBE_ERR_INVALID_OPTION',
  /** `start()` was called while another probe is running or starting. */
  ALREADY_STARTED: 'SYSPROBE_ERR_ALREADY_STARTED',
  /** `watchThread()` found no probe running on the main thread (or its worker was created before the first `start()`). */
  NOT_STARTED: 'SYSPROBE_ERR_NOT_STARTED',
  /** A method was called on a probe after `stop()`. */
  STOPPED: 'SYSPROBE_ERR_STOPPED',
  /** The probe worker did not start, or is restarting and could not answer. */
  WORKER_UNAVAILABLE: 'SYSPROBE_ERR_WORKER_UNAVAILABLE',
  /** Something asked for explicitly is not available here (e.g. `loopWatch: 'native'` without the addon). */
  UNSUPPORTED: 'SYSPROBE_ERR_UNSUPPORTED',
  /** `probe.guard()` refused to start a job: a run of the same name is still going (`overlap: 'refuse'`), or its queue is full. */
  JOB_RUNNING: 'SYSPROBE_ERR_JOB_RUNNING',
  /** A capture (stack, CPU profile) could not be taken: the inspector refused, timed out, or the capture budget is spent. */
  CAPTURE_FAILED: 'SYSPROBE_ERR_CAPTURE_FAILED',
  /** A capture of the same kind is already running; V8 runs one profiler or debugger pause at a time. */
  CAPTURE_BUSY: 'SYSPROBE_ERR_CAPTURE_BUSY',
  /** A bounded wait ran out. */
  TIMEOUT: 'SYSPROBE_ERR_TIMEOUT',
  /** An optional peer dependency needed for what was asked (an OpenTelemetry exporter) is not installed. */
  MISSING_PEER: 'SYSPROBE_ERR_MISSING_PEER',
  /** The health or control endpoint, or the Prometheus server, could not listen on its host and port (in use, not permitted, a host that does not resolve). */
  LISTEN_FAILED: 'SYSPROBE_ERR_LISTEN_FAILED',
  /** A file given as a heap snapshot is not one: empty, not JSON, wrong `snapshot.meta`, truncated or corrupt. */
  BAD_SNAPSHOT: 'SYSPROBE_ERR_BAD_SNAPSHOT',
  /** A heap analysis run in a child process failed: it ran out of its memory limit or crashed. */
  ANALYSIS_FAILED: 'SYSPROBE_ERR_ANALYSIS_FAILED',
} as const;

/** One of the values of {@link ErrorCode}. */
export type ErrorCodeValue = (typeof ErrorCode)[keyof typeof ErrorCode];

/** The one error class sysprobe throws or rejects with. */
export class SysprobeError extends Error {
  /** Stable, documented identifier of the failure, e.g. `SYSPROBE_ERR_INVALID_OPTION`. */
  readonly code: ErrorCodeValue;

  constructor(code: ErrorCodeValue, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'SysprobeError';
    this.code = code;
  }
}

/** Turns anything thrown into something a log line can carry. */
export function describeError(err: unknown): { message: string; code?: string; stack?: string } {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return {
      message: err.message,
      ...(typeof code === 'string' ? { code } : {}),
      ...(err.stack ? { stack: err.stack } : {}),
    };
  }
  return { message: String(err) };
}

/** An error that crossed a thread or process as `{ code, message }`: a SysprobeError with its code when that is one of ours, else `fallback`. */
export function errorFromReply(code: string | undefined, message: string, fallback: ErrorCodeValue): SysprobeError {
  const known = (Object.values(ErrorCode) as string[]).includes(code ?? '');
  return new SysprobeError(known ? (code as ErrorCodeValue) : fallback, message);
}
