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

  it('two workers with a probe each, at once, exit cleanly', async () => {
    const child = spawnNode([CHILD, 'overlap', '6']);
    const { code, signal } = await exitOf(child);
    assert.equal(signal, null, `the process died by ${signal}\n${output(child)}`);
    assert.equal(code, 0, output(child));
  });
});
