import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as path from 'node:path';
import { promisify } from 'node:util';
import type { CgroupReading } from '../src/containers/cgroup-reader.js';
import { inCgroup, makeCgroup, removeCgroup, skipUnless, writableV1Dir } from './cgroup-helpers.js';
import { ROOT } from './children.js';

const run = promisify(execFile);
const CHILD = path.join(__dirname, 'cgroup-child.js');

interface ChildReport { before: CgroupReading; after?: CgroupReading; wallMs?: number; cpuMs?: number }

async function childIn(cgroup: string, args: string[]): Promise<ChildReport> {
  const { stdout } = await run('sh', inCgroup(cgroup, [CHILD, ...args]), { cwd: ROOT, timeout: 30_000 });
  return JSON.parse(stdout) as ChildReport;
}

describe('cgroup reader in real v1 cgroups (root)', () => {
  let cgroup: string | undefined;
  afterEach(async () => { await removeCgroup(cgroup); cgroup = undefined; });

  it('a child spinning under a 20% CPU quota sees its quota and its throttling rise', async function () {
    const { dir, reason } = writableV1Dir('cpu');
    skipUnless(this, dir !== undefined, reason!);
    cgroup = makeCgroup(dir!, { 'cpu.cfs_period_us': '100000', 'cpu.cfs_quota_us': '20000' });
    const report = await childIn(cgroup, ['spin', '1500']);
    const { before, after } = report;
    assert.equal(before.cpu?.quotaCores, 0.2);
    assert.equal(before.cpu?.periodUs, 100000);
    const periods = after!.cpu!.periods! - before.cpu!.periods!;
    const throttled = after!.cpu!.throttledPeriods! - before.cpu!.throttledPeriods!;
    const throttledMs = after!.cpu!.throttledMs! - before.cpu!.throttledMs!;
    console.log(`      20% quota, ${Math.round(report.wallMs!)} ms spinning: ${periods} periods, ${throttled} throttled, ${Math.round(throttledMs)} ms throttled, ${Math.round(report.cpuMs!)} ms CPU`);
    // 1.5 s of 100 ms periods, each cut short after 20 ms of CPU: most periods throttled, most of the time stopped.
    assert.ok(periods >= 10, `periods ${periods}`);
    assert.ok(throttled >= 0.7 * periods, `throttled ${throttled} of ${periods}`);
    assert.ok(throttledMs >= 600, `throttled ${throttledMs} ms`);
    // And the quota held: at most 20% of the wall time in CPU, with a margin for the period edges.
    assert.ok(report.cpuMs! <= 0.2 * report.wallMs! + 150, `cpu ${report.cpuMs} ms in ${report.wallMs} ms`);
  });

  it('a child in a memory cgroup sees its limit and its usage below it', async function () {
    const { dir, reason } = writableV1Dir('memory');
    skipUnless(this, dir !== undefined, reason!);
    cgroup = makeCgroup(dir!, { 'memory.limit_in_bytes': String(256 << 20) });
    const { before } = await childIn(cgroup, ['read']);
    assert.equal(before.memory?.version, 1);
    assert.equal(before.memory?.limitBytes, 256 << 20);
    assert.ok(before.memory!.usageBytes! > 1 << 20 && before.memory!.usageBytes! < 256 << 20, `usage ${before.memory?.usageBytes}`);
    assert.equal(before.memory?.oomKills, 0);
  });
});
