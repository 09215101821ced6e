import type { Sample } from '../samples/sample.js';

/** The GC picture over one interval, from two cumulative readings. */
export function gcRates(
  before: NonNullable<Sample['gc']>,
  after: NonNullable<Sample['gc']>,
  intervalMs: number,
): NonNullable<Sample['gcRates']> {
  let count = 0,
    pauseMs = 0,
    collections = 0,
    reclaimed = 0,
    measured = false;
  for (const [kind, total] of Object.entries(after)) {
    const was = before[kind];
    count += total.count - (was?.count ?? 0);
    pauseMs += total.durationMs - (was?.durationMs ?? 0);
    if ((kind === 'minor' || kind === 'major') && total.reclaimedBytes !== undefined) {
      measured = true;
      collections += total.count - (was?.count ?? 0);
      reclaimed += total.reclaimedBytes - (was?.reclaimedBytes ?? 0);
    }
  }
  const rates: NonNullable<Sample['gcRates']> = {
    perMin: (count * 60_000) / intervalMs,
    pauseShare: Math.min(1, pauseMs / intervalMs),
  };
  if (measured && collections > 0) rates.reclaimedPerGc = reclaimed / collections;
  return rates;
}
