/**
 * The old generation's limit as the service set it: `--max-old-space-size` (or V8's
 * `--max_old_space_size`) in NODE_OPTIONS or on node's command line.
 *
 * V8's heap_size_limit adds the young generation's room to it, and that room differs by
 * version: with `--max-old-space-size=64` the limit reads 112 MiB on Node 20 and 22, 256
 * MiB on Node 24 and 160 MiB on Node 26. The flag is the line the old generation dies at,
 * so when it is given the near-limit watch takes it rather than guessing the young room.
 *
 * The probe worker runs with `execArgv: []`, so the command line is read from
 * /proc/self/cmdline (bounded), where the main thread's options are.
 */
import * as fs from 'node:fs';

const FLAG = /^--max[-_]old[-_]space[-_]size(?:=(.*))?$/;
/** node's options that take their value as the next word (so that word is not the script). */
const TAKES_VALUE = new Set([
  '-r',
  '--require',
  '--import',
  '--loader',
  '--experimental-loader',
  '-C',
  '--conditions',
  '--title',
  '--inspect-port',
  '--debug-port',
  '--input-type',
  '--env-file',
  '--env-file-if-exists',
  '--stack-size',
  '--max-old-space-size',
  '--max_old_space_size',
  '--max-semi-space-size',
  '--max_semi_space_size',
  '--openssl-config',
  '--redirect-warnings',
  '--icu-data-dir',
  '--secure-heap',
  '--secure-heap-min',
  '--diagnostic-dir',
  '--report-dir',
  '--report-directory',
  '--report-filename',
  '--report-signal',
  '--heapsnapshot-signal',
  '--cpu-prof-dir',
  '--cpu-prof-name',
  '--heap-prof-dir',
  '--heap-prof-name',
]);
/** Options after which the rest of the line belongs to the code they run, not to node. */
const ENDS_OPTIONS = new Set(['-e', '--eval', '-p', '--print', '--']);
/** The most of /proc/self/cmdline read. */
const CMDLINE_MAX_BYTES = 64 * 1024;

function megabytes(value: string | undefined): number | undefined {
  if (value === undefined || !/^\d+(\.\d+)?$/.test(value.trim())) return undefined;
  const mb = Number(value);
  return mb > 0 ? Math.round(mb * 1024 * 1024) : undefined;
}

/** The last `--max-old-space-size` among node's own options in one list of words (the script and its arguments are not looked at), bytes. */
export function flagIn(words: readonly string[]): number | undefined {
  let found: number | undefined;
  for (let i = 0; i < words.length; i++) {
    const word = words[i]!;
    if (ENDS_OPTIONS.has(word) || !word.startsWith('-')) break;
    const m = FLAG.exec(word);
    if (m) found = megabytes(m[1] ?? words[i + 1]) ?? found;
    if (TAKES_VALUE.has(word)) i++;
  }
  return found;
}

/**
 * The old generation's limit from NODE_OPTIONS and node's own command-line options (argv
 * without node itself), bytes; undefined when neither sets it. The command line wins, as in node.
 */
export function oldSpaceFlag(nodeOptions: string | undefined, nodeArgv: readonly string[]): number | undefined {
  return flagIn(nodeArgv) ?? flagIn((nodeOptions ?? '').split(/\s+/).filter(Boolean));
}

/** node's command line, without node itself, from /proc/self/cmdline; [] where there is none. */
function commandLine(): string[] {
  let fd: number | undefined;
  try {
    fd = fs.openSync('/proc/self/cmdline', 'r');
    const buf = Buffer.alloc(CMDLINE_MAX_BYTES);
    const n = fs.readSync(fd, buf, 0, buf.length, 0);
    return buf.toString('utf8', 0, n).split('\0').filter(Boolean).slice(1);
  } catch {
    return [];
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

let cached: number | undefined | null = null;

/** This process's `--max-old-space-size`, bytes (read once); undefined when not given. */
export function processOldSpaceFlag(): number | undefined {
  if (cached === null) cached = oldSpaceFlag(process.env.NODE_OPTIONS, commandLine());
  return cached;
}
