/**
 * Where captures go. Every capture (heap snapshot, CPU profile, allocation profile)
 * is handed to a sink as a body plus a sidecar of facts about it; the sink decides
 * where the bytes land. {@link FileSink} is the one that touches the disk;
 * {@link functionSink} lets an app see each finished file (to upload it, say).
 */
import { ErrorCode, SysprobeError } from '../errors.js';

/** One capture on its way to a sink. */
export interface CaptureInput {
  /** What it is, e.g. `heap-snapshot`, `cpu-profile`; starts the file name. */
  kind: string;
  /** The data file's extension with its dot, e.g. `.heapsnapshot`. */
  extension: string;
  /** The size the producer expects; the free-space check and the size cap are based on it. */
  expectedBytes?: number;
  /** Facts about the capture (what triggered it, values); written next to it as JSON. */
  sidecar: Record<string, unknown>;
  /**
   * The data. An async iterable is written chunk by chunk as it arrives, never held whole.
   * `{ writeTo }` is for producers that write a file themselves (v8.writeHeapSnapshot streams
   * straight to disk, holding nothing in JS): they get the partial file's path.
   */
  body: AsyncIterable<Buffer | string> | Buffer | string | FileProducer;
}

/** Writes the capture's data file at `partialFile` (created empty), synchronously or not. */
export interface FileProducer {
  writeTo(partialFile: string): void | Promise<void>;
}

/** A capture complete under its final name. */
export interface WrittenCapture {
  /** What it is, e.g. `heap-snapshot`, `cpu-profile`, `cpu-profile-pprof`, `allocation-profile`. */
  kind: string;
  /** Absolute path of the data file. */
  file: string;
  /** Absolute path of its JSON sidecar. */
  sidecarFile: string;
  /** Bytes in the data file. */
  bytes: number;
}

export interface CaptureSink {
  write(capture: CaptureInput): Promise<WrittenCapture>;
}

/** Receives each capture once its files are complete. */
export type CaptureListener = (capture: WrittenCapture) => Promise<void> | void;

/**
 * A sink that writes through `files` (usually a {@link FileSink}) and then hands the
 * finished capture to `listener`. The listener only ever sees complete files. If it
 * fails, the write rejects with `CAPTURE_FAILED`, but the files stay where they are:
 * the capture was taken and is worth keeping.
 */
export function functionSink(files: CaptureSink, listener: CaptureListener): CaptureSink {
  return {
    async write(capture) {
      const written = await files.write(capture);
      try {
        await listener(written);
      } catch (err) {
        throw new SysprobeError(
          ErrorCode.CAPTURE_FAILED,
          `The ${capture.kind} capture was written to ${written.file}, but the function sink failed: ${err instanceof Error ? err.message : String(err)}`,
          { cause: err },
        );
      }
      return written;
    },
  };
}
