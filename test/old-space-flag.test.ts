import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { flagIn, oldSpaceFlag } from '../src/crash/old-space-flag.js';
import { NearLimitWatch, oldGenerationLimit } from '../src/crash/near-limit.js';

const MiB = 1 << 20;
const MODULE = path.join(__dirname, '..', 'src', 'crash', 'old-space-flag.js');

describe('--max-old-space-size, read from NODE_OPTIONS and the command line', () => {
  it('finds it among node options in either spelling and form; the last one wins', () => {
    assert.equal(flagIn(['--max-old-space-size=64']), 64 * MiB);
    assert.equal(flagIn(['--max_old_space_size=128', 'app.js']), 128 * MiB);
    assert.equal(flagIn(['--max-old-space-size', '96', 'app.js']), 96 * MiB);
    assert.equal(flagIn(['--max-old-space-size=64', '--expose-gc', '--max-old-space-size=80']), 80 * MiB);
    assert.equal(flagIn(['--max-old-space-size=abc']), undefined, 'not a number: not taken');
  });

  it("ignores the script's own arguments and what -e runs", () => {
    assert.equal(flagIn(['app.js', '--max-old-space-size=64']), undefined);
    assert.equal(flagIn(['-r', 'sysprobe/register', 'app.js', '--max-old-space-size=64']), undefined);
    assert.equal(flagIn(['-e', 'x', '--max-old-space-size=64']), undefined);
    assert.equal(flagIn(['--require', 'x', '--max-old-space-size=48', 'app.js']), 48 * MiB);
  });

  it('takes the command line over NODE_OPTIONS, as node does', () => {
    assert.equal(oldSpaceFlag('--max-old-space-size=64', ['--max-old-space-size=100', 'a.js']), 100 * MiB);
    assert.equal(oldSpaceFlag('--enable-source-maps  --max-old-space-size=64', ['a.js']), 64 * MiB);
    assert.equal(oldSpaceFlag(undefined, ['a.js']), undefined);
  });

  it('is what the old generation may reach: on Node 24 the heap limit for 64 MiB reads 256 MiB', () => {
    assert.equal(oldGenerationLimit(256 * MiB, 64 * MiB), 64 * MiB);
    assert.equal(oldGenerationLimit(160 * MiB, 64 * MiB), 64 * MiB);
    assert.equal(oldGenerationLimit(256 * MiB), 208 * MiB, 'without the flag: the limit less the estimated young room');
    const watch = new NearLimitWatch({ oldSpaceFlag: 64 * MiB });
    const near = watch.observe({ time: 1, heapLimit: 256 * MiB, heapAfterGc: 60 * MiB });
    assert.equal(near?.kind, 'heap', '60 of 64 MiB live is near the limit, whatever heap_size_limit says');
    assert.equal(near?.limit, 64 * MiB);
  });

  for (const how of ['the command line', 'NODE_OPTIONS'] as const) {
    it(`a real process reads it from ${how}, in a worker started with execArgv: [] too`, () => {
      const code = `
        const { processOldSpaceFlag } = require(${JSON.stringify(MODULE)});
        const { Worker } = require('node:worker_threads');
        const main = processOldSpaceFlag();
        const w = new Worker("const { parentPort } = require('node:worker_threads'); parentPort.postMessage(require(" + JSON.stringify(${JSON.stringify(MODULE)}) + ").processOldSpaceFlag())", { eval: true, execArgv: [] });
        w.once('message', (inWorker) => { console.log(JSON.stringify({ main, inWorker })); w.terminate(); });
      `;
      const args = how === 'the command line' ? ['--max-old-space-size=72', '-e', code] : ['-e', code];
      const env = { ...process.env, NODE_OPTIONS: how === 'NODE_OPTIONS' ? '--max-old-space-size=72' : '' };
      const res = spawnSync(process.execPath, args, { env, encoding: 'utf8', timeout: 30_000 });
      assert.equal(res.status, 0, res.stderr);
      assert.deepEqual(JSON.parse(res.stdout), { main: 72 * MiB, inWorker: 72 * MiB });
    });
  }
});
