import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { RuleEngine } from '../src/rules/engine.js';
import type { RuleCondition, RuleFiring } from '../src/rules/firing.js';
import type { Sample } from '../src/samples/sample.js';
import { start, type RuleEvent } from '../src/index.js';
import { findMetric, memoryLogger, memoryMetrics, pointValue, waitFor, tempDir } from './helpers.js';

/** A sample at `time` (ms) covering the 1 s before it, with the given event-loop utilization. */
function sample(time: number, utilization: number | undefined): Sample {
  return {
    time,
    intervalMs: 1000,
    mainStale: false,
    ...(utilization === undefined ? {} : { eventLoop: { utilization, delayMaxMs: 0, lagMs: 0, lagMaxMs: 0 } }),
  };
}

const busy: RuleCondition = {
  name: 'busy',
  value: 'eventLoop.utilization',
  above: 0.9,
  forMs: 3000,
  cooldownMs: 10_000,
};

function feed(engine: RuleEngine, values: Array<number | undefined>, from = 1000): RuleFiring[] {
  return values.flatMap((u, i) => engine.observe(sample(from + i * 1000, u)));
}

describe('rules engine', () => {
  it('fires once the value has stayed above the threshold for forMs, with the values that fired it', () => {
    const engine = new RuleEngine([busy]);
    // Above from t=0 (the start of the first interval above); 3 s later is t=3000, the third sample.
    const firings = feed(engine, [0.95, 0.97, 0.99, 0.99]);
    assert.equal(firings.length, 1);
    assert.deepEqual(firings[0], {
      rule: 'busy',
      value: 'eventLoop.utilization',
      threshold: 0.9,
      observed: 0.99,
      aboveForMs: 3000,
      firedAt: 3000,
    });
  });

  it("does not judge process CPU in sysprobe's own first second (its start-up), and judges it after", () => {
    const cpuSpike: RuleCondition = { name: 'cpu', value: 'cpu.utilization', above: 0.3, forMs: 300, cooldownMs: 0 };
    const at = (time: number, intervalMs: number, utilization: number): Sample => ({
      time,
      intervalMs,
      mainStale: false,
      cpu: { userMs: 0, systemMs: 0, utilization },
    });
    const engine = new RuleEngine([cpuSpike]);
    // As measured at start: a first reading, then one 301 ms interval at 0.56 CPU (the worker booting).
    assert.deepEqual(engine.observe(at(5000, 0, 0)), []);
    assert.deepEqual(engine.observe(at(5301, 301, 0.56)), [], 'start-up CPU is not a spike');
    assert.deepEqual(engine.observe(at(5700, 399, 0.9)), [], 'still within the first second');
    // After it: a real 400 ms spike fires.
    assert.deepEqual(engine.observe(at(6200, 200, 0.9)), []);
    const fired = engine.observe(at(6400, 200, 0.9));
    assert.deepEqual([fired[0]?.rule, fired[0]?.aboveForMs], ['cpu', 400]);
  });

  it('starts over when the value drops, and ignores samples without the value', () => {
    const engine = new RuleEngine([busy]);
    assert.deepEqual(feed(engine, [0.95, 0.95, 0.5, 0.95, 0.95]), [], 'the drop broke the window');
    // A missing value (sampler off) does not break the window: 0.95, gap, 0.95 still fires at 3 s.
    const firings = feed(new RuleEngine([busy]), [0.95, undefined, 0.95, 0.95]);
    assert.equal(firings.length, 1);
    assert.deepEqual([firings[0]?.firedAt, firings[0]?.aboveForMs], [3000, 3000]);
  });

  it('rests for cooldownMs after firing, then needs a whole new window', () => {
    const engine = new RuleEngine([busy]);
    const values = Array.from({ length: 20 }, () => 0.99);
    const firings = feed(engine, values);
    // Fires at 3000, rests until 13000; the new window started at 3000 (the next sample's interval) so fires at 13000.
    assert.deepEqual(
      firings.map((f) => f.firedAt),
      [3000, 13000],
    );
  });

  it('keeps rules apart, and fires at once with forMs 0', () => {
    const engine = new RuleEngine([
      busy,
      { name: 'any', value: 'eventLoop.utilization', above: 0.5, forMs: 0, cooldownMs: 0 },
    ]);
    const firings = feed(engine, [0.6, 0.6]);
    assert.deepEqual(
      firings.map((f) => f.rule),
      ['any', 'any'],
    );
  });
});

describe('rules: options', () => {
  it('refuses bad rules at start() with a message naming the rule and the field', async () => {
    const refused = async (rules: unknown, mentions: RegExp) =>
      assert.rejects(
        start({ logger: memoryLogger().logger, rules } as never),
        (err: Error & { code?: string }) => err.code === 'SYSPROBE_ERR_INVALID_OPTION' && mentions.test(err.message),
      );
    await refused('busy', /rules must be an array/);
    await refused(
      [{ name: 'x', value: 'cpu.temperature', above: 1, actions: ['captureStack'] }],
      /rules\[3\]\.value must be one of eventLoop\.utilization/,
    );
    await refused(
      [{ name: 'cpu-high', value: 'cpu.utilization', above: 1, actions: ['captureStack'] }],
      /"cpu-high" is used twice \(the default rules/,
    );
    await refused([{ name: 'x', value: 'cpu.utilization', above: 1, actions: ['reboot'] }], /each action must be/);
    await refused(
      [{ name: 'x', value: 'cpu.utilization', above: 1, actions: [] }],
      /actions must be a non-empty array/,
    );
    await refused(
      [{ name: 'x', value: 'cpu.utilization', above: 1, forMs: -1, actions: ['captureStack'] }],
      /forMs must be an integer from 0/,
    );
    await refused(
      [{ name: 'x', value: 'gc.perMin', above: 1, actions: [{ captureAllocationProfile: { durationMs: 5 } }] }],
      /captureAllocationProfile\.durationMs must be an integer from 10 to 600000/,
    );
  });
});

describe('rules: a firing through the probe', () => {
  it('captures a CPU profile that names the rule, marks the process unhealthy, calls the user, and counts', async () => {
    const dumpDir = tempDir('sysprobe-rules-');
    const metrics = memoryMetrics();
    const called: RuleFiring[] = [];
    const probe = await start({
      logger: memoryLogger().logger,
      meterProvider: metrics.meterProvider,
      dumpDir,
      sampleIntervalMs: 100,
      defaultRules: false,
      rules: [
        {
          name: 'saturated-test',
          value: 'eventLoop.utilization',
          above: 0.8,
          forMs: 300,
          cooldownMs: 60_000,
          actions: [{ captureCpuProfile: { durationMs: 300 } }, 'markUnhealthy', (firing) => called.push(firing)],
        },
      ],
    });
    const events: RuleEvent[] = [];
    probe.on('rule', (event: RuleEvent) => events.push(event));
    try {
      assert.equal(probe.health().healthy, true);
      // Busy but turning: 20 ms of work per turn for a second, so readings keep coming.
      const end = Date.now() + 1000;
      await new Promise<void>((resolve) => {
        const turn = (): void => {
          const until = Date.now() + 20;
          while (Date.now() < until);
          if (Date.now() < end) setImmediate(turn);
          else resolve();
        };
        turn();
      });
      await probe.recent(); // the worker drains the readings now, so the rule sees them
      const event = await waitFor('the rule event', () => events[0], 10_000);
      assert.equal(event.firing.rule, 'saturated-test');
      assert.ok(event.firing.observed > 0.8 && event.firing.aboveForMs >= 300, JSON.stringify(event.firing));
      const profile = event.captures.cpuProfile;
      assert.ok(
        profile && fs.existsSync(profile.file) && fs.existsSync(profile.pprofFile),
        JSON.stringify(event.captures),
      );
      assert.equal(profile.trigger?.rule, 'saturated-test');
      const manifest = JSON.parse(fs.readFileSync(profile.sidecarFile, 'utf8')) as {
        trigger: RuleFiring;
        kind: string;
      };
      assert.equal(manifest.kind, 'cpu-profile');
      assert.deepEqual(
        manifest.trigger,
        event.firing,
        'the capture records which rule fired and the values that fired it',
      );
      assert.deepEqual(called, [event.firing]);
      const health = probe.health();
      assert.equal(health.healthy, false);
      assert.equal(health.reasons[0]?.rule, 'saturated-test');
      assert.equal(probe.health(event.firing.firedAt + 60_000).healthy, true, 'healthy again after the cooldown');
      assert.equal(
        pointValue(findMetric(await metrics.collect(), 'sysprobe.rule.firings'), { 'sysprobe.rule': 'saturated-test' }),
        1,
      );
    } finally {
      await probe.stop();
      await metrics.shutdown();
    }
  });
});
