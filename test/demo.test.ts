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
  features: Record<string, boolean>;
  cases: {
    stall: {
      detected: boolean;
      stall?: { durationMs: number; inLoop: boolean; stack: string[] };
      cpuProfile?: { file: string; pprofFile: string; topFunction: string };
      guard?: { code: string; message: string };
      health: { wentUnhealthy: boolean; recovered: boolean; http: Array<{ statusCode?: number; status?: string }> };
    };
    network: { available: boolean; probes: boolean; sockets: boolean; detected: boolean; ruleFired?: { rule: string }; socketsToDependency?: { connections: number } };
    leak: {
      detected: boolean;
      growthPerMin?: number;
      snapshots: string[];
      diff?: { available: boolean; growing?: string[]; leakingConstructor?: string; retainerPath?: string; file?: string; error?: string };
      fix?: { max: number; size: number; evictions: number };
    };
  };
  incidents: string[];
  reports: Array<{ dir: string; file: string }>;
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
      execFile(process.execPath, [DEMO, '--fast', '--json-summary', summaryFile, '--dump-dir', path.join(dir, 'dumps')],
        { cwd: ROOT, timeout: 90_000, maxBuffer: 16 * 1024 * 1024, env: { ...process.env, NO_COLOR: '1' } },
        (err, stdout, stderr) => (err ? reject(new Error(`the demo failed: ${err.message}\n${stdout}\n${stderr}`)) : resolve(stdout)));
    });
    summary = JSON.parse(fs.readFileSync(summaryFile, 'utf8')) as DemoSummary;
  });

  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('case 1: catches the stall in the named function, profiles it, times the job out, and reports unhealthy then healthy', () => {
    const { stall } = summary.cases;
    assert.ok(stall.stall, output);
    assert.ok(stall.stall.inLoop && stall.stall.stack.includes('reconcileLedger'), `stack: ${stall.stall.stack.join(' < ')}`);
    assert.ok(stall.stall.durationMs > 1000, `stall of ${stall.stall.durationMs} ms`);
    assert.ok(stall.cpuProfile && fs.statSync(stall.cpuProfile.file).size > 0, 'a CPU profile file');
    assert.equal(stall.guard?.code, 'SYSPROBE_ERR_TIMEOUT');
    assert.ok(stall.health.wentUnhealthy && stall.health.recovered, JSON.stringify(stall.health));
    if (summary.features.healthHttp) {
      assert.ok(stall.health.http.some((a) => a.statusCode !== 200 || (a.status !== undefined && a.status !== 'ok')), `GET /health never said unhealthy: ${JSON.stringify(stall.health.http)}`);
    }
    assert.equal(stall.detected, true);
    assert.match(output, /stall: event loop blocked \d+ ms/);
    assert.match(output, /at reconcileLedger \(service\.js:\d+\)/);
  });

  it('case 2: the baseline rule fires and the connections to the dependency are seen, where this build has probes and sockets; else says skipped', () => {
    const { network } = summary.cases;
    if (network.probes) assert.equal(network.ruleFired?.rule, 'probe-latency:payments', output);
    else assert.match(output, /skipped: synthetic transactions \(probes\) not available in this build/);
    if (network.sockets) assert.ok((network.socketsToDependency?.connections ?? 0) > 0, output);
    else assert.match(output, /skipped: the socket sampler \(sockets\) not available in this build/);
    assert.equal(network.detected, network.available);
  });

  it('case 3: growth detected, snapshots taken automatically, the diff names SessionRecord (where available), the bounded cache stays bounded', () => {
    const { leak } = summary.cases;
    assert.ok((leak.growthPerMin ?? 0) > 40 * 1024 * 1024, `growth ${leak.growthPerMin}`);
    assert.ok(leak.snapshots.length >= 2, `${leak.snapshots.length} snapshots`);
    for (const file of leak.snapshots) assert.ok(fs.statSync(file).size > 1024 * 1024, file);
    if (summary.features.heapDiffCli || leak.diff?.available) {
      assert.equal(leak.diff?.error, undefined);
      assert.ok(leak.diff?.file && fs.existsSync(leak.diff.file));
      if (leak.snapshots.length >= 3) {
        assert.equal(leak.diff?.leakingConstructor, 'SessionRecord');
        assert.match(leak.diff?.retainerPath ?? '', /Map/);
      } else {
        assert.ok(leak.diff?.growing?.includes('SessionRecord'), `growing: ${leak.diff?.growing?.join(', ')}`);
      }
    } else {
      assert.match(output, /skipped: heap snapshot diff not available in this build/);
    }
    assert.ok(leak.fix && leak.fix.size <= leak.fix.max && leak.fix.evictions > 0, JSON.stringify(leak.fix));
    assert.equal(leak.detected, true);
  });

  it('ends with a report for each incident (where this build has them), and the summary', () => {
    if (summary.features.report && summary.incidents.length > 0) assert.equal(summary.reports.length, summary.incidents.length, output);
    for (const { file } of summary.reports) assert.ok(fs.statSync(file).size > 0, file);
    assert.match(output, /Summary \(\d+ s;/);
    assert.match(output, /1 stall \/ CPU\s+detected/);
    assert.match(output, /3 leak\s+detected/);
  });
});
