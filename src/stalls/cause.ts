/**
 * Why the event loop stalled. The probe worker looks at the blocked main thread from
 * outside, through /proc/self/task/<tid>/ (its state, the system call it is in, the
 * kernel function it sleeps in) and names what a blocking call waits on: a file's
 * path, a socket's remote address, a child process's command line. The main thread,
 * once the loop runs again, adds the GC pauses that fell in the stall and decides the
 * cause: `self`, `throttled`, `gc`, `native` or `js`.
 *
 * Reading another thread's `syscall` and `wchan` needs ptrace access, which a thread
 * of the same process always has (same thread group), root or not. What cannot be
 * read is left out; nothing here throws.
 *
 * The parsers are pure (tested on recorded /proc content); the readers are small,
 * synchronous /proc reads in the worker, once when a stall is seen and once per
 * sample interval while it lasts.
 */
import * as fs from 'node:fs';
import { parseTaskStat } from '../samples/proc.js';
import { parseTcpTable } from '../sockets/proc-net.js';
import type { Frame } from '../captures/cpuprofile.js';

export type StallCause = 'js' | 'native' | 'gc' | 'throttled' | 'self';

/** A cause takes the stall when it took at least this share of it (GC pauses, cgroup throttling). */
export const DOMINANT_SHARE = 0.5;
/** The most bytes read from the thread's memory for a path or a poll set. */
const MAX_MEMORY_READ = 256;
/** The most descriptors named for a poll. */
const MAX_POLL_FDS = 4;
/** The most child processes named. */
const MAX_CHILDREN = 4;
/** Command lines are cut at this length. */
const MAX_COMMAND = 120;

/** The main thread as the worker saw it during a stall. */
export interface ThreadObservation {
  /** ms since the epoch. */
  at: number;
  /** The kernel's state letter: R running, S sleeping, D in uninterruptible I/O wait, … */
  state: string;
  /** The system call it is blocked in (its name where known, else `syscall <n>`); absent while it runs on the CPU. */
  syscall?: string;
  /** The descriptor the call works on, and what it is. */
  fd?: number;
  /** What the call waits on, when there is something to name: `tcp 10.0.0.5:5432`, `file /var/lib/x`, `fifo /tmp/f`, `child 1234 sleep 1`, … */
  waitingOn?: string;
  /** The kernel function it sleeps in (`pipe_read`, `do_wait`, …), when the kernel tells. */
  wchan?: string;
}

/** What the main thread concludes once the stall is over. */
export interface StallDiagnosis {
  cause: StallCause;
  /** One sentence: what decided the cause. */
  why: string;
  /** GC pauses within the stall, ms (when GC timing is on). */
  gcMs?: number;
  /** CPU time the container's cgroup was throttled within the stall, ms (when it could be read). */
  throttledMs?: number;
  /** For `native`: the system call and what it waited on, as last seen. */
  blockedIn?: ThreadObservation;
  /**
   * For `native` with a stack: the app's function that made the native call. The pause lands at the
   * first JS to run after the call returns, so the stack's first frame outside Node's own code is the
   * function that called into native code (or, if it returned and went on, the function it returned to).
   */
  calledFrom?: Frame;
}

// ---------------------------------------------------------------------------------------------
// Pure parsers

/** /proc/<pid>/task/<tid>/syscall: `running`, `-1 sp pc` (blocked, not in a system call), or `nr arg0 … arg5 sp pc`. */
export type SyscallLine = { running: true } | { running: false; nr: number; args: bigint[] };

export function parseSyscall(text: string): SyscallLine | undefined {
  const fields = text.trim().split(/\s+/);
  if (fields[0] === 'running') return { running: true };
  const nr = Number(fields[0]);
  if (!Number.isInteger(nr)) return undefined;
  if (nr < 0) return { running: false, nr, args: [] };
  if (fields.length < 7) return undefined;
  const args: bigint[] = [];
  for (const field of fields.slice(1, 7)) {
    if (!/^0x[0-9a-fA-F]{1,16}$/.test(field)) return undefined;
    args.push(BigInt(field));
  }
  return { running: false, nr, args };
}

/** The system calls a blocked thread is found in, by number, per architecture. */
const SYSCALLS: Record<string, Record<number, string>> = {
  x64: {
    0: 'read',
    1: 'write',
    2: 'open',
    3: 'close',
    7: 'poll',
    16: 'ioctl',
    17: 'pread64',
    18: 'pwrite64',
    19: 'readv',
    20: 'writev',
    23: 'select',
    34: 'pause',
    35: 'nanosleep',
    40: 'sendfile',
    42: 'connect',
    43: 'accept',
    44: 'sendto',
    45: 'recvfrom',
    46: 'sendmsg',
    47: 'recvmsg',
    61: 'wait4',
    72: 'fcntl',
    73: 'flock',
    74: 'fsync',
    75: 'fdatasync',
    77: 'ftruncate',
    202: 'futex',
    217: 'getdents64',
    230: 'clock_nanosleep',
    232: 'epoll_wait',
    247: 'waitid',
    257: 'openat',
    270: 'pselect6',
    271: 'ppoll',
    281: 'epoll_pwait',
    285: 'fallocate',
    288: 'accept4',
    318: 'getrandom',
    441: 'epoll_pwait2',
  },
  arm64: {
    22: 'epoll_pwait',
    25: 'fcntl',
    29: 'ioctl',
    32: 'flock',
    46: 'ftruncate',
    47: 'fallocate',
    56: 'openat',
    57: 'close',
    61: 'getdents64',
    63: 'read',
    64: 'write',
    65: 'readv',
    66: 'writev',
    67: 'pread64',
    68: 'pwrite64',
    71: 'sendfile',
    72: 'pselect6',
    73: 'ppoll',
    82: 'fsync',
    83: 'fdatasync',
    95: 'waitid',
    98: 'futex',
    101: 'nanosleep',
    115: 'clock_nanosleep',
    202: 'accept',
    203: 'connect',
    206: 'sendto',
    207: 'recvfrom',
    211: 'sendmsg',
    212: 'recvmsg',
    242: 'accept4',
    260: 'wait4',
    278: 'getrandom',
    441: 'epoll_pwait2',
  },
};

export function syscallName(nr: number, arch: string = process.arch): string {
  return SYSCALLS[arch]?.[nr] ?? `syscall ${nr}`;
}

/** System calls whose first argument is the descriptor they work on. */
const FD_FIRST = new Set([
  'read',
  'write',
  'close',
  'ioctl',
  'pread64',
  'pwrite64',
  'readv',
  'writev',
  'sendfile',
  'connect',
  'accept',
  'accept4',
  'sendto',
  'recvfrom',
  'sendmsg',
  'recvmsg',
  'fcntl',
  'flock',
  'fsync',
  'fdatasync',
  'ftruncate',
  'fallocate',
  'getdents64',
  'epoll_wait',
  'epoll_pwait',
  'epoll_pwait2',
]);
/** System calls that wait for a child process, or sleep, or wait on a lock: named without an argument. */
const PLAIN_WAITS: Record<string, string> = {
  futex: 'a lock or condition (futex: another thread, Atomics.wait, or a synchronous call into the thread pool)',
  nanosleep: 'a sleep',
  clock_nanosleep: 'a sleep',
  pause: 'a signal',
  getrandom: "the kernel's entropy pool",
};

/** What a descriptor is, from its /proc/self/fd link: `socket:[123]`, `pipe:[4]`, `anon_inode:[eventpoll]`, or a path. */
export type FdTarget =
  | { kind: 'socket'; inode: number }
  | { kind: 'pipe'; inode: number }
  | { kind: 'anon'; name: string }
  | { kind: 'path'; path: string };

export function parseFdLink(link: string): FdTarget | undefined {
  const special = /^(socket|pipe|anon_inode):\[?([^\]]*)\]?$/.exec(link);
  if (special) {
    const [, kind, value] = special;
    if (kind === 'anon_inode') return { kind: 'anon', name: value! };
    const inode = Number(value);
    if (!Number.isInteger(inode)) return undefined;
    return { kind: kind as 'socket' | 'pipe', inode };
  }
  return link.startsWith('/') ? { kind: 'path', path: link } : undefined;
}

/** /proc/net/unix: the path bound to each unix socket inode (abstract names start with '@'). */
export function parseUnixTable(text: string): Map<number, string> {
  const paths = new Map<number, string>();
  for (const line of text.split('\n').slice(1)) {
    // Num RefCount Protocol Flags Type St Inode [Path]
    const f = line.trim().split(/\s+/);
    if (f.length < 8) continue;
    const inode = Number(f[6]);
    if (Number.isInteger(inode) && inode > 0) paths.set(inode, f.slice(7).join(' '));
  }
  return paths;
}

/** The first `count` descriptors of a `struct pollfd` array (int fd; short events; short revents), little- or big-endian as the host. */
export function parsePollFds(bytes: Uint8Array, count: number): number[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const little = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
  const fds: number[] = [];
  for (let i = 0; i < count && (i + 1) * 8 <= bytes.length; i++) {
    const fd = view.getInt32(i * 8, little);
    if (fd >= 0) fds.push(fd);
  }
  return fds;
}

/** A C string from the thread's memory. */
function cString(bytes: Uint8Array): string {
  const end = bytes.indexOf(0);
  return Buffer.from(bytes.subarray(0, end < 0 ? bytes.length : end)).toString('utf8');
}

/**
 * Decides the cause of a stall that is over, from what was seen during it.
 * In order: sysprobe's own pause; a cgroup that throttled the CPU for at least half the stall;
 * GC pauses for at least half of it; an inspector that could not interrupt the thread (native code
 * runs without checking for interrupts), or, without a stack capture, a thread seen in a system call
 * at least half the times it was looked at; otherwise JS.
 */
export function classifyStall(input: {
  durationMs: number;
  selfPaused: boolean;
  gcMs?: number | undefined;
  throttledMs?: number | undefined;
  captureHow?: string | undefined;
  observations: readonly ThreadObservation[];
  stack?: readonly Frame[] | undefined;
}): StallDiagnosis {
  const { durationMs, gcMs, throttledMs } = input;
  const measured: Pick<StallDiagnosis, 'gcMs' | 'throttledMs'> = {};
  if (gcMs !== undefined) measured.gcMs = round(gcMs);
  if (throttledMs !== undefined) measured.throttledMs = round(throttledMs);
  const share = (ms: number | undefined) => (ms ?? 0) / Math.max(durationMs, 1);
  const ms = (value: number) => `${round(value)} of ${round(durationMs)} ms`;
  if (input.selfPaused)
    return { cause: 'self', why: 'sysprobe paused the main thread itself (a heap snapshot)', ...measured };
  if (share(throttledMs) >= DOMINANT_SHARE) {
    return {
      cause: 'throttled',
      why: `the container's CPU quota throttled the process for ${ms(throttledMs!)}`,
      ...measured,
    };
  }
  if (share(gcMs) >= DOMINANT_SHARE)
    return { cause: 'gc', why: `garbage collection paused the thread for ${ms(gcMs!)}`, ...measured };
  const inSyscall = input.observations.filter((o) => o.syscall !== undefined && o.state !== 'R');
  const blockedIn = inSyscall.at(-1);
  // The inspector's pause is the better witness: a thread it paused at once was running JS (a glimpse of it in a
  // futex is V8 waiting for its GC helpers); one it could not interrupt was in native code. Without a capture, the looks decide.
  const native =
    input.captureHow === 'blocked-in-native' ||
    (input.captureHow !== 'debugger-pause' &&
      input.captureHow !== 'interrupt' &&
      inSyscall.length > 0 &&
      inSyscall.length * 2 >= input.observations.length);
  if (native) {
    const diagnosis: StallDiagnosis = {
      cause: 'native',
      why: blockedIn
        ? `the thread was blocked in the system call ${blockedIn.syscall}${blockedIn.waitingOn ? ` waiting on ${blockedIn.waitingOn}` : ''}`
        : "the thread ran native code: it did not take the inspector's interrupt until the native call returned",
      ...measured,
    };
    if (blockedIn) diagnosis.blockedIn = blockedIn;
    const calledFrom = input.captureHow === 'blocked-in-native' ? firstAppFrame(input.stack) : undefined;
    if (calledFrom) diagnosis.calledFrom = calledFrom;
    return diagnosis;
  }
  const seen = input.observations.length > 0 ? 'running on the CPU' : 'not observed in a system call';
  return {
    cause: 'js',
    why:
      input.captureHow === 'debugger-pause' || input.captureHow === 'interrupt'
        ? `JavaScript was running (${seen}; ${input.captureHow === 'interrupt' ? 'V8 interrupted it in JS' : 'the inspector paused it in JS'})`
        : `the thread was ${seen}, and neither GC nor throttling explains the stall`,
    ...measured,
  };
}

/** The first frame that is the app's, not Node's (`node:` URLs) nor an anonymous native frame. */
export function firstAppFrame(stack: readonly Frame[] | undefined): Frame | undefined {
  return stack?.find((f) => f.url !== '' && !f.url.startsWith('node:'));
}

function round(ms: number): number {
  return Math.round(ms * 10) / 10;
}

// ---------------------------------------------------------------------------------------------
// Readers (the worker, during a stall)

function readText(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}

function readLink(file: string): string | undefined {
  try {
    return fs.readlinkSync(file);
  } catch {
    return undefined;
  }
}

/** Reads up to `length` bytes of this process's memory at `address` (the blocked thread's arguments point there). */
function readMemory(address: bigint, length: number): Uint8Array | undefined {
  if (address <= 0n || address > BigInt(Number.MAX_SAFE_INTEGER)) return undefined;
  let fd: number | undefined;
  try {
    fd = fs.openSync('/proc/self/mem', 'r');
    const bytes = new Uint8Array(Math.min(length, MAX_MEMORY_READ));
    const read = fs.readSync(fd, bytes, 0, bytes.length, Number(address));
    return bytes.subarray(0, read);
  } catch {
    return undefined;
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

/** What descriptor `fd` of this process is, named for a person: a socket's remote address, a file's path. */
export function describeFd(fd: number): string | undefined {
  const link = readLink(`/proc/self/fd/${fd}`);
  const target = link === undefined ? undefined : parseFdLink(link);
  if (!target) return undefined;
  switch (target.kind) {
    case 'path': {
      let fifo = false;
      try {
        fifo = fs.statSync(`/proc/self/fd/${fd}`).isFIFO();
      } catch {
        /* gone: keep the path */
      }
      return `${fifo ? 'fifo' : 'file'} ${target.path}`;
    }
    case 'pipe':
      return `pipe ${target.inode}`;
    case 'anon':
      return target.name === 'eventpoll' ? 'an epoll set' : target.name;
    case 'socket':
      return describeSocket(target.inode);
  }
}

function describeSocket(inode: number): string {
  for (const file of ['/proc/self/net/tcp', '/proc/self/net/tcp6']) {
    const text = readText(file);
    if (!text) continue;
    const row = parseTcpTable(text, undefined, (rowInode) => rowInode === inode).rows[0];
    if (row) {
      return row.state === 'LISTEN'
        ? `tcp listener ${row.localAddress}:${row.localPort}`
        : `tcp ${row.remoteAddress}:${row.remotePort} (${row.state.toLowerCase()})`;
    }
  }
  const unix = readText('/proc/self/net/unix');
  const path = unix ? parseUnixTable(unix).get(inode) : undefined;
  if (path !== undefined) return `unix socket ${path}`;
  return `socket ${inode}`;
}

/** The child processes the thread started (execSync, spawnSync wait for them), by pid and command line. */
function describeChildren(tid: number): string | undefined {
  const text = readText(`/proc/self/task/${tid}/children`);
  const pids =
    text
      ?.trim()
      .split(/\s+/)
      .filter((p) => /^\d+$/.test(p))
      .slice(0, MAX_CHILDREN) ?? [];
  if (pids.length === 0) return undefined;
  return pids
    .map((pid) => {
      const command = (readText(`/proc/${pid}/cmdline`) ?? '')
        .split('\0')
        .filter(Boolean)
        .join(' ')
        .slice(0, MAX_COMMAND);
      return `child ${pid}${command ? ` ${command}` : ''}`;
    })
    .join(', ');
}

/**
 * How long, in ns, the given threads of this process have waited for a CPU so far: the second field of
 * each one's /proc/self/task/<tid>/schedstat (`'self'`: the calling thread). Read before and after a timed
 * wait, the difference is the part of it that was the machine's load, not the threads' own doing; a thread
 * whose schedstat cannot be read counts 0.
 */
export function runQueueWaitNs(tids: readonly (number | 'self')[]): number {
  let total = 0;
  for (const tid of tids) {
    const text = readText(tid === 'self' ? '/proc/thread-self/schedstat' : `/proc/self/task/${tid}/schedstat`);
    const waited = Number(text?.split(' ')[1]);
    if (Number.isFinite(waited) && waited > 0) total += waited;
  }
  return total;
}

/** The thread `tid` of this process now: state, system call, and what the call waits on. Undefined off Linux or when the thread is gone. */
export function observeThread(tid: number, now = Date.now()): ThreadObservation | undefined {
  const stat = readText(`/proc/self/task/${tid}/stat`);
  const parsed = stat === undefined ? undefined : parseTaskStat(stat);
  if (!parsed) return undefined;
  const observation: ThreadObservation = { at: now, state: parsed.state };
  const wchan = readText(`/proc/self/task/${tid}/wchan`)?.trim();
  if (wchan && wchan !== '0') observation.wchan = wchan;
  const line = readText(`/proc/self/task/${tid}/syscall`);
  const syscall = line === undefined ? undefined : parseSyscall(line);
  if (!syscall || syscall.running || syscall.nr < 0) return observation;
  const name = syscallName(syscall.nr);
  observation.syscall = name;
  const waitingOn = describeWait(tid, name, syscall.args, observation);
  if (waitingOn) observation.waitingOn = waitingOn;
  return observation;
}

function describeWait(tid: number, name: string, args: bigint[], observation: ThreadObservation): string | undefined {
  const plain = PLAIN_WAITS[name];
  if (plain) return plain;
  // execSync/spawnSync run a private event loop until the child exits: the child is what it waits on.
  const children = describeChildren(tid);
  if (children && (name.startsWith('epoll') || name.startsWith('wait') || name.endsWith('poll'))) return children;
  if (name === 'open' || name === 'openat') {
    const bytes = readMemory(args[name === 'open' ? 0 : 1]!, MAX_MEMORY_READ);
    return bytes ? `opening ${cString(bytes)}` : undefined;
  }
  if (name === 'poll' || name === 'ppoll') {
    const count = Number(args[1]! < BigInt(MAX_POLL_FDS) ? args[1]! : BigInt(MAX_POLL_FDS));
    const bytes = readMemory(args[0]!, count * 8);
    const names = bytes ? parsePollFds(bytes, count).map((fd) => describeFd(fd) ?? `fd ${fd}`) : [];
    return names.length > 0 ? names.join(', ') : undefined;
  }
  if (FD_FIRST.has(name)) {
    const fd = Number(args[0]!);
    if (!Number.isInteger(fd) || fd < 0 || fd > 0x7fffffff) return undefined;
    observation.fd = fd;
    return describeFd(fd);
  }
  return undefined;
}
