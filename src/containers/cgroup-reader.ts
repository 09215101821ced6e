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
}

/** mountinfo lists every mount of the namespace: thousands on a busy Kubernetes node still fit. */
const MAX_MOUNTINFO_BYTES = 4 << 20;
const DEFAULT_MAX_FILE_BYTES = 64 << 10;

/** A file read at most `maxBytes` long: its text, `undefined` when absent, or the problem. */
type FileRead = { text: string } | { absent: true } | { problem: string };

/**
 * Synchronous on purpose, in the worker too: an async open() still on the thread pool when the
 * worker is terminated (a crash, a stop past its deadline) never gets its callback, and its
 * descriptor stays open in the process for good (npm run soak found them: cgroup files, a few per
 * worker crash). These pseudo-files answer in microseconds. O_NONBLOCK and the regular-file check
 * keep a FIFO planted under a controller file's name from holding the thread.
 */
function readBoundedSync(file: string, maxBytes: number): FileRead {
  let fd: number | undefined;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
    if (!fs.fstatSync(fd).isFile()) return { problem: `${path.basename(file)}: not a regular file` };
    const buffer = Buffer.alloc(maxBytes + 1);
    let length = 0;
    // Pseudo-files may answer in several reads; stop at the bound.
    for (let n = -1; n !== 0 && length <= maxBytes;) {
      n = fs.readSync(fd, buffer, length, buffer.length - length, null);
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
  /** Where the controllers are (found once: a process does not change cgroup under a running service, and if it did, the old files fail and say so). */
  readonly location: CgroupLocation;

  constructor(options: CgroupReaderOptions = {}) {
    this.#root = options.root ?? '';
    this.#maxFileBytes = options.maxFileBytes ?? DEFAULT_MAX_FILE_BYTES;
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
        names.map((name) => readBoundedSync(this.#path(where, name), this.#maxFileBytes)),
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
      names.map((name) => readBoundedSync(this.#path(where, name), this.#maxFileBytes)),
      problems,
    );
    return files && parseCpu(where.version, files).value;
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
