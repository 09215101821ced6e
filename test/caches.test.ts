import assert from 'node:assert/strict';
import { ErrorCode, SysprobeError } from '../src/errors.js';
import { createCache, estimateBytes, watchCache, type CacheOptions, type WatchableMap } from '../src/caches/caches.js';
import { sleep } from './helpers.js';

/** Seeded, so that a failing run of the random tests can be replayed. */
function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = Math.imul(state ^ (state >>> 15), 1 | state);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A promise with its settlers at hand, to hold a load open as long as a test needs. */
function deferred<T>(): { promise: Promise<T>; resolve: (value: T) => void; reject: (err: Error) => void } {
  let resolve!: (value: T) => void;
  let reject!: (err: Error) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

function assertInvalid(create: () => unknown, mentions: RegExp): void {
  assert.throws(create, (err: unknown) => {
    assert.ok(err instanceof SysprobeError, `a SysprobeError, got ${String(err)}`);
    assert.equal(err.code, ErrorCode.INVALID_OPTION);
    assert.match(err.message, mentions);
    return true;
  });
}

const byLength = (value: string): number => value.length;

describe('BoundedCache', () => {
  it('holds its limits and stores nothing for failed keys while loaders throw and reject at random', async () => {
    const max = 40;
    const maxBytes = 1500;
    const cache = createCache<number, string>('random', { max, maxBytes, sizeOf: byLength });
    const random = seededRandom(42);
    const keys = 300;
    let failures = 0;
    let largest = { size: 0, bytes: 0 };
    const assertLimits = (): void => {
      assert.ok(cache.size <= max, `size ${cache.size} <= ${max}`);
      assert.ok(cache.bytes <= maxBytes, `bytes ${cache.bytes} <= ${maxBytes}`);
      largest = { size: Math.max(largest.size, cache.size), bytes: Math.max(largest.bytes, cache.bytes) };
    };
    const failed = new Set<number>();
    const loader = (key: number): Promise<string> | string => {
      assertLimits();
      const roll = random();
      const value = 'v'.repeat(1 + Math.floor(random() * 70));
      if (roll < 0.2) {
        failures += 1;
        failed.add(key);
        throw new Error(`sync failure ${key}`);
      }
      if (roll < 0.4) {
        failures += 1;
        failed.add(key);
        return sleep(1).then(() => Promise.reject(new Error(`async failure ${key}`)));
      }
      failed.delete(key);
      return roll < 0.7 ? value : sleep(1).then(() => value);
    };

    for (let round = 0; round < 60; round++) {
      const batch = Array.from({ length: 25 }, () => Math.floor(random() * keys));
      const results = await Promise.allSettled(batch.map((key) => cache.getOrLoad(key, loader)));
      assertLimits();
      for (const [i, result] of results.entries()) {
        if (result.status === 'rejected') assert.match(String(result.reason), /failure/, `key ${batch[i]}`);
      }
      for (const key of failed) assert.equal(cache.has(key), false, `nothing stored for failed key ${key}`);
      if (round % 10 === 9) cache.delete(batch[0]!);
    }

    const stats = cache.stats();
    assert.equal(stats.loadFailures, failures);
    assert.ok(failures > 100, `the loader failed often enough to matter (${failures})`);
    assert.equal(largest.size, max, 'the entry limit was reached, so it was tested');
    assert.ok(largest.bytes > maxBytes - 70, `the byte limit was approached (${largest.bytes})`);
    assert.ok(stats.evictions > 0);
    for (let key = 0; key < keys; key++) cache.delete(key);
    assert.deepEqual([cache.size, cache.bytes], [0, 0], 'deleting every key returns the accounting to zero');
  });

  it('loads again after a failure: no failed or pending load is left behind', async () => {
    const cache = createCache<string, string>('retry', { max: 10 });
    let calls = 0;
    const flaky = (key: string): Promise<string> => {
      calls += 1;
      return calls === 1 ? Promise.reject(new Error('first call fails')) : Promise.resolve(`${key}!`);
    };
    await assert.rejects(cache.getOrLoad('a', flaky), /first call fails/);
    assert.equal(cache.size, 0);
    assert.equal(await cache.getOrLoad('a', flaky), 'a!');
    assert.equal(calls, 2);
    assert.equal(cache.get('a'), 'a!');
  });

  it('shares one loader call between concurrent getOrLoad calls of a key, for success and failure', async () => {
    const cache = createCache<string, string>('shared', { max: 10 });
    let calls = 0;
    const pending = deferred<string>();
    const loads = Array.from({ length: 5 }, () =>
      cache.getOrLoad('k', () => {
        calls += 1;
        return pending.promise;
      }),
    );
    await sleep(5);
    assert.equal(calls, 1);
    assert.equal(cache.has('k'), false, 'nothing stored while loading');
    pending.resolve('value');
    assert.deepEqual(await Promise.all(loads), Array(5).fill('value'));
    assert.equal(cache.get('k'), 'value');

    const failing = deferred<string>();
    const failingLoads = Array.from({ length: 4 }, () =>
      cache.getOrLoad('f', () => {
        calls += 1;
        return failing.promise;
      }),
    );
    failing.reject(new Error('down'));
    const results = await Promise.allSettled(failingLoads);
    assert.deepEqual(
      results.map((r) => r.status),
      Array(4).fill('rejected'),
    );
    assert.equal(calls, 2);
    assert.equal(cache.stats().loadFailures, 1, 'one failed call, however many waited on it');
    assert.equal(cache.has('f'), false);
  });

  it('does not let a load overwrite a value set or deleted while it ran', async () => {
    const cache = createCache<string, string>('race', { max: 10 });
    const slow = deferred<string>();
    const load = cache.getOrLoad('k', () => slow.promise);
    cache.set('k', 'newer');
    slow.resolve('older');
    assert.equal(await load, 'older', 'its callers still get what they waited for');
    assert.equal(cache.get('k'), 'newer');
  });

  it('expires entries after ttlMs', async () => {
    const cache = createCache<string, string>('ttl', { max: 10, ttlMs: 50 });
    cache.set('a', 'x');
    assert.equal(cache.get('a'), 'x');
    await sleep(200);
    assert.equal(cache.has('a'), false);
    assert.equal(cache.get('a'), undefined);
    let calls = 0;
    assert.equal(await cache.getOrLoad('a', () => `y${++calls}`), 'y1', 'an expired entry is loaded again');
  });

  it('pushes out the least recently used entries to hold maxBytes measured by sizeOf', () => {
    const cache = createCache<string, string>('bytes', { max: 100, maxBytes: 100, sizeOf: byLength });
    cache.set('a', 'a'.repeat(40));
    cache.set('b', 'b'.repeat(40));
    assert.equal(cache.get('a')?.length, 40, 'a is now the most recently used');
    cache.set('c', 'c'.repeat(40));
    assert.deepEqual([cache.has('a'), cache.has('b'), cache.has('c')], [true, false, true]);
    assert.equal(cache.bytes, 80);
    cache.set('a', 'a'.repeat(60));
    assert.equal(cache.bytes, 100, 'a replaced value is counted at its new size');
    assert.deepEqual({ size: cache.size, evictions: cache.stats().evictions }, { size: 2, evictions: 1 });
  });

  it('rounds sizes up to whole bytes, at least 1', () => {
    const cache = createCache<string, string>('rounded', { max: 10, maxBytes: 100, sizeOf: (value) => Number(value) });
    cache.set('zero', '0');
    assert.equal(cache.bytes, 1);
    cache.set('fraction', '2.1');
    assert.equal(cache.bytes, 4);
  });

  it('refuses a value larger than maxBytes: not stored, counted as rejected, the old value removed', async () => {
    const cache = createCache<string, string>('oversized', { max: 10, maxBytes: 100, sizeOf: byLength });
    cache.set('small', 's'.repeat(30));
    cache.set('big', 'b'.repeat(10));
    assert.equal(cache.set('big', 'b'.repeat(101)), false);
    assert.equal(cache.has('big'), false);
    assert.equal(
      await cache.getOrLoad('loaded', () => 'l'.repeat(150)),
      'l'.repeat(150),
      'the caller still gets its value',
    );
    assert.equal(cache.has('loaded'), false);
    assert.deepEqual([cache.size, cache.bytes, cache.stats().rejected, cache.stats().evictions], [1, 30, 2, 0]);
  });

  it('measures with the default estimator when maxBytes has no sizeOf', () => {
    assert.equal(estimateBytes('abc'), 6);
    assert.equal(estimateBytes(Buffer.alloc(10)), 10);
    assert.equal(estimateBytes(new Float64Array(4)), 32);
    assert.equal(estimateBytes({ a: 1, deep: { ignored: 'x'.repeat(1000) } }), '{"a":1,"deep":0}'.length);
    assert.equal(estimateBytes({ n: 10n }), 8);
    const cache = createCache<string, unknown[] | string>('estimated', { max: 10, maxBytes: 100 });
    assert.equal(cache.set('s', 'x'.repeat(30)), true);
    assert.equal(cache.bytes, 60);
    assert.equal(cache.set('t', 'x'.repeat(51)), false, '102 bytes');
  });

  it('refuses a sizeOf that returns no byte count, storing nothing', () => {
    const cache = createCache<string, string>('bad-size', { max: 10, maxBytes: 100, sizeOf: () => Number.NaN });
    assertInvalid(() => cache.set('a', 'x'), /sizeOf must return a finite number.*NaN/);
    assert.equal(cache.size, 0);
  });

  it('counts hits and misses as they happened', async () => {
    const cache = createCache<number, number>('counted', { max: 1000 });
    const random = seededRandom(7);
    const present = new Set<number>();
    let hits = 0;
    let misses = 0;
    for (let i = 0; i < 2000; i++) {
      const key = Math.floor(random() * 50);
      const roll = random();
      if (roll < 0.3) {
        cache.set(key, key);
        present.add(key);
      } else if (roll < 0.4) {
        cache.delete(key);
        present.delete(key);
      } else if (roll < 0.5) {
        assert.equal(cache.has(key), present.has(key), 'has() is not counted');
      } else {
        if (present.has(key)) hits += 1;
        else misses += 1;
        const value = roll < 0.75 ? cache.get(key) : await cache.getOrLoad(key, (k) => k);
        if (value !== undefined) present.add(key);
      }
    }
    assert.deepEqual(cache.stats(), {
      name: 'counted',
      size: present.size,
      bytes: 0,
      hits,
      misses,
      evictions: 0,
      loadFailures: 0,
      rejected: 0,
    });
  });

  it('refuses bad options with SYSPROBE_ERR_INVALID_OPTION naming the option', () => {
    const create =
      (options: unknown, name: unknown = 'c') =>
      () =>
        createCache(name as string, options as CacheOptions<string, string>);
    assertInvalid(create({ max: 1 }, ''), /Option name must be a non-empty string/);
    assertInvalid(create(undefined), /must be an object; got a undefined/);
    assertInvalid(create({}), /Option max is required/);
    assertInvalid(create({ max: 0 }), /Option max must be an integer from 1 to 10000000; got 0/);
    assertInvalid(create({ max: 10_000_001 }), /Option max must be an integer/);
    assertInvalid(create({ max: 1.5 }), /Option max must be an integer/);
    assertInvalid(create({ max: 10, maxBytes: 0 }), /Option maxBytes must be an integer from 1/);
    assertInvalid(create({ max: 10, ttlMs: -1 }), /Option ttlMs must be an integer from 1/);
    assertInvalid(create({ max: 10, ttlMs: '5' }), /Option ttlMs .* got the string "5"/);
    assertInvalid(create({ max: 10, maxBytes: 10, sizeOf: 4 }), /Option sizeOf must be a function/);
    assertInvalid(create({ max: 10, sizeOf: byLength }), /Option sizeOf needs maxBytes/);
    assertInvalid(
      create({ max: 10, maxItems: 4 }),
      /Unknown option maxItems; the known ones are: max, maxBytes, sizeOf, ttlMs/,
    );
  });
});

describe('watchCache', () => {
  const mapOf = (n: number): Map<number, string> => new Map(Array.from({ length: n }, (_, i) => [i, `v${i}`]));

  it('reports size, high water, growth and the limit, and leaves the map alone unless asked to evict', () => {
    const map = mapOf(10);
    const watcher = watchCache('plain', map, { maxEntries: 5, growthAlert: { entries: 3 } });
    assert.deepEqual(watcher.check(), [{ name: 'plain', reason: 'overLimit', size: 10, growth: 0, evicted: 0 }]);
    assert.deepEqual(watcher.stats(), {
      name: 'plain',
      size: 10,
      highWater: 10,
      evicted: 0,
      overLimit: true,
      growth: 0,
      growing: false,
    });
    for (let i = 10; i < 14; i++) map.set(i, `v${i}`);
    // Still over the limit: that episode was reported already; the growth is new.
    assert.deepEqual(watcher.check(), [{ name: 'plain', reason: 'growing', size: 14, growth: 4, evicted: 0 }]);
    assert.deepEqual([watcher.stats().growth, watcher.stats().growing], [4, true]);
    for (let i = 14; i < 18; i++) map.set(i, `v${i}`);
    assert.deepEqual(watcher.check(), [], 'the same episode of growth is not reported twice');
    for (let i = 0; i < 16; i++) map.delete(i);
    watcher.check();
    assert.deepEqual(watcher.stats(), {
      name: 'plain',
      size: 2,
      highWater: 18,
      evicted: 0,
      overLimit: false,
      growth: -16,
      growing: false,
    });
    assert.equal(map.size, 2, 'the watcher deleted nothing');
  });

  it('evicts the oldest keys down to maxEntries when evictOldest is set', () => {
    const map = mapOf(10);
    const set = new Set(map.keys());
    const mapWatcher = watchCache('map', map, { maxEntries: 4, evictOldest: true });
    const setWatcher = watchCache('set', set, { maxEntries: 7, evictOldest: true });
    mapWatcher.check();
    setWatcher.check();
    assert.deepEqual([...map.keys()], [6, 7, 8, 9]);
    assert.deepEqual([...set], [3, 4, 5, 6, 7, 8, 9]);
    assert.deepEqual(mapWatcher.stats(), {
      name: 'map',
      size: 4,
      highWater: 10,
      evicted: 6,
      overLimit: true,
      growth: 0,
      growing: false,
    });
    mapWatcher.check();
    assert.deepEqual(
      [mapWatcher.stats().evicted, mapWatcher.stats().overLimit, map.size],
      [6, false, 4],
      'nothing more to evict',
    );
  });

  it('never throws into the caller: a throwing or nonsensical size is reported as an error', () => {
    let fail = true;
    const broken = {
      get size(): number {
        if (fail) throw new Error('size getter exploded');
        return 3;
      },
    };
    const watcher = watchCache('broken', broken, { maxEntries: 2 });
    assert.doesNotThrow(() => watcher.check());
    assert.equal(watcher.stats().error, 'size getter exploded');
    fail = false;
    watcher.check();
    assert.equal(watcher.stats().error, undefined, 'a good check clears the error');
    assert.deepEqual([watcher.stats().size, watcher.stats().overLimit], [3, true]);

    const notACount = watchCache('nan', { size: Number.NaN } as WatchableMap);
    notACount.check();
    assert.match(notACount.stats().error ?? '', /its size is NaN, not a count/);

    const badDelete = mapOf(5);
    badDelete.delete = () => {
      throw new Error('read-only');
    };
    const evicting = watchCache('read-only', badDelete, { maxEntries: 1, evictOldest: true });
    assert.doesNotThrow(() => evicting.check());
    assert.equal(evicting.stats().error, 'read-only');
  });

  it('stops checking and lets go of the map after stop()', () => {
    const map = mapOf(3);
    const watcher = watchCache('stopped', map, { maxEntries: 1, evictOldest: true });
    watcher.stop();
    watcher.check();
    assert.equal(map.size, 3);
    assert.deepEqual(watcher.stats(), {
      name: 'stopped',
      size: 0,
      highWater: 0,
      evicted: 0,
      overLimit: false,
      growth: 0,
      growing: false,
    });
  });

  it('refuses bad options with SYSPROBE_ERR_INVALID_OPTION naming the option', () => {
    const watch = (collection: unknown, options: unknown) => () =>
      watchCache('w', collection as WatchableMap, options as never);
    const map = new Map();
    assertInvalid(() => watchCache('', map), /Option name must be a non-empty string/);
    assertInvalid(watch(null, {}), /The collection to watch must be an object with a size.*got null/);
    assertInvalid(watch(map, { maxEntries: 0 }), /Option maxEntries must be an integer from 1/);
    assertInvalid(watch(map, { growthAlert: 5 }), /Option growthAlert must be an object/);
    assertInvalid(watch(map, { growthAlert: {} }), /Option growthAlert.entries is required/);
    assertInvalid(watch(map, { growthAlert: { entries: -2 } }), /Option growthAlert.entries must be an integer/);
    assertInvalid(watch(map, { growthAlert: { entries: 2, percent: 5 } }), /Unknown option growthAlert.percent/);
    assertInvalid(watch(map, { evictOldest: 'yes' }), /Option evictOldest must be true or false/);
    assertInvalid(watch(map, { evictOldest: true }), /Option evictOldest needs maxEntries/);
    assertInvalid(
      watch({ size: 1 }, { maxEntries: 1, evictOldest: true }),
      /needs a collection with keys\(\) and delete\(\)/,
    );
    assertInvalid(
      watch(map, { maxSize: 1 }),
      /Unknown option maxSize; the known ones are: maxEntries, growthAlert, evictOldest/,
    );
  });
});
