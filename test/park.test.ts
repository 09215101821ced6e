// The native watchdog parks while the loop waits for events (native/loop_watch.c) and is woken by the turn's first
// entry into JavaScript (native/thread_stack.cc). Idle, it must wake far less often than once per stall threshold;
// and however a turn starts after an idle stretch (a timer, socket data, a MessagePort message, setImmediate, a
// promise continuation after fs.promises), a stall in it must still be seen while it lasts, with its stack. A turn
// that failed to wake the watchdog would be seen only at its 5 s fallback look, after the block: a late stall,
// without a stack. test/park-child.ts is the process watched.
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { kill, line, output, ROOT, spawnNode, type Child } from './children.js';
import { nativeAddon, needs } from './requirements.js';

interface Stall {
  way: string;
  culprit: string;
  blockedAt: number;
  unblockedAt: number;
  event?: { startedAt: number; durationMs: number; how: string; takenAt?: number; names?: string[] };
}

describe('the parked watchdog', function () {
  this.timeout(90_000);
  let child: Child | undefined;

  it('wakes rarely while the loop waits, and sees each kind of turn stall while it lasts, with its stack', async function () {
    if (process.platform !== 'linux') this.skip(); // futex parking and /proc schedstat
    needs(this, nativeAddon('loop_watch'));
    needs(this, nativeAddon('thread_stack'));
    const windowSeconds = 8;
    child = spawnNode([path.join(ROOT, 'dist', 'test', 'park-child.js'), String(windowSeconds)]);
    await line(child, /^DONE$/m, 80_000);
    const text = child.stdout();
    const lines = (tag: string) =>
      text
        .split('\n')
        .filter((l) => l.startsWith(`${tag} `))
        .map((l) => JSON.parse(l.slice(tag.length + 1)) as unknown);

    // Looking every 200 ms threshold is 5 wake-ups/s. Parked: the 5 s fallback look (0.2/s) and two per turn of the
    // main thread (woken by the turn, then a look at the threshold), which turns rarely while idle.
    const [wakes] = lines('WAKES') as Array<{ perSecond: number }>;
    assert.ok(wakes && wakes.perSecond < 2, `watchdog wake-ups: ${JSON.stringify(wakes)}\n${text}`);

    const stalls = lines('STALL') as Stall[];
    assert.equal(stalls.length, 5, output(child));
    for (const { way, culprit, blockedAt, unblockedAt, event } of stalls) {
      assert.ok(event, `${way}: no stall event\n${text}`);
      assert.notEqual(event.how, 'skipped', `${way}: seen only after it ended (${JSON.stringify(event)})`);
      assert.ok(Math.abs(event.startedAt - blockedAt) <= 25, `${way}: started ${event.startedAt - blockedAt} ms off`);
      assert.ok(event.takenAt! < unblockedAt, `${way}: stack taken ${event.takenAt! - unblockedAt} ms after the block`);
      assert.ok(event.names?.includes(culprit), `${way}: the stack names ${culprit}: ${JSON.stringify(event.names)}`);
    }
  });

  afterEach(async () => {
    await kill(child);
    child = undefined;
  });
});
