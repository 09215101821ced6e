/**
 * Pure parsers for the cgroup files of this process: where its cgroup is (from
 * /proc/self/cgroup and /proc/self/mountinfo; v1, v2 or both, "hybrid") and what
 * its CPU and memory controllers say (quota, throttling, limit, usage, OOM kills).
 *
 * Text in, values out: nothing here touches the file system, so every shape is
 * tested on recorded files. Malformed content never throws: the field it would
 * have given is left out and a problem names the file and what was wrong, while
 * everything else read from the same files is kept.
 */

export type CgroupVersion = 1 | 2;

/** A controller's directory for this process, and which cgroup version serves it. */
export interface ControllerDir {
  version: CgroupVersion;
  dir: string;
}

/** Where this process's CPU and memory controllers are; a controller is absent when no mount serves it. */
export interface CgroupLocation {
  cpu?: ControllerDir;
  memory?: ControllerDir;
  /** Lines of /proc/self/cgroup or mountinfo that could not be read. */
  problems: string[];
}

/** The CPU controller's reading. Cumulative counters since the cgroup was made. */
export interface CgroupCpu {
  version: CgroupVersion;
  /** The quota in CPUs (quota / period; 0.2 = a fifth of one core); absent when there is none (unlimited) or it could not be read. */
  quotaCores?: number;
  periodUs?: number;
  /** Enforcement periods that have elapsed (the quota is enforced only while the cgroup runs). */
  periods?: number;
  /** Periods in which the cgroup used its whole quota and was stopped until the next period. */
  throttledPeriods?: number;
  /** Total time the cgroup's threads were stopped by the quota, ms. */
  throttledMs?: number;
}

/** The memory controller's reading. */
export interface CgroupMemory {
  version: CgroupVersion;
  /** The hard limit, bytes; absent when unlimited (v2 `max`, v1 the page counter's maximum) or unreadable. */
  limitBytes?: number;
  /** Memory charged to the cgroup now (page cache included), bytes. */
  usageBytes?: number;
  /**
   * Usage less the inactive file cache the kernel reclaims first (memory.stat `inactive_file`,
   * v1 `total_inactive_file`): the "working set" the kubelet evicts and the OOM killer acts on, bytes.
   */
  workingSetBytes?: number;
  /** The most it was ever charged (v2 memory.peak, v1 max_usage_in_bytes), bytes. */
  peakBytes?: number;
  /** Processes the kernel's OOM killer killed in this cgroup. */
  oomKills?: number;
  /** v2: times the cgroup hit its limit and the OOM killer was invoked (memory.events `oom`). */
  oomEvents?: number;
  /** v1: times usage hit the limit (memory.failcnt); reclaim usually follows, not always a kill. */
  limitHits?: number;
}

/** A parse result: the values it could read, and what it could not. */
export interface Parsed<T> {
  value: T;
  problems: string[];
}

/** v1 reports "unlimited" as the page counter's maximum times the page size (9223372036854771712 with 4 KiB pages). */
const V1_UNLIMITED_AT = 2 ** 62;

/** An unsigned integer, or undefined (never NaN, never a partial parse such as Number('12abc')). */
export function parseCount(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const trimmed = text.trim();
  return /^\d{1,20}$/.test(trimmed) ? Number(trimmed) : undefined;
}

/** A signed integer (v1 cfs_quota_us is -1 when unlimited). */
function parseSigned(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const trimmed = text.trim();
  return /^-?\d{1,20}$/.test(trimmed) ? Number(trimmed) : undefined;
}

/** Parses "key value" lines (cpu.stat, memory.events, memory.oom_control); malformed lines are named in problems. */
export function parseFlatKeyed(file: string, text: string): Parsed<Map<string, number>> {
  const value = new Map<string, number>();
  const problems: string[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    const fields = line.trim().split(/\s+/);
    const count = fields.length === 2 ? parseCount(fields[1]) : undefined;
    if (count === undefined) problems.push(`${file}: unreadable line ${JSON.stringify(line.slice(0, 80))}`);
    else value.set(fields[0]!, count);
  }
  return { value, problems };
}

/** One line of /proc/self/cgroup: `hierarchy-id:controller-list:path`. */
export interface ProcCgroupEntry {
  hierarchy: number;
  controllers: string[];
  path: string;
}

/** Parses /proc/self/cgroup. The v2 line is `0::/path` (no controllers). */
export function parseProcCgroup(text: string): Parsed<ProcCgroupEntry[]> {
  const value: ProcCgroupEntry[] = [];
  const problems: string[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    // The path may itself contain ':', so split on the first two only.
    const first = line.indexOf(':');
    const second = first < 0 ? -1 : line.indexOf(':', first + 1);
    const hierarchy = first < 0 ? undefined : parseCount(line.slice(0, first));
    const path = second < 0 ? '' : line.slice(second + 1);
    if (hierarchy === undefined || !path.startsWith('/')) {
      problems.push(`/proc/self/cgroup: unreadable line ${JSON.stringify(line.slice(0, 80))}`);
      continue;
    }
    const controllers = line
      .slice(first + 1, second)
      .split(',')
      .filter((c) => c !== '');
    value.push({ hierarchy, controllers, path });
  }
  return { value, problems };
}

/** A cgroup mount from /proc/self/mountinfo. */
export interface CgroupMount {
  version: CgroupVersion;
  /** The cgroup this mount shows as its root (not `/` inside a container without a cgroup namespace). */
  root: string;
  mountPoint: string;
  /** v1: the controllers the hierarchy carries (`cpu`, `cpuacct`, `memory`, `name=systemd`, ...). */
  controllers: string[];
}

/** mountinfo escapes space, tab, newline and backslash in paths as octal (`\040`). */
function unescapeMountPath(text: string): string {
  return text.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
}

/**
 * Parses the cgroup mounts of /proc/self/mountinfo:
 * `id parent major:minor root mount-point options [optional fields...] - fstype source super-options`.
 * Other file systems are skipped without a word; a cgroup line that cannot be read is a problem.
 */
export function parseCgroupMounts(text: string): Parsed<CgroupMount[]> {
  const value: CgroupMount[] = [];
  const problems: string[] = [];
  for (const line of text.split('\n')) {
    if (!/ - cgroup2? /.test(line)) continue;
    const [before, after] = line.split(' - ');
    const left = before!.split(' ');
    const right = (after ?? '').split(' ');
    const fsType = right[0];
    if (left.length < 6 || left[3] === undefined || left[4] === undefined || right.length < 3) {
      problems.push(`/proc/self/mountinfo: unreadable cgroup line ${JSON.stringify(line.slice(0, 120))}`);
      continue;
    }
    const superOptions = right[2]!.split(',');
    value.push({
      version: fsType === 'cgroup2' ? 2 : 1,
      root: unescapeMountPath(left[3]),
      mountPoint: unescapeMountPath(left[4]),
      controllers: fsType === 'cgroup2' ? [] : superOptions.filter((o) => o !== 'rw' && o !== 'ro'),
    });
  }
  return { value, problems };
}

/**
 * The directory of `cgroupPath` under a mount whose root is `root`. In a container
 * without a cgroup namespace the mount's root is the container's own cgroup and
 * /proc/self/cgroup shows the full path; with one, both are `/`. A path outside the
 * mount's root (a process moved out of the container's subtree) cannot be reached
 * through this mount: undefined.
 */
function dirUnder(mount: CgroupMount, cgroupPath: string): string | undefined {
  const root = mount.root === '/' ? '' : mount.root.replace(/\/$/, '');
  if (cgroupPath !== root && !cgroupPath.startsWith(`${root}/`) && root !== '') return undefined;
  const relative = cgroupPath.slice(root.length);
  return `${mount.mountPoint.replace(/\/$/, '')}${relative === '/' ? '' : relative}`;
}

/**
 * Where this process's CPU and memory controllers are. A controller mounted on a v1
 * hierarchy is read there (v1 or hybrid); otherwise the v2 cgroup serves it, if the
 * controller is enabled there (v2 lists its controllers in `cgroup.controllers`, which the
 * reader checks by finding the files: a hybrid's v2 tree carries none).
 */
export function locateCgroup(procCgroup: string, mountinfo: string): CgroupLocation {
  const entries = parseProcCgroup(procCgroup);
  const mounts = parseCgroupMounts(mountinfo);
  const location: CgroupLocation = { problems: [...entries.problems, ...mounts.problems] };
  for (const controller of ['cpu', 'memory'] as const) {
    const v1Entry = entries.value.find((e) => e.hierarchy !== 0 && e.controllers.includes(controller));
    const v1Mount = mounts.value.find((m) => m.version === 1 && m.controllers.includes(controller));
    if (v1Entry && v1Mount) {
      const dir = dirUnder(v1Mount, v1Entry.path);
      if (dir) location[controller] = { version: 1, dir };
      else location.problems.push(`${controller}: cgroup ${v1Entry.path} is outside the mount's root ${v1Mount.root}`);
      continue;
    }
    const v2Entry = entries.value.find((e) => e.hierarchy === 0 && e.controllers.length === 0);
    const v2Mount = mounts.value.find((m) => m.version === 2);
    if (v2Entry && v2Mount) {
      const dir = dirUnder(v2Mount, v2Entry.path);
      if (dir) location[controller] = { version: 2, dir };
      else location.problems.push(`${controller}: cgroup ${v2Entry.path} is outside the mount's root ${v2Mount.root}`);
    }
  }
  return location;
}

/** The files each controller's reading comes from, by version; a missing file is `undefined` in `files`. */
export const CPU_FILES = {
  1: ['cpu.cfs_quota_us', 'cpu.cfs_period_us', 'cpu.stat'],
  2: ['cpu.max', 'cpu.stat'],
} as const;
export const MEMORY_FILES = {
  1: [
    'memory.limit_in_bytes',
    'memory.usage_in_bytes',
    'memory.max_usage_in_bytes',
    'memory.oom_control',
    'memory.failcnt',
    'memory.stat',
  ],
  2: ['memory.max', 'memory.current', 'memory.peak', 'memory.events', 'memory.stat'],
} as const;

/** What was read of a controller's files, by name; undefined when the file is absent. */
export type ControllerFiles = Record<string, string | undefined>;

/** Reads one number out of a file, noting a problem when the file is there but unreadable. */
function field(
  files: ControllerFiles,
  file: string,
  problems: string[],
  parse: (text: string) => number | undefined = parseCount,
): number | undefined {
  const text = files[file];
  if (text === undefined) return undefined;
  const value = parse(text);
  if (value === undefined) problems.push(`${file}: not a number: ${JSON.stringify(text.trim().slice(0, 80))}`);
  return value;
}

function keyed(files: ControllerFiles, file: string, problems: string[]): Map<string, number> | undefined {
  const text = files[file];
  if (text === undefined) return undefined;
  const parsed = parseFlatKeyed(file, text);
  problems.push(...parsed.problems);
  return parsed.value;
}

/** The CPU controller from its files. */
export function parseCpu(version: CgroupVersion, files: ControllerFiles): Parsed<CgroupCpu> {
  const problems: string[] = [];
  const cpu: CgroupCpu = { version };
  const stat = keyed(files, 'cpu.stat', problems);
  if (version === 2) {
    // cpu.max: "$MAX $PERIOD", MAX being "max" when unlimited.
    const text = files['cpu.max'];
    if (text !== undefined) {
      const [max, period, extra] = text.trim().split(/\s+/);
      const periodUs = parseCount(period);
      const quotaUs = max === 'max' ? Infinity : parseCount(max);
      if (periodUs === undefined || periodUs === 0 || quotaUs === undefined || extra !== undefined) {
        problems.push(`cpu.max: unreadable: ${JSON.stringify(text.trim().slice(0, 80))}`);
      } else {
        cpu.periodUs = periodUs;
        if (quotaUs !== Infinity) cpu.quotaCores = quotaUs / periodUs;
      }
    }
    setIfDefined(cpu, 'throttledMs', stat?.get('throttled_usec'), (us) => us / 1000);
  } else {
    const quotaUs = field(files, 'cpu.cfs_quota_us', problems, parseSigned);
    const periodUs = field(files, 'cpu.cfs_period_us', problems);
    if (periodUs !== undefined && periodUs > 0) {
      cpu.periodUs = periodUs;
      // -1 is "no quota"; any other negative value is not something the kernel writes.
      if (quotaUs !== undefined && quotaUs > 0) cpu.quotaCores = quotaUs / periodUs;
      else if (quotaUs !== undefined && quotaUs !== -1) problems.push(`cpu.cfs_quota_us: unexpected value ${quotaUs}`);
    } else if (periodUs === 0) {
      problems.push('cpu.cfs_period_us: 0');
    }
    setIfDefined(cpu, 'throttledMs', stat?.get('throttled_time'), (ns) => ns / 1e6);
  }
  setIfDefined(cpu, 'periods', stat?.get('nr_periods'));
  setIfDefined(cpu, 'throttledPeriods', stat?.get('nr_throttled'));
  return { value: cpu, problems };
}

/** The memory controller from its files. */
export function parseMemory(version: CgroupVersion, files: ControllerFiles): Parsed<CgroupMemory> {
  const problems: string[] = [];
  const memory: CgroupMemory = { version };
  if (version === 2) {
    const max = files['memory.max'];
    if (max !== undefined && max.trim() !== 'max')
      setIfDefined(memory, 'limitBytes', field(files, 'memory.max', problems));
    setIfDefined(memory, 'usageBytes', field(files, 'memory.current', problems));
    setIfDefined(memory, 'peakBytes', field(files, 'memory.peak', problems));
    const events = keyed(files, 'memory.events', problems);
    setIfDefined(memory, 'oomKills', events?.get('oom_kill'));
    setIfDefined(memory, 'oomEvents', events?.get('oom'));
  } else {
    const limit = field(files, 'memory.limit_in_bytes', problems);
    if (limit !== undefined && limit < V1_UNLIMITED_AT) memory.limitBytes = limit;
    setIfDefined(memory, 'usageBytes', field(files, 'memory.usage_in_bytes', problems));
    setIfDefined(memory, 'peakBytes', field(files, 'memory.max_usage_in_bytes', problems));
    // oom_control has oom_kill since Linux 4.13; older kernels give only the other two lines.
    setIfDefined(memory, 'oomKills', keyed(files, 'memory.oom_control', problems)?.get('oom_kill'));
    setIfDefined(memory, 'limitHits', field(files, 'memory.failcnt', problems));
  }
  const stat = keyed(files, 'memory.stat', problems);
  // v1: a parent's limit binds too; memory.stat gives the smallest on the way up.
  const hierarchical = stat?.get('hierarchical_memory_limit');
  if (
    version === 1 &&
    hierarchical !== undefined &&
    hierarchical < V1_UNLIMITED_AT &&
    hierarchical < (memory.limitBytes ?? Infinity)
  )
    memory.limitBytes = hierarchical;
  const inactiveFile = stat?.get(version === 2 ? 'inactive_file' : 'total_inactive_file');
  if (memory.usageBytes !== undefined && inactiveFile !== undefined)
    memory.workingSetBytes = Math.max(0, memory.usageBytes - inactiveFile);
  return { value: memory, problems };
}

function setIfDefined<T extends object, K extends keyof T>(
  target: T,
  key: K,
  value: number | undefined,
  map: (n: number) => number = (n) => n,
): void {
  if (value !== undefined) target[key] = map(value) as T[K];
}
