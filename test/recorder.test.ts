import assert from 'node:assert/strict';
import { FlightRecorder } from '../src/samples/recorder.js';

describe('flight recorder', () => {
  it('keeps the newest items up to its capacity, oldest first', () => {
    const recorder = new FlightRecorder<{ time: number }>(3);
    assert.deepEqual(recorder.since(undefined), []);
    assert.equal(recorder.latest(), undefined);
    for (let time = 1; time <= 5; time++) recorder.push({ time });
    assert.equal(recorder.size, 3);
    assert.deepEqual(
      recorder.since(undefined).map((s) => s.time),
      [3, 4, 5],
    );
    assert.deepEqual(
      recorder.since(4).map((s) => s.time),
      [4, 5],
    );
    assert.equal(recorder.latest()?.time, 5);
  });

  it('refuses a capacity that is not a positive integer', () => {
    assert.throws(() => new FlightRecorder(0), RangeError);
    assert.throws(() => new FlightRecorder(1.5), RangeError);
  });
});
