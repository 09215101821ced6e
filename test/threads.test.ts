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
      const { threadId, crunchAt, stalls } = JSON.parse(found[1]!) as {
        threadId: number;
        crunchAt: number;
        stalls: Array<{
          thread: { id: number; name: string };
          startedAt: number;
          durationMs: number;
          capture: { how: string; latencyMs?: number };
          stack?: Array<{ functionName: string }>;
          loopWatch: string;
        }>;
      };
      // Under load, start-up itself can stall the worker's loop: the blocking function's stall is the one to check.
      const stall = stalls.find((s) => Math.abs(s.startedAt - crunchAt) < 300);
      assert.ok(stall, JSON.stringify(stalls));
      for (const s of stalls) assert.equal(s.thread.id, threadId);
      if (loopWatch === 'auto') assert.equal(stall!.loopWatch, 'native');
      assert.ok(threadId > 0);
      // Node 22.?+ tells a worker its name; before that it is named by its id.
      assert.ok(['crunch', `worker ${threadId}`].includes(stall!.thread.name), stall!.thread.name);
      // The worker's own JS was interrupted; on a loaded machine the host can be off the CPU past the 50 ms that
      // otherwise means "in native code", and then the stack is still the one it resumed in, crunchInWorker.
      const { how, latencyMs = 0 } = stall!.capture;
      assert.ok(how === 'interrupt' || (how === 'blocked-in-native' && latencyMs > 50), JSON.stringify(stall!.capture));
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

describe('the native watchdog parks while the loop waits', function () {
  this.timeout(60_000);

  it('an idle loop wakes it rarely (the old one looked every threshold), and a timer that blocks is still seen on time', async function () {
    if (process.platform !== 'linux') this.skip();
    const script = `const fs = require('node:fs');
      const { start } = require('sysprobe');
      const runs = (tid) => Number(fs.readFileSync('/proc/self/task/' + tid + '/schedstat', 'utf8').split(' ')[2]);
      (async () => {
        const probe = await start({ serviceName: 'park-test', loopWatch: 'native', stallThresholdMs: 100, sampleIntervalMs: 5000,
          logger: require('pino')({ level: 'silent' }) });
        const tid = fs.readdirSync('/proc/self/task').find((t) => fs.readFileSync('/proc/self/task/' + t + '/comm', 'utf8').trim() === 'sysprobe-watch');
        await new Promise((r) => setTimeout(r, 1000));
        const before = runs(tid), t0 = Date.now();
        await new Promise((r) => setTimeout(r, 5000));
        const wakeupsPerS = (runs(tid) - before) / ((Date.now() - t0) / 1000);
        const hold = setInterval(() => {}, 1 << 30); // the stall's event comes from an unref'd worker
        const stalled = new Promise((resolve) => probe.on('stall', resolve));
        setTimeout(() => { const end = Date.now() + 400; while (Date.now() < end); }, 300);
        const stall = await stalled;
        console.log(JSON.stringify({ wakeupsPerS, seenAfterMs: stall.capture.detectedAt - stall.startedAt, durationMs: stall.durationMs }));
        clearInterval(hold);
        await probe.stop();
      })();`;
    const child = spawnNode(['-e', script]);
    const { code } = await exitOf(child);
    assert.equal(code, 0, output(child));
    const result = JSON.parse(/\{.*\}/.exec(child.stdout())?.[0] ?? 'null') as {
      wakeupsPerS: number;
      seenAfterMs: number;
      durationMs: number;
    };
    // Looking every 100 ms is 10 a second; parked, it follows the loop's few turns (the sample timer, the worker's
    // messages): 1.4 a second on a quiet machine, up to 6 seen with the host at load 15, so the bar is 8.
    assert.ok(result.wakeupsPerS < 8, JSON.stringify(result));
    // Woken at the timer + the threshold: the stall is seen while it lasts, not 2 s later.
    assert.ok(result.seenAfterMs < 350, JSON.stringify(result));
    assert.ok(result.durationMs >= 380, JSON.stringify(result));
  });
});
