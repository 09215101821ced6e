import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import { SharedJsonSlot } from '../src/shared-slot.js';

describe('shared JSON slot', () => {
  it('hands the latest value to a reader over the same memory, with a version', () => {
    const writer = new SharedJsonSlot(1024);
    const reader = new SharedJsonSlot(writer.buffer);
    assert.equal(reader.read(), undefined, 'nothing written yet');
    assert.equal(writer.write({ a: 1 }), true);
    assert.equal(writer.write({ a: 2, s: 'é' }), true);
    assert.deepEqual(reader.read(), { version: 2, value: { a: 2, s: 'é' } });
    assert.equal(reader.version, 2);
  });

  it('refuses a value larger than its capacity and keeps the previous one', () => {
    const slot = new SharedJsonSlot(16);
    assert.equal(slot.write({ ok: true }), true);
    assert.equal(slot.write({ tooLong: 'x'.repeat(32) }), false);
    assert.deepEqual(slot.read()?.value, { ok: true });
  });

  it('never returns a torn value while another thread writes as fast as it can', async () => {
    const slot = new SharedJsonSlot(64 * 1024);
    // The writer alternates between a short and a long value; a torn read would be invalid JSON or a mix.
    const worker = new Worker(`
      const { workerData } = require('node:worker_threads');
      const { SharedJsonSlot } = require(${JSON.stringify(require.resolve('../src/shared-slot.js'))});
      const slot = new SharedJsonSlot(workerData);
      const values = [{ k: 'short' }, { k: 'long', pad: 'y'.repeat(20000) }];
      const end = Date.now() + 400;
      for (let i = 0; Date.now() < end; i++) slot.write(values[i % 2]);`, { eval: true, workerData: slot.buffer });
    let reads = 0;
    const end = Date.now() + 300;
    while (Date.now() < end) {
      const got = slot.read<{ k: string; pad?: string }>();
      if (!got) continue;
      reads += 1;
      assert.ok(got.value.k === 'short' ? got.value.pad === undefined : got.value.pad?.length === 20000, 'a whole value');
    }
    await new Promise((resolve) => worker.once('exit', resolve));
    assert.ok(reads > 100, `${reads} reads`);
  });
});
