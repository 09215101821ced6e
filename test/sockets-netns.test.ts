import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as path from 'node:path';
import type { SocketPicture } from '../src/index.js';
import { needs, NETNS } from './requirements.js';

describe('socket sampler: real retransmissions in a network namespace', function () {
  this.timeout(20_000);

  it('loopback taken down under data in flight: the namespace counters, the rate and the socket show retransmissions', async function () {
    needs(this, NETNS);
    // The child runs sysprobe inside its own namespace, so taking its loopback down touches nothing else on the machine.
    const child = path.join(__dirname, 'netns-retransmit-child.js');
    const started = Date.now();
    const stdout = await new Promise<string>((resolve, reject) => {
      execFile(
        'unshare',
        ['-n', process.execPath, child],
        { timeout: 15_000, maxBuffer: 4 * 1024 * 1024 },
        (err, out, errOut) => (err ? reject(new Error(`${err.message}\n${errOut}`)) : resolve(out)),
      );
    });
    const { before, after, seenAfterMs } = JSON.parse(stdout.trim().split('\n').pop()!) as {
      before: SocketPicture;
      after: SocketPicture;
      seenAfterMs: number;
    };
    assert.ok(after.tcp!.retransSegs > before.tcp!.retransSegs, 'RetransSegs rose');
    assert.ok(after.tcp!.rates!.retransSegsPerSec > 0, 'a retransmission rate');
    assert.ok(after.tcp!.timeouts > before.tcp!.timeouts, 'the retransmission timer expired (TCPTimeouts)');
    if (after.ss === 'ok') assert.ok((after.retransmitsTotal ?? 0) > 0, "ss: the socket's own retransmission count");
    // The first RTO on loopback is ~200 ms; sweeps every 200 ms: seen within a couple of seconds.
    assert.ok(seenAfterMs < 5000, `seen after ${seenAfterMs} ms`);
    assert.ok(Date.now() - started < 10_000, 'the whole test stays under 10 s');
  });
});
