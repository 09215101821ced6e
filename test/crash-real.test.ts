import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { inCgroup, makeCgroup, removeCgroup, skipUnless, writableV1Dir } from './cgroup-helpers.js';
import { ROOT } from './children.js';
import { tempDir } from './helpers.js';

const run = promisify(execFile);
const CHILD = path.join(__dirname, 'crash-child.js');

/** Runs a child to its death; its output lines (JSON) and how it ended. */
function dies(
  command: string,
  args: string[],
  timeoutMs: number,
): Promise<{ lines: Array<Record<string, unknown>>; stderr: string; code: number | null; signal: string | null }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => {
      out += c;
    });
    child.stderr.setEncoding('utf8').on('data', (c: string) => {
      err = (err + c).slice(-20_000);
    });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`the child did not die within ${timeoutMs} ms\n${out}\n${err}`));
    }, timeoutMs);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      const lines = out
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as Record<string, unknown>);
      resolve({ lines, stderr: err, code, signal });
    });
  });
}

interface NextStart {
  previousRun: { pid: number; cause: string; evidence: string[]; files: string[] };
  incident: { dir: string; rules: string[] };
}

async function nextStart(dumpDir: string, shell?: string[]): Promise<NextStart> {
  const args = [CHILD, 'next', dumpDir];
  const { stdout } = shell
    ? await run('sh', shell, { cwd: ROOT, timeout: 30_000 })
    : await run(process.execPath, args, { cwd: ROOT, timeout: 30_000 });
  const lines = stdout
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  return Object.assign({}, ...lines) as NextStart;
}

describe('evidence that survives a crash (real processes)', () => {
  it("a child that leaks to V8's heap limit writes what is safe near it; the next start says it died of heap exhaustion", async function () {
    this.timeout(120_000);
    const dumpDir = tempDir('sysprobe-crash-');
    const dead = await dies(process.execPath, ['--max-old-space-size=64', CHILD, 'leak-heap', dumpDir], 100_000);
    const ready = dead.lines.find((l) => l.ready) as { pid: number } | undefined;
    assert.ok(ready, `the child never started\n${dead.stderr}`);
    // V8 aborts the process: SIGABRT, after its "heap out of memory" line.
    assert.equal(dead.signal ?? String(dead.code), 'SIGABRT', dead.stderr.slice(-2000));
    assert.match(dead.stderr, /JavaScript heap out of memory/);
    // Near the limit it wrote a diagnostic report and an allocation profile, no heap snapshot.
    const near = dead.lines.find((l) => (l.rule as { rule?: string } | undefined)?.rule === 'near-limit') as
      | {
          rule: { observed: number };
          captures: {
            diagnosticReport?: { file: string };
            allocationProfile?: { file: string };
            heapSnapshot?: unknown;
            notTaken?: string[];
          };
        }
      | undefined;
    assert.ok(near, `no near-limit firing before the crash\n${dead.stderr.slice(-3000)}`);
    assert.ok(near.rule.observed >= 0.75, `observed ${near.rule.observed}`);
    assert.ok(
      near.captures.diagnosticReport && fs.existsSync(near.captures.diagnosticReport.file),
      JSON.stringify(near.captures),
    );
    assert.ok(
      near.captures.allocationProfile && fs.existsSync(near.captures.allocationProfile.file),
      JSON.stringify(near.captures),
    );
    assert.equal(near.captures.heapSnapshot, undefined);
    // Node's own fatal-error report landed in the dump directory.
    assert.ok(
      fs.readdirSync(dumpDir).some((n) => n.startsWith(`report.`) && n.includes(`.${ready.pid}.`)),
      fs.readdirSync(dumpDir).join(', '),
    );

    const next = await nextStart(dumpDir);
    assert.equal(next.previousRun.pid, ready.pid);
    assert.equal(next.previousRun.cause, 'heap-out-of-memory');
    assert.match(next.previousRun.evidence.join('\n'), /V8 ran out of heap: .*JavaScript heap out of memory/);
    assert.match(
      next.previousRun.evidence.join('\n'),
      /came near its limit .*after a full GC|came near its limit .*heap in use/,
    );
    assert.ok(
      next.previousRun.files.some((f) => f.startsWith('diagnostic-report-')),
      next.previousRun.files.join(', '),
    );
    assert.ok(
      next.previousRun.files.some((f) => f.startsWith('allocation-profile-')),
      next.previousRun.files.join(', '),
    );
    const dir = next.incident.dir;
    const manifest = JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8')) as {
      triggers: Array<{ kind: string }>;
      captures: Array<{ kind: string; file: string }>;
    };
    assert.equal(manifest.triggers[0]!.kind, 'previous-run');
    const kinds = manifest.captures.map((c) => c.kind);
    for (const kind of ['previous-run', 'previous-samples', 'fatal-error-report', 'previous-run-capture'])
      assert.ok(kinds.includes(kind), `${kind} in ${kinds.join(', ')}`);
    const samples = JSON.parse(fs.readFileSync(path.join(dir, 'previous-samples.json'), 'utf8')) as Array<{
      memory: { heapUsed: number };
    }>;
    assert.ok(samples.length >= 10, `${samples.length} samples persisted`);
    assert.ok(samples.at(-1)!.memory.heapUsed > 40 << 20, `last heap ${samples.at(-1)!.memory.heapUsed}`);
    // Reported once: the dead run's record moved into the incident.
    assert.deepEqual(fs.readdirSync(path.join(dumpDir, 'runs')), []);
  });

  it('a child in a v1 memory cgroup killed by the kernel: the next start says OOM kill (root)', async function () {
    this.timeout(60_000);
    const { dir, reason } = writableV1Dir('memory');
    skipUnless(this, dir !== undefined, reason!);
    const dumpDir = tempDir('sysprobe-oomkill-');
    const cgroup = makeCgroup(dir!, { 'memory.limit_in_bytes': String(200 << 20) });
    try {
      const dead = await dies('sh', inCgroup(cgroup, [CHILD, 'leak-native', dumpDir]), 40_000);
      assert.ok(
        dead.lines.find((l) => l.ready),
        `the child never started\n${dead.stderr}`,
      );
      assert.equal(dead.signal ?? String(dead.code), 'SIGKILL', dead.stderr.slice(-2000));
      const oomControl = fs.readFileSync(path.join(cgroup, 'memory.oom_control'), 'utf8');
      assert.match(oomControl, /oom_kill [1-9]/);
      const next = await nextStart(dumpDir, inCgroup(cgroup, [CHILD, 'next', dumpDir]));
      assert.equal(next.previousRun.cause, 'oom-kill');
      assert.match(
        next.previousRun.evidence[0]!,
        /OOM killer struck its memory cgroup .*oom_kill went from 0 to [1-9]/,
      );
      assert.match(next.previousRun.evidence[0]!, /limit 209715200 bytes/);
    } finally {
      await removeCgroup(cgroup);
    }
  });
});
