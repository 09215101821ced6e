import assert from 'node:assert/strict';
import { parseTaskStat, threadRole } from '../src/samplers/proc.js';

// Recorded from /proc/self/task/*/stat on Linux 6.x (fields after stime trimmed in some lines).
const MAIN = '2944 (node) S 2931 2944 2931 34816 2944 4194304 9386 0 0 0 71 3 0 0 20 0 12 0 10086 1189969920 13606 18446744073709551615 1 1 0 0 0 0 0 16781312 134234626 0 0 0 17 1 0 0 0 0 0';
const TRICKY = '51 (a) b (c) R 1 1 1 0 -1 4194560 0 0 0 0 250 125 0 0';

describe('/proc parsers', () => {
  it('reads tid, comm, state and CPU time in ms (USER_HZ 100)', () => {
    assert.deepEqual(parseTaskStat(MAIN), { tid: 2944, comm: 'node', state: 'S', userMs: 710, systemMs: 30 });
  });

  it('counts fields from the last parenthesis, so a comm with spaces and parentheses parses', () => {
    assert.deepEqual(parseTaskStat(TRICKY), { tid: 51, comm: 'a) b (c', state: 'R', userMs: 2500, systemMs: 1250 });
  });

  it('returns undefined for malformed lines instead of throwing', () => {
    for (const bad of ['', 'garbage', '12 node S 1 2 3', '12 (node) S 1 1', 'x (node) S 1 1 1 0 -1 0 0 0 0 0 5 5', '12 (node) S 1 1 1 0 -1 0 0 0 0 0 five 5', '-3 (n) S 1 1 1 0 -1 0 0 0 0 0 1 1']) {
      assert.equal(parseTaskStat(bad), undefined, JSON.stringify(bad));
    }
  });

  it('names thread roles', () => {
    assert.equal(threadRole(10, 'node', 10, 11), 'main');
    assert.equal(threadRole(11, 'node', 10, 11), 'sysprobe-worker');
    assert.equal(threadRole(12, 'libuv-worker', 10, 11), 'libuv');
    assert.equal(threadRole(13, 'V8 DefaultWorke', 10, 11), 'v8');
    assert.equal(threadRole(14, 'node', 10, undefined), 'other');
  });
});
