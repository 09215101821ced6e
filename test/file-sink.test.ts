import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ErrorCode, SysprobeError } from '../src/errors.js';
import { FileSink, type FileSinkOptions } from '../src/sink/file-sink.js';
import { functionSink, type CaptureInput, type WrittenCapture } from '../src/sink/sink.js';
import { needs, ROOT_MOUNT } from './requirements.js';
import { memoryLogger } from './helpers.js';
import { start } from '../src/index.js';

const SINK_MODULE = path.resolve(__dirname, '..', 'src', 'sink', 'file-sink.js');
const NAME = /^heap-snapshot-\d{4}-\d\d-\d\dT\d{6}\.\d{3}Z-\d+(-\d+)?\.heapsnapshot$/;
const ROOMY_DISK = async () => ({ bavail: 1e9, bsize: 4096 });

const tempDirs: string[] = [];

function tempDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sysprobe-sink-'));
  tempDirs.push(dir);
  return dir;
}

function sink(dir: string, options: Partial<FileSinkOptions> = {}): FileSink {
  return new FileSink({ dir, reserveBytes: 0, statfs: ROOMY_DISK, ...options });
}

function heap(body: CaptureInput['body'], extra: Partial<CaptureInput> = {}): CaptureInput {
  return { kind: 'heap-snapshot', extension: '.heapsnapshot', sidecar: {}, body, ...extra };
}

/** Yields `count` chunks of `size` bytes; `state` shows how far the consumer pulled and whether it let go. */
function chunks(count: number, size: number, state = { pulled: 0, closed: false }): AsyncIterable<Buffer> {
  return (async function* () {
    try {
      for (let i = 0; i < count; i++) {
        state.pulled += 1;
        yield Buffer.alloc(size, 97 + (i % 26));
      }
    } finally {
      state.closed = true;
    }
  })();
}

async function rejection(promise: Promise<unknown>): Promise<SysprobeError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  assert.ok(err instanceof SysprobeError, `expected a SysprobeError, got ${String(err)}`);
  return err;
}

describe('FileSink: captures land whole, or not at all', () => {
  after(() => {
    for (const dir of tempDirs) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('writes the data file and its sidecar under their final names, and no .partial', async () => {
    const dir = tempDir();
    const written = await sink(dir, { service: 'checkout', pid: 4242, sysprobeVersion: '0.1.0' }).write(
      heap(
        (async function* () {
          yield '{"snapshot":';
          yield Buffer.from('{}}');
        })(),
        { expectedBytes: 100, sidecar: { trigger: 'heap-growth', heapUsedBytes: 123, kind: 'not-overridable' } },
      ),
    );
    assert.match(path.basename(written.file), NAME);
    assert.match(path.basename(written.file), /-4242\.heapsnapshot$/);
    assert.equal(fs.readFileSync(written.file, 'utf8'), '{"snapshot":{}}');
    assert.equal(written.bytes, 15);
    assert.equal(written.sidecarFile, `${written.file}.json`);
    const sidecar = JSON.parse(fs.readFileSync(written.sidecarFile, 'utf8')) as Record<string, unknown>;
    assert.deepEqual(
      { ...sidecar, startedAt: undefined, finishedAt: undefined },
      {
        kind: 'heap-snapshot',
        file: path.basename(written.file),
        bytes: 15,
        startedAt: undefined,
        finishedAt: undefined,
        pid: 4242,
        service: 'checkout',
        node: process.version,
        sysprobe: '0.1.0',
        trigger: 'heap-growth',
        heapUsedBytes: 123,
      },
    );
    assert.ok(Date.parse(String(sidecar.finishedAt)) >= Date.parse(String(sidecar.startedAt)));
    assert.deepEqual(fs.readdirSync(dir).sort(), [path.basename(written.file), path.basename(written.sidecarFile)]);
  });

  it('queues a second write until the first is done, and gives each its own name', async () => {
    const dir = tempDir();
    const files = sink(dir);
    let firstDone = 0;
    let secondStarted = 0;
    const first = files
      .write(
        heap(
          (async function* () {
            for (let i = 0; i < 5; i++) {
              yield 'x';
              await new Promise((resolve) => setTimeout(resolve, 20));
            }
          })(),
        ),
      )
      .then((written) => {
        firstDone = performance.now();
        return written;
      });
    const second = files.write(
      heap(
        (async function* () {
          secondStarted = performance.now();
          yield 'y';
        })(),
      ),
    );
    const [a, b] = await Promise.all([first, second]);
    assert.ok(secondStarted >= firstDone, 'the second body was read before the first write finished');
    assert.notEqual(a.file, b.file);
    assert.equal(fs.readFileSync(a.file, 'utf8'), 'xxxxx');
    assert.equal(fs.readFileSync(b.file, 'utf8'), 'y');
  });

  it('leaves only .partial files when the process is killed mid-write; a later FileSink removes it once stale', async () => {
    const dir = tempDir();
    fs.writeFileSync(path.join(dir, 'notes.partial'), 'not ours');
    const script = `
      const { FileSink } = require(${JSON.stringify(SINK_MODULE)});
      const sink = new FileSink({ dir: ${JSON.stringify(dir)}, reserveBytes: 0 });
      sink.write({ kind: 'heap-snapshot', extension: '.heapsnapshot', sidecar: {}, body: (async function* () {
        for (let i = 0; ; i++) {
          if (i === 4) process.stdout.write('writing\\n');
          yield Buffer.alloc(1024, 97);
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
      })() });`;
    const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    const exited = new Promise<NodeJS.Signals | null>((resolve) =>
      child.once('exit', (_code, signal) => resolve(signal)),
    );
    await new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (data: Buffer) => {
        if (data.toString().includes('writing')) resolve();
      });
      child.once('exit', () => reject(new Error('the writer exited before it started writing')));
    });
    child.kill('SIGKILL');
    assert.equal(await exited, 'SIGKILL');

    // The data's partial, and its sidecar's, reserved (empty) with it so no link can be planted under that name.
    const left = fs
      .readdirSync(dir)
      .filter((name) => name !== 'notes.partial')
      .sort();
    assert.equal(left.length, 2, `expected two partial files, found ${left.join(', ')}`);
    const partial = left[1]!;
    assert.equal(left[0], partial.replace(/\.partial$/, '.json.partial'));
    assert.match(partial, /\.heapsnapshot\.partial$/);
    assert.match(partial.slice(0, -'.partial'.length), NAME);
    assert.ok(
      fs.statSync(path.join(dir, partial)).size >= 4 * 1024,
      'the partial holds the chunks written before the kill',
    );

    assert.deepEqual(
      await sink(dir, { stalePartialAgeMs: 60_000 }).ready,
      [],
      'a fresh partial may be a write in progress',
    );
    assert.ok(fs.existsSync(path.join(dir, partial)));
    assert.deepEqual(
      (await sink(dir, { stalePartialAgeMs: 0 }).ready).sort(),
      left.map((name) => path.join(dir, name)),
    );
    assert.deepEqual(fs.readdirSync(dir), ['notes.partial'], 'only its own partial is removed');
  });

  it('refuses a capture when the free space would drop below the reserve, and says the numbers', async () => {
    const dir = tempDir();
    const nearlyFull = async () => ({ bavail: 100, bsize: 4096 }); // 409600 bytes free
    const files = sink(dir, { statfs: nearlyFull, reserveBytes: 200_000 });
    const err = await rejection(files.write(heap('data', { expectedBytes: 300_000 })));
    assert.equal(err.code, ErrorCode.CAPTURE_FAILED);
    assert.match(err.message, /409600 bytes free/);
    assert.match(err.message, /300000 expected \+ 200000 reserve = 500000 bytes/);
    assert.deepEqual(fs.readdirSync(dir), []);
    await files.write(heap('data', { expectedBytes: 100_000 })); // the same disk holds a smaller one
    assert.equal(fs.readdirSync(dir).length, 2);
  });

  it('on a real 2 MiB tmpfs: refuses what would not fit above the reserve, and cuts off what grows into it', async function () {
    needs(this, ROOT_MOUNT);
    const dir = tempDir();
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', dir], { stdio: 'pipe' });
    try {
      const files = new FileSink({ dir, reserveBytes: 1024 * 1024 });
      const refused = await rejection(files.write(heap('x', { expectedBytes: 1536 * 1024 })));
      assert.match(refused.message, /2097152 bytes free/);
      const state = { pulled: 0, closed: false };
      const cut = await rejection(files.write(heap(chunks(24, 64 * 1024, state)))); // 1.5 MiB, no estimate
      assert.equal(cut.code, ErrorCode.CAPTURE_FAILED);
      assert.match(cut.message, /grew past the 1048576 bytes free above the reserve/);
      assert.ok(state.closed && state.pulled === 17, `pulled ${state.pulled} chunks`);
      assert.deepEqual(fs.readdirSync(dir), []);
      const fits = await files.write(heap(chunks(8, 64 * 1024)));
      assert.equal(fs.statSync(fits.file).size, 512 * 1024);
    } finally {
      execFileSync('umount', [dir]);
    }
  });

  it('cuts off a capture past twice its expected size or past maxBytes, deletes the partial, and stops reading the body', async () => {
    const dir = tempDir();
    const state = { pulled: 0, closed: false };
    const runaway = await rejection(sink(dir).write(heap(chunks(100, 1000, state), { expectedBytes: 1000 })));
    assert.equal(runaway.code, ErrorCode.CAPTURE_FAILED);
    assert.match(runaway.message, /grew past twice the expected 1000 bytes/);
    assert.equal(state.pulled, 3);
    assert.ok(state.closed, 'the producer was told to stop');
    assert.deepEqual(fs.readdirSync(dir), []);

    const tooBig = await rejection(sink(dir, { maxBytes: 5000 }).write(heap(chunks(6, 1000), { expectedBytes: 4000 })));
    assert.match(tooBig.message, /grew past maxBytes \(5000 bytes\)/);
    assert.deepEqual(fs.readdirSync(dir), []);
    const atTheCap = await sink(dir, { maxBytes: 5000 }).write(heap(chunks(5, 1000), { expectedBytes: 4000 }));
    assert.equal(atTheCap.bytes, 5000);
  });

  it("keeps the newest maxFiles captures, deleting the oldest whole, older processes' too, and never a foreign file", async () => {
    const dir = tempDir();
    const foreign = [
      'notes.txt',
      'heap-snapshot-old.heapsnapshot',
      'cpu-2020-01-01T00-00-00-000Z-1-main.cpuprofile',
      'x.partial',
    ];
    for (const name of foreign) fs.writeFileSync(path.join(dir, name), 'keep me');
    const olderProcess = 'heap-snapshot-2020-01-01T000000.000Z-1.heapsnapshot';
    fs.writeFileSync(path.join(dir, olderProcess), 'old');
    fs.writeFileSync(path.join(dir, `${olderProcess}.json`), '{}');
    const { logger, lines } = memoryLogger();
    const files = sink(dir, { maxFiles: 3, logger });
    const written: WrittenCapture[] = [];
    for (let i = 0; i < 5; i++) written.push(await files.write(heap(`capture ${i}`)));
    const kept = written.slice(2).flatMap((w) => [path.basename(w.file), path.basename(w.sidecarFile)]);
    assert.deepEqual(fs.readdirSync(dir).sort(), [...foreign, ...kept].sort());
    // Evidence going away says so: each removal named, with the limit that sent it.
    const rotated = lines.filter((l) => l.msg === 'sysprobe rotated out old evidence');
    assert.deepEqual(
      rotated.flatMap((l) => l.removed as string[]).sort(),
      [olderProcess, ...written.slice(0, 2).map((w) => path.basename(w.file))].sort(),
    );
    assert.ok(rotated.every((l) => l.maxFiles === 3 && l.level === 30));
  });

  it("the probe worker's sink says what its rotation removed too (a CPU profile written into a full dump directory)", async () => {
    const dir = tempDir();
    const old = (i: number) => `cpu-profile-2020-01-01T0000${String(i).padStart(2, '0')}.000Z-1.cpuprofile`;
    for (let i = 0; i < 22; i++) fs.writeFileSync(path.join(dir, old(i)), '{}');
    const { logger, lines } = memoryLogger();
    const probe = await start({ logger, dumpDir: dir, defaultRules: false });
    try {
      await probe.captureCpuProfile({ durationMs: 50 });
      const removed = lines.filter((l) => l.msg === 'sysprobe rotated out old evidence').flatMap((l) => l.removed);
      assert.ok(removed.includes(old(0)) && removed.includes(old(1)), JSON.stringify(removed));
    } finally {
      await probe.stop();
    }
  });

  it('keeps captures within maxBytes, data and sidecars counted, deleting the oldest whole', async () => {
    const dir = tempDir();
    const first = await sink(dir).write(heap(Buffer.alloc(1000)));
    const captureBytes = 1000 + fs.statSync(first.sidecarFile).size;
    fs.rmSync(first.file);
    fs.rmSync(first.sidecarFile);
    const files = sink(dir, { maxBytes: 2 * captureBytes + 10 });
    const written: WrittenCapture[] = [];
    for (let i = 0; i < 4; i++) written.push(await files.write(heap(Buffer.alloc(1000))));
    const kept = written.slice(2).flatMap((w) => [path.basename(w.file), path.basename(w.sidecarFile)]);
    assert.deepEqual(fs.readdirSync(dir).sort(), kept.sort());
  });

  it('hands each finished capture to a function sink, and reports its failure without losing the files', async () => {
    const dir = tempDir();
    const seen: Array<{ capture: WrittenCapture; data: string; sidecar: string }> = [];
    const files = sink(dir);
    const withUpload = functionSink(files, async (capture) => {
      seen.push({
        capture,
        data: fs.readFileSync(capture.file, 'utf8'),
        sidecar: fs.readFileSync(capture.sidecarFile, 'utf8'),
      });
    });
    const written = await withUpload.write(heap('the snapshot'));
    assert.equal(seen.length, 1);
    assert.deepEqual(seen[0]!.capture, written);
    assert.equal(seen[0]!.data, 'the snapshot');
    assert.equal((JSON.parse(seen[0]!.sidecar) as { bytes: number }).bytes, 12);

    const failing = functionSink(files, () => {
      throw new Error('upload refused');
    });
    const err = await rejection(failing.write(heap('another')));
    assert.equal(err.code, ErrorCode.CAPTURE_FAILED);
    assert.match(err.message, /upload refused/);
    assert.equal(fs.readdirSync(dir).filter((name) => NAME.test(name)).length, 2, 'both captures stay on disk');
  });
});
