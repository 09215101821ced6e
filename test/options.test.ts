import assert from 'node:assert/strict';
import * as path from 'node:path';
import { ErrorCode, start, SysprobeError, type ProbeOptions } from '../src/index.js';
import { resolveOptions } from '../src/probe/options.js';
import { memoryLogger } from './helpers.js';

/** Asserts that `options` are refused at start() with the invalid-option code and a message matching `mentions`. */
async function assertRefused(options: unknown, mentions: RegExp): Promise<void> {
  await assert.rejects(start(options as ProbeOptions), (err: unknown) => {
    assert.ok(err instanceof SysprobeError, 'a SysprobeError');
    assert.equal(err.code, ErrorCode.INVALID_OPTION);
    assert.match(err.code, /^SYSPROBE_/);
    assert.match(err.message, mentions);
    return true;
  });
}

describe('options', () => {
  it('fills documented defaults and freezes the result', () => {
    const resolved = resolveOptions({ serviceName: 'api' });
    assert.equal(resolved.sampleIntervalMs, 1000);
    assert.equal(resolved.stallThresholdMs, 200);
    assert.equal(resolved.loopWatch, 'auto');
    assert.equal(resolved.recorderWindowMs, 15 * 60_000);
    assert.equal(resolved.dumpDir, path.resolve('./sysprobe-dumps'));
    assert.deepEqual(
      { ...resolved.samplers },
      { eventLoop: true, cpu: true, threads: true, memory: true, gc: true, handles: true, requests: true },
    );
    assert.ok(Object.isFrozen(resolved) && Object.isFrozen(resolved.samplers));
  });

  it('keeps 0-like and explicit values instead of treating them as unset', () => {
    const resolved = resolveOptions({
      sampleIntervalMs: 100,
      stallThresholdMs: 50,
      loopWatch: 'heartbeat',
      samplers: { gc: false },
    });
    assert.equal(resolved.stallThresholdMs, 50);
    assert.equal(resolved.loopWatch, 'heartbeat');
    assert.equal(resolved.samplers.gc, false);
    assert.equal(resolved.samplers.cpu, true);
  });

  it('refuses an unknown option and lists the known ones', async () => {
    await assertRefused(
      { sampleInterval: 1000 },
      /Unknown option sampleInterval; the known ones are: serviceName, sampleIntervalMs/,
    );
    await assertRefused({ samplers: { disk: true } }, /Unknown option samplers\.disk/);
  });

  it('refuses wrong types, naming the option and what is allowed', async () => {
    await assertRefused(
      { sampleIntervalMs: '1000' },
      /sampleIntervalMs must be an integer from 100 to 60000; got the string "1000"/,
    );
    await assertRefused({ serviceName: '' }, /serviceName must be a non-empty string/);
    await assertRefused({ serviceName: 42 }, /serviceName must be a non-empty string.*got 42/);
    await assertRefused({ meterProvider: {} }, /meterProvider must be an OpenTelemetry MeterProvider/);
    await assertRefused({ logger: console }, /logger must be a pino logger/);
    await assertRefused({ dumpDir: 7 }, /dumpDir must be a non-empty path string/);
    await assertRefused({ samplers: { cpu: 'no' } }, /samplers\.cpu must be true or false/);
    await assertRefused(
      { loopWatch: 'fast' },
      /loopWatch must be one of auto, native, heartbeat; got the string "fast"/,
    );
    await assertRefused({ samplers: [] }, /samplers must be an object; got an array/);
    await assertRefused('fast', /options argument\) must be an object/);
  });

  it('refuses out-of-range values and contradictions', async () => {
    await assertRefused({ sampleIntervalMs: 99 }, /sampleIntervalMs must be an integer from 100 to 60000; got 99/);
    await assertRefused({ sampleIntervalMs: 1000.5 }, /sampleIntervalMs must be an integer/);
    await assertRefused({ stallThresholdMs: 0 }, /stallThresholdMs must be an integer from 20/);
    await assertRefused(
      { sampleIntervalMs: 5000, recorderWindowMs: 2000 },
      /recorderWindowMs \(2000\) must be at least sampleIntervalMs \(5000\)/,
    );
  });

  it('runs one probe per process: a second start() is refused until the first stops', async () => {
    const { logger } = memoryLogger();
    const first = await start({ serviceName: 'once', logger });
    try {
      await assert.rejects(start({ serviceName: 'twice', logger }), { code: ErrorCode.ALREADY_STARTED });
    } finally {
      await first.stop();
    }
    // Concurrent starts: exactly one wins.
    const results = await Promise.allSettled([start({ logger }), start({ logger })]);
    const won = results.filter((r) => r.status === 'fulfilled');
    const lost = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    assert.equal(won.length, 1);
    assert.equal((lost[0]?.reason as SysprobeError).code, ErrorCode.ALREADY_STARTED);
    await (won[0] as PromiseFulfilledResult<Awaited<ReturnType<typeof start>>>).value.stop();
    // And after stop() a new start() works.
    const again = await start({ logger });
    await again.stop();
  });

  it('refuses calls on a stopped probe with a coded error', async () => {
    const { logger } = memoryLogger();
    const probe = await start({ logger });
    await probe.stop();
    await probe.stop(); // stopping twice is harmless
    await assert.rejects(probe.recent(), { code: ErrorCode.STOPPED });
  });
});
