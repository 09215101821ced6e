import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { leakSnapshots, syntheticSnapshot } from './heap-fixtures.js';
import { tempDir } from './helpers.js';

const BIN = path.resolve(__dirname, '..', 'src', 'cli', 'main.js');

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

async function sysprobe(...args: string[]): Promise<Run> {
  try {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [BIN, ...args], { timeout: 60_000 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

describe('sysprobe heap (CLI)', function () {
  this.timeout(120_000);
  let files: string[] = [];
  const tmp = tempDir('sysprobe-heap-cli-');
  before(async () => {
    files = await leakSnapshots('map', 2000);
  });

  it('the bin starts with a shebang', () => {
    assert.match(fs.readFileSync(BIN, 'utf8'), /^#!\/usr\/bin\/env node\n/);
  });

  it('heap diff A B C --json prints one JSON document whose first leak is the Map-held class', async () => {
    const r = await sysprobe('heap', 'diff', ...files, '--json');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, '', 'no progress bar when stderr is not a terminal');
    const d = JSON.parse(r.stdout) as {
      files: string[];
      leaks: Array<{ constructor: string; count: number; retainedSize: number; retainerPath: string }>;
      constructors: Array<{ name: string; retainedSizeDelta: number }>;
    };
    assert.deepEqual(d.files, files);
    assert.equal(d.leaks[0]!.constructor, 'LeakyEntry');
    assert.equal(d.leaks[0]!.count, 2000);
    assert.match(d.leaks[0]!.retainerPath, /Map "sessionCache" → LeakyEntry$/);
    for (let i = 1; i < d.leaks.length; i++)
      assert.ok(d.leaks[i - 1]!.retainedSize >= d.leaks[i]!.retainedSize, 'ranked by retained size');
    const abs = d.constructors.map((c) => Math.abs(c.retainedSizeDelta));
    assert.deepEqual(
      abs,
      [...abs].sort((x, y) => y - x),
      'constructors sorted by |retainedSizeDelta|',
    );
  });

  it('heap diff prints readable text by default, and a progress bar on stderr with --progress', async () => {
    const r = await sysprobe('heap', 'diff', ...files, '--progress', '--top', '3');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /likely leaks/);
    assert.match(r.stdout, /1\. LeakyEntry ×2000 {2}retained/);
    assert.match(r.stderr, /reading 3 snapshots \[#+\] 100%/);
  });

  it('heap summary FILE --json lists totals by constructor', async () => {
    const r = await sysprobe('heap', 'summary', files[2]!, '--json', '--top', '500');
    assert.equal(r.code, 0, r.stderr);
    const s = JSON.parse(r.stdout) as {
      constructors: Array<{ name: string; count: number; selfSize: number; retainedSize: number }>;
    };
    const leaky = s.constructors.find((c) => c.name === 'LeakyEntry');
    assert.equal(leaky?.count, 2200);
    assert.ok(leaky.retainedSize > leaky.selfSize);
    const text = await sysprobe('heap', 'summary', files[2]!);
    assert.match(text.stdout, /largest retainers:/);
  });

  for (const [name, content] of [
    ['empty', ''],
    ['not JSON', 'not a snapshot'],
    ['truncated', syntheticSnapshot().slice(0, 300)],
  ] as const) {
    it(`exits 1 with a message on stderr for a ${name} file`, async () => {
      const file = path.join(tmp, `${name.replace(/\W/g, '')}.heapsnapshot`);
      fs.writeFileSync(file, content);
      const r = await sysprobe('heap', 'summary', file, '--json');
      assert.equal(r.code, 1);
      assert.equal(r.stdout, '');
      assert.match(r.stderr, /^sysprobe heap: .*SYSPROBE_ERR_BAD_SNAPSHOT/);
    });
  }

  it('exits 2 for usage errors', async () => {
    assert.equal((await sysprobe('heap', 'diff', files[0]!)).code, 2);
    assert.equal((await sysprobe('heap', 'frobnicate')).code, 2);
    assert.equal((await sysprobe('heap', 'summary', files[0]!, '--top', 'x')).code, 2);
  });
});
