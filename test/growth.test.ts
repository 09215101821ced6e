import assert from 'node:assert/strict';
import { GrowthTracker } from '../src/memory/growth.js';
import { RULE_VALUES } from '../src/rules/engine.js';
import type { Sample } from '../src/samples/sample.js';

const MB = 1024 * 1024;
const MINUTE = 60_000;

/** A heap that saws between its floor and floor + 40 MB every 7 s, one reading a second. */
function sawtooth(tracker: GrowthTracker, minutes: number, floorAt: (t: number) => number): void {
  for (let t = 0; t <= minutes * MINUTE; t += 1000) tracker.add(t, floorAt(t) + ((t / 1000) % 7) * ((40 * MB) / 7));
}

describe('heap growth: a regression over the floors the GCs leave', () => {
  it('finds a leak of 5 MB/min under a 40 MB sawtooth, with a good fit', () => {
    const tracker = new GrowthTracker(10 * MINUTE, 30_000);
    sawtooth(tracker, 12, (t) => 100 * MB + 5 * MB * (t / MINUTE));
    const growth = tracker.growth();
    assert.ok(growth, 'an estimate');
    assert.ok(Math.abs(growth.perMinute - 5 * MB) < 0.2 * MB, `${(growth.perMinute / MB).toFixed(2)} MB/min`);
    assert.ok(growth.r2 > 0.95, `r2 ${growth.r2}`);
    assert.ok(growth.spanMs <= 10 * MINUTE && growth.points >= 15, JSON.stringify(growth));
  });

  it('sees no growth in a busy heap whose teeth are tall but whose floor stays put', () => {
    const tracker = new GrowthTracker(10 * MINUTE, 30_000);
    sawtooth(tracker, 12, () => 100 * MB);
    const growth = tracker.growth();
    assert.ok(growth && Math.abs(growth.perMinute) < 0.1 * MB, `${(growth?.perMinute ?? NaN) / MB} MB/min`);
  });

  it('forgets what left the window: growth that stopped 10 minutes ago no longer counts', () => {
    const tracker = new GrowthTracker(10 * MINUTE, 30_000);
    sawtooth(tracker, 25, (t) => 100 * MB + (5 * MB * Math.min(t, 10 * MINUTE)) / MINUTE);
    assert.ok(Math.abs(tracker.growth()?.perMinute ?? NaN) < 0.1 * MB);
  });

  it('gives no estimate with fewer than three complete floors, and refuses a bad window', () => {
    const tracker = new GrowthTracker(10 * MINUTE, 30_000);
    for (let t = 0; t < 80_000; t += 1000) tracker.add(t, t);
    assert.equal(tracker.growth(), undefined, 'two complete buckets and one filling');
    assert.throws(() => new GrowthTracker(1000, 2000), RangeError);
  });

  it('feeds rules only when a line explains the floors', () => {
    const value = RULE_VALUES['memory.heapGrowthPerMin'];
    const sample = (rate: number, r2: number): Sample => ({
      time: 0,
      intervalMs: 1000,
      mainStale: false,
      memory: { heapUsed: 1, heapTotal: 1, heapLimit: 1, external: 0, heapGrowthPerMin: rate, heapGrowthR2: r2 },
    });
    assert.equal(value(sample(5 * MB, 0.9)), 5 * MB);
    assert.equal(value(sample(5 * MB, 0.2)), 0, 'noise does not fire');
    assert.equal(value({ time: 0, intervalMs: 1000, mainStale: false }), undefined, 'no memory sampler: no value');
  });
});
