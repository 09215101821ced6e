import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { promisify } from 'node:util';
import { ErrorCode, start } from '../src/index.js';
import { blockFor, findMetric, memoryLogger, memoryMetrics, pointValue, tempDir, waitFor } from './helpers.js';
import { probeInternals } from '../src/probe/internals.js';
import { nativeParts } from '../src/native.js';

const run = promisify(execFile);
const ROOT = path.resolve(__dirname, '..', '..');

/** Runs a script in a fresh node process from the package root; resolves with its stdout and how long it took. */
async function node(args: string[], timeoutMs = 15_000): Promise<{ stdout: string; ms: number }> {
  const t0 = Date.now();
  const { stdout } = await run(process.execPath, args, {
    cwd: ROOT,
    timeout: timeoutMs,
    env: { ...process.env, SYSPROBE_LOG_LEVEL: 'silent' },
  });
  return { stdout, ms: Date.now() - t0 };
}

describe('lifecycle', () => {
  it('stop() releases everything: no resource sysprobe created outlives it', async () => {
    // In a fresh process, so the test runner's own timers do not blur the picture. async_hooks sees
    // unref()ed resources too, which process.getActiveResourcesInfo() does not list.
    const script = `const { createHook } = require('node:async_hooks');
      const { start } = require('sysprobe');
      const live = new Map();
      let tracking = false;
      createHook({
        // Promises are not resources; stdout's stream (opened by the default logger) belongs to the process.
        init(id, type) { if (tracking && !['PROMISE', 'PIPEWRAP', 'TTYWRAP'].includes(type)) live.set(id, type); },
        destroy(id) { live.delete(id); },
      }).enable();
      (async () => {
        const before = process.getActiveResourcesInfo();
        tracking = true;
        const probe = await start({ sampleIntervalMs: 100 });
        await new Promise((r) => setTimeout(r, 300));
        const samples = (await probe.recent()).length;
        const created = [...new Set(live.values())].sort();
        await probe.stop();
        tracking = false;
        await new Promise((r) => setTimeout(r, 100));
        console.log(JSON.stringify({ before, after: process.getActiveResourcesInfo(), samples, created, left: [...live.values()] }));
      })();`;
    const { stdout } = await node(['-e', script]);
    const result = JSON.parse(stdout.trim()) as {
      before: string[];
      after: string[];
      samples: number;
      created: string[];
      left: string[];
    };
    assert.ok(result.samples >= 2, `${result.samples} samples while running`);
    assert.ok(
      result.created.includes('Timeout') && result.created.includes('WORKER'),
      `created: ${result.created.join(', ')}`,
    );
    assert.deepEqual(result.left, [], 'every resource created since start() was destroyed by stop()');
    const notStdio = (types: string[]): string[] => types.filter((t) => t !== 'PipeWrap' && t !== 'TTYWrap');
    assert.deepEqual(notStdio(result.after), notStdio(result.before));
  });

  it('the native loop watch: its thread runs while the probe does, is gone after stop(), and comes back on a new start()', async function () {
    if (process.platform !== 'linux') this.skip();
    const script = `const fs = require('node:fs');
      const { start } = require('sysprobe');
      const watchdogs = () => fs.readdirSync('/proc/self/task').filter((t) => fs.readFileSync('/proc/self/task/' + t + '/comm', 'utf8').trim() === 'sysprobe-watch').length;
      (async () => {
        const seen = [watchdogs()];
        let probe = await start({ loopWatch: 'native' });
        seen.push(watchdogs());
        await probe.stop();
        seen.push(watchdogs());
        probe = await start({ loopWatch: 'native' });
        seen.push(watchdogs(), probe.loopWatch);
        await probe.stop();
        seen.push(watchdogs());
        console.log(JSON.stringify(seen));
      })();`;
    const { stdout } = await node(['-e', script]);
    assert.deepEqual(JSON.parse(stdout.trim()), [0, 1, 0, 1, 'native', 0]);
  });

  it('a probe in a worker thread while the main thread has one: each hooks its own loop natively, each with its own watchdog', async () => {
    const script = `const fs = require('node:fs');
      const { Worker } = require('node:worker_threads');
      const { start } = require('sysprobe');
      const watchdogs = () => fs.readdirSync('/proc/self/task').filter((t) => fs.readFileSync('/proc/self/task/' + t + '/comm', 'utf8').trim() === 'sysprobe-watch').length;
      (async () => {
        const probe = await start({ loopWatch: 'native' });
        const inner = new Worker(\`
          const { parentPort } = require('node:worker_threads');
          const { start } = require('sysprobe');
          (async () => {
            const probe = await start({ loopWatch: 'native' });
            parentPort.postMessage(probe.loopWatch);
            await new Promise((resolve) => parentPort.once('message', resolve));
            await probe.stop();
          })();\`, { eval: true });
        const kind = await new Promise((resolve) => inner.once('message', resolve));
        const both = watchdogs();
        inner.postMessage('stop');
        await new Promise((resolve) => inner.once('exit', resolve));
        const one = watchdogs();
        await probe.stop();
        console.log(JSON.stringify({ main: probe.loopWatch, kind, both, one, none: watchdogs() }));
      })();`;
    const { stdout } = await node(['-e', script]);
    assert.deepEqual(JSON.parse(stdout.trim()), { main: 'native', kind: 'native', both: 2, one: 1, none: 0 });
  });

  it('a process that only ran start() and stop() exits by itself, promptly', async () => {
    const script = `const { start } = require('sysprobe');
      start({ serviceName: 'exit-test' }).then((p) => p.stop()).then(() => { globalThis.t = Date.now(); });
      process.on('exit', () => console.log(JSON.stringify({ exitAfterStopMs: Date.now() - globalThis.t })));`;
    const { stdout } = await node(['-e', script]);
    const { exitAfterStopMs } = JSON.parse(stdout.trim().split('\n').at(-1) ?? '{}') as { exitAfterStopMs: number };
    assert.ok(exitAfterStopMs < 200, `exited ${exitAfterStopMs} ms after stop()`);
  });

  it('a process that never calls stop() is not kept alive by sysprobe', async () => {
    const { ms } = await node([
      '-e',
      `require('sysprobe').start({ serviceName: 'no-stop' }).then(() => console.log('started'))`,
    ]);
    assert.ok(ms < 5000, `took ${ms} ms`);
  });

  it('loads from ESM (import) and CommonJS (require) as one package', async () => {
    const esm = await node([
      '--input-type=module',
      '-e',
      `import { start, SysprobeError, ErrorCode } from 'sysprobe'; import * as all from 'sysprobe'; import { createRequire } from 'node:module';
       const cjs = createRequire(import.meta.url)('sysprobe');
       const probe = await start({ serviceName: 'esm' });
       console.log(JSON.stringify({ same: cjs.start === start, names: Object.keys(all).filter((k) => k !== 'default').sort(), cjsNames: Object.keys(cjs).sort(), code: ErrorCode.INVALID_OPTION, isError: new SysprobeError(ErrorCode.TIMEOUT, 'x') instanceof Error, samples: (await probe.recent()).length >= 0 }));
       await probe.stop();`,
    ]);
    const result = JSON.parse(esm.stdout.trim()) as {
      same: boolean;
      names: string[];
      cjsNames: string[];
      code: string;
      isError: boolean;
      samples: boolean;
    };
    assert.equal(result.same, true, 'ESM and CJS share one module instance');
    assert.deepEqual(result.names, result.cjsNames, 'the ESM door exports every CommonJS export');
    assert.equal(result.code, 'SYSPROBE_ERR_INVALID_OPTION');
    assert.ok(result.isError && result.samples);
  });

  it('a restarted worker that dies while starting is restarted again (the probe is never left without one)', async () => {
    const { logger, lines } = memoryLogger();
    const probe = await start({ sampleIntervalMs: 100, logger });
    try {
      const { supervisor } = probeInternals(probe);
      await supervisor.crashForTest();
      // Kill the next worker while it starts (spawned after the 100 ms backoff, not yet ready).
      await waitFor(
        'a worker starting',
        async () => (!supervisor.running && (await supervisor.crashForTest()) !== undefined) || undefined,
        5000,
        5,
      );
      await waitFor('the restart to fail', () => lines.find((l) => l.msg === 'sysprobe worker restart failed'));
      await waitFor(
        'a restart after the failed one',
        () => lines.find((l) => l.msg === 'sysprobe worker restarted'),
        10_000,
      );
      assert.ok(Array.isArray(await probe.recent()), 'the worker answers again');
    } finally {
      await probe.stop();
    }
  });

  it('the worker is restarted with backoff after a crash, logged and counted, and answers again', async () => {
    const { logger, lines } = memoryLogger();
    const metrics = memoryMetrics();
    const probe = await start({ sampleIntervalMs: 100, logger, meterProvider: metrics.meterProvider });
    try {
      await probeInternals(probe).supervisor.crashForTest();
      await assert.rejects(probe.recent(), { code: ErrorCode.WORKER_UNAVAILABLE }, 'no answer while it restarts');
      await waitFor('the restart', () => lines.find((l) => l.msg === 'sysprobe worker restarted'));
      const exited = lines.find((l) => l.msg === 'sysprobe worker exited; restarting');
      assert.equal(exited?.restarts, 1);
      assert.equal(exited?.backoffMs, 100);
      await waitFor('samples from the new worker', async () => ((await probe.recent()).length > 0 ? true : undefined));
      assert.equal(pointValue(findMetric(await metrics.collect(), 'sysprobe.worker.restarts')), 1);
      // The new worker watches the loop again (with the native watch: a new watchdog thread).
      const stalls: number[] = [];
      probe.on('stall', (event: { durationMs: number }) => stalls.push(event.durationMs));
      blockFor(300);
      await waitFor('a stall seen by the new worker', () => stalls[0]);
      assert.ok((stalls[0] ?? 0) >= 300, `stall of ${stalls[0]} ms`);

      // A second crash soon after waits longer: the backoff doubles.
      await probeInternals(probe).supervisor.crashForTest();
      await waitFor('the second exit', () => lines.filter((l) => l.msg === 'sysprobe worker exited; restarting')[1]);
      assert.equal(lines.filter((l) => l.msg === 'sysprobe worker exited; restarting')[1]?.backoffMs, 200);
    } finally {
      await probe.stop();
      await metrics.shutdown();
    }
    assert.ok(lines.some((l) => l.msg === 'sysprobe stopped' && l.workerRestarts === 2));
  });

  it('a worker killed while its /proc/net reads and partial files are being opened leaves no descriptor open', async () => {
    // The probe worker's file opens, as the socket sampler (readBoundedFile of /proc/net/tcp) and the
    // sink (createExclusive of a .partial) make them, in a real worker thread. Its JS then blocks, so the
    // opens finish on libuv's pool but never reach it: the window a crash or a terminate can hit, held
    // open here for as long as the test needs. Then the worker is terminated, and the descriptors counted.
    const dir = tempDir('sysprobe-worker-fds-');
    const N = 20;
    const ours = () =>
      fs.readdirSync('/proc/self/fd').filter((fd) => {
        let target = '';
        try {
          target = fs.readlinkSync(`/proc/self/fd/${fd}`);
        } catch {
          // closed since the listing
        }
        // Opened from a thread, /proc/net/tcp reads back as /proc/<tid>/net/tcp (deleted) once the thread is gone.
        return target.startsWith(dir) || /\/net\/tcp( \(deleted\))?$/.test(target);
      }).length;
    assert.equal(ours(), 0);
    const files = path.join(__dirname, '..', 'src', 'internal', 'files.js');
    const worker = new Worker(
      `const { readBoundedFile, createExclusive } = require(${JSON.stringify(files)});
      const { workerData } = require('node:worker_threads');
      for (let i = 0; i < ${N}; i++) {
        readBoundedFile('/proc/net/tcp', 64 << 20).catch(() => undefined);
        createExclusive(require('node:path').join(${JSON.stringify(dir)}, i + '.partial')).catch(() => undefined);
      }
      Atomics.wait(new Int32Array(workerData), 0, 0, 30_000);`,
      { eval: true, workerData: new SharedArrayBuffer(4) },
    );
    try {
      // Every open has finished on the pool: the descriptors exist, the worker has not seen one of them.
      await waitFor('the opens to finish', () => ours() === 2 * N || undefined, 20_000);
    } finally {
      await worker.terminate();
    }
    assert.equal(fs.readdirSync(dir).length, N, 'the partial files were created');
    await waitFor('the descriptors to close', () => ours() === 0 || undefined, 5_000).catch(() => undefined);
    assert.equal(ours(), 0, 'descriptors the dead worker opened are still open');
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('a listener that throws does not reach the host: it is logged and the probe goes on', async () => {
    const { logger, lines } = memoryLogger();
    const probe = await start({ sampleIntervalMs: 100, stallThresholdMs: 50, logger });
    try {
      let calls = 0;
      probe.on('stall', () => {
        calls += 1;
        throw new Error('listener bug');
      });
      blockFor(400);
      const logged = await waitFor('the listener failure log', () =>
        lines.find((l) => l.msg === 'a sysprobe event listener threw'),
      );
      assert.equal(calls, 1);
      assert.equal((logged.err as { message?: string }).message, 'listener bug');
      assert.ok((await probe.recent()).length > 0, 'still answering');
    } finally {
      await probe.stop();
    }
  });

  it('logs start and stop with the fields a person searches for', async () => {
    const { logger, lines } = memoryLogger();
    const probe = await start({ serviceName: 'log-test', logger });
    await probe.stop();
    const started = lines.find((l) => l.msg === 'sysprobe started');
    assert.equal(started?.service, 'log-test');
    assert.equal(started?.component, 'sysprobe');
    assert.equal(started?.node, process.version);
    assert.equal(typeof started?.workerTid, process.platform === 'linux' ? 'number' : 'undefined');
    assert.ok(['native', 'heartbeat'].includes(started?.loopWatch as string), `loopWatch ${started?.loopWatch}`);
    // With both addons the native watchdog parks while the loop waits; the field is there only for the native watch.
    const parks = ['loop_watch', 'thread_stack'].every((name) => nativeParts().find((p) => p.name === name)?.loaded);
    assert.equal(started?.loopWatchParks, started?.loopWatch === 'native' ? parks : undefined);
    // Each native part: true where it loaded, else why not and what that costs.
    const native = started?.native as Record<string, unknown>;
    assert.deepEqual(
      Object.keys(native).sort(),
      nativeParts()
        .map((p) => p.name)
        .sort(),
    );
    assert.ok(Object.keys(native).includes('loop_watch'));
    for (const part of nativeParts()) {
      if (part.loaded) assert.equal(native[part.name], true, part.name);
      else assert.match(String(native[part.name]), /\(without it: .+\)$/, part.name);
    }
    if (started?.loopWatch === 'native') assert.equal(native.loop_watch, true);
    assert.ok(lines.some((l) => l.msg === 'sysprobe stopped' && typeof l.uptimeMs === 'number'));
  });
});
