/**
 * `sysprobe heap summary FILE` and `sysprobe heap diff A B [C]`. The CLI is its own
 * process, so the analysis runs here, in-process; the library API forks instead.
 */
import { SysprobeError } from '../errors.js';
import { diff, summarize, type HeapDiff, type HeapSummary } from '../heap/analysis.js';
import { dedicateProcessToAnalysis } from '../heap/arrays.js';
import { CliError, ExitCode, type Verb } from './cli-common.js';

const HELP = `usage:
  sysprobe heap summary FILE [--json] [--top N] [--progress]
  sysprobe heap diff A B [C] [--json] [--top N] [--progress]

summary  totals by constructor, the largest retainers and how they are held
diff     A B: change per constructor, new objects in B
         A B C (baseline, target, final): also likely leaks, objects made
         between A and B still alive in C, grouped by class and how they are
         held, ranked by retained size; groups under the noise floor (5 % of
         the heap's growth, at least 256 kB) are not leaks, and when none is
         above it the diff says "no leak found"

FILE, A, B, C: .heapsnapshot files, plain or gzipped; a diff's from one process.

--json      one JSON document on stdout
--top N     rows per table (default 20; 50 with --json)
--progress  a progress bar on stderr even when it is not a terminal`;

interface Args {
  sub: string;
  files: string[];
  json: boolean;
  top: number | undefined;
  progress: boolean;
  help: boolean;
}

function parse(args: string[]): Args {
  const out: Args = { sub: '', files: [], json: false, top: undefined, progress: false, help: false };
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--json') out.json = true;
    else if (a === '--progress') out.progress = true;
    else if (a === '--help' || a === '-h') out.help = true;
    else if (a === '--top' || a.startsWith('--top=')) {
      const v = a === '--top' ? args[++i] : a.slice(6);
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1 || n > 10_000)
        throw new CliError(ExitCode.USAGE, `--top takes a whole number from 1 to 10000; got ${v ?? 'nothing'}`);
      out.top = n;
    } else if (a.startsWith('-')) throw new CliError(ExitCode.USAGE, `unknown flag ${a}\n\n${HELP}`);
    else if (!out.sub) out.sub = a;
    else out.files.push(a);
  }
  return out;
}

function bytes(n: number): string {
  const abs = Math.abs(n);
  const s =
    abs >= 1 << 30
      ? `${(abs / 2 ** 30).toFixed(2)} GB`
      : abs >= 1 << 20
        ? `${(abs / 2 ** 20).toFixed(1)} MB`
        : abs >= 1024
          ? `${(abs / 1024).toFixed(1)} kB`
          : `${abs} B`;
  return n < 0 ? `-${s}` : s;
}

function signed(n: number, fmt: (x: number) => string = String): string {
  return n > 0 ? `+${fmt(n)}` : fmt(n);
}

function table(rows: string[][], rightAligned: number[]): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  return rows
    .map((r) =>
      r
        .map((cell, c) => (rightAligned.includes(c) ? cell.padStart(widths[c]!) : cell.padEnd(widths[c]!)))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

function clip(s: string, max = 60): string {
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}

export function renderSummary(s: HeapSummary, top: number): string {
  const rows = [
    ['constructor', 'count', 'self size', 'retained size'],
    ...s.constructors
      .slice(0, top)
      .map((c) => [clip(c.name), String(c.count), bytes(c.selfSize), bytes(c.retainedSize)]),
  ];
  const retainers = s.topRetainers
    .slice(0, Math.min(top, 10))
    .map((r) => `  ${bytes(r.retainedSize).padStart(9)}  ${clip(r.name, 40)} @${r.id}\n             ${r.retainerPath}`);
  return [
    `${s.file}: ${s.nodeCount} nodes, ${s.edgeCount} edges, ${bytes(s.totalSize)}`,
    '',
    table(rows, [1, 2, 3]),
    '',
    'largest retainers:',
    ...retainers,
  ].join('\n');
}

export function renderDiff(d: HeapDiff, top: number): string {
  const rows = [
    ['constructor', 'count', 'self size', 'retained size'],
    ...d.constructors
      .slice(0, top)
      .map((c) => [
        clip(c.name),
        signed(c.countDelta),
        signed(c.selfSizeDelta, bytes),
        signed(c.retainedSizeDelta, bytes),
      ]),
  ];
  const out = [
    `${d.files.join(' → ')}`,
    '',
    'change by constructor (last minus first):',
    table(rows, [1, 2, 3]),
    '',
    `new in ${d.files[1]}: ${d.newObjects.count} objects, ${bytes(d.newObjects.selfSize)}`,
  ];
  if (d.files.length >= 3) {
    const floor = `${bytes(d.noiseFloor ?? 0)}, the noise floor: 5 % of the heap's growth of ${bytes(d.heapGrowth)}, at least 256 kB`;
    if (!d.leakFound) {
      out.push(
        '',
        `no leak found: nothing made between the first two snapshots and still alive in the last retains ${floor}.`,
      );
      if (d.belowNoiseFloor)
        out.push(`(${d.belowNoiseFloor} smaller group${d.belowNoiseFloor === 1 ? '' : 's'} of survivors, not listed)`);
    } else {
      out.push(
        '',
        `likely leaks (made between the first two snapshots, still alive in the last, each retaining at least ${floor}), most retained first:`,
      );
      d.leaks.slice(0, top).forEach((l, i) => {
        out.push(
          `${String(i + 1).padStart(3)}. ${l.constructor} ×${l.count}  retained ${bytes(l.retainedSize)}, self ${bytes(l.selfSize)}`,
          `     ${l.retainerPath}`,
        );
      });
    }
  }
  return out.join('\n');
}

/** A one-line bar on stderr, redrawn at most once per percent, over all files' bytes (they may be read at the same time). */
function progressBar(fileCount: number): { update(i: number, read: number, total: number): void; done(): void } {
  let last = -1;
  const read = new Array<number>(fileCount).fill(0),
    total = new Array<number>(fileCount).fill(0);
  return {
    update(i, bytesRead, fileSize) {
      read[i] = bytesRead;
      total[i] = fileSize;
      // A file not started yet counts as the size of the others on average.
      const started = total.filter((t) => t > 0);
      const guess = started.reduce((x, y) => x + y, 0) / started.length;
      const all = total.reduce((sum, t) => sum + (t > 0 ? t : guess), 0);
      const pct = all > 0 ? Math.floor((read.reduce((x, y) => x + y, 0) / all) * 100) : 100;
      if (pct === last) return;
      last = pct;
      const width = 30,
        filled = Math.round((pct / 100) * width);
      process.stderr.write(
        `\rreading ${fileCount === 1 ? 'the snapshot' : `${fileCount} snapshots`} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${String(pct).padStart(3)}%`,
      );
    },
    done() {
      if (last >= 0) process.stderr.write('\r\x1b[K');
    },
  };
}

export async function run(argv: string[]): Promise<number> {
  const args = parse(argv);
  if (args.help || !args.sub) {
    process.stdout.write(`${HELP}\n`);
    return args.help ? ExitCode.OK : ExitCode.USAGE;
  }
  const want = args.sub === 'summary' ? [1, 1] : args.sub === 'diff' ? [2, 3] : undefined;
  if (!want) throw new CliError(ExitCode.USAGE, `unknown subcommand "${args.sub}"\n\n${HELP}`);
  if (args.files.length < want[0]! || args.files.length > want[1]!) {
    throw new CliError(
      ExitCode.USAGE,
      `heap ${args.sub} takes ${want[0] === want[1] ? 'one file' : '2 or 3 files'}; got ${args.files.length}\n\n${HELP}`,
    );
  }
  const top = args.top ?? (args.json ? 50 : 20);
  const bar = args.progress || process.stderr.isTTY ? progressBar(args.files.length) : undefined;
  const options = { top, ...(bar ? { onProgress: bar.update } : {}) };
  let result: HeapSummary | HeapDiff;
  dedicateProcessToAnalysis(); // the CLI's process exists for the analysis
  try {
    result = args.sub === 'summary' ? await summarize(args.files[0]!, options) : await diff(args.files, options);
  } catch (err) {
    if (err instanceof SysprobeError) throw new CliError(ExitCode.BAD_INPUT, `${err.message} [${err.code}]`);
    throw err;
  } finally {
    bar?.done();
  }
  const text = args.json
    ? JSON.stringify(result, null, 2)
    : args.sub === 'summary'
      ? renderSummary(result as HeapSummary, top)
      : renderDiff(result as HeapDiff, top);
  process.stdout.write(`${text}\n`);
  return ExitCode.OK;
}

export const verb: Verb = { run };
