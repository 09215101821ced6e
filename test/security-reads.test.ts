/**
 * Issue 17, item 12 follow-up: every file read back from the dump directory (and every source
 * map) goes through one bounded reader: no link followed where the file is sysprobe's own, no
 * FIFO waited on (an open() of a FIFO blocks a thread-pool thread until a writer comes, and no
 * timeout can free it), regular files only, and a size cap.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Sample } from '../src/samples/sample.js';
import { FlightRecorder } from '../src/samples/recorder.js';
import { writeIncidentSamples } from '../src/incidents/samples.js';
import { findPreviousRuns } from '../src/crash/previous-runs.js';
import { exitFileName, identify, recordFileName, RUNS_DIR } from '../src/crash/run-record.js';
import { SourceMaps } from '../src/sourcemaps/source-maps.js';
import { tempDir } from './helpers.js';

const fifos: string[] = [];
function mkfifo(file: string): string {
  execFileSync('mkfifo', ['-m', '600', file]);
  fifos.push(file);
  return file;
}

/** Opens each FIFO for writing once, so a reader stuck in open() (the old code) is let go after the test. */
function releaseFifos(): void {
  for (const file of fifos.splice(0)) {
    try {
      fs.closeSync(fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK));
    } catch {
      // ENXIO: nobody is waiting on it
    }
  }
}

function within<T>(ms: number, what: string, promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** The thread pool still serves the app: a small read finishes promptly. */
async function threadPoolAnswers(dir: string): Promise<void> {
  const probe = path.join(dir, 'pool-probe.txt');
  fs.writeFileSync(probe, 'ok');
  assert.equal(await within(2000, 'a read on the thread pool', fs.promises.readFile(probe, 'utf8')), 'ok');
}

const sample = (time: number): Sample => ({ time, intervalMs: 1000, mainStale: false });

describe('security: reading back files from the dump directory', () => {
  afterEach(releaseFifos);

  it('samples.json as a FIFO, a link to a secret, a directory: not read, the file starts over, the thread pool free', async () => {
    const dir = tempDir('sysprobe-reads-');
    const recorder = new FlightRecorder<Sample>(10);
    for (const t of [5000, 6000]) recorder.push(sample(t));
    const secret = path.join(dir, 'secret.json');
    fs.writeFileSync(secret, JSON.stringify([sample(1), sample(2)]));
    const shapes: Array<[string, (file: string) => void]> = [
      ['a FIFO', (f) => mkfifo(f)],
      ['a link', (f) => fs.symlinkSync(secret, f)],
      ['a directory', (f) => fs.mkdirSync(f)],
    ];
    for (let i = 0; i < 5; i++) {
      // Five FIFOs: more than the four threads of the pool, which the old code would all hold.
      const [what, plant] = shapes[i % 2 === 0 ? 0 : i === 1 ? 1 : 2]!;
      const file = path.join(dir, `samples-${i}.json`);
      plant(file);
      if (what === 'a directory') {
        await assert.rejects(writeIncidentSamples(recorder, file, 0, 100)); // rename over a directory fails: said, not hung
        continue;
      }
      const written = await within(3000, `samples.json as ${what}`, writeIncidentSamples(recorder, file, 0, 100));
      assert.deepEqual([written.from, written.to, written.count], [5000, 6000, 2], what);
      assert.ok(!fs.lstatSync(file).isSymbolicLink() && fs.lstatSync(file).isFile(), `${what} replaced by the file`);
    }
    assert.deepEqual(JSON.parse(fs.readFileSync(secret, 'utf8')), [sample(1), sample(2)], 'the secret untouched');
    await threadPoolAnswers(dir);
  });

  it('previous runs: FIFOs planted as run records and as an exit note do not hang start(), and are named as problems', async () => {
    const dumpDir = tempDir('sysprobe-reads-runs-');
    const runs = path.join(dumpDir, RUNS_DIR);
    fs.mkdirSync(runs, { recursive: true });
    for (let i = 1; i <= 5; i++) mkfifo(path.join(runs, `run-${i}-${i}.json`));
    // A real dead run whose exit note is a FIFO.
    const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60_000)'], { stdio: 'ignore' });
    await new Promise((resolve) => child.once('spawn', resolve));
    const dead = identify(child.pid!);
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await exited;
    const record = { version: 1, service: 'api', startedAt: 1, updatedAt: 2, samples: [], process: dead };
    fs.writeFileSync(path.join(runs, recordFileName(dead)), JSON.stringify(record));
    mkfifo(path.join(runs, exitFileName(dead)));
    const found = await within(
      3000,
      'findPreviousRuns',
      findPreviousRuns({ dumpDir, service: 'api', self: identify() }),
    );
    assert.deepEqual(
      found.runs.map((r) => [r.record.process.pid, r.exitNote]),
      [[dead.pid, undefined]],
      'the dead run is found, without an exit note',
    );
    assert.deepEqual(
      found.problems.sort(),
      [1, 2, 3, 4, 5].map((i) => `run-${i}-${i}.json: ENOTREG`),
    );
    await threadPoolAnswers(dumpDir);
  });

  it('source maps: a map or a script that is a FIFO keeps the generated position, promptly, without holding the thread pool', async () => {
    const dir = tempDir('sysprobe-reads-maps-');
    const frames = [];
    for (let i = 0; i < 5; i++) {
      const script = path.join(dir, `s${i}.js`);
      if (i === 4) mkfifo(script);
      else {
        fs.writeFileSync(script, `function f() {}\n//# sourceMappingURL=s${i}.js.map\n`);
        mkfifo(`${script}.map`);
      }
      frames.push({ functionName: 'f', url: pathToFileURL(script).href, lineNumber: 0, columnNumber: 4 });
    }
    const resolved = await within(3000, 'resolve', new SourceMaps({ readTimeoutMs: 500 }).resolve(frames));
    assert.deepEqual(resolved, frames);
    await threadPoolAnswers(dir);
  });
});
