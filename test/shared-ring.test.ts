import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import { SharedJsonRing } from '../src/internal/shared-ring.js';

describe('shared JSON ring', () => {
  it('hands values to a reader over the same memory, oldest first, each once', () => {
    const writer = new SharedJsonRing({ slots: 4, capacity: 256 });
    const reader = new SharedJsonRing(writer.buffer);
    assert.deepEqual(reader.readSince(0), { values: [], next: 0, lost: 0 });
    assert.equal(writer.write({ a: 1 }), true);
    assert.equal(writer.write({ a: 2, s: 'é' }), true);
    const first = reader.readSince(0);
    assert.deepEqual(first, { values: [{ a: 1 }, { a: 2, s: 'é' }], next: 2, lost: 0 });
    writer.write({ a: 3 });
    assert.deepEqual(reader.readSince(first.next), { values: [{ a: 3 }], next: 3, lost: 0 });
  });

  it('counts values overwritten before they were read, and returns the rest', () => {
    const ring = new SharedJsonRing({ slots: 3, capacity: 64 });
    for (let i = 1; i <= 5; i++) ring.write(i);
    assert.deepEqual(ring.readSince(0), { values: [3, 4, 5], next: 5, lost: 2 });
  });

  it('refuses a value larger than its capacity and writes nothing', () => {
    const ring = new SharedJsonRing({ slots: 2, capacity: 16 });
    assert.equal(ring.write({ ok: true }), true);
    assert.equal(ring.write({ tooLong: 'x'.repeat(32) }), false);
    assert.deepEqual(ring.readSince(0).values, [{ ok: true }]);
    assert.throws(() => new SharedJsonRing({ slots: 0, capacity: 16 }), RangeError);
  });

  it('never returns a torn or misplaced value while another thread writes as fast as it can', async () => {
    const ring = new SharedJsonRing({ slots: 8, capacity: 64 * 1024 });
    // The test owns its clock: the writer writes until the reader has read enough (or 20 s pass), so a
    // slow worker start or a loaded machine only makes the test longer, never a false failure.
    const stop = new Int32Array(new SharedArrayBuffer(4));
    // The writer numbers its values and alternates short and long ones; a torn read would be invalid JSON or a mix.
    const worker = new Worker(
      `
      const { workerData } = require('node:worker_threads');
      const { SharedJsonRing } = require(${JSON.stringify(require.resolve('../src/internal/shared-ring.js'))});
      const ring = new SharedJsonRing(workerData.ring);
      const stop = new Int32Array(workerData.stop);
      const pad = 'y'.repeat(20000);
      const end = Date.now() + 20000;
      for (let i = 0; Atomics.load(stop, 0) === 0 && Date.now() < end; i++) ring.write(i % 2 ? { i, pad } : { i });`,
      { eval: true, workerData: { ring: ring.buffer, stop: stop.buffer } },
    );
    const exited = new Promise((resolve) => worker.once('exit', resolve));
    const WANTED = 2000;
    let reads = 0;
    let cursor = 0;
    let last = -1;
    const deadline = Date.now() + 20_000;
    try {
      while (reads < WANTED && Date.now() < deadline) {
        const batch = ring.readSince<{ i: number; pad?: string }>(cursor);
        cursor = batch.next;
        for (const value of batch.values) {
          reads += 1;
          assert.ok(value.i > last, 'in order, each once');
          assert.equal(value.pad?.length ?? 0, value.i % 2 ? 20000 : 0, 'a whole value');
          last = value.i;
        }
      }
    } finally {
      Atomics.store(stop, 0, 1);
      await exited;
    }
    assert.ok(reads >= WANTED, `${reads} reads while the writer wrote`);
  });
});
