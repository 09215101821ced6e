/**
 * Loads sysprobe's optional native addons, each on its own: one that is missing
 * never takes the others with it. For each it looks first at a local build
 * (build/Release, made by node-gyp at install for this very Node), then at the
 * binaries shipped in the package (prebuilds/<platform>-<arch>/, the prebuildify
 * convention: `<name>.napi.<libc>.node` for a Node-API addon, built once for every
 * Node version; `<name>.abi<N>.<libc>.node` for one on V8's C++ API, one per Node ABI).
 *
 * Before loading, each file is checked (native-file.ts): an ELF file shorter than its
 * headers say, or a V8-API addon built for another ABI, is refused, not loaded.
 *
 * Each loads once per thread and is recorded with where it came from, or why it
 * did not load and what its absence costs: `nativeParts()` is what `sysprobe
 * doctor` prints and the start log line carries.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileProblem } from './native-file.js';

export type NativeName = 'loop_watch' | 'gc_stats' | 'heap_scan' | 'thread_stack';

/** What each part does, and what sysprobe does without it. */
const PARTS: Record<NativeName, { part: string; api: 'napi' | 'v8'; withoutIt: string }> = {
  loop_watch: {
    part: 'loop watch',
    api: 'napi',
    withoutIt:
      'stalls are seen by a JS heartbeat on the main thread: about 2 ms of CPU per second at idle instead of 0.8 ' +
      '(docs/architecture.md, costs), and a stall is timed only to within one beat',
  },
  gc_stats: {
    part: 'GC statistics',
    api: 'v8',
    withoutIt:
      'GCs are counted and timed, but the bytes each GC reclaimed (gc.reclaimedPerGc) and the live heap after ' +
      'the last full GC are absent',
  },
  heap_scan: {
    part: 'heap scanner',
    api: 'napi',
    withoutIt: 'heap snapshots are read by the JS scanner, about 2x slower, and their dominators computed in JS',
  },
  thread_stack: {
    part: 'thread stack',
    api: 'v8',
    withoutIt:
      "a probe started inside a worker thread cannot take that thread's stall stacks (the inspector reaches " +
      'only the main thread): its stalls are reported without a stack; and the loop watch cannot park its ' +
      'watchdog while the loop waits (it looks every stall threshold instead: ~5 wake-ups/s, ~0.6 ms CPU/s idle)',
  },
};

export interface NativePart {
  /** The addon's name: native/<name>.c(c). */
  name: NativeName;
  /** What it does for sysprobe, in words. */
  part: string;
  loaded: boolean;
  /** The file it loaded from (when loaded). */
  file?: string;
  /** How it was found, or why it did not load: each place tried and what went wrong there. */
  reason: string;
  /** What sysprobe does without it (empty when loaded). */
  cost?: string;
}

interface Entry {
  addon: unknown;
  part: NativePart;
}

const loaded = new Map<NativeName, Entry>();
// dist/src/native.js -> the package's root
const PACKAGE_ROOT = path.join(__dirname, '..', '..');

/** 'glibc' or 'musl' on Linux (the prebuilds' libc tag); undefined elsewhere. */
export function libc(): 'glibc' | 'musl' | undefined {
  if (process.platform !== 'linux') return undefined;
  // ldd says which it belongs to (detect-libc's fast test); Node's report (~30 ms) only when there is no ldd.
  try {
    const ldd = fs.readFileSync('/usr/bin/ldd', 'latin1').slice(0, 16_384);
    if (ldd.includes('musl')) return 'musl';
    if (ldd.includes('GNU C Library') || ldd.includes('GLIBC')) return 'glibc';
  } catch {
    /* no ldd: ask Node */
  }
  const header = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header;
  return header?.glibcVersionRuntime ? 'glibc' : 'musl';
}

let libcTag: string | undefined | null = null;
function cachedLibc(): string | undefined {
  if (libcTag === null) {
    try {
      libcTag = libc();
    } catch {
      libcTag = undefined;
    }
  }
  return libcTag;
}

/** The files to try for one addon, in order: the local build, then the prebuilds that fit this Node. */
export function candidates(name: NativeName): string[] {
  const tags = [...(PARTS[name].api === 'napi' ? ['napi'] : []), `abi${process.versions.modules}`];
  const libcTags = cachedLibc() ? [`.${cachedLibc()}`] : [''];
  const prebuilds = path.join(PACKAGE_ROOT, 'prebuilds', `${process.platform}-${process.arch}`);
  return [
    path.join(PACKAGE_ROOT, 'build', 'Release', `${name}.node`),
    ...tags.flatMap((tag) => libcTags.map((l) => path.join(prebuilds, `${name}.${tag}${l}.node`))),
  ];
}

function firstLine(err: unknown): string {
  return err instanceof Error ? err.message.split('\n')[0]! : String(err);
}

function load(name: NativeName): Entry {
  const { part, withoutIt } = PARTS[name];
  const tried: string[] = [];
  for (const file of candidates(name)) {
    const shown = path.relative(PACKAGE_ROOT, file);
    if (!fs.existsSync(file)) {
      tried.push(`${shown}: absent`);
      continue;
    }
    // A truncated file would SIGBUS the process inside dlopen; a V8-API addon of another ABI would misread V8.
    const problem = fileProblem(file, PARTS[name].api === 'v8');
    if (problem) {
      tried.push(`${shown}: not loaded: ${problem}`);
      continue;
    }
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const addon: unknown = require(file);
      return {
        addon,
        part: {
          name,
          part,
          loaded: true,
          file,
          reason: tried.length ? `loaded ${shown} (${tried.join('; ')})` : `loaded ${shown}`,
        },
      };
    } catch (err) {
      tried.push(`${shown}: ${firstLine(err)}`);
    }
  }
  const where = `${process.platform}-${process.arch}${cachedLibc() ? ` ${cachedLibc()}` : ''}, Node ABI ${process.versions.modules}`;
  return {
    addon: undefined,
    part: { name, part, loaded: false, reason: `no binary loads for ${where}: ${tried.join('; ')}`, cost: withoutIt },
  };
}

/** One addon, or undefined with the reason it could not load. Loaded once per thread. */
export function loadNative<T>(name: NativeName): { addon: T | undefined; error: string | undefined } {
  let entry = loaded.get(name);
  if (!entry) {
    entry = load(name);
    loaded.set(name, entry);
  }
  return { addon: entry.addon as T | undefined, error: entry.part.loaded ? undefined : entry.part.reason };
}

/** The file an addon loaded from in this thread (loading it if not already), or undefined. */
export function nativeFile(name: NativeName): string | undefined {
  loadNative(name);
  return loaded.get(name)!.part.file;
}

/** Every native part, loaded (in this thread) if not already, with whether it loaded, from where or why not, and its cost. */
export function nativeParts(): NativePart[] {
  return (Object.keys(PARTS) as NativeName[]).map((name) => {
    loadNative(name);
    return { ...loaded.get(name)!.part };
  });
}

/**
 * The native parts for the start log line: `{ loop_watch: true, gc_stats: 'reason…', … }`,
 * true where a part loaded and the reason where it did not, so the line says what
 * `probe.loopWatch` and `sysprobe doctor` say.
 */
export function nativeLogFields(): Record<NativeName, true | string> {
  return Object.fromEntries(
    nativeParts().map((p) => [p.name, p.loaded ? true : `${p.reason} (without it: ${p.cost})`]),
  ) as Record<NativeName, true | string>;
}
