/**
 * How sysprobe touches the disk, in one place: files readers never see half-written,
 * never written or read through a link someone else planted, and never readable by
 * other users.
 *
 * - Every file sysprobe creates is opened O_CREAT|O_EXCL|O_NOFOLLOW with mode 0600
 *   (and fchmod'ed to it, whatever the umask): an existing name or a planted link makes
 *   the open fail instead of writing through it.
 * - Renames replace a link at the final name; they never follow it.
 * - Directories sysprobe makes are 0700. A directory it writes into must be a real
 *   directory (not a link), owned by this user or root, and not writable by others
 *   unless it has the sticky bit (like /tmp: others cannot then remove or rename our files).
 * - Files are opened as OpenFile (internal/open-file.ts), never with fs.promises.open: a
 *   worker thread that dies with an open in flight then leaves no descriptor behind.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { ErrorCode, SysprobeError } from '../errors.js';
import { OpenFile } from './open-file.js';

const { O_CREAT, O_EXCL, O_NOFOLLOW, O_WRONLY, O_RDONLY, O_NONBLOCK } = fs.constants;

/** The sticky bit: in such a directory only a file's owner may remove or rename it. */
const STICKY = 0o1000;
/** Files sysprobe writes: only its own user reads them. */
export const FILE_MODE = 0o600;
/** Directories sysprobe makes. */
export const DIR_MODE = 0o700;
/** Flags for a file created fresh: never an existing file, never through a link. */
export const CREATE_FLAGS = O_CREAT | O_EXCL | O_NOFOLLOW | O_WRONLY;
/** Flags for reading a file: not through a link, and not blocking on a FIFO. */
export const READ_FLAGS = O_RDONLY | O_NOFOLLOW | O_NONBLOCK;

/** Creates `file` (it must not exist, and must not be a link), mode 0600 whatever the umask. */
export async function createExclusive(file: string): Promise<OpenFile> {
  const handle = await OpenFile.open(file, CREATE_FLAGS, FILE_MODE);
  try {
    await handle.chmod(FILE_MODE);
  } catch (err) {
    await handle.close().catch(() => undefined);
    throw err;
  }
  return handle;
}

/**
 * Writes `text` to a fresh partial file beside `file` (named `<file>.<random>.partial`, so
 * nobody can plant it in advance), then renames it over `file`; on failure the partial
 * file is removed. The result is 0600.
 */
export async function writeFileAtomically(file: string, text: string | Buffer): Promise<void> {
  const partial = `${file}.${randomBytes(6).toString('hex')}.partial`;
  try {
    const handle = await createExclusive(partial);
    try {
      await handle.writeAll(text);
    } finally {
      await handle.close();
    }
    await fs.promises.rename(partial, file);
  } catch (err) {
    await fs.promises.rm(partial, { force: true }).catch(() => undefined);
    throw err;
  }
}

/** Why `dir` is not safe to write captures into, or undefined when it is. `stat` is its lstat. */
export function unsafeDirReason(dir: string, stat: fs.Stats): string | undefined {
  if (stat.isSymbolicLink()) return `${dir} is a symbolic link; give the real path of a directory`;
  if (!stat.isDirectory()) return `${dir} is not a directory`;
  const uid = process.getuid?.();
  if (uid !== undefined && stat.uid !== uid && stat.uid !== 0)
    return `${dir} belongs to another user (uid ${stat.uid})`;
  if ((stat.mode & 0o022) !== 0 && (stat.mode & STICKY) === 0) {
    return `${dir} is writable by other users (mode ${(stat.mode & 0o7777).toString(8)}) without the sticky bit`;
  }
  return undefined;
}

/**
 * Makes `dir` (0700, parents too) when missing, checks it is safe (see {@link unsafeDirReason}),
 * and takes other users' access away when it is ours and not a shared sticky directory.
 * Throws SysprobeError `code` (INVALID_OPTION at start, CAPTURE_FAILED at run time).
 */
export async function ensurePrivateDir(
  dir: string,
  code: SysprobeError['code'] = ErrorCode.CAPTURE_FAILED,
): Promise<void> {
  await fs.promises.mkdir(dir, { recursive: true, mode: DIR_MODE });
  tighten(dir, await fs.promises.lstat(dir), code);
}

/** {@link ensurePrivateDir} for start(): synchronous, and a missing directory is left for the first write to make. */
export function checkPrivateDirSync(dir: string, code: SysprobeError['code'] = ErrorCode.INVALID_OPTION): void {
  let stat: fs.Stats;
  try {
    stat = fs.lstatSync(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw new SysprobeError(code, `Cannot use ${dir} as the dump directory: ${(err as Error).message}`, { cause: err });
  }
  tighten(dir, stat, code);
}

function tighten(dir: string, stat: fs.Stats, code: SysprobeError['code']): void {
  const unsafe = unsafeDirReason(dir, stat);
  if (unsafe) throw new SysprobeError(code, `sysprobe will not write into ${dir}: ${unsafe}.`);
  const ours = stat.uid === process.getuid?.();
  if (ours && (stat.mode & 0o077) !== 0 && (stat.mode & STICKY) === 0) fs.chmodSync(dir, DIR_MODE);
}

/** The first buffer for a file whose size fstat does not know (/proc's). */
const PROC_READ_START_BYTES = 64 << 10;

/** How a bounded read may open its file. */
export interface ReadBounds {
  /**
   * Follow a link at the last path component. Default false: the dump directory's files are
   * sysprobe's own, and a link there was planted. Source maps and scripts are the app's, which
   * may be links (runfiles trees, linked packages); they are still never a FIFO or a device.
   */
  followLinks?: boolean;
}

/** The errors a bounded open or read throws for a file that is not a plain one of ours: skip it, do not fail. */
export const NOT_A_PLAIN_FILE = new Set(['ELOOP', 'EISDIR', 'ENOTREG', 'EFBIG']);

/**
 * Opens `file` for reading when it is a regular file of at most `maxBytes`, never through a
 * link (unless `followLinks`) and never blocking on a FIFO (O_NONBLOCK, then fstat); else throws
 * an error whose `code` says why (ELOOP for a link, EISDIR, ENOTREG, EFBIG).
 */
export async function openRegularFile(
  file: string,
  maxBytes = Infinity,
  { followLinks = false }: ReadBounds = {},
): Promise<{ handle: OpenFile; size: number }> {
  const handle = await OpenFile.open(file, followLinks ? READ_FLAGS & ~O_NOFOLLOW : READ_FLAGS);
  try {
    const stat = await handle.stat();
    if (stat.isDirectory()) throw fileError('EISDIR', `${file} is a directory`);
    if (!stat.isFile()) throw fileError('ENOTREG', `${file} is not a regular file`);
    if (stat.size > maxBytes)
      throw fileError('EFBIG', `${file} is ${stat.size} bytes, over the ${maxBytes} this reads`);
    return { handle, size: stat.size };
  } catch (err) {
    await handle.close().catch(() => undefined);
    throw err;
  }
}

/**
 * The text of a regular file of at most `maxBytes`, read without following links (see
 * {@link openRegularFile}): every file sysprobe reads back goes through here.
 */
export async function readBoundedFile(file: string, maxBytes: number, bounds: ReadBounds = {}): Promise<string> {
  const { handle, size } = await openRegularFile(file, maxBytes, bounds);
  try {
    // Sized by fstat, plus one byte to see growth; /proc's files say 0, so they start at 64 KiB.
    // The buffer grows while it fills, to one byte past the bound.
    let buffer = Buffer.alloc(Math.min(maxBytes + 1, size > 0 ? size + 1 : PROC_READ_START_BYTES));
    let length = 0;
    for (;;) {
      const { bytesRead } = await handle.read(buffer, length, buffer.length - length, null);
      if (bytesRead === 0) break;
      length += bytesRead;
      if (length > maxBytes) throw fileError('EFBIG', `${file} grew past the ${maxBytes} bytes this reads`);
      if (length === buffer.length) {
        const larger = Buffer.alloc(Math.min(maxBytes + 1, buffer.length * 2));
        buffer.copy(larger, 0, 0, length);
        buffer = larger;
      }
    }
    return buffer.subarray(0, length).toString('utf8');
  } finally {
    await handle.close();
  }
}

function fileError(code: string, message: string): NodeJS.ErrnoException {
  return Object.assign(new Error(message), { code });
}
