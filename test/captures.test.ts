import assert from 'node:assert/strict';
import { execFile, execSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as inspector from 'node:inspector';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { start, type Probe, type StallEvent } from '../src/index.js';
import { blockFor, memoryLogger, memoryMetrics, findMetric, pointValue, waitFor, tempDir } from './helpers.js';
import { probeInternals } from '../src/probe/internals.js';

const BLOCK_MS = 600;

// The culprits. Named, so the stall's stack can be checked for them.
function spinBusyLoop(ms: number): number {
  const end = Date.now() + ms;
  let n = 0;
  while (Date.now() < end) n += 1;
  return n;
}

class NightlySync {
  reconcile(ms: number): number {
    const end = Date.now() + ms;
    let n = 0;
    while (Date.now() < end) n += Math.sqrt(n);
    return n;
  }
}

function waitOnAtomics(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

function shellOutSync(ms: number): void {
  execSync(`sleep ${ms / 1000}`);
}

describe("stall stacks: the worker takes the main thread's stack while the loop is blocked", () => {
  let probe: Probe;
  let metrics: ReturnType<typeof memoryMetrics>;
  const dumpDir = tempDir('sysprobe-captures-');

  beforeEach(async () => {
    metrics = memoryMetrics();
    probe = await start({
      logger: memoryLogger().logger,
      meterProvider: metrics.meterProvider,
      dumpDir,
      capturesPerMinute: 60,
    });
  });

  afterEach(async () => {
    await probe.stop();
    await metrics.shutdown();
  });

  /** Blocks the loop with `block`, and resolves with the stall event and when the block ran. */
  async function stallWith(block: () => void): Promise<{ event: StallEvent; blockedAt: number; unblockedAt: number }> {
    const stalls: StallEvent[] = [];
    probe.on('stall', (event: StallEvent) => stalls.push(event));
    await new Promise((resolve) => setTimeout(resolve, 50)); // the worker is settled
    const blockedAt = Date.now();
    block();
    const unblockedAt = Date.now();
    const event = await waitFor('the stall event', () => stalls[0], 5000);
    return { event, blockedAt, unblockedAt };
  }

  for (const [kind, block, culprit] of [
    ['a busy loop', () => spinBusyLoop(BLOCK_MS), 'spinBusyLoop'],
    ['a loop in a class method', () => new NightlySync().reconcile(BLOCK_MS), 'reconcile'],
    ['Atomics.wait', () => waitOnAtomics(BLOCK_MS), 'waitOnAtomics'],
  ] as const) {
    it(`${kind}: the top frame is ${culprit}, taken while the block went on`, async () => {
      const { event, blockedAt, unblockedAt } = await stallWith(block);
      assert.equal(event.capture.how, 'debugger-pause', JSON.stringify(event.capture));
      const top = event.stack?.[0];
      assert.equal(
        top?.functionName,
        culprit,
        `stack: ${event.stack
          ?.slice(0, 4)
          .map((f) => f.functionName)
          .join(' < ')}`,
      );
      // dist/test/captures.test.js has a source map: the frame is at its place in the TypeScript, the compiled one beside it.
      assert.ok(top.url.endsWith('test/captures.test.ts'), `url ${top.url}`);
      assert.ok(top.generated?.url.endsWith('captures.test.js'), `generated ${JSON.stringify(top.generated)}`);
      assert.ok(top.lineNumber > 0 && top.columnNumber >= 0);
      const takenAt = event.capture.takenAt ?? 0;
      assert.ok(
        takenAt > blockedAt && takenAt < unblockedAt,
        `taken ${takenAt - blockedAt} ms into a ${unblockedAt - blockedAt} ms block`,
      );
      assert.ok(event.durationMs >= BLOCK_MS - 5, `duration ${event.durationMs}`);
    });
  }

  it('execSync: reported as blocked in native code, not blamed on the JS that ran next', async () => {
    const { event } = await stallWith(() => shellOutSync(BLOCK_MS));
    assert.equal(event.capture.how, 'blocked-in-native', JSON.stringify(event.capture));
    assert.ok((event.capture.latencyMs ?? 0) > 50, `pause latency ${event.capture.latencyMs} ms`);
  });

  it('counts stalls by how they were captured, with a duration histogram', async () => {
    await stallWith(() => spinBusyLoop(300));
    const exported = await metrics.collect();
    assert.equal(
      pointValue(findMetric(exported, 'sysprobe.eventloop.stalls'), { 'sysprobe.capture': 'debugger-pause' }),
      1,
    );
    const duration = findMetric(exported, 'sysprobe.eventloop.stall.duration');
    assert.equal(duration.descriptor.unit, 's');
  });

  it('another inspector session in the process (a debugger attached): captures still work, nothing hangs', async () => {
    const other = new inspector.Session();
    other.connect();
    await new Promise<void>((resolve, reject) =>
      other.post('Debugger.enable', (err) => (err ? reject(err) : resolve())),
    );
    try {
      const { event } = await stallWith(() => spinBusyLoop(BLOCK_MS));
      assert.equal(event.stack?.[0]?.functionName, 'spinBusyLoop');
    } finally {
      other.disconnect();
    }
  });
});

describe('stall stacks: budget and --inspect', () => {
  it('spends at most capturesPerMinute on automatic captures, and says so', async () => {
    const probe = await start({ logger: memoryLogger().logger, capturesPerMinute: 1, stallThresholdMs: 50 });
    const stalls: StallEvent[] = [];
    probe.on('stall', (event: StallEvent) => stalls.push(event));
    try {
      spinBusyLoop(200);
      await waitFor('the first stall', () => stalls[0]);
      spinBusyLoop(200);
      await waitFor('the second stall', () => stalls[1]);
      assert.equal(stalls[0]?.capture.how, 'debugger-pause');
      assert.equal(stalls[1]?.capture.how, 'skipped');
      assert.match(stalls[1]?.capture.reason ?? '', /budget/);
      assert.equal(stalls[1]?.stack, undefined);
    } finally {
      await probe.stop();
    }
  });

  it('paused by someone else in a debugger: no hang, no false blame, and their pause is not ours to end', async () => {
    // "A person in DevTools": another session pauses the main thread for 1.5 s, then resumes it.
    const script = `const { Worker } = require('node:worker_threads');
      const { start } = require('sysprobe');
      start({ logger: require('pino')({ level: 'silent' }) }).then((probe) => {
        const ticking = setInterval(() => {}, 20); // main runs JS now and then, so the pause lands
        probe.on('stall', (e) => {
          console.log(JSON.stringify({ durationMs: e.durationMs, how: e.capture.how, reason: e.capture.reason, stack: e.stack }));
          clearInterval(ticking);
          probe.stop();
        });
        new Worker(\`
          const inspector = require('node:inspector');
          const session = new inspector.Session();
          session.connectToMainThread();
          const alive = setInterval(() => {}, 1000);
          session.post('Debugger.enable', () => session.post('Debugger.pause', () => setTimeout(() =>
            // Linger after disconnecting: Node 20 can abort if a worker exits while the main thread still tears down its session.
            session.post('Debugger.resume', () => { session.disconnect(); setTimeout(() => clearInterval(alive), 200); }), 2500)));
        \`, { eval: true });
      });`;
    const { stdout } = await promisify(execFile)(process.execPath, ['-e', script], {
      cwd: path.resolve(__dirname, '..', '..'),
      timeout: 20_000,
    });
    const event = JSON.parse(stdout.trim()) as { durationMs: number; how: string; reason: string; stack?: unknown };
    assert.equal(event.how, 'failed');
    assert.match(event.reason, /did not pause in time/);
    assert.equal(event.stack, undefined, 'no stack, so nothing is blamed');
    assert.ok(
      event.durationMs >= 2400,
      `the other session's pause lasted ${event.durationMs} ms: sysprobe did not resume it`,
    );
  });

  it('with --inspect on, a stall is still captured and the process exits normally', async () => {
    const script = `const { start } = require('sysprobe');
      function spinUnderInspect(ms) { const end = Date.now() + ms; while (Date.now() < end); }
      start({ logger: require('pino')({ level: 'silent' }) }).then((probe) => {
        const keepAlive = setTimeout(() => {}, 10000); // the stall event arrives after the block; wait for it
        probe.on('stall', (e) => {
          console.log(JSON.stringify({ top: e.stack && e.stack[0].functionName, how: e.capture.how }));
          clearTimeout(keepAlive);
          probe.stop();
        });
        setTimeout(() => spinUnderInspect(500), 50);
      });`;
    const { stdout } = await promisify(execFile)(process.execPath, ['--inspect=127.0.0.1:0', '-e', script], {
      cwd: path.resolve(__dirname, '..', '..'),
      timeout: 15_000,
    });
    assert.deepEqual(JSON.parse(stdout.trim()), { top: 'spinUnderInspect', how: 'debugger-pause' });
  });
});

function busyCallerForProfile(ms: number): number {
  return spinBusyLoop(ms);
}

describe("stack captures asked for at once, and sysprobe's own pauses", () => {
  it('a stack asked for while one is being taken shares it: one capture, one result, no CAPTURE_BUSY', async () => {
    const probe = await start({ logger: memoryLogger().logger, dumpDir: tempDir('sysprobe-shared-stack-') });
    try {
      const { supervisor } = probeInternals(probe);
      // Both requests reach the worker while the main thread is blocked in native code, so the
      // first capture's pause cannot land before the second is asked for.
      const first = supervisor.request({ kind: 'captureStack' }, 10_000);
      const second = supervisor.request({ kind: 'captureStack' }, 10_000);
      blockFor(300);
      const [a, b] = (await Promise.all([first, second])) as [
        { frames: unknown[]; takenAt: number; latencyMs: number; how: string },
        unknown,
      ];
      assert.ok(a.frames.length > 0, JSON.stringify(a).slice(0, 300));
      // The same pause: the same moment, the same latency, the same frames.
      assert.deepEqual(b, a);
      // Once it is over, a stack asked for is a new capture.
      const later = (await supervisor.request({ kind: 'captureStack' }, 10_000)) as { takenAt: number };
      assert.ok(later.takenAt > a.takenAt, `a new capture after the shared one (${later.takenAt} > ${a.takenAt})`);
    } finally {
      await probe.stop();
    }
  });

  it('a stall while sysprobe pauses the main thread itself starts no stack capture, even before the worker hears of the pause', async () => {
    const probe = await start({
      logger: memoryLogger().logger,
      dumpDir: tempDir('sysprobe-own-pause-'),
      stallThresholdMs: 100,
    });
    const stalls: StallEvent[] = [];
    probe.on('stall', (e: StallEvent) => stalls.push(e));
    try {
      const { heartbeat } = probeInternals(probe);
      // What a heap snapshot does, minus its selfPause message: the shared flag alone must tell the worker.
      heartbeat.selfPause(true);
      try {
        blockFor(400);
      } finally {
        heartbeat.selfPause(false);
      }
      const stall = await waitFor('the stall of our own pause', () => stalls[0]);
      assert.equal(stall.capture.how, 'skipped', JSON.stringify(stall.capture));
      assert.match(stall.capture.reason ?? '', /heap snapshot/);
      assert.equal(stall.cause, 'self');
      // Nothing holds the debugger: a stack asked for right after is taken.
      assert.ok((await probe.captureStack()).length > 0);
    } finally {
      await probe.stop();
    }
  });
});

describe('CPU profiles: captureCpuProfile()', () => {
  it('profiles the main thread from the worker, writes .cpuprofile and pprof, and names the busy function', async () => {
    const dumpDir = tempDir('sysprobe-profile-');
    const probe = await start({ logger: memoryLogger().logger, dumpDir });
    try {
      const pending = probe.captureCpuProfile({ durationMs: 2000 });
      // Past the profile's first look (200 ms, then a recompile of what it saw): the profiler is running.
      await new Promise((resolve) => setTimeout(resolve, 800));
      busyCallerForProfile(1300); // blocks the loop (most of the profile): the worker still stops the profiler on time
      const result = await pending;
      assert.ok(result.file.startsWith(dumpDir) && result.file.endsWith('.cpuprofile'));
      const profile = JSON.parse(fs.readFileSync(result.file, 'utf8')) as { nodes: unknown[]; samples: number[] };
      assert.ok(profile.nodes.length > 0 && profile.samples.length > 100, `${profile.samples.length} samples`);
      assert.ok(fs.statSync(result.pprofFile).size > 0 && result.pprofFile.endsWith('.pb.gz'));
      const busy = result.summary.busyLoop;
      assert.ok(busy.detected, JSON.stringify(busy));
      // A function optimized before the profiler started is reported inside its caller when V8 inlined it.
      const name = busy.frame?.functionName ?? '';
      assert.ok(
        ['spinBusyLoop', 'busyCallerForProfile'].includes(name),
        `busy frame ${name}: neither the loop nor its caller`,
      );
      assert.equal(result.summary.topFunctions[0]?.functionName, busy.frame?.functionName);
      await assert.rejects(probe.captureCpuProfile({ durationMs: 5 }), { code: 'SYSPROBE_ERR_INVALID_OPTION' });
    } finally {
      await probe.stop();
    }
  });

  it('a profile asked for while one runs joins it: the same files and summary, shared; one with longer to go is refused', async () => {
    const probe = await start({ logger: memoryLogger().logger, dumpDir: tempDir('sysprobe-profile-') });
    try {
      const first = probe.captureCpuProfile({ durationMs: 1500 });
      // Asked for right after: the running profile ends within the 1500 ms this one asks for.
      const second = probe.captureCpuProfile({ durationMs: 1500 });
      // 100 ms asked for while ~1.5 s are left: waiting would outlast what was asked, so it is refused, saying how long is left.
      await assert.rejects(probe.captureCpuProfile({ durationMs: 100 }), (err: Error & { code?: string }) => {
        assert.equal(err.code, 'SYSPROBE_ERR_CAPTURE_BUSY');
        assert.match(err.message, /already running for \d+ ms more/);
        return true;
      });
      busyCallerForProfile(300);
      const [a, b] = await Promise.all([first, second]);
      assert.equal(b.file, a.file);
      assert.equal(b.pprofFile, a.pprofFile);
      assert.deepEqual(b.summary, a.summary);
      assert.equal(a.shared, undefined);
      assert.equal(b.shared, true);
      assert.equal(b.profiledFrom, a.profiledFrom);
      assert.equal(a.durationMs, 1500);
      assert.ok(Date.parse(a.profiledFrom) > 0, a.profiledFrom);
      // One profile written, not two.
      const profiles = fs.readdirSync(path.dirname(a.file)).filter((f) => f.endsWith('.cpuprofile'));
      assert.deepEqual(profiles, [path.basename(a.file)]);
      // Once it is over, a profile asked for is a new one.
      const later = await probe.captureCpuProfile({ durationMs: 100 });
      assert.notEqual(later.file, a.file);
      assert.equal(later.shared, undefined);
    } finally {
      await probe.stop();
    }
  });
});

describe("profileThread(): an app's own worker thread profiles itself", () => {
  // v8-profiler-next is on V8's C++ API: built per Node version, and it does not compile on Node 26.
  const profilerNextLoads =
    spawnSync(process.execPath, ['-e', "require('v8-profiler-next')"], { cwd: path.resolve(__dirname, '..', '..') })
      .status === 0;
  for (const backend of ['inspector', 'v8-profiler-next'] as const) {
    if (backend === 'v8-profiler-next' && !profilerNextLoads) {
      it('with the v8-profiler-next backend where it does not load for this Node: refused with SYSPROBE_ERR_UNSUPPORTED', async () => {
        const { Worker } = await import('node:worker_threads');
        const worker = new Worker(
          `
          const { parentPort } = require('node:worker_threads');
          const { profileThread } = require(${JSON.stringify(path.resolve(__dirname, '..', 'src', 'index.js'))});
          profileThread({ durationMs: 100, dumpDir: ${JSON.stringify(os.tmpdir())}, backend: 'v8-profiler-next' }).then(
            () => parentPort.postMessage({}),
            (err) => parentPort.postMessage({ code: err.code, message: err.message }),
          );`,
          { eval: true },
        );
        try {
          const result = await new Promise<{ code?: string; message?: string }>((resolve) =>
            worker.once('message', resolve),
          );
          assert.equal(result.code, 'SYSPROBE_ERR_UNSUPPORTED');
          assert.match(result.message ?? '', new RegExp(`built for this Node \\(${process.version}, ABI`));
        } finally {
          await worker.terminate();
        }
      });
      continue;
    }
    it(`with the ${backend} backend: files written, the busy function named`, async () => {
      const dumpDir = tempDir('sysprobe-thread-profile-');
      const { Worker } = await import('node:worker_threads');
      const worker = new Worker(
        `
        const { parentPort, workerData } = require('node:worker_threads');
        const { profileThread } = require(${JSON.stringify(path.resolve(__dirname, '..', 'src', 'index.js'))});
        function crunchInAppWorker(ms) { const end = Date.now() + ms; let n = 0; while (Date.now() < end) n += Math.sqrt(n); return n; }
        const pending = profileThread({ durationMs: 400, dumpDir: workerData.dumpDir, backend: workerData.backend });
        // Busy in slices, so the inspector backend's timer can fire in between.
        const end = Date.now() + 600;
        (function slice() { crunchInAppWorker(20); if (Date.now() < end) setImmediate(slice); })();
        pending.then((result) => parentPort.postMessage(result), (err) => parentPort.postMessage({ error: err.message }));`,
        { eval: true, workerData: { dumpDir, backend } },
      );
      try {
        const result = await new Promise<{
          file: string;
          sidecarFile: string;
          summary: { busyLoop: { frame?: { functionName: string } } };
          error?: string;
        }>((resolve) => worker.once('message', resolve));
        assert.equal(result.error, undefined);
        assert.ok(fs.existsSync(result.file), result.file);
        const sidecar = JSON.parse(fs.readFileSync(result.sidecarFile, 'utf8')) as { kind: string; thread: string };
        assert.equal(sidecar.kind, 'cpu-profile');
        assert.match(sidecar.thread, /^thread-\d+$/, 'profiled by the app thread itself');
        // When V8 inlines the loop into its caller (`slice`), the caller holds the samples.
        const busy = result.summary.busyLoop.frame?.functionName ?? '';
        assert.ok(['crunchInAppWorker', 'slice'].includes(busy), `busy frame ${busy}: neither the loop nor its caller`);
      } finally {
        await worker.terminate();
        fs.rmSync(dumpDir, { recursive: true, force: true });
      }
    });
  }
});

/** Retains what it allocates, so the sampling heap profiler still sees it live at the end. */
const retainedForAllocationTest: unknown[] = [];
function allocateRetainedRecords(count: number): void {
  for (let i = 0; i < count; i++) retainedForAllocationTest.push({ id: i, payload: `record ${i} `.repeat(8) });
}

describe('allocation profiles: captureAllocationProfile()', () => {
  it('samples allocations on the main thread from the worker, writes a .heapprofile, and names the allocating stack', async () => {
    const dumpDir = tempDir('sysprobe-alloc-');
    const probe = await start({ logger: memoryLogger().logger, dumpDir });
    try {
      const pending = probe.captureAllocationProfile({ durationMs: 800 });
      await new Promise((resolve) => setTimeout(resolve, 200)); // sampling has started
      allocateRetainedRecords(200_000);
      const result = await pending;
      assert.ok(result.file.endsWith('.heapprofile') && fs.existsSync(result.file));
      const profile = JSON.parse(fs.readFileSync(result.file, 'utf8')) as { head: { children: unknown[] } };
      assert.ok(profile.head.children.length > 0, 'a real profile tree');
      const { topFunctions, topStacks, totalBytes } = result.summary;
      assert.ok(totalBytes > 1_000_000, `${totalBytes} bytes sampled live`);
      const names = topStacks.slice(0, 3).map((s) => s.stack.map((f) => f.functionName));
      assert.ok(
        names.some((stack) => stack.includes('allocateRetainedRecords')),
        `top stacks: ${JSON.stringify(names)}`,
      );
      assert.ok(topFunctions[0] && topFunctions[0].share > 0 && topFunctions[0].share <= 1);
      assert.equal(JSON.parse(fs.readFileSync(result.sidecarFile, 'utf8')).kind, 'allocation-profile');
    } finally {
      retainedForAllocationTest.length = 0;
      await probe.stop();
    }
  });

  it('an allocation profile asked for while one runs shares its result', async () => {
    const probe = await start({ logger: memoryLogger().logger, dumpDir: tempDir('sysprobe-alloc-') });
    try {
      const first = probe.captureAllocationProfile({ durationMs: 800 });
      const second = probe.captureAllocationProfile({ durationMs: 1000 });
      await new Promise((resolve) => setTimeout(resolve, 200));
      allocateRetainedRecords(50_000);
      const [a, b] = await Promise.all([first, second]);
      assert.equal(b.file, a.file);
      assert.deepEqual(b.summary, a.summary);
      assert.equal(b.shared, true);
      assert.equal(b.durationMs, 800, "the running profile's duration, not the one asked for");
      assert.ok(fs.existsSync(a.file));
    } finally {
      retainedForAllocationTest.length = 0;
      await probe.stop();
    }
  });
});
