import assert from 'node:assert/strict';
import { spawnNode, output, ROOT, type Child } from './children.js';
import * as path from 'node:path';

const CHILD = path.join(ROOT, 'dist', 'test', 'worker-probe-child.js');

function exitOf(child: Child): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  return new Promise((resolve) => {
    if (child.exited()) resolve({ code: child.proc.exitCode, signal: child.proc.signalCode });
    else child.proc.once('exit', (code, signal) => resolve({ code, signal }));
  });
}

describe('a probe started inside an app worker thread', function () {
  this.timeout(120_000);

  it('start, stop and the worker exit, many times over: the process exits cleanly (no SIGSEGV)', async () => {
    const child = spawnNode([CHILD, 'cycle', '12']);
    const { code, signal } = await exitOf(child);
    assert.equal(signal, null, `the process died by ${signal}\n${output(child)}`);
    assert.equal(code, 0, output(child));
    assert.match(child.stdout(), /DONE/);
  });

  for (const loopWatch of ['auto', 'heartbeat'] as const) {
    it(`a stall of the worker (${loopWatch} loop watch) is named by the worker's own blocking function, taken by interrupt`, async () => {
      const child = spawnNode([CHILD, 'stall', '1', loopWatch]);
      const { code, signal } = await exitOf(child);
      assert.equal(signal, null, output(child));
      assert.equal(code, 0, output(child));
      const found = /STALLS (.*)/.exec(child.stdout());
      assert.ok(found, output(child));
      const { threadId, stalls, crunchAt } = JSON.parse(found[1]!) as {
        threadId: number;
        crunchAt: number;
        stalls: Array<{
          startedAt: number;
          thread: { id: number; name: string };
          durationMs: number;
          capture: { how: string; latencyMs?: number };
          stack?: Array<{ functionName: string }>;
          loopWatch: string;
        }>;
      };
      // Under load, start-up itself can stall the worker's loop (by 500 ms and more at a load of 13 on 2 cores,
      // in native code): the stall under the blocking function's middle is the one to check.
      const stall = stalls.find((s) => s.startedAt <= crunchAt + 300 && s.startedAt + s.durationMs >= crunchAt + 300);
      assert.ok(stall, JSON.stringify(stalls));
      for (const s of stalls) assert.equal(s.thread.id, threadId);
      if (loopWatch === 'auto') assert.equal(stall!.loopWatch, 'native');
      assert.ok(threadId > 0);
      // Node 22.?+ tells a worker its name; before that it is named by its id.
      assert.ok(['crunch', `worker ${threadId}`].includes(stall!.thread.name), stall!.thread.name);
      assert.equal(stall!.capture.how, 'interrupt', JSON.stringify(stall!.capture));
      assert.equal(stall!.stack?.[0]?.functionName, 'crunchInWorker', JSON.stringify(stall!.stack));
      assert.ok(stall!.durationMs >= 500 && stall!.durationMs < 2000, `durationMs ${stall!.durationMs}`);
    });
  }

  it('two workers with a probe each, at once, exit cleanly', async () => {
    const child = spawnNode([CHILD, 'overlap', '6']);
    const { code, signal } = await exitOf(child);
    assert.equal(signal, null, `the process died by ${signal}\n${output(child)}`);
    assert.equal(code, 0, output(child));
  });
});

const WATCH_CHILD = path.join(ROOT, 'dist', 'test', 'watch-thread-child.js');

describe("watchThread(): an app worker thread watched by the main thread's probe", function () {
  this.timeout(120_000);

  it("a worker's stall is emitted by the main probe, named by the worker's blocking function and its name", async () => {
    const child = spawnNode([WATCH_CHILD, 'stall']);
    const { code, signal } = await exitOf(child);
    assert.equal(signal, null, output(child));
    assert.equal(code, 0, output(child));
    const worker = JSON.parse(/WORKER (.*)/.exec(child.stdout())?.[1] ?? 'null') as {
      threadId: number;
      watching: { id: number; name: string };
    } | null;
    assert.ok(worker, output(child));
    assert.deepEqual(worker.watching, { id: worker.threadId, name: 'image-resizer' });
    const stalls = [...child.stdout().matchAll(/^STALL (.*)$/gm)].map(
      (m) =>
        JSON.parse(m[1]!) as {
          thread: { id: number; name: string };
          durationMs: number;
          capture: { how: string };
          stack?: Array<{ functionName: string }>;
          cause: string;
        },
    );
    // Its blocking function's stall is its longest (under load, other turns of that loop may pass the threshold too).
    const stall = stalls.filter((s) => s.thread.id === worker.threadId).sort((a, b) => b.durationMs - a.durationMs)[0];
    assert.ok(stall, output(child));
    assert.deepEqual(stall.thread, { id: worker.threadId, name: 'image-resizer' });
    assert.equal(stall.capture.how, 'interrupt', JSON.stringify(stall.capture));
    assert.equal(stall.stack?.[0]?.functionName, 'resizeImage', JSON.stringify(stall.stack));
    assert.equal(stall.cause, 'js');
    // It blocked 2 s; detection, the hook and a loaded host move the edges by a few ms, not hundreds.
    assert.ok(stall.durationMs >= 1900 && stall.durationMs < 3500, `durationMs ${stall.durationMs}`);
    // Not taken for a stall of the main thread (which a loaded host can stall on its own).
    assert.ok(
      !stalls.some((s) => s.thread.id === 0 && s.stack?.some((f) => f.functionName === 'resizeImage')),
      output(child),
    );
    // Mid-stall, GET /health (served by the probe worker) names the blocked worker thread.
    const health = /^HEALTH (.*)$/m.exec(child.stdout());
    assert.ok(health, output(child));
    const body = JSON.parse(health[1]!) as {
      blockedThreads?: Array<{ thread: { id: number; name: string }; forMs: number; function?: string }>;
    };
    assert.deepEqual(body.blockedThreads?.[0]?.thread, { id: worker.threadId, name: 'image-resizer' }, health[1]);
    assert.equal(body.blockedThreads?.[0]?.function, 'resizeImage', health[1]);
    assert.ok(body.blockedThreads![0]!.forMs >= 200, health[1]);
    // The incident names the thread too.
    assert.match(child.stdout(), /INCIDENT .*"phase":"open".*"thread":\{"id":\d+,"name":"image-resizer"\}/);
  });

  it('workers that register and end (stop(), exit while registered, terminated mid-stall), 12 times: every slot freed, the process exits', async () => {
    const child = spawnNode([WATCH_CHILD, 'cycle', '12']);
    const { code, signal } = await exitOf(child);
    assert.equal(signal, null, `the process died by ${signal}\n${output(child)}`);
    assert.equal(code, 0, output(child));
    assert.match(child.stdout(), /CYCLES 12 LEFT 0/);
    assert.match(child.stdout(), /DONE/);
  });

  it('refuses with coded errors: bad options, the main thread, no probe running, twice in one thread', async () => {
    const child = spawnNode([WATCH_CHILD, 'errors']);
    const { code, signal } = await exitOf(child);
    assert.equal(signal, null, output(child));
    assert.equal(code, 0, output(child));
    const found = /ERRORS (.*)/.exec(child.stdout());
    assert.ok(found, output(child));
    assert.deepEqual(JSON.parse(found[1]!), {
      onMain: 'SYSPROBE_ERR_UNSUPPORTED',
      early: { first: 'SYSPROBE_ERR_NOT_STARTED', twice: 'SYSPROBE_ERR_NOT_STARTED' },
      options: {
        badName: 'SYSPROBE_ERR_INVALID_OPTION',
        longName: 'SYSPROBE_ERR_INVALID_OPTION',
        unknownKey: 'SYSPROBE_ERR_INVALID_OPTION',
        badThreshold: 'SYSPROBE_ERR_INVALID_OPTION',
        notObject: 'SYSPROBE_ERR_INVALID_OPTION',
      },
      running: { first: 'none', twice: 'SYSPROBE_ERR_ALREADY_STARTED' },
      stopped: { notStarted: 'SYSPROBE_ERR_NOT_STARTED' },
    });
  });
});

describe('the native watchdog parks while the loop waits', function () {
  this.timeout(60_000);

  it('an idle loop wakes it rarely (it looked every threshold before); a stall from a timer and one from an event are still seen while they last', async function () {
    if (process.platform !== 'linux') this.skip();
    const script = `const fs = require('node:fs');
      const { Worker } = require('node:worker_threads');
      const { start } = require('sysprobe');
      const runs = (tid) => Number(fs.readFileSync('/proc/self/task/' + tid + '/schedstat', 'utf8').split(' ')[2]);
      const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
      const spin = (ms) => { const end = Date.now() + ms; while (Date.now() < end); };
      (async () => {
        const probe = await start({ serviceName: 'park-test', loopWatch: 'native', stallThresholdMs: 100, sampleIntervalMs: 5000,
          logger: require('pino')({ level: 'silent' }) });
        const tid = fs.readdirSync('/proc/self/task').find((t) => fs.readFileSync('/proc/self/task/' + t + '/comm', 'utf8').trim() === 'sysprobe-watch');
        const stalls = [];
        probe.on('stall', (s) => stalls.push(s));
        const hold = setInterval(() => {}, 1 << 30); // the probe's worker is unref'd
        await sleep(1000);
        const before = runs(tid), t0 = Date.now();
        await sleep(6000);
        const wakeupsPerS = (runs(tid) - before) / ((Date.now() - t0) / 1000);
        // No timer of ours runs while we wait for a stall: a timer would wake the watchdog by itself. The wait ends
        // with the stall that began after \`since\` (under load, start-up can stall the loop too), or after 8 s: a stall
        // the watchdog missed never comes (that timer is due long after the 500 ms stall, and cleared).
        const spins = [];
        const stallAfter = (since) => new Promise((resolve) => {
          const give = setTimeout(done, 8000);
          function on(s) { if (s.startedAt >= since) done(); }
          function done() { clearTimeout(give); probe.off('stall', on); resolve(); }
          probe.on('stall', on);
        });
        // A timer's turn: the watchdog parked until the timer's time + the threshold.
        let stalled = stallAfter(Date.now());
        setTimeout(() => { spins.push(Date.now()); spin(500); }, 1500);
        await stalled;
        await sleep(1500);
        // An event's turn (a message from a thread, through the loop's epoll): it wakes the parked watchdog.
        stalled = stallAfter(Date.now());
        const sender = new Worker("setTimeout(() => require('node:worker_threads').parentPort.postMessage('go'), 1500)", { eval: true });
        sender.once('message', () => { spins.push(Date.now()); spin(500); });
        await stalled;
        await sender.terminate();
        clearInterval(hold);
        await probe.stop();
        // Each spin's stall: the one that began with it (the turn began at most a little before the spin did).
        const ofSpin = (at) => stalls.find((s) => s.startedAt <= at + 50 && s.startedAt > at - 200);
        console.log(JSON.stringify({ wakeupsPerS, stalls: spins.map(ofSpin).map((s) => s && { seenAfterMs: s.capture.detectedAt - s.startedAt, durationMs: s.durationMs }) }));
      })();`;
    const child = spawnNode(['-e', script]);
    const { code } = await exitOf(child);
    assert.equal(code, 0, output(child));
    const result = JSON.parse(/\{.*\}/.exec(child.stdout())?.[0] ?? 'null') as {
      wakeupsPerS: number;
      stalls: Array<{ seenAfterMs: number; durationMs: number } | null>;
    };
    // Looking every 100 ms is 10 a second; parked, it follows the loop's few turns (its 5 s timer, the worker's batches).
    assert.ok(result.wakeupsPerS < 3, JSON.stringify(result));
    // Both stalls seen while they lasted (500 ms), not after: the watchdog woke for each turn.
    assert.equal(result.stalls.length, 2, JSON.stringify(result));
    for (const stall of result.stalls) {
      assert.ok(stall, JSON.stringify(result));
      assert.ok(stall.seenAfterMs < 400, JSON.stringify(result));
      assert.ok(stall.durationMs >= 490, JSON.stringify(result));
    }
  });
});
