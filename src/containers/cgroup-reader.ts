/**
 * Reads this process's cgroup (CPU quota and throttling, memory limit, usage and OOM
 * kills) from the live files. Where the files are is found once, from /proc/self/cgroup
 * and /proc/self/mountinfo; each read then opens a handful of small files. Every file
 * is read with a size bound, the asynchronous read with a deadline too, and nothing
 * throws: what could not be read is a problem on the reading, beside what could.
 *
 * The probe worker reads it (samples, stalls); the main thread reads the memory
 * controller synchronously only before a heap snapshot (its safety check).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  CPU_FILES,
  locateCgroup,
  MEMORY_FILES,
  parseCpu,
  parseMemory,
  type CgroupCpu,
  type CgroupLocation,
  type CgroupMemory,
  type ControllerDir,
  type ControllerFiles,
} from './cgroup-parse.js';

/** One reading of the cgroup. */
export interface CgroupReading {
  /** When it was read, ms since the epoch. */
  time: number;
  cpu?: CgroupCpu;
  memory?: CgroupMemory;
  /** What could not be read (a file too large, malformed, timed out); absent when all was well. */
  problems?: string[];
}

export interface CgroupReaderOptions {
  /** Prepended to every path read (/proc/self/..., the mount points): tests point it at a recorded tree. Default: none. */
  root?: string;
  /** A controller file larger than this is not read (they are a few hundred bytes). Default 64 KiB. */
  maxFileBytes?: number;
  /**
   * The limit files (CPU quota and period, the memory limit) are set by whoever runs the container and
   * change rarely (an in-place resize): they are read again only when the last read is this old, ms.
   * The counters and usage are read every time. Default 60 s; 0 reads them every time.
   */
  limitsRereadMs?: number;
  /** The clock for `limitsRereadMs`, ms (tests). Default performance.now. */
  now?: () => number;
}

/** mountinfo lists every mount of the namespace: thousands on a busy Kubernetes node still fit. */
const MAX_MOUNTINFO_BYTES = 4 << 20;
const DEFAULT_MAX_FILE_BYTES = 64 << 10;
const DEFAULT_LIMITS_REREAD_MS = 60_000;
/** Files that hold a limit someone set, not a counter: see `limitsRereadMs`. */
const LIMIT_FILES: ReadonlySet<string> = new Set([
  'cpu.cfs_quota_us',
  'cpu.cfs_period_us',
  'cpu.max',
  'memory.limit_in_bytes',
  'memory.max',
]);

/** A file read at most `maxBytes` long: its text, `undefined` when absent, or the problem. */
type FileRead = { text: string } | { absent: true } | { problem: string };

/** What a reader keeps between reads so that a read allocates and checks no more than it must. */
interface ReadReuse {
  /** One buffer for every read (the text is copied out of it): no 64 KiB allocation per file, no GC for them. */
  buffer: Buffer;
  /** Files found to be regular once: the kernel's cgroup files do not turn into FIFOs, so they are not checked again. */
  regular: Set<string>;
}

/**
 * Synchronous on purpose, in the worker too: an async open() still on the thread pool when the
 * worker is terminated (a crash, a stop past its deadline) never gets its callback, and its
 * descriptor stays open in the process for good (npm run soak found them: cgroup files, a few per
 * worker crash). These pseudo-files answer in microseconds. O_NONBLOCK and the regular-file check
 * keep a FIFO planted under a controller file's name from holding the thread.
 */
function readBoundedSync(file: string, maxBytes: number, reuse?: ReadReuse): FileRead {
  let fd: number | undefined;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
    if (!reuse?.regular.has(file)) {
      if (!fs.fstatSync(fd).isFile()) return { problem: `${path.basename(file)}: not a regular file` };
      reuse?.regular.add(file);
    }
    const buffer = reuse && reuse.buffer.length > maxBytes ? reuse.buffer : Buffer.alloc(maxBytes + 1);
    let length = 0;
    // Pseudo-files may answer in several reads; stop at the bound.
    for (let n = -1; n !== 0 && length <= maxBytes;) {
      n = fs.readSync(fd, buffer, length, maxBytes + 1 - length, null);
      length += n;
    }
    if (length > maxBytes) return { problem: `${path.basename(file)}: larger than ${maxBytes} bytes` };
    return { text: buffer.toString('utf8', 0, length) };
  } catch (err) {
    return absentOr(file, err);
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

function absentOr(file: string, err: unknown): FileRead {
  const code = (err as NodeJS.ErrnoException).code;
  // A cgroup without a controller file (v2 without the controller enabled, an old kernel without memory.peak) is absent, not broken.
  if (code === 'ENOENT' || code === 'ENOTDIR') return { absent: true };
  return { problem: `${path.basename(file)}: ${code ?? (err instanceof Error ? err.message : String(err))}` };
}

/** The memory controller at a known directory (one a run record named), read synchronously; undefined when none of its files is there. */
export function readMemoryAt(
  where: ControllerDir,
  maxFileBytes = DEFAULT_MAX_FILE_BYTES,
): { memory: CgroupMemory; problems: string[] } | undefined {
  const files: ControllerFiles = {};
  const problems: string[] = [];
  for (const name of MEMORY_FILES[where.version]) {
    const read = readBoundedSync(`${where.dir}/${name}`, maxFileBytes);
    if ('text' in read) files[name] = read.text;
    else if ('problem' in read) problems.push(read.problem);
  }
  if (Object.keys(files).length === 0) return undefined;
  const parsed = parseMemory(where.version, files);
  return { memory: parsed.value, problems: [...problems, ...parsed.problems] };
}

export class CgroupReader {
  readonly #root: string;
  readonly #maxFileBytes: number;
  readonly #limitsRereadMs: number;
  readonly #now: () => number;
  /** The read buffer (made at the first read) and the files known to be regular. */
  #reuse: ReadReuse | undefined;
  /** The limit files' last reads (text or absent; a problem is not kept, so the next read tries again). */
  readonly #limits = new Map<string, { read: FileRead; at: number }>();
  /** Where the controllers are (found once: a process does not change cgroup under a running service, and if it did, the old files fail and say so). */
  readonly location: CgroupLocation;

  constructor(options: CgroupReaderOptions = {}) {
    this.#root = options.root ?? '';
    this.#maxFileBytes = options.maxFileBytes ?? DEFAULT_MAX_FILE_BYTES;
    this.#limitsRereadMs = options.limitsRereadMs ?? DEFAULT_LIMITS_REREAD_MS;
    this.#now = options.now ?? (() => performance.now());
    this.location = this.#locate();
  }

  /** True when a CPU or memory controller was found for this process. */
  get supported(): boolean {
    return this.location.cpu !== undefined || this.location.memory !== undefined;
  }

  #locate(): CgroupLocation {
    if (process.platform !== 'linux' && this.#root === '')
      return { problems: [`cgroups are Linux only (platform ${process.platform})`] };
    const cgroup = readBoundedSync(`${this.#root}/proc/self/cgroup`, this.#maxFileBytes);
    const mountinfo = readBoundedSync(`${this.#root}/proc/self/mountinfo`, MAX_MOUNTINFO_BYTES);
    if (!('text' in cgroup) || !('text' in mountinfo)) {
      const problem = (r: FileRead, name: string) =>
        'problem' in r ? r.problem : 'absent' in r ? `${name}: absent` : undefined;
      return {
        problems: [problem(cgroup, '/proc/self/cgroup'), problem(mountinfo, '/proc/self/mountinfo')].filter(
          (p): p is string => p !== undefined,
        ),
      };
    }
    return locateCgroup(cgroup.text, mountinfo.text);
  }

  /** Reads both controllers (synchronously underneath: see readBoundedSync). */
  async read(): Promise<CgroupReading> {
    return this.readSync();
  }

  /** Reads both controllers synchronously (small pseudo-files, each bounded in size): for a decision that cannot wait. */
  readSync(): CgroupReading {
    const problems: string[] = [];
    const readAll = (where: ControllerDir | undefined, names: readonly string[]) =>
      where &&
      this.#collect(
        names,
        names.map((name) => this.#readFile(where, name)),
        problems,
      );
    return this.#reading(
      readAll(this.location.cpu, CPU_FILES[this.location.cpu?.version ?? 1]),
      readAll(this.location.memory, MEMORY_FILES[this.location.memory?.version ?? 1]),
      problems,
    );
  }

  /** Only the CPU controller (at a stall's start and end: its throttled time). */
  async readCpu(): Promise<CgroupCpu | undefined> {
    const where = this.location.cpu;
    if (!where) return undefined;
    const problems: string[] = [];
    const names = CPU_FILES[where.version];
    const files = this.#collect(
      names,
      names.map((name) => this.#readFile(where, name)),
      problems,
    );
    return files && parseCpu(where.version, files).value;
  }

  /** One controller file: a limit file from its last read while that is recent, any other read now. */
  #readFile(where: ControllerDir, name: string): FileRead {
    const file = this.#path(where, name);
    const limit = LIMIT_FILES.has(name);
    const now = limit ? this.#now() : 0;
    if (limit) {
      const kept = this.#limits.get(file);
      if (kept && now - kept.at < this.#limitsRereadMs) return kept.read;
    }
    this.#reuse ??= { buffer: Buffer.allocUnsafe(this.#maxFileBytes + 1), regular: new Set() };
    const read = readBoundedSync(file, this.#maxFileBytes, this.#reuse);
    if (limit) {
      if ('problem' in read) this.#limits.delete(file);
      else this.#limits.set(file, { read, at: now });
    }
    return read;
  }

  #path(where: ControllerDir, name: string): string {
    return `${this.#root}${where.dir}/${name}`;
  }

  /** The texts read, by file name; undefined when no file of the controller was there. */
  #collect(names: readonly string[], reads: FileRead[], problems: string[]): ControllerFiles | undefined {
    const files: ControllerFiles = {};
    let any = false;
    reads.forEach((read, i) => {
      if ('text' in read) {
        files[names[i]!] = read.text;
        any = true;
      } else if ('problem' in read) {
        problems.push(read.problem);
        any = true;
      }
    });
    return any ? files : undefined;
  }

  #reading(
    cpuFiles: ControllerFiles | undefined,
    memoryFiles: ControllerFiles | undefined,
    problems: string[],
  ): CgroupReading {
    const reading: CgroupReading = { time: Date.now() };
    if (cpuFiles && this.location.cpu) {
      const cpu = parseCpu(this.location.cpu.version, cpuFiles);
      reading.cpu = cpu.value;
      problems.push(...cpu.problems);
    }
    if (memoryFiles && this.location.memory) {
      const memory = parseMemory(this.location.memory.version, memoryFiles);
      reading.memory = memory.value;
      problems.push(...memory.problems);
    }
    if (problems.length > 0) reading.problems = problems;
    return reading;
  }
}
