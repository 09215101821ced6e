import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Sample } from '../src/samples/sample.js';
import { FlightRecorder } from '../src/samples/recorder.js';
import { writeIncidentSamples } from '../src/incidents/samples.js';
import { tempDir } from './helpers.js';

const tmp = tempDir('sysprobe-incident-samples-');

function sample(time: number): Sample {
  return { time, intervalMs: 1000, mainStale: false };
}

function read(file: string): number[] {
  return (JSON.parse(fs.readFileSync(file, 'utf8')) as Sample[]).map((s) => s.time);
}

describe('incident samples.json, written by the worker', () => {
  it("at the open: the recorder's samples since the window's start", async () => {
    const recorder = new FlightRecorder<Sample>(10);
    for (let t = 1; t <= 8; t++) recorder.push(sample(t * 1000));
    const file = path.join(tmp, 'open.json');
    const written = await writeIncidentSamples(recorder, file, 3000, 100);
    assert.deepEqual(read(file), [3000, 4000, 5000, 6000, 7000, 8000]);
    assert.deepEqual(written, { count: 6, from: 3000, to: 8000 });
    assert.ok(!fs.existsSync(`${file}.partial`), 'no partial file is left');
  });

  it('at the close: what the file holds (though the recorder let it go), then the newer samples, once each', async () => {
    const recorder = new FlightRecorder<Sample>(4);
    const file = path.join(tmp, 'close.json');
    for (let t = 1; t <= 4; t++) recorder.push(sample(t * 1000));
    await writeIncidentSamples(recorder, file, 0, 100);
    for (let t = 5; t <= 9; t++) recorder.push(sample(t * 1000)); // the ring now holds 6000…9000 only
    const written = await writeIncidentSamples(recorder, file, 0, 100);
    assert.deepEqual(
      read(file),
      [1000, 2000, 3000, 4000, 6000, 7000, 8000, 9000],
      'the ring lost 5000 between the calls: a gap, no duplicate',
    );
    assert.equal(written.count, 8);
  });

  it('keeps the newest `max`', async () => {
    const recorder = new FlightRecorder<Sample>(50);
    for (let t = 1; t <= 30; t++) recorder.push(sample(t));
    const file = path.join(tmp, 'max.json');
    const written = await writeIncidentSamples(recorder, file, 0, 10);
    assert.deepEqual(read(file), [21, 22, 23, 24, 25, 26, 27, 28, 29, 30]);
    assert.deepEqual(written, { count: 10, from: 21, to: 30 });
  });

  it('starts over from a file that is not an array of samples, and fails with the error of an unwritable folder', async () => {
    const recorder = new FlightRecorder<Sample>(5);
    recorder.push(sample(42));
    for (const [name, text] of [
      ['garbage.json', 'not json'],
      ['object.json', '{"time":1}'],
      ['strings.json', '["a"]'],
    ]) {
      const file = path.join(tmp, name!);
      fs.writeFileSync(file, text!);
      assert.equal((await writeIncidentSamples(recorder, file, 0, 10)).count, 1, name);
      assert.deepEqual(read(file), [42]);
    }
    await assert.rejects(writeIncidentSamples(recorder, path.join(tmp, 'no-such-dir', 'samples.json'), 0, 10), {
      code: 'ENOENT',
    });
  });
});
