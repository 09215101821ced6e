/**
 * Issue 17, items 6, 7 and 8: the heap reader and CLI on files made to hurt them: one
 * huge string in a tiny gzip, a FIFO, a directory, a snapshot with no edges.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { heapScanner, readHeapSnapshot } from '../src/heap/reader.js';
import { tempDir } from './helpers.js';

const CLI = path.join(__dirname, '..', 'src', 'cli', 'main.js');
const READER = path.join(__dirname, '..', 'src', 'heap', 'reader.js');

const META = {
  node_fields: ['type', 'name', 'id', 'self_size', 'edge_count'],
  node_types: [
    ['hidden', 'array', 'string', 'object', 'code', 'closure', 'regexp', 'number', 'native', 'synthetic'],
    'string',
    'number',
    'number',
    'number',
  ],
  edge_fields: ['type', 'name_or_index', 'to_node'],
  edge_types: [
    ['context', 'element', 'property', 'internal', 'hidden', 'shortcut', 'weak'],
    'string_or_number',
    'node',
  ],
};

/** A gzipped snapshot whose one string is `stringBytes` of 'A': megabytes on disk. Made in a child so this loop stays free. */
function makeHugeStringGzip(file: string, stringBytes: number): void {
  execFileSync(process.execPath, [
    '-e',
    `
    const fs = require('node:fs'), zlib = require('node:zlib');
    const gzip = zlib.createGzip({ level: 9 });
    gzip.pipe(fs.createWriteStream(${JSON.stringify(file)}));
    gzip.write(${JSON.stringify(`{"snapshot":{"meta":${JSON.stringify(META)},"node_count":1,"edge_count":1},"nodes":[9,0,1,0,1],"edges":[3,0,0],"strings":["`)});
    const block = Buffer.alloc(1 << 20, 'A');
    let left = ${stringBytes};
    (function more() {
      while (left > 0) { left -= block.length; if (!gzip.write(block)) return gzip.once('drain', more); }
      gzip.end('"]}');
    })();
  `,
  ]);
}

function noEdgesSnapshot(): string {
  return JSON.stringify({
    snapshot: { meta: META, node_count: 2, edge_count: 0 },
    nodes: [9, 0, 1, 0, 0, 3, 1, 3, 16, 0],
    edges: [],
    strings: ['', 'Lonely'],
  });
}

describe('security: the heap reader and CLI on hostile files', () => {
  it('one 1 GiB string in a small gzip: BAD_SNAPSHOT early, RSS bounded (not the whole string buffered)', function () {
    this.timeout(120_000);
    const file = path.join(tempDir('sysprobe-heap-sec-'), 'huge-string.heapsnapshot.gz');
    makeHugeStringGzip(file, 1024 ** 3);
    assert.ok(fs.statSync(file).size < 4 * 1024 ** 2, `the gzip is small on disk (${fs.statSync(file).size} bytes)`);
    const result = spawnSync(
      '/usr/bin/time',
      [
        '-f',
        'MAXRSS %M',
        process.execPath,
        '-e',
        `
      require(${JSON.stringify(READER)}).readHeapSnapshot(${JSON.stringify(file)}).then(
        () => { console.log('READ'); },
        (err) => { console.log('ERR', err.code, err.message); });
    `,
      ],
      { encoding: 'utf8', timeout: 90_000 },
    );
    const maxRssMiB = Number(/MAXRSS (\d+)/.exec(result.stderr)?.[1]) / 1024;
    assert.match(result.stdout, /^ERR SYSPROBE_ERR_BAD_SNAPSHOT .*string longer than/m, result.stdout + result.stderr);
    assert.ok(maxRssMiB < 300, `peak RSS ${maxRssMiB} MiB`);
  });

  it('bounds the total string bytes by maxStringBytes', async () => {
    const file = path.join(tempDir('sysprobe-heap-sec-'), 'strings.heapsnapshot');
    fs.writeFileSync(
      file,
      JSON.stringify({
        snapshot: { meta: META, node_count: 1, edge_count: 0 },
        nodes: [9, 0, 1, 0, 0],
        edges: [],
        strings: ['x'.repeat(5000), 'y'.repeat(5000)],
      }),
    );
    await assert.rejects(readHeapSnapshot(file, { maxStringBytes: 8000 }), {
      code: 'SYSPROBE_ERR_BAD_SNAPSHOT',
      message: /strings take more than/,
    });
    assert.equal((await readHeapSnapshot(file, { maxStringBytes: 20_000 })).strings.length, 2);
  });

  it('sysprobe heap summary on a FIFO ends with a non-zero exit within seconds; on a directory exits 1 with BAD_SNAPSHOT', async function () {
    this.timeout(30_000);
    const dir = tempDir('sysprobe-heap-sec-');
    const fifo = path.join(dir, 'pipe.heapsnapshot');
    execFileSync('mkfifo', [fifo]);
    const good = path.join(dir, 'good.heapsnapshot');
    fs.writeFileSync(good, noEdgesSnapshot());
    for (const args of [
      ['summary', fifo],
      ['diff', fifo, good],
      ['diff', good, fifo],
    ]) {
      const started = Date.now();
      const child = spawn(process.execPath, [CLI, 'heap', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => {
        stderr += d.toString();
      });
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
      clearTimeout(timer);
      assert.equal(code, 1, `heap ${args.join(' ')}: exit ${code} after ${Date.now() - started} ms; ${stderr}`);
      assert.match(stderr, /SYSPROBE_ERR_BAD_SNAPSHOT/);
    }
    const onDir = spawnSync(process.execPath, [CLI, 'heap', 'summary', dir], { encoding: 'utf8', timeout: 10_000 });
    assert.equal(onDir.status, 1, onDir.stderr);
    assert.match(onDir.stderr, /SYSPROBE_ERR_BAD_SNAPSHOT/);
  });

  for (const scanner of ['native', 'js'] as const) {
    it(`a snapshot with no edges reads the same with the ${scanner} scanner`, async () => {
      const file = path.join(tempDir('sysprobe-heap-sec-'), 'no-edges.heapsnapshot');
      fs.writeFileSync(file, noEdgesSnapshot());
      heapScanner(scanner);
      try {
        const raw = await readHeapSnapshot(file);
        assert.equal(raw.nodeCount, 2);
        assert.equal(raw.edgeCount, 0);
        assert.deepEqual([...raw.selfSizes], [0, 16]);
      } finally {
        heapScanner('native');
      }
    });
  }
});
