/**
 * The run record: a small file in `<dumpDir>/runs/` that says "this process is running",
 * written at start, refreshed rarely with the last minutes of samples, and removed at
 * stop(). A record still there at the next start, of a process that is gone, means that
 * process did not stop: it crashed, was killed, or its machine went down. What it held
 * then (its samples, the cgroup's OOM-kill count, the files it wrote near a limit) is the
 * evidence the next start puts in an incident (previous-runs.ts).
 *
 * A process is named by its pid, its start time in clock ticks since boot and the boot's
 * id, so a reused pid (a restarted container is often pid 1 again) is not mistaken for
 * the process that wrote the record.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import type { Sample } from '../samples/sample.js';

export const RUNS_DIR = 'runs';
const RECORD_VERSION = 1;

/** Which process this is, as the next start can check it. */
export interface ProcessIdentity {
  pid: number;
  hostname: string;
  /** /proc/<pid>/stat starttime: clock ticks after boot. Absent off Linux. */
  procStart?: number;
  /** /proc/sys/kernel/random/boot_id. Absent off Linux. */
  bootId?: string;
}

export interface RunRecord {
  version: typeof RECORD_VERSION;
  service: string;
  process: ProcessIdentity;
  startedAt: number;
  /** When the record was last written, ms since the epoch: the process was alive then. */
  updatedAt: number;
  /** V8's heap limit, bytes. */
  heapLimit?: number;
  /** The memory cgroup, to ask it afterwards whether its OOM killer struck. */
  cgroup?: { memoryDir: string; version: 1 | 2; oomKills?: number; limitBytes?: number };
  /** Set when the process came near its heap or memory limit, with the files written then (names in dumpDir). */
  nearLimit?: { at: number; reason: string; files: string[] };
  /** The last minutes of samples, oldest first. */
  samples: Sample[];
}

/** Written beside the record by the 'exit' event when the process exits with a non-zero code without stop(). */
export interface ExitNote {
  code: number;
  at: number;
}

export function recordFileName(identity: ProcessIdentity): string {
  return `run-${identity.pid}-${identity.procStart ?? 0}.json`;
}

export function exitFileName(identity: ProcessIdentity): string {
  return `run-${identity.pid}-${identity.procStart ?? 0}.exit.json`;
}

export const RECORD_NAME = /^run-(\d+)-(\d+)\.json$/;

/** starttime, the 22nd field of /proc/<pid>/stat, counted after the last ')' (comm may hold spaces and parentheses). */
export function parseStartTime(stat: string): number | undefined {
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const value = Number(rest[19]);
  return stat.includes(')') && Number.isInteger(value) && value >= 0 ? value : undefined;
}

function readSmall(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'utf8').slice(0, 4096);
  } catch {
    return undefined;
  }
}

/** This process, or another by pid (its start time read from /proc). */
export function identify(pid = process.pid, procRoot = '/proc'): ProcessIdentity {
  const stat = readSmall(`${procRoot}/${pid}/stat`);
  const procStart = stat === undefined ? undefined : parseStartTime(stat);
  const bootId = readSmall(`${procRoot}/sys/kernel/random/boot_id`)?.trim();
  const identity: ProcessIdentity = { pid, hostname: os.hostname() };
  if (procStart !== undefined) identity.procStart = procStart;
  if (bootId) identity.bootId = bootId;
  return identity;
}

/**
 * Whether the process a record names is still running here: the same pid, started at the
 * same tick, in the same boot. Without /proc (off Linux) a live pid is taken as alive.
 */
export function stillRunning(recorded: ProcessIdentity, procRoot = '/proc'): boolean {
  const now = identify(recorded.pid, procRoot);
  if (recorded.bootId !== undefined && now.bootId !== undefined && recorded.bootId !== now.bootId) return false;
  if (recorded.procStart !== undefined && now.procStart !== undefined) return recorded.procStart === now.procStart;
  if (recorded.procStart !== undefined && now.procStart === undefined && now.bootId !== undefined) return false; // /proc works, the pid is gone
  try {
    process.kill(recorded.pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Checks what JSON.parse gave back is a record this version wrote; undefined if not. */
export function asRunRecord(value: unknown): RunRecord | undefined {
  const r = value as Partial<RunRecord> | null;
  if (typeof r !== 'object' || r === null || r.version !== RECORD_VERSION) return undefined;
  if (typeof r.service !== 'string' || typeof r.startedAt !== 'number' || typeof r.updatedAt !== 'number')
    return undefined;
  const p = r.process as Partial<ProcessIdentity> | undefined;
  if (typeof p !== 'object' || p === null || !Number.isInteger(p.pid) || typeof p.hostname !== 'string')
    return undefined;
  if (!Array.isArray(r.samples) || !r.samples.every((s) => typeof (s as Sample | null)?.time === 'number'))
    return undefined;
  return r as RunRecord;
}

export { RECORD_VERSION };
