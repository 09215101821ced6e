import { LRUCache } from 'lru-cache';
import { describeError } from '../errors.js';
import { checkInteger, checkKnownKeys, checkPlainObject, describe, invalid } from '../internal/check-options.js';

/**
 * Bounded caches for the leak that grows until OOM: a cache whose eviction sits on a
 * success path and stops running when that path fails. {@link createCache} gives a cache
 * whose limits hold whatever the loader does; {@link watchCache} watches a Map or Set the
 * app already has, and can trim it.
 */

/** Measures one value for `maxBytes`: a finite number >= 0, rounded up to whole bytes (at least 1). */
export type SizeOf<K, V> = (value: V, key: K) => number;

/** Produces the value of a key that is not cached; may return it or a promise of it. */
export type Loader<K, V> = (key: K) => Promise<V> | V;

export interface CacheOptions<K, V> {
  /**
   * The most entries held, 1 to 10 000 000. Required. lru-cache allocates its index for all of
   * them up front (28 bytes per entry, 52 with `maxBytes` and `ttlMs`), so this is memory
   * committed, not just a cap.
   */
  max: number;
  /**
   * The most bytes held, as measured by `sizeOf`. Without `sizeOf` a value is estimated: a
   * string at 2 bytes per character, a Buffer, typed array or ArrayBuffer at its byteLength,
   * anything else at the JSON length of its own fields with nested objects counted as 1 byte
   * (8 bytes when it cannot be serialized). Bytes are measured only when this is set.
   */
  maxBytes?: number;
  /** Measures a value for `maxBytes` (which it requires). */
  sizeOf?: SizeOf<K, V>;
  /**
   * How long an entry lives after it was set, ms (1 to 30 days). Expired entries are dropped when
   * read, or pushed out like any other; until then they still count in `size` and `bytes`.
   */
  ttlMs?: number;
}

/** What a cache has done since it was created; read by the probe at each collection. */
export interface CacheStats {
  name: string;
  /** Entries held now (expired ones included until they are dropped). */
  size: number;
  /** Bytes held now; 0 without `maxBytes`. */
  bytes: number;
  /** Reads (`get`, `getOrLoad`) that found a live value. */
  hits: number;
  /** Reads that did not, including a `getOrLoad` that joined a load already running. */
  misses: number;
  /** Entries pushed out to make room (not the ones that expired, were deleted or replaced). */
  evictions: number;
  /** Loader calls that threw or rejected; callers sharing one call count once. */
  loadFailures: number;
  /** Values refused because they alone exceed `maxBytes`. */
  rejected: number;
}

/** The options after checking; 0 turns `maxBytes` or `ttlMs` off. */
interface CheckedCacheOptions<K, V> {
  max: number;
  maxBytes: number;
  ttlMs: number;
  sizeOf: SizeOf<K, V>;
}

const MAX_NAME_LENGTH = 200;
const MAX_ENTRIES = 10_000_000;
const MAX_TTL_MS = 30 * 24 * 3600_000;
/** The estimate of a value JSON cannot carry (a BigInt, a cycle). */
const UNSERIALIZABLE_BYTES = 8;
const CACHE_OPTION_NAMES = ['max', 'maxBytes', 'sizeOf', 'ttlMs'] as const;
const WATCH_OPTION_NAMES = ['maxEntries', 'growthAlert', 'evictOldest'] as const;

function checkName(name: unknown): string {
  if (typeof name !== 'string' || name.length === 0 || name.length > MAX_NAME_LENGTH) {
    throw invalid(
      `Option name must be a non-empty string of at most ${MAX_NAME_LENGTH} characters; got ${describe(name)}.`,
    );
  }
  return name;
}

/** The default `sizeOf`; see {@link CacheOptions.maxBytes}. */
export function estimateBytes(value: unknown): number {
  if (typeof value === 'string') return value.length * 2;
  if (ArrayBuffer.isView(value) || value instanceof ArrayBuffer) return value.byteLength;
  let root = true;
  // Shallow, so that measuring stays cheap however deep the value is.
  const shallow = (_key: string, field: unknown): unknown => {
    if (root) {
      root = false;
      return field;
    }
    return typeof field === 'object' && field !== null ? 0 : field;
  };
  try {
    return JSON.stringify(value, shallow)?.length ?? UNSERIALIZABLE_BYTES;
  } catch {
    return UNSERIALIZABLE_BYTES;
  }
}

/**
 * An LRU cache whose limits hold after every call: at most `max` entries and `maxBytes` bytes.
 * Failed loads leave nothing in it, and count only in `loadFailures`.
 */
export class BoundedCache<K extends {}, V extends {}> {
  readonly name: string;
  readonly #lru: LRUCache<K, V>;
  readonly #maxBytes: number;
  readonly #sizeOf: SizeOf<K, V>;
  /**
   * Loads running, by key. Kept out of the LRU (unlike lru-cache's own fetch()), so that a load
   * takes no slot and pushes out no value before it has one to store.
   */
  readonly #loading = new Map<K, Promise<V>>();
  #hits = 0;
  #misses = 0;
  #evictions = 0;
  #loadFailures = 0;
  #rejected = 0;

  /** Use {@link createCache}, which checks the options. */
  constructor(name: string, options: CheckedCacheOptions<K, V>) {
    this.name = name;
    this.#maxBytes = options.maxBytes;
    this.#sizeOf = options.sizeOf;
    this.#lru = new LRUCache<K, V>({
      max: options.max,
      ...(options.maxBytes > 0 ? { maxSize: options.maxBytes } : {}),
      ...(options.ttlMs > 0 ? { ttl: options.ttlMs } : {}),
      dispose: (_value, _key, reason) => {
        if (reason === 'evict') this.#evictions += 1;
      },
    });
  }

  get size(): number {
    return this.#lru.size;
  }

  get bytes(): number {
    return this.#lru.calculatedSize;
  }

  /** The live value of `key`, counted as a hit or a miss. */
  get(key: K): V | undefined {
    const value = this.#lru.get(key);
    if (value === undefined) this.#misses += 1;
    else this.#hits += 1;
    return value;
  }

  /** Whether `key` has a live value; not counted, and does not make it recently used. */
  has(key: K): boolean {
    return this.#lru.has(key);
  }

  /**
   * Stores the value, pushing out the least recently used entries as needed, and returns true.
   * A value larger than `maxBytes` on its own is not stored: the call returns false, counts it in
   * `rejected`, and removes the key's previous value, which the caller meant to replace.
   * A load of `key` still running will not overwrite this value.
   */
  set(key: K, value: V): boolean {
    this.#loading.delete(key);
    if (this.#maxBytes === 0) {
      this.#lru.set(key, value);
      return true;
    }
    const bytes = this.#measure(key, value);
    if (bytes > this.#maxBytes) {
      this.#rejected += 1;
      this.#lru.delete(key);
      return false;
    }
    this.#lru.set(key, value, { size: bytes });
    return true;
  }

  /** Removes the value; a load of `key` still running will not store its result. */
  delete(key: K): boolean {
    this.#loading.delete(key);
    return this.#lru.delete(key);
  }

  /** Removes every value; loads still running will not store their results. */
  clear(): void {
    this.#loading.clear();
    this.#lru.clear();
  }

  /**
   * The cached value of `key`, else the loader's, which is then stored (subject to the limits).
   * Calls for a key already loading share that one loader call. When the loader throws or
   * rejects, every caller waiting on it rejects with its error, nothing is stored, and the next
   * call loads again.
   */
  getOrLoad(key: K, loader: Loader<K, V>): Promise<V> {
    const cached = this.get(key);
    if (cached !== undefined) return Promise.resolve(cached);
    return this.#loading.get(key) ?? this.#load(key, loader);
  }

  stats(): CacheStats {
    return {
      name: this.name,
      size: this.size,
      bytes: this.bytes,
      hits: this.#hits,
      misses: this.#misses,
      evictions: this.#evictions,
      loadFailures: this.#loadFailures,
      rejected: this.#rejected,
    };
  }

  #load(key: K, loader: Loader<K, V>): Promise<V> {
    // Through then(), so that a loader that throws at once rejects like one that rejects later.
    const load: Promise<V> = Promise.resolve(key)
      .then(loader)
      .then(
        (value) => {
          if (this.#loading.get(key) === load) {
            this.#loading.delete(key);
            this.set(key, value);
          }
          return value;
        },
        (err: unknown) => {
          if (this.#loading.get(key) === load) this.#loading.delete(key);
          this.#loadFailures += 1;
          throw err;
        },
      );
    this.#loading.set(key, load);
    return load;
  }

  /** lru-cache counts sizes in positive integers. */
  #measure(key: K, value: V): number {
    const bytes = this.#sizeOf(value, key);
    if (typeof bytes !== 'number' || !Number.isFinite(bytes) || bytes < 0) {
      throw invalid(
        `Option sizeOf must return a finite number of bytes >= 0; it returned ${describe(bytes)} for cache ${this.name}.`,
      );
    }
    return Math.max(1, Math.ceil(bytes));
  }
}

/** Checks the options (throwing SYSPROBE_ERR_INVALID_OPTION) and creates the cache. */
export function createCache<K extends {}, V extends {}>(name: string, options: CacheOptions<K, V>): BoundedCache<K, V> {
  const checkedName = checkName(name);
  const input = checkPlainObject('(the cache options)', options);
  checkKnownKeys('', input, CACHE_OPTION_NAMES);
  if (input.max === undefined)
    throw invalid(`Option max is required: the most entries the cache holds, an integer from 1 to ${MAX_ENTRIES}.`);
  const max = checkInteger('max', input.max, 1, MAX_ENTRIES, 0);
  const maxBytes = checkInteger('maxBytes', input.maxBytes, 1, Number.MAX_SAFE_INTEGER, 0);
  const ttlMs = checkInteger('ttlMs', input.ttlMs, 1, MAX_TTL_MS, 0);
  const sizeOf = input.sizeOf ?? estimateBytes;
  if (typeof sizeOf !== 'function')
    throw invalid(`Option sizeOf must be a function (value, key) => bytes; got ${describe(sizeOf)}.`);
  if (input.sizeOf !== undefined && maxBytes === 0)
    throw invalid('Option sizeOf needs maxBytes: sizes are measured only to hold a byte limit.');
  return new BoundedCache<K, V>(checkedName, { max, maxBytes, ttlMs, sizeOf: sizeOf as SizeOf<K, V> });
}

/** What `Probe.watchCache` needs of a collection: a size, and to trim it, keys() oldest first and delete(). */
export interface WatchableMap {
  readonly size: number;
  keys?(): Iterable<unknown>;
  delete?(key: unknown): boolean;
}

export interface WatchOptions {
  /** The most entries the collection should hold (1 to 2^53 - 1); above it, `overLimit` is reported. */
  maxEntries?: number;
  /** Report `growing` when one check finds at least `entries` more than the check before it. */
  growthAlert?: { entries: number };
  /**
   * Delete the first keys the collection iterates, down to `maxEntries` (which it requires).
   * For a Map or Set those are the oldest inserted; other collections decide their own order.
   * Default false.
   */
  evictOldest?: boolean;
}

export interface WatchedCacheStats {
  name: string;
  /** The size at the last check, after any eviction. */
  size: number;
  /** The largest size any check found, before evicting. */
  highWater: number;
  /** Keys deleted by `evictOldest` so far. */
  evicted: number;
  /** Whether the last check found more than `maxEntries`, before evicting. */
  overLimit: boolean;
  /** How much the size changed between the last two checks. */
  growth: number;
  /** Whether that growth reached `growthAlert.entries`. */
  growing: boolean;
  /** Why the last check failed (the collection threw, or its size is not a count); absent when it did not. */
  error?: string;
}

/** A watched cache started to grow fast, or went over its limit (reported once per episode, not every check). */
export interface CacheAlert {
  name: string;
  /** `growing`: one check found at least `growthAlert.entries` more than the one before; `overLimit`: above `maxEntries`. */
  reason: 'growing' | 'overLimit';
  /** The size the check found, before any eviction. */
  size: number;
  /** The growth since the check before. */
  growth: number;
  /** The entries `evictOldest` dropped at this check. */
  evicted: number;
}

export interface CacheWatcher {
  /** Reads the size and trims if asked; called once per sample interval. Never throws. Returns the alerts this check raised. */
  check(): CacheAlert[];
  stats(): WatchedCacheStats;
  /** Ends the watch and lets go of the collection. */
  stop(): void;
}

/** Infinity stands for a limit not set. */
function checkWatchOptions(options: unknown): { maxEntries: number; growthEntries: number; evictOldest: boolean } {
  const input = checkPlainObject('(the watch options)', options);
  checkKnownKeys('', input, WATCH_OPTION_NAMES);
  const maxEntries = checkInteger('maxEntries', input.maxEntries, 1, Number.MAX_SAFE_INTEGER, Infinity);
  let growthEntries = Infinity;
  if (input.growthAlert !== undefined) {
    const growthAlert = checkPlainObject('growthAlert', input.growthAlert);
    checkKnownKeys('growthAlert', growthAlert, ['entries']);
    if (growthAlert.entries === undefined)
      throw invalid('Option growthAlert.entries is required: an integer from 1 up.');
    growthEntries = checkInteger('growthAlert.entries', growthAlert.entries, 1, Number.MAX_SAFE_INTEGER, Infinity);
  }
  const evictOldest = input.evictOldest ?? false;
  if (typeof evictOldest !== 'boolean')
    throw invalid(`Option evictOldest must be true or false; got ${describe(evictOldest)}.`);
  if (evictOldest && maxEntries === Infinity)
    throw invalid('Option evictOldest needs maxEntries: the size to evict down to.');
  return { maxEntries, growthEntries, evictOldest };
}

/**
 * Watches a collection the app already has (a Map, a Set, a cache with a size) for the leak
 * it cannot see from inside: a size that only grows. Checks the options up front, throwing
 * SYSPROBE_ERR_INVALID_OPTION; after that nothing the collection does is thrown to the caller.
 */
export function watchCache(name: string, collection: WatchableMap, options: WatchOptions = {}): CacheWatcher {
  const checkedName = checkName(name);
  if (typeof collection !== 'object' || collection === null) {
    throw invalid(
      `The collection to watch must be an object with a size (a Map, a Set, a cache); got ${describe(collection)}.`,
    );
  }
  const { maxEntries, growthEntries, evictOldest } = checkWatchOptions(options);
  if (evictOldest && (typeof collection.keys !== 'function' || typeof collection.delete !== 'function')) {
    throw invalid('Option evictOldest needs a collection with keys() and delete(), like a Map or a Set.');
  }

  let watched: WatchableMap | undefined = collection;
  const stats: WatchedCacheStats = {
    name: checkedName,
    size: 0,
    highWater: 0,
    evicted: 0,
    overLimit: false,
    growth: 0,
    growing: false,
  };
  let checked = false;

  const readSize = (map: WatchableMap): number => {
    const size = map.size;
    if (typeof size !== 'number' || !Number.isInteger(size) || size < 0)
      throw new TypeError(`its size is ${describe(size)}, not a count`);
    return size;
  };

  /** Collects the keys first: deleting while iterating is safe for a Map or Set, not for every collection. */
  const evictDownTo = (map: WatchableMap, size: number): void => {
    const oldest: unknown[] = [];
    for (const key of map.keys!()) {
      if (oldest.length >= size - maxEntries) break;
      oldest.push(key);
    }
    for (const key of oldest) if (map.delete!(key)) stats.evicted += 1;
  };

  return {
    check() {
      if (!watched) return [];
      const alerts: CacheAlert[] = [];
      try {
        const found = readSize(watched);
        const { growing: wasGrowing, overLimit: wasOverLimit, evicted: evictedBefore } = stats;
        stats.growth = checked ? found - stats.size : 0;
        stats.growing = stats.growth >= growthEntries;
        stats.highWater = Math.max(stats.highWater, found);
        stats.overLimit = found > maxEntries;
        stats.size = found;
        checked = true;
        if (stats.overLimit && evictOldest) {
          evictDownTo(watched, found);
          stats.size = readSize(watched);
        }
        delete stats.error;
        const alert = (reason: CacheAlert['reason']) =>
          alerts.push({
            name: checkedName,
            reason,
            size: found,
            growth: stats.growth,
            evicted: stats.evicted - evictedBefore,
          });
        if (stats.growing && !wasGrowing) alert('growing');
        if (stats.overLimit && !wasOverLimit) alert('overLimit');
      } catch (err) {
        stats.error = describeError(err).message;
      }
      return alerts;
    },
    stats() {
      return { ...stats };
    },
    stop() {
      watched = undefined;
    },
  };
}
