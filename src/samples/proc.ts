/**
 * Parsers for the /proc files the worker reads. Pure functions over text, so
 * they are tested on recorded content, including malformed lines; a line that
 * cannot be parsed yields `undefined`, never an exception.
 */

/** Linux reports utime/stime in USER_HZ ticks, which is 100 on every mainstream architecture. */
export const CLOCK_TICKS_PER_SECOND = 100;

export interface TaskStat {
  tid: number;
  /** The name in parentheses (comm), at most 15 bytes, may itself contain spaces or parentheses. */
  comm: string;
  state: string;
  userMs: number;
  systemMs: number;
}

/**
 * Parses /proc/<pid>/task/<tid>/stat. The comm field may contain ')' and spaces,
 * so fields are counted from the last ')'.
 */
export function parseTaskStat(text: string): TaskStat | undefined {
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  if (open <= 0 || close < open) return undefined;
  const tid = Number(text.slice(0, open).trim());
  // The kernel separates the fields by single spaces: a plain split of the first 13 is enough (the worker reads
  // a dozen of these per batch); anything else takes the general split.
  const after = text.slice(close + 2);
  let rest = after.split(' ', 13);
  if (rest.length < 13 || rest.includes('')) rest = after.trim().split(/\s+/);
  // After comm: state(0) ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime(11) stime(12)
  const state = rest[0];
  const utime = Number(rest[11]);
  const stime = Number(rest[12]);
  if (!Number.isInteger(tid) || tid <= 0 || state === undefined || !Number.isFinite(utime) || !Number.isFinite(stime)) {
    return undefined;
  }
  const ms = 1000 / CLOCK_TICKS_PER_SECOND;
  return { tid, comm: text.slice(open + 1, close), state, userMs: utime * ms, systemMs: stime * ms };
}

/** Names what a thread is from its comm and tid. */
export function threadRole(tid: number, comm: string, mainTid: number, workerTid: number | undefined): string {
  if (tid === mainTid) return 'main';
  if (tid === workerTid) return 'sysprobe-worker';
  if (comm === 'sysprobe-watch') return 'sysprobe-watchdog';
  if (comm.startsWith('libuv-worker')) return 'libuv';
  if (comm.startsWith('V8 ') || comm.startsWith('v8:')) return 'v8';
  return 'other';
}
