import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as path from 'node:path';
import { promisify } from 'node:util';
import type { CgroupReading } from '../src/containers/cgroup-reader.js';
import { inCgroup, makeCgroup, removeCgroup, skipUnless, writableV1Dir } from './cgroup-helpers.js';
import { ROOT } from './children.js';
import { tempDir } from './helpers.js';

const run = promisify(execFile);
const CHILD = path.join(__dirname, 'cgroup-child.js');
/**
 * 20% of one CPU per 100 ms period. The largest weight too: on a loaded machine a child that
 * cannot get its 20 ms in a period is never throttled, so the quota must be what binds it (it
 * still takes at most 20% of a CPU from the others).
 */
const QUOTA_20 = { 'cpu.cfs_period_us': '100000', 'cpu.cfs_quota_us': '20000', 'cpu.shares': '262144' };

interface ChildReport {
  before: CgroupReading;
  after?: CgroupReading;
  wallMs?: number;
  cpuMs?: number;
}

async function childIn(cgroup: string, args: string[]): Promise<ChildReport> {
  const { stdout } = await run('sh', inCgroup(cgroup, [CHILD, ...args]), { cwd: ROOT, timeout: 30_000 });
  return JSON.parse(stdout) as ChildReport;
}

describe('cgroup reader in real v1 cgroups (root)', () => {
  let cgroup: string | undefined;
  afterEach(async () => {
    await removeCgroup(cgroup);
    cgroup = undefined;
  });

  it('a child spinning under a 20% CPU quota sees its quota and its throttling rise', async function () {
    const { dir, reason } = writableV1Dir('cpu');
    skipUnless(this, dir !== undefined, reason!);
    cgroup = makeCgroup(dir!, QUOTA_20);
    const report = await childIn(cgroup, ['spin', '1500']);
    const { before, after } = report;
    assert.equal(before.cpu?.quotaCores, 0.2);
    assert.equal(before.cpu?.periodUs, 100000);
    const periods = after!.cpu!.periods! - before.cpu!.periods!;
    const throttled = after!.cpu!.throttledPeriods! - before.cpu!.throttledPeriods!;
    const throttledMs = after!.cpu!.throttledMs! - before.cpu!.throttledMs!;
    console.log(
      `      20% quota, ${Math.round(report.wallMs!)} ms spinning: ${periods} periods, ${throttled} throttled, ${Math.round(throttledMs)} ms throttled, ${Math.round(report.cpuMs!)} ms CPU`,
    );
    // 1.5 s of 100 ms periods, each cut short after 20 ms of CPU: most periods throttled, most of the time stopped.
    assert.ok(periods >= 10, `periods ${periods}`);
    assert.ok(throttled >= 0.7 * periods, `throttled ${throttled} of ${periods}`);
    assert.ok(throttledMs >= 600, `throttled ${throttledMs} ms`);
    // And the quota held: at most 20% of the wall time in CPU, with a margin for the period edges.
    assert.ok(report.cpuMs! <= 0.2 * report.wallMs! + 150, `cpu ${report.cpuMs} ms in ${report.wallMs} ms`);
  });

  it('sysprobe under a 20% quota: throttling metrics, CPU against the quota, the throttled rule, stalls that say how long they were throttled', async function () {
    this.timeout(60_000);
    const { dir, reason } = writableV1Dir('cpu');
    skipUnless(this, dir !== undefined, reason!);
    cgroup = makeCgroup(dir!, QUOTA_20);
    const { stdout } = await run('sh', inCgroup(cgroup, [CHILD, 'probe', tempDir('sysprobe-quota-')]), {
      cwd: ROOT,
      timeout: 50_000,
    });
    const report = JSON.parse(stdout.trim().split('\n').at(-1)!) as {
      stalls: Array<{ durationMs: number; throttledMs?: number }>;
      firings: Array<{ rule: string; observed: number }>;
      metrics: Record<string, number | undefined>;
      quotaUtilization: number[];
    };
    const m = report.metrics;
    console.log(
      `      sysprobe under 20%: ${m['sysprobe.cgroup.cpu.throttled_periods']} of ${m['sysprobe.cgroup.cpu.periods']} periods throttled, ${m['sysprobe.cgroup.cpu.throttled_time']?.toFixed(2)} s; ` +
        `stalls ${report.stalls.map((s) => `${Math.round(s.durationMs)} ms (throttled ${Math.round(s.throttledMs ?? -1)})`).join(', ')}`,
    );
    assert.equal(m['sysprobe.cgroup.cpu.quota'], 0.2);
    assert.ok(m['sysprobe.cgroup.cpu.throttled_periods']! >= 10, JSON.stringify(m));
    assert.ok(m['sysprobe.cgroup.cpu.throttled_time']! >= 1, JSON.stringify(m));
    // The ratio covers only the last two readings (here the idle end): present, between 0 and 1; the rule saw it high.
    assert.ok(
      m['sysprobe.cgroup.cpu.throttled_ratio']! >= 0 && m['sysprobe.cgroup.cpu.throttled_ratio']! <= 1,
      JSON.stringify(m),
    );
    // Against the quota, a process that spins most of the time reads near 1 (against 2 host cores it could never pass 0.1).
    assert.ok(Math.max(...report.quotaUtilization) > 0.6, report.quotaUtilization.join());
    assert.ok(
      report.firings.some((f) => f.rule === 'throttled' && f.observed > 0.5),
      JSON.stringify(report.firings),
    );
    // Each 500 ms block is a stall the quota stretched: much of it the kernel holding the process. The
    // throttled time is measured from when the stall was seen (200 ms, the threshold, after it began).
    const stretched = report.stalls.filter(
      (s) => s.throttledMs !== undefined && s.throttledMs > 0.4 * (s.durationMs - 200),
    );
    assert.ok(stretched.length >= 3, JSON.stringify(report.stalls));
  });

  it('a child in a memory cgroup sees its limit and its usage below it', async function () {
    const { dir, reason } = writableV1Dir('memory');
    skipUnless(this, dir !== undefined, reason!);
    cgroup = makeCgroup(dir!, { 'memory.limit_in_bytes': String(256 << 20) });
    const { before } = await childIn(cgroup, ['read']);
    assert.equal(before.memory?.version, 1);
    assert.equal(before.memory?.limitBytes, 256 << 20);
    assert.ok(
      before.memory!.usageBytes! > 1 << 20 && before.memory!.usageBytes! < 256 << 20,
      `usage ${before.memory?.usageBytes}`,
    );
    assert.equal(before.memory?.oomKills, 0);
  });
});
