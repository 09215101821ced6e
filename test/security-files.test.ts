/**
 * Issue 17, items 1, 2 and 5: what another local user can do to the dump directory.
 * The attacks are real: links planted under the names the sink will use next, pointing
 * at a root-owned 0600 file; a dump directory that is a link; a process killed mid-write.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as v8 from 'node:v8';
import { start } from '../src/index.js';
import { FileSink } from '../src/sink/file-sink.js';
import { listCaptures } from '../src/control/server.js';
import { memoryLogger, tempDir, waitFor } from './helpers.js';

const ROOMY_DISK = async () => ({ bavail: 1e9, bsize: 4096 });
const VICTIM_TEXT = 'root-only secret\n';

/** A root-owned 0600 file outside the dump directory: what the attacker wants overwritten. */
function victim(): string {
  const file = path.join(tempDir('sysprobe-victim-'), 'shadow');
  fs.writeFileSync(file, VICTIM_TEXT, { mode: 0o600 });
  return file;
}

/** A dump directory every user may write into, like /tmp (sticky, 1777). */
function sharedDir(): string {
  const dir = tempDir('sysprobe-shared-');
  fs.chmodSync(dir, 0o1777);
  return dir;
}

/** Plants links named like the sidecars the sink could pick in the next `ms`, for `kind`/`extension`. */
function plantLinks(dir: string, target: string, kind: string, extension: string, ms: number): number {
  let planted = 0;
  const from = Date.now();
  for (let t = from; t < from + ms; t++) {
    const base = `${kind}-${new Date(t).toISOString().replace(/:/g, '')}-${process.pid}`;
    for (const seq of ['', '-1']) {
      for (const suffix of ['.json.partial']) {
        fs.symlinkSync(target, path.join(dir, `${base}${seq}${extension}${suffix}`));
        planted += 1;
      }
    }
  }
  return planted;
}

function modeOf(file: string): number {
  return fs.lstatSync(file).mode & 0o777;
}

/** Every file and directory under `dir`, with its mode. */
function walk(dir: string): Array<{ file: string; dir: boolean; mode: number }> {
  const out: Array<{ file: string; dir: boolean; mode: number }> = [];
  for (const name of fs.readdirSync(dir)) {
    const file = path.join(dir, name);
    const stat = fs.lstatSync(file);
    out.push({ file, dir: stat.isDirectory(), mode: stat.mode & 0o777 });
    if (stat.isDirectory()) out.push(...walk(file));
  }
  return out;
}

describe('security: the dump directory against other local users', () => {
  let umask: number;
  before(() => {
    umask = process.umask(0o022);
  });
  after(() => {
    process.umask(umask);
  });

  it('writes no capture through links planted under the next names in a world-writable dumpDir; the victim is untouched', async () => {
    const dir = sharedDir();
    const target = victim();
    const planted = plantLinks(dir, target, 'cpu-profile', '.cpuprofile', 3000);
    const sink = new FileSink({ dir, reserveBytes: 0, statfs: ROOMY_DISK });
    const written = [];
    for (let i = 0; i < 3; i++) {
      written.push(
        await sink.write({
          kind: 'cpu-profile',
          extension: '.cpuprofile',
          sidecar: { i },
          body: `{"nodes":[],"i":${i}}`,
        }),
      );
    }
    assert.equal(fs.readFileSync(target, 'utf8'), VICTIM_TEXT, 'the victim file is untouched');
    assert.equal(modeOf(target), 0o600);
    for (const capture of written) {
      for (const file of [capture.file, capture.sidecarFile]) {
        const stat = fs.lstatSync(file);
        assert.ok(stat.isFile(), `${path.basename(file)} is a regular file, not a link`);
        assert.equal(stat.mode & 0o777, 0o600, `${path.basename(file)} is 0600`);
      }
    }
    assert.ok(planted > 1000);
  });

  it('a heap snapshot (the producer path) is not written through a link planted as soon as its partial appears', async () => {
    const dir = sharedDir();
    const target = victim();
    const sink = new FileSink({ dir, reserveBytes: 0, statfs: ROOMY_DISK });
    const written = await sink.write({
      kind: 'heap-snapshot',
      extension: '.heapsnapshot',
      sidecar: {},
      body: {
        writeTo: (partial) => {
          // An attacker watching the directory plants the sidecar's names the moment the data's partial shows.
          const final = partial.slice(0, -'.partial'.length);
          for (const name of [`${final}.json.partial`, `${final}.json`]) {
            try {
              fs.symlinkSync(target, name);
            } catch {
              /* the name is already taken by the sink */
            }
          }
          v8.writeHeapSnapshot(partial);
        },
      },
    });
    assert.equal(fs.readFileSync(target, 'utf8'), VICTIM_TEXT, 'the victim file is untouched');
    assert.ok(fs.lstatSync(written.sidecarFile).isFile(), 'the sidecar is a regular file, not the planted link');
    assert.equal(modeOf(written.file), 0o600, 'the heap snapshot is 0600 under umask 022');
    assert.equal(modeOf(written.sidecarFile), 0o600);
  });

  it("refuses a dumpDir that is a link, another user's, or writable by others without the sticky bit, at start()", async () => {
    const base = tempDir('sysprobe-dumpdirs-');
    const real = path.join(base, 'real');
    fs.mkdirSync(real, { mode: 0o700 });
    const link = path.join(base, 'link');
    fs.symlinkSync(real, link);
    const foreign = path.join(base, 'foreign');
    fs.mkdirSync(foreign, { mode: 0o700 });
    fs.chownSync(foreign, 65534, 65534);
    const open = path.join(base, 'open');
    fs.mkdirSync(open);
    fs.chmodSync(open, 0o777);
    for (const [dumpDir, why] of [
      [link, /symbolic link/],
      [foreign, /another user/],
      [open, /writable by other users/],
    ] as const) {
      await assert.rejects(
        start({ logger: memoryLogger().logger, dumpDir }),
        (err: Error & { code?: string }) => {
          assert.equal(err.code, 'SYSPROBE_ERR_INVALID_OPTION');
          assert.match(err.message, why);
          return true;
        },
        dumpDir,
      );
    }
    // A shared sticky directory (like /tmp) is accepted: others cannot remove or rename our files there.
    const probe = await start({ logger: memoryLogger().logger, dumpDir: sharedDir() });
    await probe.stop();
  });

  it('a dumpDir swapped for a link after start is refused at the next write (CAPTURE_FAILED), nothing written through it', async () => {
    const base = tempDir('sysprobe-swapped-');
    const dir = path.join(base, 'dump');
    const elsewhere = path.join(base, 'elsewhere');
    fs.mkdirSync(elsewhere);
    const sink = new FileSink({ dir, reserveBytes: 0, statfs: ROOMY_DISK });
    await sink.write({ kind: 'cpu-profile', extension: '.cpuprofile', sidecar: {}, body: '{}' });
    fs.rmSync(dir, { recursive: true });
    fs.symlinkSync(elsewhere, dir);
    await assert.rejects(sink.write({ kind: 'cpu-profile', extension: '.cpuprofile', sidecar: {}, body: '{}' }), {
      code: 'SYSPROBE_ERR_CAPTURE_FAILED',
      message: /symbolic link/,
    });
    assert.deepEqual(fs.readdirSync(elsewhere), []);
  });

  it("under umask 022, a real probe's dumpDir, incident folders and every capture are 0700 / 0600", async function () {
    this.timeout(30_000);
    const dumpDir = path.join(tempDir('sysprobe-modes-'), 'diagnostics');
    const probe = await start({
      logger: memoryLogger().logger,
      dumpDir,
      sampleIntervalMs: 100,
      stallThresholdMs: 150,
      defaultRules: false,
      incidents: { quietMs: 500 },
    });
    try {
      let opened = false;
      probe.on('incident', () => {
        opened = true;
      });
      const until = Date.now() + 400;
      while (Date.now() < until); // a stall: opens an incident
      await waitFor('the incident to open', () => opened, 10_000);
      await probe.captureHeapSnapshot();
      await probe.captureCpuProfile({ durationMs: 100 });
      await waitFor('the incident folder', () => fs.existsSync(path.join(dumpDir, 'incidents')) || undefined, 10_000);
    } finally {
      await probe.stop();
    }
    assert.equal(modeOf(dumpDir), 0o700, 'the dump directory is 0700');
    const entries = walk(dumpDir);
    assert.ok(
      entries.some((e) => e.file.endsWith('.heapsnapshot')),
      'a heap snapshot was written',
    );
    assert.ok(
      entries.some((e) => e.file.endsWith('manifest.json')),
      'an incident was written',
    );
    for (const entry of entries) {
      assert.equal(
        entry.mode,
        entry.dir ? 0o700 : 0o600,
        `${path.relative(dumpDir, entry.file)} is ${entry.mode.toString(8)}`,
      );
    }
  });

  it('GET /captures never lists a .partial left by a process killed mid-write; a new sink removes a partial of a dead pid untouched for a minute', async function () {
    this.timeout(30_000);
    const dir = tempDir('sysprobe-killed-');
    const sinkModule = path.resolve(__dirname, '..', 'src', 'sink', 'file-sink.js');
    // A child that starts a big capture through the sink and never finishes it; then SIGKILL.
    const child = spawn(
      process.execPath,
      [
        '-e',
        `
      const { FileSink } = require(${JSON.stringify(sinkModule)});
      const sink = new FileSink({ dir: ${JSON.stringify(dir)}, reserveBytes: 0 });
      sink.write({ kind: 'heap-snapshot', extension: '.heapsnapshot', sidecar: {}, body: (async function* () {
        yield Buffer.alloc(1 << 20, 120); process.stdout.write('writing\\n'); await new Promise(() => setInterval(() => {}, 1000));
      })() });
    `,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    await new Promise<void>((resolve) => child.stdout.once('data', () => resolve()));
    child.kill('SIGKILL');
    await new Promise((resolve) => child.once('exit', resolve));
    const partials = fs.readdirSync(dir).filter((n) => n.endsWith('.partial'));
    assert.ok(partials.length >= 1, 'the killed write left a partial');
    assert.deepEqual(await listCaptures(dir), [], 'no .partial is listed');
    // A new sink: the partial of a dead pid is removed once it has not changed for a minute.
    const old = (Date.now() - 61_000) / 1000;
    for (const name of partials) fs.utimesSync(path.join(dir, name), old, old);
    const removed = await new FileSink({ dir, reserveBytes: 0 }).ready;
    assert.deepEqual(removed.map((f) => path.basename(f)).sort(), partials.sort());
  });
});
