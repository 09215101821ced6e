import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { HeapSnapshots, type MemoryState } from '../src/heap/snapshots.js';
import { FileSink, type StatFs } from '../src/sink/file-sink.js';
import { start, type CacheAlert } from '../src/index.js';
import { findMetric, memoryLogger, memoryMetrics, pointValue, waitFor, tempDir } from './helpers.js';

const MB = 1024 * 1024;
const tmpDir = tempDir;

describe('heap snapshots', () => {
  it('captureHeapSnapshot() writes a complete .heapsnapshot with a sidecar, and nothing half-written', async () => {
    const dumpDir = tmpDir('sysprobe-snap-');
    const probe = await start({ logger: memoryLogger().logger, dumpDir });
    const stalls: Array<{ capture: { how: string; reason?: string }; durationMs: number }> = [];
    probe.on('stall', (event) => stalls.push(event));
    try {
      const result = await probe.captureHeapSnapshot();
      assert.ok(result.file.startsWith(dumpDir) && result.file.endsWith('.heapsnapshot'));
      const head = Buffer.alloc(64);
      const fd = fs.openSync(result.file, 'r');
      fs.readSync(fd, head, 0, 64, 0);
      fs.closeSync(fd);
      assert.match(head.toString('utf8'), /^\{"snapshot":\{"meta"/, 'a V8 heap snapshot');
      assert.equal(fs.statSync(result.file).size, result.bytes);
      const sidecar = JSON.parse(fs.readFileSync(result.sidecarFile, 'utf8')) as Record<string, unknown>;
      assert.equal(sidecar.kind, 'heap-snapshot');
      assert.equal(sidecar.trigger, 'captureHeapSnapshot()');
      assert.ok((sidecar.heapUsed as number) > 0 && sidecar.pid === process.pid);
      assert.ok(result.pauseMs > 0);
      assert.equal(sidecar.pauseMs, Math.round(result.pauseMs), 'the pause is in the sidecar');
      assert.deepEqual(
        fs.readdirSync(dumpDir).filter((f) => f.endsWith('.partial')),
        [],
      );
      // The snapshot's own pause is a stall, reported as such but not captured: the worker knew.
      assert.ok(result.pauseMs > 300, `the snapshot paused the loop ${result.pauseMs} ms`);
      const stall = await waitFor("the snapshot's stall", () => stalls[0]);
      assert.equal(stall.capture.how, 'skipped');
      assert.match(stall.capture.reason ?? '', /heap snapshot/);
    } finally {
      await probe.stop();
    }
  });

  it("a snapshot's own pause does not fire event-loop rules; a real stall of the same length does", async () => {
    const probe = await start({
      logger: memoryLogger().logger,
      dumpDir: tmpDir('sysprobe-selfpause-'),
      sampleIntervalMs: 100,
      defaultRules: false,
      rules: [
        { name: 'lagging', value: 'eventLoop.lagMaxMs', above: 150, forMs: 0, cooldownMs: 0, actions: [() => {}] },
      ],
    });
    const fired: string[] = [];
    probe.on('rule', (e: { firing: { rule: string } }) => fired.push(e.firing.rule));
    try {
      const { pauseMs } = await probe.captureHeapSnapshot();
      assert.ok(pauseMs > 150, `the snapshot paused the loop ${pauseMs} ms`);
      const paused = await waitFor('the sample with the pause', async () =>
        (await probe.recent()).find((s) => s.selfPaused && (s.eventLoop?.lagMaxMs ?? 0) > 150),
      );
      assert.ok(paused.eventLoop!.lagMaxMs > 150, 'the pause is still in the figures (metrics show it)');
      await new Promise((resolve) => setTimeout(resolve, 300));
      await probe.recent();
      assert.deepEqual(fired, [], "no rule fired for sysprobe's own pause");
      const end = Date.now() + Math.max(300, pauseMs);
      while (Date.now() < end) {
        /* the app's own stall */
      }
      await waitFor('the rule on a real stall', async () => {
        await probe.recent();
        return fired.some((rule) => rule === 'lagging');
      });
    } finally {
      await probe.stop();
    }
  });

  it('the heapdump backend writes the same kind of file, on the main thread only', async () => {
    const dumpDir = tmpDir('sysprobe-heapdump-');
    const probe = await start({
      logger: memoryLogger().logger,
      dumpDir,
      defaultRules: false,
      heapSnapshotWriter: 'heapdump',
    });
    try {
      const result = await probe.captureHeapSnapshot();
      assert.match(fs.readFileSync(result.file).subarray(0, 40).toString(), /^\{"snapshot":\{"meta"/);
      assert.equal(fs.statSync(result.file).size, result.bytes);
      assert.equal(process.env.NODE_HEAPDUMP_OPTIONS, undefined, 'the environment is left as it was');
    } finally {
      await probe.stop();
    }
    // In a worker thread, start() refuses it: heapdump is not safe there.
    const code = await new Promise<unknown>((resolve, reject) => {
      const worker = new Worker(
        `
        const { parentPort } = require('node:worker_threads');
        require(${JSON.stringify(path.join(__dirname, '..', 'src', 'index.js'))}).start({ heapSnapshotWriter: 'heapdump', logger: undefined })
          .then((p) => p.stop().then(() => parentPort.postMessage('started')), (err) => parentPort.postMessage(err.code));
      `,
        { eval: true },
      );
      worker.once('message', (m) => {
        resolve(m);
        void worker.terminate();
      });
      worker.once('error', reject);
    });
    assert.equal(code, 'SYSPROBE_ERR_UNSUPPORTED');
  });

  describe('refusals: each logs its reason, writes nothing, and the process goes on', () => {
    const roomy: MemoryState = { heapUsed: 50 * MB, heapLimit: 4096 * MB, available: 8192 * MB };

    async function refusedWith(
      memory: MemoryState,
      perDay: number,
      statfs: StatFs | undefined,
      mentions: RegExp,
      before = 0,
    ): Promise<void> {
      const dir = tmpDir('sysprobe-refuse-');
      const { logger, lines } = memoryLogger();
      const sink = new FileSink({ dir, ...(statfs ? { statfs } : {}) });
      const snapshots = new HeapSnapshots(sink, { perDay }, logger, () => memory);
      for (let i = 0; i < before; i++) await snapshots.capture({ trigger: 'test' });
      await assert.rejects(
        snapshots.capture({ trigger: 'test' }),
        (err: Error & { code?: string }) => err.code === 'SYSPROBE_ERR_CAPTURE_FAILED' && mentions.test(err.message),
      );
      assert.ok(
        lines.some((l) => /refused a heap snapshot|heap snapshot failed/.test(String(l.msg))),
        'logged',
      );
      assert.equal(
        fs.readdirSync(dir).filter((f) => f.endsWith('.heapsnapshot')).length,
        before,
        'nothing more written',
      );
    }

    it('too little heap headroom', () =>
      refusedWith({ ...roomy, heapUsed: 3900 * MB }, 3, undefined, /too close to its limit/));
    it('too little memory left in the system', () =>
      refusedWith({ ...roomy, available: 60 * MB }, 3, undefined, /too little memory left/));
    it('too little disk', () =>
      refusedWith(roomy, 3, async () => ({ bavail: 100, bsize: 4096 }), /bytes free, and it needs/));
    it('a snapshot expected to outgrow the dump limit is refused before the pause, not deleted after it', async () => {
      const dir = tmpDir('sysprobe-refuse-');
      const snapshots = new HeapSnapshots(
        new FileSink({ dir, maxBytes: 50 * MB }),
        { perDay: 3 },
        memoryLogger().logger,
        () => roomy,
      );
      const started = Date.now();
      await assert.rejects(snapshots.capture({ trigger: 'test' }), /about 104857600 bytes are expected, over maxBytes/);
      assert.ok(Date.now() - started < 200, 'no snapshot was taken');
      assert.deepEqual(fs.readdirSync(dir), []);
    });
    it('the daily budget spent', () =>
      refusedWith(roomy, 1, undefined, /budget of 1 heap snapshots per 24 hours is spent/, 1));
  });
});

describe('bounded caches through the probe', () => {
  it('probe.cache holds its limits under a throwing loader, and its counts are metrics', async () => {
    const metrics = memoryMetrics();
    const probe = await start({ logger: memoryLogger().logger, meterProvider: metrics.meterProvider });
    try {
      const cache = probe.cache<string, string>('users', { max: 3, ttlMs: 60_000 });
      for (let i = 0; i < 10; i++) {
        await cache
          .getOrLoad(`user-${i}`, (key) => {
            if (i % 3 === 0) throw new Error('backend down');
            return `value of ${key}`;
          })
          .catch(() => undefined);
      }
      assert.ok(cache.size <= 3);
      assert.equal(cache.get('user-9'), undefined, 'a failed load leaves nothing');
      assert.equal(cache.has('user-8'), true);
      cache.get('user-8');
      const exported = await metrics.collect();
      assert.equal(
        pointValue(findMetric(exported, 'sysprobe.cache.size'), {
          'sysprobe.cache': 'users',
          'sysprobe.cache.kind': 'bounded',
        }),
        cache.size,
      );
      const ops = findMetric(exported, 'sysprobe.cache.operations');
      assert.equal(pointValue(ops, { 'sysprobe.cache': 'users', 'sysprobe.cache.result': 'load_failure' }), 4);
      assert.equal(pointValue(ops, { 'sysprobe.cache': 'users', 'sysprobe.cache.result': 'hit' }), 1);
      assert.ok(pointValue(ops, { 'sysprobe.cache': 'users', 'sysprobe.cache.result': 'eviction' }) >= 3);
      assert.throws(() => probe.cache('users', { max: 1 }), { code: 'SYSPROBE_ERR_INVALID_OPTION' });
    } finally {
      await probe.stop();
      await metrics.shutdown();
    }
  });

  it("probe.watchCache reports an app's own Map and trims it to its hard limit each sample", async () => {
    const metrics = memoryMetrics();
    const { logger, lines } = memoryLogger();
    const probe = await start({ logger, meterProvider: metrics.meterProvider, sampleIntervalMs: 100 });
    const alerts: CacheAlert[] = [];
    probe.on('cache', (alert: CacheAlert) => alerts.push(alert));
    try {
      const sessions = new Map<number, string>();
      for (let i = 0; i < 500; i++) sessions.set(i, `session ${i}`);
      probe.watchCache('sessions', sessions, { maxEntries: 100, evictOldest: true });
      await new Promise((resolve) => setTimeout(resolve, 350));
      // Over the limit once, trimmed at once: one alert, one log line, for the whole episode.
      assert.deepEqual(alerts, [{ name: 'sessions', reason: 'overLimit', size: 500, growth: 0, evicted: 400 }]);
      assert.equal(
        lines.filter((l) => l.msg === 'sysprobe watched cache is over its limit' && l.name === 'sessions').length,
        1,
      );
      assert.equal(sessions.size, 100);
      assert.equal(sessions.has(0), false, 'the oldest went');
      assert.equal(sessions.has(499), true, 'the newest stayed');
      const exported = await metrics.collect();
      assert.equal(
        pointValue(findMetric(exported, 'sysprobe.cache.size'), {
          'sysprobe.cache': 'sessions',
          'sysprobe.cache.kind': 'watched',
        }),
        100,
      );
      assert.equal(
        pointValue(findMetric(exported, 'sysprobe.cache.watched.evicted'), { 'sysprobe.cache': 'sessions' }),
        400,
      );
    } finally {
      await probe.stop();
      await metrics.shutdown();
    }
  });
});

describe('a leak, end to end', () => {
  it('a cache that stops evicting on an error path: growth is detected, snapshots are taken automatically, then the budget stops them', async function () {
    this.timeout(60_000);
    const dumpDir = tmpDir('sysprobe-leak-');
    const probe = await start({
      logger: memoryLogger().logger,
      dumpDir,
      sampleIntervalMs: 100,
      growthWindowMs: 10_000,
      heapSnapshotsPerDay: 2,
      defaultRules: false,
      incidents: { heapDiff: true },
      rules: [
        {
          name: 'leak',
          value: 'memory.heapGrowthPerMin',
          above: 20 * MB,
          forMs: 1000,
          cooldownMs: 1000,
          actions: ['captureHeapSnapshot'],
        },
      ],
    });
    const events: Array<{
      heapSnapshot?: { file: string; sidecarFile: string };
      notTaken?: string[];
      observed: number;
    }> = [];
    probe.on(
      'rule',
      (e: {
        firing: { observed: number };
        captures: { heapSnapshot?: { file: string; sidecarFile: string }; notTaken?: string[] };
      }) => events.push({ ...e.captures, observed: e.firing.observed }),
    );
    // The app: a request cache whose entry is deleted only when the request succeeds.
    const cache = new Map<number, number[]>();
    let request = 0;
    const handleRequests = (): void => {
      for (let i = 0; i < 10; i++) {
        const id = request++;
        cache.set(id, new Array(4000).fill(id)); // ~32 KB of heap per response
        try {
          if (id % 2 === 1) throw new Error('upstream timed out');
          cache.delete(id);
        } catch {
          // the error path forgets to evict
        }
      }
    };
    const traffic = setInterval(handleRequests, 100);
    try {
      await new Promise<void>((resolve, reject) => {
        const poll = setInterval(() => {
          void probe.recent().catch(() => undefined); // the worker drains, so rules see fresh samples
          if (events.some((e) => /budget/.test(e.notTaken?.join() ?? ''))) {
            clearInterval(poll);
            clearTimeout(deadline);
            resolve();
          }
        }, 250);
        const deadline = setTimeout(() => {
          clearInterval(poll);
          reject(new Error(`only ${events.length} firings: ${JSON.stringify(events)}`));
        }, 45_000);
      });
    } finally {
      clearInterval(traffic);
      await probe.stop();
    }
    const taken = events.filter((e) => e.heapSnapshot);
    assert.equal(taken.length, 2, JSON.stringify(events));
    assert.ok(events[0]!.observed > 20 * MB, `growth ${events[0]!.observed / MB} MB/min`);
    for (const { heapSnapshot } of taken) {
      assert.ok(fs.statSync(heapSnapshot!.file).size > 1 * MB);
      assert.equal(JSON.parse(fs.readFileSync(heapSnapshot!.sidecarFile, 'utf8')).trigger.rule, 'leak');
    }
    // A firing while a snapshot is still being written (a slow machine) is refused as busy; after two, the budget refuses.
    for (const e of events.filter((x) => !x.heapSnapshot))
      assert.match(e.notTaken?.join() ?? '', /budget of 2 heap snapshots|already being written/);
    assert.ok(events.some((e) => /budget of 2 heap snapshots/.test(e.notTaken?.join() ?? '')));
    // The incident (closed by stop()) diffed its two snapshots in a child process: the leaked arrays grew.
    const [incident] = probe.incidents();
    const manifest = JSON.parse(fs.readFileSync(path.join(incident!.dir, 'manifest.json'), 'utf8')) as {
      heapDiff?: { file: string; snapshots: string[] };
    };
    assert.equal(manifest.heapDiff?.snapshots.length, 2, JSON.stringify(manifest.heapDiff));
    const diff = JSON.parse(fs.readFileSync(path.join(incident!.dir, 'heap-diff.json'), 'utf8')) as {
      constructors: Array<{ name: string; countDelta: number; selfSizeDelta: number }>;
    };
    const arrays = diff.constructors.find((c) => c.name === 'Array');
    assert.ok(
      arrays && arrays.countDelta > 0 && arrays.selfSizeDelta > 0,
      JSON.stringify(diff.constructors.slice(0, 5)),
    );
    assert.deepEqual(
      fs.readdirSync(dumpDir).filter((f) => f.endsWith('.partial')),
      [],
    );
    assert.equal(fs.readdirSync(dumpDir).filter((f) => f.endsWith('.heapsnapshot')).length, 2);
  });
});
