/**
 * A file descriptor that cannot outlive a dying worker thread. Node tracks the descriptors a
 * worker opens through `fs.open`/`fs.openSync` (its `trackUnmanagedFds`, on by default) and
 * closes those still open when the worker exits, however it exits (a crash, a terminate, a
 * stop past its deadline); the tracking is done as the open completes, even when the worker is
 * already being torn down. `fs.promises.open` is not covered: a FileHandle whose open is still
 * on libuv's pool when the worker is terminated never reaches the worker, and its descriptor
 * stays open in the process for good (Node 20, 22 and 24; measured: 50 of 50 opens in flight
 * leaked, 0 through `fs.open`; Node 26 no longer leaks). So every file sysprobe opens goes
 * through this class, which has the part of FileHandle's face sysprobe uses, on a plain
 * descriptor: its close is sysprobe's to do (in a `finally`), or Node's when the thread dies.
 *
 * A main-thread registry of the worker's descriptors (closed after its exit) would race Node's
 * own close: a number Node closed may already be the host's next socket.
 */
import * as fs from 'node:fs';
import { promisify } from 'node:util';

const openFd = promisify(fs.open);
const closeFd = promisify(fs.close);
const fstat = promisify(fs.fstat);
const fchmod = promisify(fs.fchmod);
const fsync = promisify(fs.fsync);
const read = promisify(fs.read);
const write = promisify(fs.write) as (
  fd: number,
  buffer: Buffer,
  offset: number,
  length: number,
  position: number | null,
) => Promise<{ bytesWritten: number; buffer: Buffer }>;

export class OpenFile {
  readonly fd: number;
  #closed = false;

  private constructor(fd: number) {
    this.fd = fd;
  }

  /** Opens `file` (fs.open: tracked by the thread's environment from the moment it exists). */
  static async open(file: string, flags: number, mode?: number): Promise<OpenFile> {
    return new OpenFile(await openFd(file, flags, mode));
  }

  stat(): Promise<fs.Stats> {
    return fstat(this.fd);
  }

  chmod(mode: number): Promise<void> {
    return fchmod(this.fd, mode);
  }

  sync(): Promise<void> {
    return fsync(this.fd);
  }

  /** Reads at `position` (null: from the current position). */
  async read(buffer: Buffer, offset: number, length: number, position: number | null): Promise<{ bytesRead: number }> {
    const { bytesRead } = await read(this.fd, buffer, offset, length, position);
    return { bytesRead };
  }

  /** Writes at the current position. */
  async write(buffer: Buffer, offset: number, length: number): Promise<{ bytesWritten: number }> {
    const { bytesWritten } = await write(this.fd, buffer, offset, length, null);
    return { bytesWritten };
  }

  /** Writes all of `data` at the current position. */
  async writeAll(data: string | Buffer): Promise<void> {
    const buffer = typeof data === 'string' ? Buffer.from(data) : data;
    for (let offset = 0; offset < buffer.length;)
      offset += (await this.write(buffer, offset, buffer.length - offset)).bytesWritten;
  }

  /** A stream of bytes `start` to `end` (inclusive) that closes the descriptor when it ends or fails. */
  createReadStream({ start, end }: { start: number; end: number }): fs.ReadStream {
    this.#closed = true; // the stream's to close now
    return fs.createReadStream('', { fd: this.fd, start, end, autoClose: true });
  }

  /** Closes it; a second close does nothing. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await closeFd(this.fd);
  }
}
