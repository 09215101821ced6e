import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { tempDir } from './helpers.js';

const ROOT = path.resolve(__dirname, '..', '..');
const DEMO = path.join(ROOT, 'examples', 'demo', 'index.js');

/** The fields of the demo's --json-summary that the test reads. */
interface DemoSummary {
  dumpDir: string;
  cases: {
    stall: {
      detected: boolean;
      stall?: {
        durationMs: number;
        inLoop: boolean;
        stack: string[];
        cause?: string;
        requests?: string[];
        traceId?: string;
      };
      cpuProfile?: { file: string; pprofFile: string; topFunction: string };
      guard?: { code: string; message: string };
      health: { wentUnhealthy: boolean; recovered: boolean; http: Array<{ statusCode?: number; status?: string }> };
    };
    network: {
      detected: boolean;
      ruleFired?: { rule: string; observed: number; threshold: number };
      socketsAtFiring?: { total: number; byState: Record<string, number> };
      dependency?: {
        remotePort: number;
        connections: number;
        states: Record<string, number>;
        latencyMs?: { p50: number; p99: number };
      };
    };
    leak: {
      detected: boolean;
      growthPerMin?: number;
      snapshots: string[];
      diff?: { growing?: string[]; leakingConstructor?: string; retainerPath?: string; file?: string; error?: string };
      fix?: { max: number; size: number; evictions: number };
    };
  };
  incidents: string[];
  reports: Array<{ dir: string; file: string; rules: string[]; heapDiff: boolean }>;
}

describe('npm run demo (--fast)', () => {
  let summary: DemoSummary;
  let output: string;
  let dir: string;

  before(async function () {
    this.timeout(100_000);
    dir = tempDir('sysprobe-demo-test-');
    const summaryFile = path.join(dir, 'summary.json');
    output = await new Promise<string>((resolve, reject) => {
      execFile(
        process.execPath,
        [DEMO, '--fast', '--json-summary', summaryFile, '--dump-dir', path.join(dir, 'dumps')],
        { cwd: ROOT, timeout: 90_000, maxBuffer: 16 * 1024 * 1024, env: { ...process.env, NO_COLOR: '1' } },
        (err, stdout, stderr) =>
          err ? reject(new Error(`the demo failed: ${err.message}\n${stdout}\n${stderr}`)) : resolve(stdout),
      );
    });
    summary = JSON.parse(fs.readFileSync(summaryFile, 'utf8')) as DemoSummary;
  });

  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('case 1: catches the stall in the named function, profiles it, times the job out, and reports unhealthy then healthy', () => {
    const { stall } = summary.cases;
    assert.ok(stall.stall, output);
    assert.ok(
      stall.stall.inLoop && stall.stall.stack.includes('reconcileLedger'),
      `stack: ${stall.stall.stack.join(' < ')}`,
    );
    assert.ok(stall.stall.durationMs > 1000, `stall of ${stall.stall.durationMs} ms`);
    assert.equal(stall.stall.cause, 'js');
    assert.deepEqual(stall.stall.requests, ['POST /payouts/settle'], 'the stall names the request it blocked');
    assert.match(stall.stall.traceId ?? '', /^[0-9a-f]{32}$/, 'and the trace of the span the job ran in');
    assert.ok(stall.cpuProfile && fs.statSync(stall.cpuProfile.file).size > 0, 'a CPU profile file');
    // The profile names the function that spins, as the stall stack does (not the outermost function of the optimized code).
    assert.equal(stall.cpuProfile.topFunction, 'nudgeEntries', output);
    assert.equal(stall.guard?.code, 'SYSPROBE_ERR_TIMEOUT');
    assert.ok(stall.health.wentUnhealthy && stall.health.recovered, JSON.stringify(stall.health));
    assert.ok(
      stall.health.http.some((a) => a.statusCode === 503 && a.status === 'unhealthy'),
      `GET /health from the worker never said 503 unhealthy: ${JSON.stringify(stall.health.http)}`,
    );
    assert.equal(stall.detected, true);
    assert.match(output, /stall: event loop blocked \d+ ms/);
    assert.match(output, /at reconcileLedger \(service\.js:\d+\)/);
  });

  it('case 2: the baseline rule fires with a socket picture, and the dependency shows its open connections and latency', () => {
    const { network } = summary.cases;
    assert.equal(network.ruleFired?.rule, 'probe-latency:payments', output);
    // Latency over its threshold, or a failure ratio at or over its own.
    assert.ok(network.ruleFired.observed >= network.ruleFired.threshold, JSON.stringify(network.ruleFired));
    assert.ok(network.socketsAtFiring && network.socketsAtFiring.total > 0, JSON.stringify(network.socketsAtFiring));
    const dep = network.dependency;
    assert.ok(dep && dep.connections > 0 && (dep.states.ESTABLISHED ?? 0) > 0, JSON.stringify(dep));
    assert.ok(dep.latencyMs && dep.latencyMs.p99 >= dep.latencyMs.p50, JSON.stringify(dep));
    assert.equal(network.detected, true);
  });

  it('case 3: growth detected, snapshots taken automatically, the diff names SessionRecord held by sessionCache, the bounded cache stays bounded', () => {
    const { leak } = summary.cases;
    assert.ok((leak.growthPerMin ?? 0) > 40 * 1024 * 1024, `growth ${leak.growthPerMin}`);
    assert.ok(leak.snapshots.length >= 3, `${leak.snapshots.length} snapshots`);
    for (const file of leak.snapshots) assert.ok(fs.statSync(file).size > 1024 * 1024, file);
    assert.equal(leak.diff?.error, undefined);
    assert.ok(leak.diff?.file && fs.existsSync(leak.diff.file));
    assert.equal(leak.diff?.leakingConstructor, 'SessionRecord');
    assert.match(leak.diff?.retainerPath ?? '', /Map "sessionCache"/);
    assert.ok(leak.fix && leak.fix.size <= leak.fix.max && leak.fix.evictions > 0, JSON.stringify(leak.fix));
    assert.equal(leak.detected, true);
  });

  it("ends with a report for each incident, the leak's with its heap diff, and the summary", () => {
    // Triggers that come within incidents.quietMs of each other share an incident, so on a slow
    // machine the cases may share one or two; what each shows is asserted below.
    assert.ok(summary.incidents.length >= 1, output);
    assert.equal(summary.reports.length, summary.incidents.length, output);
    for (const { file } of summary.reports) assert.ok(fs.statSync(file).size > 0, file);
    // The leak rule can fire first in an incident the earlier cases opened, before two snapshots
    // exist (seen on Node 24 under load); the leak's next incident then holds the diff.
    const leakReport = summary.reports.find((r) => r.rules.includes('heap-leaking') && r.heapDiff);
    assert.ok(leakReport?.heapDiff, JSON.stringify(summary.reports));
    assert.match(fs.readFileSync(leakReport.file, 'utf8'), /id="heap-diff"[\s\S]*SessionRecord/);
    assert.ok(
      summary.reports.some((r) => r.rules.includes('loop-stalled')),
      'the stall is in a report',
    );
    assert.ok(
      summary.reports.some((r) => r.rules.includes('probe-latency:payments')),
      'the slow dependency is in a report',
    );
    assert.match(output, /Summary \(\d+ s;/);
    for (const name of ['1 stall \\/ CPU', '2 network', '3 leak'])
      assert.match(output, new RegExp(`${name}\\s+detected`));
  });
});
