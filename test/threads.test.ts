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
      const { threadId, stalls } = JSON.parse(found[1]!) as {
        threadId: number;
        stalls: Array<{
          thread: { id: number; name: string };
          durationMs: number;
          capture: { how: string; latencyMs?: number };
          stack?: Array<{ functionName: string }>;
          loopWatch: string;
        }>;
      };
      // Under load, start-up itself can stall the worker's loop: the blocking function's stall is the one to check.
      const stall = stalls.find((s) => s.durationMs >= 500);
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
