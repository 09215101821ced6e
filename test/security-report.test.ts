/**
 * Issue 17, items 4 and 10: `sysprobe report DIR` on a folder someone else prepared:
 * links to secrets and victims, wrong types in the manifest, a huge samples.json. The
 * CLI runs as a real child process; its exit code and memory are what is checked.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { tempDir } from './helpers.js';

const CLI = path.join(__dirname, '..', 'src', 'cli', 'main.js');
const SECRET = 'TOP-SECRET-LINE-do-not-render';

/** A small, valid incident folder. */
function incident(manifest: Record<string, unknown> = {}): string {
  const dir = tempDir('sysprobe-report-sec-');
  const openedAt = Date.parse('2026-01-01T00:00:00Z');
  fs.writeFileSync(
    path.join(dir, 'manifest.json'),
    JSON.stringify({
      id: 'x',
      status: 'closed',
      rules: ['stall'],
      triggers: [{ at: openedAt, rule: 'stall', value: 'eventLoop.lagMaxMs', observed: 400, threshold: 150 }],
      openedAt,
      closedAt: openedAt + 5000,
      captures: [],
      notTaken: [],
      traces: [],
      ...manifest,
    }),
  );
  fs.writeFileSync(
    path.join(dir, 'samples.json'),
    JSON.stringify([
      { time: openedAt, eventLoop: { lagMaxMs: 3 } },
      { time: openedAt + 1000, eventLoop: { lagMaxMs: 400 } },
    ]),
  );
  fs.writeFileSync(path.join(dir, 'logs.jsonl'), '{"msg":"hello"}\n');
  return dir;
}

/** Runs `sysprobe report` under /usr/bin/time: exit code, stderr, and the peak RSS in MiB. */
function report(dir: string): { status: number | null; stderr: string; maxRssMiB: number } {
  const result = spawnSync('/usr/bin/time', ['-f', 'MAXRSS %M', process.execPath, CLI, 'report', dir], {
    encoding: 'utf8',
    timeout: 60_000,
  });
  const rss = /MAXRSS (\d+)/.exec(result.stderr);
  return { status: result.status, stderr: result.stderr, maxRssMiB: rss ? Number(rss[1]) / 1024 : NaN };
}

function victim(): string {
  const file = path.join(tempDir('sysprobe-victim-'), 'secret');
  fs.writeFileSync(file, `${SECRET}\n`, { mode: 0o600 });
  return file;
}

describe('security: sysprobe report on a folder prepared by someone else', () => {
  it('reads nothing through a link: logs.jsonl and samples.json linked to a secret file stay out of the page', () => {
    const dir = incident();
    const secret = victim();
    for (const name of ['logs.jsonl', 'samples.json']) {
      fs.rmSync(path.join(dir, name));
      fs.symlinkSync(secret, path.join(dir, name));
    }
    const { status, stderr } = report(dir);
    assert.equal(status, 0, stderr);
    const html = fs.readFileSync(path.join(dir, 'report.html'), 'utf8');
    assert.ok(!html.includes(SECRET), 'the secret is not in the page');
    assert.match(html, /logs\.jsonl is a symbolic link; not read/);
  });

  it('writes nothing through a link: report.html and report.html.partial linked to a victim leave it untouched', () => {
    const dir = incident();
    const target = victim();
    fs.symlinkSync(target, path.join(dir, 'report.html'));
    fs.symlinkSync(target, path.join(dir, 'report.html.partial'));
    const { status, stderr } = report(dir);
    assert.equal(status, 0, stderr);
    assert.equal(fs.readFileSync(target, 'utf8'), `${SECRET}\n`, 'the victim is untouched');
    const stat = fs.lstatSync(path.join(dir, 'report.html'));
    assert.ok(stat.isFile(), 'report.html is a regular file now, not the link');
    assert.equal(stat.mode & 0o777, 0o600);
  });

  it('never crashes (exit 3) on wrong types in a manifest: it renders what is valid and says what was left out, or refuses with exit 1', () => {
    const cases: Array<Record<string, unknown>> = [
      { rules: 'abc' },
      { triggers: [{ at: Date.now(), rule: 'r', value: { nested: true }, observed: 'x', threshold: null }] },
      { captures: [{ kind: 5, file: 'a' }] },
      { triggers: [null] },
      { openedAt: 1e300 },
      { closedAt: 'soon', traces: 'none', notTaken: [1, 2], versions: 'v' },
      { dependencies: [{ remoteAddress: 5 }] },
    ];
    for (const manifest of cases) {
      const dir = incident(manifest);
      const { status, stderr } = report(dir);
      assert.ok(status === 0 || status === 1, `${JSON.stringify(manifest)}: exit ${status}; ${stderr}`);
      if (status === 1) assert.match(stderr, /not an incident manifest/);
    }
    const samples = incident();
    fs.writeFileSync(
      path.join(samples, 'samples.json'),
      JSON.stringify([{ time: 'x' }, null, 5, { time: Date.now() }]),
    );
    assert.equal(report(samples).status, 0);
    assert.match(
      fs.readFileSync(path.join(samples, 'report.html'), 'utf8'),
      /3 samples without a valid time are left out/,
    );
  });

  it('a 300 MB samples.json is left out with a note, in bounded memory', function () {
    this.timeout(60_000);
    const dir = incident();
    const file = path.join(dir, 'samples.json');
    fs.writeFileSync(file, '[');
    fs.truncateSync(file, 300 * 1024 ** 2); // sparse: costs no disk
    const { status, stderr, maxRssMiB } = report(dir);
    assert.equal(status, 0, stderr);
    assert.ok(maxRssMiB < 250, `peak RSS ${maxRssMiB} MiB`);
    assert.match(
      fs.readFileSync(path.join(dir, 'report.html'), 'utf8'),
      /samples\.json not read: .*over the \d+ this reads/,
    );
  });
});
