import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { NearLimitWatch, oldGenerationLimit, YOUNG_GENERATION_RESERVE } from '../src/crash/near-limit.js';
import { findPreviousRuns, settlePreviousRun } from '../src/crash/previous-runs.js';
import { RunKeeper, writeExitNote } from '../src/crash/run-keeper.js';
import {
  identify,
  parseStartTime,
  recordFileName,
  RUNS_DIR,
  stillRunning,
  type ProcessIdentity,
  type RunRecord,
} from '../src/crash/run-record.js';
import { reportFatalErrorsInto, writeDiagnosticReport } from '../src/crash/diagnostic-report.js';
import { FileSink } from '../src/sink/file-sink.js';
import type { Sample } from '../src/samples/sample.js';
import { tempDir } from './helpers.js';

const MiB = 1 << 20;
const sample = (time: number, heapUsed = 10 * MiB): Sample => ({
  time,
  intervalMs: 1000,
  mainStale: false,
  memory: { heapUsed, heapTotal: 2 * heapUsed, heapLimit: 100 * MiB, external: 0 },
});

/** The identity of a process that ran here and is gone: a real child, identified while it lived. */
async function deadProcess(): Promise<ProcessIdentity> {
  const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60_000)'], { stdio: 'ignore' });
  await new Promise((resolve) => child.once('spawn', resolve));
  const identity = identify(child.pid!);
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGKILL');
  await exited;
  return identity;
}

function plantRecord(dumpDir: string, record: Partial<RunRecord> & { process: ProcessIdentity }): string {
  const full: RunRecord = {
    version: 1,
    service: 'api',
    startedAt: Date.now() - 60_000,
    updatedAt: Date.now() - 5_000,
    samples: [],
    ...record,
  };
  fs.mkdirSync(path.join(dumpDir, RUNS_DIR), { recursive: true });
  const file = path.join(dumpDir, RUNS_DIR, recordFileName(full.process));
  fs.writeFileSync(file, JSON.stringify(full));
  return file;
}

describe('run records', () => {
  it('reads a process start time past a comm with spaces and parentheses', () => {
    const stat = '51 (a) b (c) S 1 51 51 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 1 0 123456 1000 10 18446744073709551615';
    assert.equal(parseStartTime(stat), 123456);
    assert.equal(parseStartTime('garbage'), undefined);
  });

  it('tells this process alive and a gone one (or a reused pid, or another boot) dead', async () => {
    const self = identify();
    assert.ok(self.procStart !== undefined && self.bootId !== undefined);
    assert.equal(stillRunning(self), true);
    assert.equal(stillRunning(await deadProcess()), false);
    assert.equal(stillRunning({ ...self, procStart: self.procStart! - 1 }), false, 'same pid, started at another time');
    assert.equal(stillRunning({ ...self, bootId: 'another-boot' }), false);
  });

  it('writes the record at most once per interval, with the last window of samples, and removes it at the end', async () => {
    const dumpDir = tempDir('sysprobe-runs-');
    let now = 1_000_000;
    const keeper = new RunKeeper({
      dumpDir,
      service: 'api',
      minIntervalMs: 60_000,
      windowMs: 120_000,
      maxSamples: 50,
      now: () => now,
    });
    await keeper.begin({ heapLimit: 100 * MiB });
    const first = JSON.parse(fs.readFileSync(keeper.file, 'utf8')) as RunRecord;
    assert.deepEqual(first.samples, []);
    assert.equal(first.heapLimit, 100 * MiB);
    assert.equal(first.process.pid, process.pid);
    const samples = Array.from({ length: 300 }, (_, i) => sample(now - 299_000 + i * 1000));
    let asked = 0;
    const provide = () => {
      asked++;
      return samples;
    };
    now += 30_000;
    assert.equal(await keeper.maybePersist(provide, {}), false);
    assert.equal(asked, 0, 'no samples gathered when no write is due');
    now += 30_000;
    assert.equal(await keeper.maybePersist(provide, {}), true);
    const second = JSON.parse(fs.readFileSync(keeper.file, 'utf8')) as RunRecord;
    assert.equal(second.samples.length, 50);
    assert.equal(second.samples.at(-1)!.time, samples.at(-1)!.time);
    assert.equal(second.updatedAt, now);
    await keeper.persistNow(samples.slice(-3), { nearLimit: { at: now, reason: 'test', files: ['x'] } });
    assert.equal((JSON.parse(fs.readFileSync(keeper.file, 'utf8')) as RunRecord).nearLimit?.reason, 'test');
    keeper.end();
    assert.equal(fs.existsSync(keeper.file), false);
    // A write after the end leaves nothing behind.
    await keeper.persistNow(samples, {});
    assert.equal(fs.existsSync(keeper.file), false);
  });

  it('writes concurrent persists one at a time, ending with a whole record', async () => {
    const dumpDir = tempDir('sysprobe-runs-');
    const keeper = new RunKeeper({ dumpDir, service: 'api' });
    await keeper.begin({});
    await Promise.all(Array.from({ length: 20 }, (_, i) => keeper.persistNow([sample(Date.now() + i)], {})));
    const record = JSON.parse(fs.readFileSync(keeper.file, 'utf8')) as RunRecord;
    assert.equal(record.samples.length, 1);
    assert.deepEqual(fs.readdirSync(path.dirname(keeper.file)), [path.basename(keeper.file)]);
    keeper.end();
  });
});

describe('previous runs', () => {
  it('finds a dead run of this service and host, skipping live ones, its own, other services and broken records', async () => {
    const dumpDir = tempDir('sysprobe-prev-');
    const self = identify();
    const dead = await deadProcess();
    plantRecord(dumpDir, { process: dead, samples: [sample(Date.now() - 10_000, 90 * MiB)] });
    plantRecord(dumpDir, { process: self });
    plantRecord(dumpDir, { process: identify(process.ppid) }); // alive (our parent)
    plantRecord(dumpDir, { process: { ...dead, pid: dead.pid + 100_000 }, service: 'other' });
    plantRecord(dumpDir, { process: { ...dead, pid: dead.pid + 200_000, hostname: 'another-pod' } });
    fs.writeFileSync(path.join(dumpDir, RUNS_DIR, 'run-1-2.json'), '{"version":1,"service":');
    const { runs, problems } = await findPreviousRuns({ dumpDir, service: 'api', self });
    assert.equal(runs.length, 1);
    const run = runs[0]!;
    assert.equal(run.record.process.pid, dead.pid);
    assert.equal(run.cause, 'unknown');
    assert.match(run.evidence.join('\n'), /last persisted sample .*heap 94371840 of 104857600 bytes \(90%\)/);
    assert.match(run.evidence.join('\n'), /nothing says how it ended/);
    assert.deepEqual(
      problems.map((p) => p.split(':')[0]),
      ['run-1-2.json'],
    );
  });

  it('names the cause: an exit note, a fatal-error report of heap exhaustion, a cgroup whose OOM kills grew', async () => {
    const dumpDir = tempDir('sysprobe-prev-');
    const self = identify();
    const [a, b, c] = [await deadProcess(), await deadProcess(), await deadProcess()];
    plantRecord(dumpDir, { process: a, startedAt: 1 });
    writeExitNote(dumpDir, a, 7, 5);
    plantRecord(dumpDir, { process: b, startedAt: 2 });
    const report = `report.20261205.093000.${b.pid}.0.001.json`;
    fs.writeFileSync(
      path.join(dumpDir, report),
      JSON.stringify({
        header: { event: 'Allocation failed - JavaScript heap out of memory', trigger: 'OOMError', processId: b.pid },
        javascriptHeap: { usedMemory: 70 * MiB, memoryLimit: 112 * MiB },
      }),
    );
    // A memory cgroup laid out as v1 writes it, its oom_kill now past what the record saw.
    const cgroupDir = tempDir('sysprobe-memcg-');
    fs.writeFileSync(path.join(cgroupDir, 'memory.oom_control'), 'oom_kill_disable 0\nunder_oom 0\noom_kill 3\n');
    fs.writeFileSync(path.join(cgroupDir, 'memory.limit_in_bytes'), `${64 * MiB}\n`);
    // A capture c wrote after it started, and one with its pid from long before (a reused pid).
    const stamp = (ms: number) => new Date(ms).toISOString().replace(/:/g, '');
    fs.writeFileSync(path.join(dumpDir, `diagnostic-report-${stamp(Date.now() - 1000)}-${c.pid}.json`), '{}');
    fs.writeFileSync(path.join(dumpDir, `cpu-profile-${stamp(0)}-${c.pid}.cpuprofile`), '{}');
    plantRecord(dumpDir, {
      process: c,
      startedAt: Date.now() - 60_000,
      cgroup: { memoryDir: cgroupDir, version: 1, oomKills: 2, limitBytes: 64 * MiB },
    });

    const { runs } = await findPreviousRuns({ dumpDir, service: 'api', self });
    const byPid = new Map(runs.map((r) => [r.record.process.pid, r]));
    assert.equal(byPid.get(a.pid)?.cause, 'exit-code');
    assert.match(byPid.get(a.pid)!.evidence[0]!, /exited with code 7/);
    assert.equal(byPid.get(b.pid)?.cause, 'heap-out-of-memory');
    assert.match(
      byPid.get(b.pid)!.evidence.join('\n'),
      /V8 ran out of heap: .*"Allocation failed - JavaScript heap out of memory" \(73400320 of 117440512 bytes used\)/,
    );
    assert.deepEqual(
      byPid.get(b.pid)!.reports.map((r) => path.basename(r.file)),
      [report],
    );
    const oom = byPid.get(c.pid)!;
    assert.equal(oom.cause, 'oom-kill');
    assert.match(oom.evidence[0]!, /OOM killer struck .* oom_kill went from 2 to 3 \(limit 67108864 bytes\)/);
    assert.equal(oom.files.length, 1, 'the older capture with a reused pid is not its');
    assert.match(oom.files[0]!, /^diagnostic-report-.*\.json$/);

    // Settled into an incident folder: the record, exit note and report move there, so they are reported once.
    const into = tempDir('sysprobe-incident-');
    for (const run of runs) await settlePreviousRun(run, into);
    assert.deepEqual(
      fs.readdirSync(into).sort(),
      [recordFileName(a), `run-${a.pid}-${a.procStart}.exit.json`, recordFileName(b), recordFileName(c), report].sort(),
    );
    assert.deepEqual((await findPreviousRuns({ dumpDir, service: 'api', self })).runs, []);
  });
});

describe('near the limit', () => {
  it('counts against the old generation: the heap limit less the young generation', () => {
    assert.equal(oldGenerationLimit(112 * MiB), 64 * MiB);
    assert.equal(oldGenerationLimit(4144 * MiB), 4096 * MiB);
    assert.equal(oldGenerationLimit(80 * MiB), 80 * MiB, 'too small to hold the reserve: taken whole');
    assert.equal(YOUNG_GENERATION_RESERVE, 48 * MiB);
  });

  it('fires once as the live heap crosses 90%, again only after it fell below 75% and the cooldown passed', () => {
    const watch = new NearLimitWatch({ cooldownMs: 60_000 });
    const at = (time: number, heapAfterGc: number) =>
      watch.observe({ time, heapLimit: 112 * MiB, heapUsed: heapAfterGc + MiB, heapAfterGc });
    assert.equal(at(0, 50 * MiB), undefined);
    const fired = at(1000, 58 * MiB);
    assert.equal(fired?.kind, 'heap');
    assert.ok(fired!.share > 0.9 && fired!.share < 0.91);
    assert.match(fired!.reason, /after a full GC is 91% .* \(60817408 of 67108864 bytes\)/);
    assert.equal(at(2000, 60 * MiB), undefined, 'still near: not again');
    assert.equal(at(3000, 40 * MiB), undefined);
    assert.equal(at(4000, 60 * MiB), undefined, 'rearmed, but within the cooldown');
    assert.equal(at(3000 + 60_000, 40 * MiB), undefined);
    assert.equal(at(4000 + 60_000, 60 * MiB)?.kind, 'heap');
  });

  it('fires within the approach when GC pauses take half the time (V8 gives up there before the line)', () => {
    const watch = new NearLimitWatch();
    const at = (time: number, heapAfterGc: number, gcPauseShare: number) =>
      watch.observe({ time, heapLimit: 112 * MiB, heapAfterGc, gcPauseShare });
    assert.equal(at(0, 47 * MiB, 0.9), undefined, '73%: outside the approach');
    assert.equal(watch.approaching, false);
    assert.equal(at(1, 53 * MiB, 0.3), undefined, 'within it, GC not thrashing');
    assert.equal(watch.approaching, true);
    const fired = at(2, 53 * MiB, 0.45);
    assert.equal(fired?.kind, 'heap');
    assert.match(fired!.reason, /83% .* GC pauses took 45% of the last interval/);
  });

  it('asks more of the heap used when there is no after-GC figure, and watches the cgroup working set', () => {
    const watch = new NearLimitWatch();
    assert.equal(
      watch.observe({ time: 0, heapLimit: 112 * MiB, heapUsed: 59 * MiB }),
      undefined,
      '92% of used, not 95%',
    );
    assert.equal(watch.observe({ time: 1, heapLimit: 112 * MiB, heapUsed: 62 * MiB })?.kind, 'heap');
    const cgroup = new NearLimitWatch().observe({
      time: 0,
      heapLimit: 4144 * MiB,
      heapAfterGc: 100 * MiB,
      cgroupWorkingSet: 950 * MiB,
      cgroupLimit: 1000 * MiB,
    });
    assert.equal(cgroup?.kind, 'cgroup');
    assert.match(cgroup!.reason, /working set is 95% of its limit/);
  });
});

describe('diagnostic reports', () => {
  it("writes a report of this process through the sink, in Node's own format, with environment values redacted", async () => {
    const dir = tempDir('sysprobe-report-');
    process.env.SYSPROBE_TEST_SECRET = 'hunter2';
    let written;
    try {
      written = await writeDiagnosticReport(new FileSink({ dir }), { trigger: 'near-limit test' });
    } finally {
      delete process.env.SYSPROBE_TEST_SECRET;
    }
    const text = fs.readFileSync(written.file, 'utf8');
    assert.ok(!text.includes('hunter2'), 'environment values are redacted');
    const report = JSON.parse(text) as {
      header: { processId: number; trigger: string };
      javascriptHeap: { memoryLimit: number };
      environmentVariables: Record<string, string>;
    };
    assert.equal(report.environmentVariables.SYSPROBE_TEST_SECRET, '<redacted>');
    assert.equal(report.header.processId, process.pid);
    assert.equal(report.header.trigger, 'GetReport');
    assert.ok(report.javascriptHeap.memoryLimit > 0);
    assert.match(path.basename(written.file), /^diagnostic-report-.*\.json$/);
    assert.equal(
      (JSON.parse(fs.readFileSync(written.sidecarFile, 'utf8')) as { trigger: string }).trigger,
      'near-limit test',
    );
  });

  it('turns fatal-error reports on into the dump directory only when the app has not configured reports', () => {
    const dir = tempDir('sysprobe-report-');
    const undo = reportFatalErrorsInto(dir);
    try {
      assert.equal(process.report.reportOnFatalError, true);
      assert.equal(process.report.directory, dir);
      assert.equal(reportFatalErrorsInto('/elsewhere')(), undefined, 'configured now: left alone');
      assert.equal(process.report.directory, dir);
    } finally {
      undo();
    }
    assert.equal(process.report.reportOnFatalError, false);
    assert.equal(process.report.directory, '');
  });
});
