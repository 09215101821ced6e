/**
 * The one place captures are written to disk. Two promises, whatever happens to the
 * process: the dump directory does not fill the disk, and no file under a capture's
 * final name is ever half written.
 *
 * - Data goes to `<final>.partial`, chunk by chunk, is fsynced, and only then renamed
 *   to its final name; the JSON sidecar follows the same way. A crash leaves a
 *   `.partial`, which the next FileSink on the directory removes once it is stale.
 * - Before writing, the free space must cover the expected size plus `reserveBytes`.
 *   While writing, a capture that grows past its cap is cut off and deleted.
 * - After each write, the oldest whole captures (data and sidecar) go until at most
 *   `maxFiles` captures and `maxBytes` remain. Only files named the way this sink
 *   names them are ever deleted; whatever else lives in the directory is left alone.
 *   An incident folder (`incidents/<stamp>-<rule>/`, src/incidents/recorder.ts) counts as
 *   one capture of all its bytes and goes whole; an open one (its `.open` marker is
 *   younger than a day) is counted but never deleted.
 *
 * Writes run one at a time, in call order: a capture already taken is worth waiting
 * for, so a second write queues instead of failing with CAPTURE_BUSY. A queued write's
 * body is not read, and the disk not checked, until its turn.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ErrorCode, SysprobeError } from '../errors.js';
import type { Logger } from '../internal/logger.js';
import { OpenFile } from '../internal/open-file.js';
import type { CaptureInput, FileProducer, CaptureSink, WrittenCapture } from './sink.js';
import { INCIDENTS_DIR, OPEN_MARKER } from '../incidents/files.js';
import {
  checkPrivateDirSync,
  createExclusive,
  ensurePrivateDir,
  FILE_MODE,
  unsafeDirReason,
} from '../internal/files.js';

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;
const HOUR_MS = 3_600_000;
const PARTIAL = '.partial';
const SIDECAR = '.json';

const KIND = /^[a-z0-9]+(?:-[a-z0-9]+)*$/i;
const EXTENSION = /^(?:\.[a-z0-9]+)+$/i;
/** `<kind>-<ISO time without colons>-<pid>[-<seq>]<extension>`; a sidecar matches too (its extension ends in `.json`). */
export const CAPTURE_NAME =
  /^[a-z0-9]+(?:-[a-z0-9]+)*-(\d{4}-\d\d-\d\dT\d{6}\.\d{3}Z)-(\d+)(?:-(\d+))?(?:\.[a-z0-9]+)+$/i;

/** A finished capture's name (data or sidecar): named the sink's way, and not a `.partial` still being written or left by a crash. */
export function isCaptureName(name: string): boolean {
  return CAPTURE_NAME.test(name) && !name.endsWith(PARTIAL);
}

/** A partial file left by a dead process is removed at startup once it has not changed for this long (a live writer touches it). */
const DEAD_PARTIAL_AGE_MS = 60_000;

/** Incident folders, under `incidents/`: `<ISO time without colons>-<rule>[-<seq>]`. */
const INCIDENT_NAME = /^(\d{4}-\d\d-\d\dT\d{6}\.\d{3}Z)-[a-z0-9._-]+$/i;
/** An open marker older than this was left by a process that died with the incident open. */
const STALE_OPEN_MS = 24 * HOUR_MS;

/** The part of `fs.promises.statfs` the free-space check reads. */
export type StatFs = (dir: string) => Promise<{ bavail: number; bsize: number }>;

export interface FileSinkOptions {
  /** The dump directory; created when missing. */
  dir: string;
  /** The most captures kept in `dir`; the oldest go first. Default 20. */
  maxFiles?: number;
  /**
   * The most bytes of captures (data and sidecars) kept in `dir`, and the most one
   * capture's data may take while it is written. Default 1 GiB.
   */
  maxBytes?: number;
  /** Disk space that must stay free: a capture that would eat into it is refused. Default 512 MiB. */
  reserveBytes?: number;
  /** Written into each sidecar. */
  service?: string;
  /** Written into each file name and sidecar. Default `process.pid`. */
  pid?: number;
  /** sysprobe's version, written into each sidecar when given. */
  sysprobeVersion?: string;
  /** A `.partial` file older than this is taken for a crashed write and removed at startup. Default one hour. */
  stalePartialAgeMs?: number;
  /** Reads the free space; tests pass a fake to play a nearly full disk. Default `fs.promises.statfs`. */
  statfs?: StatFs;
  /** Told when rotation could not list or delete old captures; the write itself still succeeds. */
  logger?: Logger;
}

/** A capture found in the directory: its files and their total size. */
interface StoredCapture {
  name: string;
  stamp: string;
  seq: number;
  files: string[];
  bytes: number;
  /** An incident folder: deleted whole. */
  folder?: boolean;
  /** An open incident: counted, never deleted. */
  open?: boolean;
}

export class FileSink implements CaptureSink {
  readonly dir: string;
  readonly maxFiles: number;
  readonly maxBytes: number;
  readonly reserveBytes: number;
  /** Settles once leftover partial files from crashed writes are removed; lists the ones removed. */
  readonly ready: Promise<string[]>;
  readonly #options: FileSinkOptions;
  readonly #pid: number;
  readonly #statfs: StatFs;
  #queue: Promise<unknown>;

  constructor(options: FileSinkOptions) {
    const { dir, maxFiles = 20, maxBytes = GiB, reserveBytes = 512 * MiB, stalePartialAgeMs = HOUR_MS } = options;
    if (typeof dir !== 'string' || dir.length === 0) throw invalid(`FileSink needs a dir; got ${String(dir)}.`);
    if (!(Number.isInteger(maxFiles) && maxFiles > 0))
      throw invalid(`FileSink maxFiles must be a positive integer; got ${maxFiles}.`);
    if (!(maxBytes > 0)) throw invalid(`FileSink maxBytes must be positive; got ${maxBytes}.`);
    if (!(reserveBytes >= 0)) throw invalid(`FileSink reserveBytes must be zero or more; got ${reserveBytes}.`);
    if (!(stalePartialAgeMs >= 0))
      throw invalid(`FileSink stalePartialAgeMs must be zero or more; got ${stalePartialAgeMs}.`);
    this.dir = path.resolve(dir);
    // A dumpDir that is a link, another user's, or writable by others is refused now, at start().
    checkPrivateDirSync(this.dir);
    this.maxFiles = maxFiles;
    this.maxBytes = maxBytes;
    this.reserveBytes = reserveBytes;
    this.#options = options;
    this.#pid = options.pid ?? process.pid;
    this.#statfs = options.statfs ?? ((target) => fs.promises.statfs(target));
    this.ready = this.#removeStalePartials(stalePartialAgeMs);
    this.#queue = this.ready;
  }

  /** Writes the capture once the writes before it are done. Rejects with a SysprobeError; nothing is left half written. */
  write(capture: CaptureInput): Promise<WrittenCapture> {
    const run = this.#queue.then(() => this.#write(capture));
    this.#queue = run.catch(() => undefined);
    return run;
  }

  /**
   * Rotates without writing (an incident folder was made: it counts too). Queued like a write;
   * failures are logged, never thrown.
   */
  rotate(): Promise<void> {
    const run = this.#queue
      .then(() => this.#rotate(''))
      .catch((err: unknown) => {
        this.#options.logger?.warn({ err, dir: this.dir }, 'sysprobe could not rotate the dump directory');
      });
    this.#queue = run;
    return run;
  }

  async #write(capture: CaptureInput): Promise<WrittenCapture> {
    const { kind, extension, expectedBytes } = capture;
    if (typeof kind !== 'string' || !KIND.test(kind))
      throw invalid(`A capture kind must be letters, digits and dashes; got ${String(kind)}.`);
    if (typeof extension !== 'string' || !EXTENSION.test(extension))
      throw invalid(`A capture extension must look like .heapsnapshot; got ${String(extension)}.`);
    if (expectedBytes !== undefined && !(expectedBytes >= 0))
      throw invalid(`A capture's expectedBytes must be zero or more; got ${expectedBytes}.`);
    try {
      // Checked again at each write: the directory may have been swapped since start().
      await ensurePrivateDir(this.dir);
      const limit = await this.#sizeLimit(kind, expectedBytes);
      const { body } = capture;
      // A producer cannot be cut off midway, so one expected to outgrow the cap is refused before it starts.
      if (isProducer(body) && expectedBytes !== undefined && expectedBytes > limit.bytes) {
        throw new SysprobeError(
          ErrorCode.CAPTURE_FAILED,
          `Not writing the ${kind} capture: about ${expectedBytes} bytes are expected, over ${limit.why}.`,
        );
      }
      const startedAt = new Date();
      const { file, handle, sidecarHandle } = await this.#createPartial(kind, startedAt, extension);
      let bytes: number;
      try {
        bytes = isProducer(body)
          ? await produceThenRename(handle, file, body, limit, kind)
          : await writeThenRename(handle, file, chunksOf(body), limit, kind);
      } catch (err) {
        await sidecarHandle.close().catch(() => undefined);
        await removeQuietly(file + SIDECAR + PARTIAL);
        throw err;
      }
      const finishedAt = new Date();
      const sidecarFile = file + SIDECAR;
      const reserved = {
        kind,
        file: path.basename(file),
        bytes,
        startedAt: startedAt.toISOString(),
        finishedAt: finishedAt.toISOString(),
        pid: this.#pid,
        service: this.#options.service,
        node: process.version,
        sysprobe: this.#options.sysprobeVersion,
      };
      // Reserved fields first and last: they lead the JSON, and a sidecar field cannot overwrite them.
      const sidecar = JSON.stringify({ ...reserved, ...capture.sidecar, ...reserved }, null, 2);
      try {
        await writeThenRename(sidecarHandle, sidecarFile, chunksOf(sidecar), { bytes: Infinity, why: '' }, kind);
      } catch (err) {
        await removeQuietly(file); // a capture is its data and its sidecar, or nothing
        throw err;
      }
      await this.#rotate(path.basename(file)).catch((err: unknown) => {
        this.#options.logger?.warn({ err, dir: this.dir }, 'sysprobe could not rotate the dump directory');
      });
      return { kind, file, sidecarFile, bytes };
    } catch (err) {
      if (err instanceof SysprobeError) throw err;
      throw new SysprobeError(
        ErrorCode.CAPTURE_FAILED,
        `Could not write the ${kind} capture to ${this.dir}: ${err instanceof Error ? err.message : String(err)}`,
        { cause: err },
      );
    }
  }

  /**
   * Refuses the capture when the disk cannot hold it above the reserve, and returns
   * the most bytes it may grow to: the smallest of `maxBytes`, twice `expectedBytes`
   * (a capture that far off its estimate is running away), and the free space above
   * the reserve.
   */
  async #sizeLimit(kind: string, expectedBytes: number | undefined): Promise<{ bytes: number; why: string }> {
    const { bavail, bsize } = await this.#statfs(this.dir);
    const free = bavail * bsize;
    const needed = (expectedBytes ?? 0) + this.reserveBytes;
    if (free < needed) {
      throw new SysprobeError(
        ErrorCode.CAPTURE_FAILED,
        `Not writing the ${kind} capture: ${this.dir} has ${free} bytes free, and it needs ${expectedBytes ?? 0} expected + ${this.reserveBytes} reserve = ${needed} bytes.`,
      );
    }
    const limits = [{ bytes: this.maxBytes, why: `maxBytes (${this.maxBytes} bytes)` }];
    if (expectedBytes !== undefined)
      limits.push({ bytes: 2 * expectedBytes, why: `twice the expected ${expectedBytes} bytes` });
    limits.push({
      bytes: free - this.reserveBytes,
      why: `the ${free - this.reserveBytes} bytes free above the reserve`,
    });
    return limits.reduce((smallest, limit) => (limit.bytes < smallest.bytes ? limit : smallest));
  }

  /**
   * Creates the partial files of the data and of its sidecar under the first free name,
   * both exclusively (O_EXCL|O_NOFOLLOW, 0600) before the final name is checked: two sinks
   * on one directory cannot pick the same name, and a link planted under a name just
   * moves the capture to the next one. After 1000 taken names the capture is refused.
   */
  async #createPartial(
    kind: string,
    startedAt: Date,
    extension: string,
  ): Promise<{ file: string; handle: OpenFile; sidecarHandle: OpenFile }> {
    const base = `${kind}-${startedAt.toISOString().replace(/:/g, '')}-${this.#pid}`;
    for (let seq = 0; seq < 1000; seq++) {
      const file = path.join(this.dir, `${base}${seq === 0 ? '' : `-${seq}`}${extension}`);
      const handle = await createUnlessTaken(file + PARTIAL);
      if (!handle) continue;
      const sidecarHandle = await createUnlessTaken(file + SIDECAR + PARTIAL).catch(async (err: unknown) => {
        await handle.close();
        await removeQuietly(file + PARTIAL);
        throw err;
      });
      if (sidecarHandle && !(await exists(file)) && !(await exists(file + SIDECAR)))
        return { file, handle, sidecarHandle };
      await handle.close();
      await removeQuietly(file + PARTIAL);
      if (sidecarHandle) {
        await sidecarHandle.close();
        await removeQuietly(file + SIDECAR + PARTIAL);
      }
    }
    throw new SysprobeError(
      ErrorCode.CAPTURE_FAILED,
      `Not writing the ${kind} capture: 1000 names for it in ${this.dir} are taken.`,
    );
  }

  /** Deletes the oldest whole captures beyond `maxFiles` and `maxBytes`; the one just written always stays. */
  async #rotate(justWritten: string): Promise<void> {
    const captures = await this.#storedCaptures();
    captures.sort(
      (a, b) =>
        Number(b.name === justWritten) - Number(a.name === justWritten) ||
        b.stamp.localeCompare(a.stamp) ||
        b.seq - a.seq ||
        b.name.localeCompare(a.name),
    );
    let count = 0;
    let bytes = 0;
    const removed: string[] = [];
    for (const capture of captures) {
      count += 1;
      bytes += capture.bytes;
      if (capture.name === justWritten || capture.open || (count <= this.maxFiles && bytes <= this.maxBytes)) continue;
      count -= 1;
      bytes -= capture.bytes;
      removed.push(capture.name);
      if (capture.folder) {
        await fs.promises
          .rm(path.join(this.dir, capture.name), { recursive: true, force: true })
          .catch((err: unknown) => {
            this.#options.logger?.warn(
              { err, dir: path.join(this.dir, capture.name) },
              'sysprobe could not delete an old incident',
            );
          });
        continue;
      }
      for (const file of capture.files) {
        try {
          await fs.promises.unlink(path.join(this.dir, file));
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue; // another process rotated it first
          this.#options.logger?.warn(
            { err, file: path.join(this.dir, file) },
            'sysprobe could not delete an old capture',
          );
        }
      }
    }
    // Evidence going away is worth a line: what went, and the limits that sent it.
    if (removed.length > 0) {
      this.#options.logger?.info(
        { dir: this.dir, removed: removed.slice(0, 50), maxFiles: this.maxFiles, maxBytes: this.maxBytes },
        'sysprobe rotated out old evidence',
      );
    }
  }

  /** The captures in the directory named the way this sink names them, each with its sidecar when there is one. */
  async #storedCaptures(): Promise<StoredCapture[]> {
    const names = new Set((await fs.promises.readdir(this.dir)).filter(isCaptureName));
    const captures: StoredCapture[] = [];
    for (const name of names) {
      if (name.endsWith(SIDECAR) && names.has(name.slice(0, -SIDECAR.length))) continue; // counted with its data file
      const files = names.has(name + SIDECAR) ? [name, name + SIDECAR] : [name];
      let bytes = 0;
      let regular = true;
      for (const file of files) {
        const stat = await fs.promises.lstat(path.join(this.dir, file)).catch(() => undefined);
        if (stat === undefined || !stat.isFile()) regular = false;
        else bytes += stat.size;
      }
      if (!regular) continue;
      const [, stamp = '', , seq = '0'] = CAPTURE_NAME.exec(name) ?? [];
      captures.push({ name, stamp, seq: Number(seq), files, bytes });
    }
    return [...captures, ...(await this.#storedIncidents())];
  }

  /** The incident folders, each with the bytes of its files and whether it is still open. */
  async #storedIncidents(): Promise<StoredCapture[]> {
    const root = path.join(this.dir, INCIDENTS_DIR);
    // Folders under a planted link would be deleted wherever it points: only a safe real directory is looked into.
    const rootStat = await fs.promises.lstat(root).catch(() => undefined);
    if (rootStat === undefined || unsafeDirReason(root, rootStat) !== undefined) return [];
    const names = await fs.promises.readdir(root).catch(() => [] as string[]);
    const incidents: StoredCapture[] = [];
    for (const name of names) {
      const stamp = INCIDENT_NAME.exec(name)?.[1];
      if (!stamp) continue;
      const folder = path.join(root, name);
      const stat = await fs.promises.lstat(folder).catch(() => undefined);
      if (!stat?.isDirectory()) continue;
      let bytes = 0;
      let open = false;
      for (const file of await fs.promises.readdir(folder).catch(() => [] as string[])) {
        const fileStat = await fs.promises.lstat(path.join(folder, file)).catch(() => undefined);
        if (!fileStat?.isFile()) continue;
        bytes += fileStat.size;
        if (file === OPEN_MARKER && Date.now() - fileStat.mtimeMs < STALE_OPEN_MS) open = true;
      }
      incidents.push({ name: path.join(INCIDENTS_DIR, name), stamp, seq: 0, files: [], bytes, folder: true, open });
    }
    return incidents;
  }

  /**
   * Removes `.partial` files of this sink's naming older than `ageMs`, and those of a process
   * that is gone (the pid in the name) untouched for a minute. A write in progress touches its
   * partial with every chunk, so only a crashed write's partial gets that old. Either way
   * they are never listed or served as captures ({@link isCaptureName}).
   */
  async #removeStalePartials(ageMs: number): Promise<string[]> {
    let names: string[];
    try {
      names = await fs.promises.readdir(this.dir);
    } catch {
      return []; // no directory yet: nothing left over
    }
    const removed: string[] = [];
    for (const name of names) {
      if (!name.endsWith(PARTIAL) || !CAPTURE_NAME.test(name.slice(0, -PARTIAL.length))) continue;
      const file = path.join(this.dir, name);
      const stat = await fs.promises.lstat(file).catch(() => undefined);
      if (stat === undefined || !stat.isFile()) continue;
      const age = Date.now() - stat.mtimeMs;
      const pid = Number(CAPTURE_NAME.exec(name.slice(0, -PARTIAL.length))?.[2]);
      if (age < ageMs && !(age >= Math.min(ageMs, DEAD_PARTIAL_AGE_MS) && !processAlive(pid))) continue;
      if (await removeQuietly(file)) removed.push(file);
    }
    return removed;
  }
}

function isProducer(body: CaptureInput['body']): body is FileProducer {
  return typeof body === 'object' && body !== null && typeof (body as FileProducer).writeTo === 'function';
}

/**
 * Lets `producer` write the partial file of `file` itself, then checks its size, fsyncs it
 * and renames it. The cap can only be checked afterwards here; the free-space check before
 * it is what keeps the reserve.
 */
async function produceThenRename(
  handle: OpenFile,
  file: string,
  producer: FileProducer,
  limit: { bytes: number; why: string },
  kind: string,
): Promise<number> {
  await handle.close();
  try {
    // The producer opens the partial by name (O_TRUNC, keeping its 0600): in a directory others
    // cannot write into, or a sticky one, nobody else can have replaced it meanwhile.
    await producer.writeTo(file + PARTIAL);
    const written = await OpenFile.open(
      file + PARTIAL,
      fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK,
    );
    try {
      const { size } = await written.stat();
      if (size > limit.bytes) {
        throw new SysprobeError(
          ErrorCode.CAPTURE_FAILED,
          `The ${kind} capture grew past ${limit.why}; it was deleted.`,
        );
      }
      await written.chmod(FILE_MODE);
      await written.sync();
    } finally {
      await written.close();
    }
    await fs.promises.rename(file + PARTIAL, file);
    return (await fs.promises.lstat(file)).size;
  } catch (err) {
    await removeQuietly(file + PARTIAL);
    throw err;
  }
}

async function* chunksOf(body: Exclude<CaptureInput['body'], FileProducer>): AsyncIterable<Buffer> {
  if (typeof body === 'string') yield Buffer.from(body);
  else if (Buffer.isBuffer(body)) yield body;
  else for await (const chunk of body) yield typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
}

/**
 * Streams `chunks` into the open partial file of `file`, fsyncs it and renames it to
 * `file`. Past `limit` bytes, or on any failure, the partial file is deleted instead.
 */
async function writeThenRename(
  handle: OpenFile,
  file: string,
  chunks: AsyncIterable<Buffer>,
  limit: { bytes: number; why: string },
  kind: string,
): Promise<number> {
  let bytes = 0;
  try {
    try {
      for await (const chunk of chunks) {
        bytes += chunk.length;
        if (bytes > limit.bytes) {
          throw new SysprobeError(
            ErrorCode.CAPTURE_FAILED,
            `The ${kind} capture grew past ${limit.why}; it was cut off and deleted.`,
          );
        }
        for (let offset = 0; offset < chunk.length;) {
          offset += (await handle.write(chunk, offset, chunk.length - offset)).bytesWritten;
        }
      }
      await handle.sync();
    } finally {
      await handle.close();
    }
    await fs.promises.rename(file + PARTIAL, file);
  } catch (err) {
    await removeQuietly(file + PARTIAL);
    throw err;
  }
  return bytes;
}

/** The new file, or undefined when the name is taken (by anything, a link included). */
async function createUnlessTaken(file: string): Promise<OpenFile | undefined> {
  try {
    return await createExclusive(file);
  } catch (err) {
    const { code } = err as NodeJS.ErrnoException;
    if (code === 'EEXIST' || code === 'ELOOP') return undefined;
    throw err;
  }
}

/** False only when no process has this pid (here). */
function processAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

async function exists(file: string): Promise<boolean> {
  return fs.promises.lstat(file).then(
    () => true,
    () => false,
  );
}

/** Deletes the file if it is there; true when it was. */
async function removeQuietly(file: string): Promise<boolean> {
  return fs.promises.unlink(file).then(
    () => true,
    () => false,
  );
}

function invalid(message: string): SysprobeError {
  return new SysprobeError(ErrorCode.INVALID_OPTION, message);
}
