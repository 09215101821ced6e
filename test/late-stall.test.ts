// Stalls the native watchdog could not see while they lasted: its thread had no CPU (a starved host, a container's CPU
// quota), or it was parked (native/loop_watch.c) and the turn never entered JavaScript to wake it. The watchdog
// thread alone is frozen in a real cgroup v1 freezer (its `tasks` file takes a thread id) while the main thread blocks.
// - Once the stall is over it is reported, with its exact length and why it has no stack; before, it was lost (no
//   'stall' event, nothing in the delay histogram).
// - While it lasts, GET /health says blocked all the same: the worker reads the loop's busy time itself.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { start, type Health, type StallEvent } from '../src/index.js';
import { parseCgroupMounts, parseProcCgroup } from '../src/containers/cgroup-parse.js';
import { LATE_STALL_REASON } from '../src/stalls/stall.js';
import { makeCgroup, removeCgroup } from './cgroup-helpers.js';
import { healthClient } from './health-client.js';
import {
  blockFor,
  findMetric,
  loopTurnsFreely,
  memoryLogger,
  memoryMetrics,
  pointValue,
  sleep,
  waitFor,
} from './helpers.js';
import { nativeAddon, needs, ROOT_CGROUPS } from './requirements.js';

/** This process's v1 freezer cgroup directory, or why there is none. */
function freezerDir(): { dir?: string; reason?: string } {
  const entry = parseProcCgroup(fs.readFileSync('/proc/self/cgroup', 'utf8')).value.find((e) =>
    e.controllers.includes('freezer'),
  );
  const mount = parseCgroupMounts(fs.readFileSync('/proc/self/mountinfo', 'utf8')).value.find(
    (m) => m.version === 1 && m.controllers.includes('freezer'),
  );
  if (!entry || !mount) return { reason: 'no cgroup v1 freezer controller is mounted' };
  return { dir: path.join(mount.mountPoint, path.relative(mount.root, entry.path)) };
}

/** The thread id of this process's thread named `name` (/proc/self/task/<tid>/comm). */
function threadNamed(name: string): number | undefined {
  for (const tid of fs.readdirSync('/proc/self/task')) {
    if (fs.readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').trim() === name) return Number(tid);
  }
  return undefined;
}

/**
 * Runs `whileFrozen` with the watchdog thread frozen (skips the test where no v1 freezer is mounted), then thaws it
 * and puts it back in its cgroup, whatever happened.
 */
async function withFrozenWatchdog(test: Mocha.Context, whileFrozen: () => Promise<void>): Promise<void> {
  needs(test, ROOT_CGROUPS);
  const { dir, reason } = freezerDir();
  needs(test, {
    name: 'a cgroup v1 freezer',
    missing: () => reason,
    install: 'run as root on a machine that mounts the v1 freezer controller',
  });
  const parent = dir!;
  const watchdog = await waitFor('the watchdog thread', () => threadNamed('sysprobe-watch'));
  let frozen: string | undefined;
  try {
    frozen = makeCgroup(parent, {});
    fs.writeFileSync(path.join(frozen, 'tasks'), String(watchdog));
    fs.writeFileSync(path.join(frozen, 'freezer.state'), 'FROZEN');
    await waitFor('the watchdog frozen', () =>
      fs.readFileSync(path.join(frozen!, 'freezer.state'), 'utf8').trim() === 'FROZEN' ? true : undefined,
    );
    await whileFrozen();
  } finally {
    if (frozen) {
      fs.writeFileSync(path.join(frozen, 'freezer.state'), 'THAWED');
      fs.writeFileSync(path.join(parent, 'tasks'), String(watchdog));
    }
    await removeCgroup(frozen);
  }
}

describe('stalls the watchdog could not see while they lasted', () => {
  it('are reported once over, with their whole length, no stack and why, and counted in the delay histogram', async function () {
    needs(this, nativeAddon('loop_watch'));
    const metrics = memoryMetrics();
    const probe = await start({
      stallThresholdMs: 200,
      logger: memoryLogger().logger,
      meterProvider: metrics.meterProvider,
      defaultRules: false,
    });
    try {
      assert.equal(probe.loopWatch, 'native');
      const stalls: StallEvent[] = [];
      probe.on('stall', (event) => stalls.push(event));
      await metrics.collect(); // a fresh collection window
      await loopTurnsFreely();
      let blockedAt = 0;
      await withFrozenWatchdog(this, async () => {
        blockedAt = Date.now();
        blockFor(500);
        await sleep(50); // the loop turns, so the block is over before the watchdog can look again
        assert.equal(stalls.length, 0, 'nothing reported while the watchdog was frozen');
      });
      const stall = await waitFor('the late stall event', () => stalls.find((s) => s.durationMs >= 500));
      assert.equal(stall.capture.how, 'skipped', JSON.stringify(stall.capture));
      assert.equal(stall.capture.reason, LATE_STALL_REASON);
      assert.equal(stall.stack, undefined);
      assert.ok(stall.durationMs < 600, `the hook's exact length: ${stall.durationMs} ms`);
      assert.ok(Math.abs(stall.startedAt - blockedAt) <= 25, `started ${stall.startedAt - blockedAt} ms off`);
      const exported = await metrics.collect();
      const delayMax = pointValue(findMetric(exported, 'nodejs.eventloop.delay.max'));
      assert.ok(delayMax >= 0.5, `delay max ${delayMax} s`);
    } finally {
      await probe.stop();
      await metrics.shutdown();
    }
  });

  it('make GET /health say blocked while they last', async function () {
    needs(this, nativeAddon('loop_watch'));
    const probe = await start({
      stallThresholdMs: 200,
      logger: memoryLogger().logger,
      defaultRules: false,
      health: { port: 0, thresholds: { eventLoopUtilization: false, eventLoopDelayMs: false } },
    });
    try {
      assert.equal(probe.loopWatch, 'native');
      await loopTurnsFreely();
      let answers: Awaited<ReturnType<Awaited<ReturnType<typeof healthClient>>['answers']>> = [];
      await withFrozenWatchdog(this, async () => {
        // Asked at 400 and 700 ms into a 1,000 ms block: the frozen watchdog has reported nothing by then.
        const client = await healthClient(probe.healthAddress()!.port, [400, 700]);
        blockFor(1000);
        answers = await client.answers();
      });
      for (const answer of answers) {
        assert.equal(answer.status, 503, `at ${answer.at} ms: ${answer.body}`);
        if (!answer.body) continue; // HEAD
        const health = JSON.parse(answer.body) as Health;
        assert.equal(health.reasons[0]!.kind, 'blocked');
        assert.ok(
          health.blocked!.forMs >= answer.at - 50 && health.blocked!.forMs <= answer.at + answer.ms + 50,
          `blocked for ${health.blocked!.forMs} ms when asked at ${answer.at} ms`,
        );
      }
    } finally {
      await probe.stop();
    }
  });
});
