// A stall the native watchdog could not see while it lasted (its thread had no CPU: a starved host, a container's CPU
// quota) is reported once it is over, with its exact length and why it has no stack; before, it was lost (no 'stall'
// event, nothing in the delay histogram). The watchdog thread alone is frozen in a real cgroup v1 freezer (its
// `tasks` file takes a thread id) while the main thread blocks, then thawed once the loop has turned.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { start, type StallEvent } from '../src/index.js';
import { parseCgroupMounts, parseProcCgroup } from '../src/containers/cgroup-parse.js';
import { LATE_STALL_REASON } from '../src/stalls/stall.js';
import { makeCgroup, removeCgroup } from './cgroup-helpers.js';
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

describe('a stall the watchdog saw only after it ended', () => {
  it('is reported with its whole length, no stack and why, and counted in the delay histogram', async function () {
    needs(this, ROOT_CGROUPS);
    needs(this, nativeAddon('loop_watch'));
    const { dir, reason } = freezerDir();
    needs(this, {
      name: 'a cgroup v1 freezer',
      missing: () => reason,
      install: 'run as root on a machine that mounts the v1 freezer controller',
    });
    const parent = dir!;
    const metrics = memoryMetrics();
    const probe = await start({
      stallThresholdMs: 200,
      logger: memoryLogger().logger,
      meterProvider: metrics.meterProvider,
      defaultRules: false,
    });
    let frozen: string | undefined;
    let watchdog: number | undefined;
    try {
      assert.equal(probe.loopWatch, 'native');
      watchdog = await waitFor('the watchdog thread', () => threadNamed('sysprobe-watch'));
      const stalls: StallEvent[] = [];
      probe.on('stall', (event) => stalls.push(event));
      await metrics.collect(); // a fresh collection window
      await loopTurnsFreely();

      frozen = makeCgroup(parent, {});
      fs.writeFileSync(path.join(frozen, 'tasks'), String(watchdog));
      fs.writeFileSync(path.join(frozen, 'freezer.state'), 'FROZEN');
      await waitFor('the watchdog frozen', () =>
        fs.readFileSync(path.join(frozen!, 'freezer.state'), 'utf8').trim() === 'FROZEN' ? true : undefined,
      );
      const blockedAt = Date.now();
      blockFor(500);
      await sleep(50); // the loop turns, so the block is over before the watchdog can look again
      assert.equal(stalls.length, 0, 'nothing reported while the watchdog was frozen');
      fs.writeFileSync(path.join(frozen, 'freezer.state'), 'THAWED');

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
      if (frozen) {
        fs.writeFileSync(path.join(frozen, 'freezer.state'), 'THAWED');
        if (watchdog !== undefined) fs.writeFileSync(path.join(parent, 'tasks'), String(watchdog));
      }
      await probe.stop();
      await metrics.shutdown();
      await removeCgroup(frozen);
    }
  });
});
