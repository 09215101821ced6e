/**
 * Positions in compiled JavaScript, turned back into the positions of the code a person wrote
 * (TypeScript, a bundle's modules) through each script's source map: a `.map` file named by the
 * script's `//# sourceMappingURL=` comment (or by the inspector's `Debugger.scriptParsed`), or an
 * inline `data:` URL. The maps are read lazily, in the thread that shows the positions (the probe
 * worker, the CLI), and decoded by @jridgewell/trace-mapping.
 *
 * Bounded: a script or map larger than `maxMapBytes` is not read; each read has a timeout; the
 * decoded maps live in an LRU cache bounded by bytes. A script without a map, a map that cannot be
 * read or parsed, or a position the map does not cover keeps its generated position: resolving
 * never throws. The original position replaces `url`, `lineNumber` and `columnNumber`; the
 * generated one is kept under `generated`.
 */
import { fileURLToPath, pathToFileURL } from 'node:url';
import { LRUCache } from 'lru-cache';
import { originalPositionFor, TraceMap } from '@jridgewell/trace-mapping';
import type { Frame } from '../captures/cpuprofile.js';
import { readBoundedFile } from '../internal/files.js';

export interface SourceMapLimits {
  /** Scripts and maps larger than this are not read (their frames keep the generated position). Default 16 MiB. */
  maxMapBytes?: number;
  /** Each read of a script or a map gives up after this. Default 2000 ms. */
  readTimeoutMs?: number;
  /** The decoded maps kept, in bytes of their JSON text. Default 64 MiB. */
  cacheBytes?: number;
}

/** A map that could not be had is remembered as this, so a script without one is read once. */
const NO_MAP = 'none' as const;
type Loaded = TraceMap | typeof NO_MAP;

/** The trailing `//# sourceMappingURL=…` comment of a script (the last one wins, as in browsers and Node). */
const MAPPING_COMMENT = /\/\/[#@]\s*sourceMappingURL=(\S+)\s*$/;

/** Looks up and caches source maps; one per thread that shows positions. */
export class SourceMaps {
  readonly #maxMapBytes: number;
  readonly #readTimeoutMs: number;
  readonly #maps: LRUCache<string, { map: Loaded }>;
  /** Loads in flight, by script url, so concurrent lookups of one script read it once. */
  readonly #loading = new Map<string, Promise<Loaded>>();
  /** sourceMapURL by script url, as the inspector reported it. */
  readonly #hints = new Map<string, string>();

  constructor({ maxMapBytes = 16 << 20, readTimeoutMs = 2000, cacheBytes = 64 << 20 }: SourceMapLimits = {}) {
    this.#maxMapBytes = maxMapBytes;
    this.#readTimeoutMs = readTimeoutMs;
    this.#maps = new LRUCache({
      maxSize: cacheBytes,
      sizeCalculation: (entry, key) => Math.max(1, key.length + (entry.map === NO_MAP ? 0 : sizeOf(entry.map))),
    });
  }

  /** Remembers the `sourceMapURL` the inspector gave for a script (Debugger.scriptParsed); bounded like the cache. */
  hint(scriptUrl: string, sourceMapURL: string): void {
    if (!scriptUrl || !sourceMapURL || this.#hints.has(scriptUrl)) return;
    if (this.#hints.size >= 10_000) return;
    // An inline map is kept by its script's file, read when needed; only the name of a map file is worth keeping.
    if (!sourceMapURL.startsWith('data:')) this.#hints.set(scriptUrl, sourceMapURL);
  }

  /** Each frame at its original position when its script's map resolves it; otherwise unchanged. */
  async resolve<F extends Frame>(frames: readonly F[]): Promise<F[]> {
    const urls = [...new Set(frames.map((f) => f.url).filter(isFileScript))];
    const maps = new Map(await Promise.all(urls.map(async (url) => [url, await this.#mapOf(url)] as const)));
    return frames.map((frame) => originalFrame(frame, maps.get(frame.url)));
  }

  /** A synchronous lookup for code that walks many frames (profiles, pprof): the maps are loaded first. */
  async resolver(frames: Iterable<Frame>): Promise<(frame: Frame) => Frame> {
    const urls = new Set<string>();
    for (const frame of frames) if (isFileScript(frame.url)) urls.add(frame.url);
    const maps = new Map(await Promise.all([...urls].map(async (url) => [url, await this.#mapOf(url)] as const)));
    const memo = new Map<string, Frame>();
    return (frame) => {
      const map = maps.get(frame.url);
      if (map === undefined || map === NO_MAP) return frame;
      const key = `${frame.url}\0${frame.lineNumber}\0${frame.columnNumber}\0${frame.functionName}`;
      let original = memo.get(key);
      if (!original) memo.set(key, (original = originalFrame(frame, map)));
      return original;
    };
  }

  async #mapOf(scriptUrl: string): Promise<Loaded> {
    const cached = this.#maps.get(scriptUrl);
    if (cached) return cached.map;
    let loading = this.#loading.get(scriptUrl);
    if (!loading) {
      loading = this.#load(scriptUrl)
        .catch((): Loaded => NO_MAP)
        .then((map) => {
          this.#loading.delete(scriptUrl);
          this.#maps.set(scriptUrl, { map });
          return map;
        });
      this.#loading.set(scriptUrl, loading);
    }
    return loading;
  }

  async #load(scriptUrl: string): Promise<Loaded> {
    const scriptPath = toPath(scriptUrl);
    let reference = this.#hints.get(scriptUrl);
    if (reference === undefined) {
      const match = MAPPING_COMMENT.exec(await this.#read(scriptPath));
      if (!match) return NO_MAP;
      reference = match[1]!;
    }
    const mapUrl = new URL(reference, pathToFileURL(scriptPath));
    const text = mapUrl.protocol === 'data:' ? decodeDataUrl(mapUrl.href) : await this.#read(fileURLToPath(mapUrl));
    if (text === undefined || text.length > this.#maxMapBytes) return NO_MAP;
    const map = new TraceMap(text, mapUrl.protocol === 'data:' ? pathToFileURL(scriptPath).href : mapUrl.href);
    sizes.set(map, text.length);
    return map;
  }

  /**
   * A file's text, if it is a regular file of at most maxMapBytes read within the timeout; throws
   * otherwise. Opened O_NONBLOCK and checked with fstat before any read, so a FIFO named like a
   * map cannot hold a thread-pool thread (a timeout cannot free one stuck in open()).
   */
  async #read(file: string): Promise<string> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            Object.assign(new Error(`${file} was not read within ${this.#readTimeoutMs} ms`), { code: 'ETIMEDOUT' }),
          ),
        this.#readTimeoutMs,
      );
    });
    try {
      return await Promise.race([readBoundedFile(file, this.#maxMapBytes, { followLinks: true }), late]);
    } finally {
      clearTimeout(timer);
    }
  }
}

/** The JSON text length each decoded map came from: what the cache counts. */
const sizes = new WeakMap<TraceMap, number>();
function sizeOf(map: TraceMap): number {
  return sizes.get(map) ?? 1;
}

/** Scripts on disk: file URLs and absolute paths (node: internals and eval code have no map to read). */
function isFileScript(url: string): boolean {
  return url.startsWith('file://') || url.startsWith('/');
}

function toPath(url: string): string {
  return url.startsWith('file://') ? fileURLToPath(url) : url;
}

function decodeDataUrl(url: string): string | undefined {
  const comma = url.indexOf(',');
  if (comma < 0) return undefined;
  const header = url.slice(5, comma);
  const body = url.slice(comma + 1);
  return header.endsWith(';base64') ? Buffer.from(body, 'base64').toString('utf8') : decodeURIComponent(body);
}

/** The frame at its original position, with the generated one kept; unchanged when the map has no mapping there. */
function originalFrame<F extends Frame>(frame: F, map: Loaded | undefined): F {
  if (map === undefined || map === NO_MAP || frame.lineNumber < 0) return frame;
  let position;
  try {
    position = originalPositionFor(map, { line: frame.lineNumber + 1, column: Math.max(0, frame.columnNumber) });
  } catch {
    return frame; // a malformed mapping: keep the generated position
  }
  if (position.source === null || position.line === null) return frame;
  const { url, lineNumber, columnNumber } = frame;
  return {
    ...frame,
    url: position.source,
    lineNumber: position.line - 1,
    columnNumber: position.column ?? 0,
    generated: { url, lineNumber, columnNumber },
  };
}
