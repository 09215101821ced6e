import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ThreadCpuSampler } from '../src/samples/cpu.js';
import { parseTaskStat, threadRole } from '../src/samples/proc.js';
import { Worker } from 'node:worker_threads';
import { tempDir } from './helpers.js';

// Recorded from /proc/self/task/*/stat on Linux 6.x (fields after stime trimmed in some lines).
const MAIN =
  '2944 (node) S 2931 2944 2931 34816 2944 4194304 9386 0 0 0 71 3 0 0 20 0 12 0 10086 1189969920 13606 18446744073709551615 1 1 0 0 0 0 0 16781312 134234626 0 0 0 17 1 0 0 0 0 0';
const TRICKY = '51 (a) b (c) R 1 1 1 0 -1 4194560 0 0 0 0 250 125 0 0';

describe('/proc parsers', () => {
  it('reads tid, comm, state and CPU time in ms (USER_HZ 100)', () => {
    assert.deepEqual(parseTaskStat(MAIN), { tid: 2944, comm: 'node', state: 'S', userMs: 710, systemMs: 30 });
  });

  it('counts fields from the last parenthesis, so a comm with spaces and parentheses parses', () => {
    assert.deepEqual(parseTaskStat(TRICKY), { tid: 51, comm: 'a) b (c', state: 'R', userMs: 2500, systemMs: 1250 });
  });

  it('returns undefined for malformed lines instead of throwing', () => {
    for (const bad of [
      '',
      'garbage',
      '12 node S 1 2 3',
      '12 (node) S 1 1',
      'x (node) S 1 1 1 0 -1 0 0 0 0 0 5 5',
      '12 (node) S 1 1 1 0 -1 0 0 0 0 0 five 5',
      '-3 (n) S 1 1 1 0 -1 0 0 0 0 0 1 1',
    ]) {
      assert.equal(parseTaskStat(bad), undefined, JSON.stringify(bad));
    }
  });

  it('names thread roles', () => {
    assert.equal(threadRole(10, 'node', 10, 11), 'main');
    assert.equal(threadRole(11, 'node', 10, 11), 'sysprobe-worker');
    assert.equal(threadRole(12, 'libuv-worker', 10, 11), 'libuv');
    assert.equal(threadRole(13, 'V8 DefaultWorke', 10, 11), 'v8');
    assert.equal(threadRole(15, 'sysprobe-watch', 10, 11), 'sysprobe-watchdog');
    assert.equal(threadRole(14, 'node', 10, undefined), 'other');
  });
});

describe('per-thread CPU sampler on a recorded /proc tree', () => {
  // A copy of /proc/self/task laid out in a temp dir, with one thread that exits mid-read and one malformed file.
  let dir: string;
  before(() => {
    dir = tempDir('sysprobe-proc-');
    const write = (tid: string, stat: string | undefined): void => {
      fs.mkdirSync(path.join(dir, tid));
      if (stat !== undefined) fs.writeFileSync(path.join(dir, tid, 'stat'), stat);
    };
    write('100', '100 (node) S 1 100 1 0 -1 0 0 0 0 0 150 50 0 0');
    write('101', '101 (libuv-worker) S 1 100 1 0 -1 0 0 0 0 0 20 10 0 0');
    write('102', 'this is not a stat line');
    write('103', undefined); // exited between readdir and read
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('reads every parsable thread, skips the rest, and names roles', function () {
    if (process.platform !== 'linux') this.skip();
    const sampler = new ThreadCpuSampler(100, undefined, dir);
    assert.equal(sampler.supported, true);
    const threads = sampler.sample();
    assert.deepEqual(
      threads.map((t) => [t.tid, t.name, t.role, t.userMs, t.systemMs]),
      [
        [100, 'node', 'main', 1500, 500],
        [101, 'libuv-worker', 'libuv', 200, 100],
      ],
    );
    // Utilization comes from the change between two samples.
    fs.writeFileSync(path.join(dir, '100', 'stat'), '100 (node) S 1 100 1 0 -1 0 0 0 0 0 160 50 0 0');
    const again = sampler.sample();
    assert.ok((again[0]?.utilization ?? 0) > 0, 'the main thread used CPU between samples');
    assert.equal(again[1]?.utilization, 0);
  });

  it('says unsupported where there is no /proc task directory', () => {
    const sampler = new ThreadCpuSampler(1, undefined, path.join(dir, 'missing'));
    assert.equal(sampler.supported, false);
    assert.deepEqual(sampler.sample(), []);
  });
});

describe('per-thread CPU sampler on this process', () => {
  /** This process's descriptors open on a stat file of one of its threads. */
  const statFilesOpen = (tid: number): number =>
    fs.readdirSync('/proc/self/fd').filter((fd) => {
      try {
        return fs.readlinkSync(`/proc/self/fd/${fd}`).endsWith(`/task/${tid}/stat`);
      } catch {
        return false; // closed since the listing
      }
    }).length;

  it('keeps one stat file open per live thread, sees a new thread, and closes the file of one that ended', async function () {
    if (process.platform !== 'linux') this.skip();
    const sampler = new ThreadCpuSampler(process.pid, undefined);
    const worker = new Worker(
      "const { parentPort } = require('node:worker_threads'); const fs = require('node:fs');" +
        "parentPort.postMessage(Number(fs.readlinkSync('/proc/thread-self').split('/').pop()));" +
        'setInterval(() => {}, 1000);',
      { eval: true },
    );
    const tid = await new Promise<number>((resolve) => worker.once('message', resolve));
    try {
      const first = sampler.sample();
      assert.ok(
        first.some((t) => t.tid === tid),
        `the worker thread ${tid} is sampled`,
      );
      assert.ok(first.some((t) => t.tid === process.pid && t.role === 'main'));
      assert.equal(statFilesOpen(tid), 1);
      const second = sampler.sample();
      assert.equal(statFilesOpen(tid), 1, 'read again from the same file');
      assert.equal(statFilesOpen(process.pid), 1);
      assert.ok(second.find((t) => t.tid === process.pid)!.userMs >= first.find((t) => t.tid === process.pid)!.userMs);
    } finally {
      await worker.terminate();
    }
    await new Promise((r) => setTimeout(r, 50)); // the thread is gone from /proc once joined
    const after = sampler.sample();
    assert.ok(!after.some((t) => t.tid === tid), 'the ended thread is no longer sampled');
    assert.equal(statFilesOpen(tid), 0, "the ended thread's stat file is closed");
  });
});
