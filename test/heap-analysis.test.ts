import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { diffHeapSnapshots, summarizeHeapSnapshot, ErrorCode, SysprobeError } from '../src/index.js';
import { HeapGraph, dominatorScratchShape, useNativeDominatorPass } from '../src/heap/graph.js';
import { touchedArraysInThread } from '../src/heap/touch-thread.js';
import { useNativePathSearch } from '../src/heap/paths.js';
import { bigArray, HUGE_PAGE_MIN_BYTES } from '../src/heap/arrays.js';
import { classTotals, IdSet, roomForAThread } from '../src/heap/analysis.js';
import { heapScanner, parseHeapSnapshot, readHeapSnapshot, type RawSnapshot } from '../src/heap/reader.js';
import { chainSnapshot, leakSnapshots, syntheticSnapshot, type LeakKind } from './heap-fixtures.js';
import { tempDir } from './helpers.js';
import { nativeAddon, needs } from './requirements.js';

const tmp = tempDir('sysprobe-heap-test-');
const COLUMNS = [
  'nodeTypes',
  'nodeNames',
  'nodeIds',
  'selfSizes',
  'firstEdge',
  'edgeTypes',
  'edgeNames',
  'edgeTargets',
] as const;
const HEAP_SCAN = nativeAddon('heap_scan');

function assertSameColumns(x: RawSnapshot, y: RawSnapshot, what: string): void {
  for (const column of COLUMNS) assert.deepEqual(x[column], y[column], `${column} ${what}`);
  assert.deepEqual(x.strings.toArray(), y.strings.toArray(), `strings ${what}`);
}

function writeFile(name: string, text: string): string {
  const file = path.join(tmp, `${name.replace(/\W+/g, '-')}.heapsnapshot`);
  fs.writeFileSync(file, text);
  return file;
}

/**
 * A chain of 3000 nodes whose numbers take every length from 1 to 10 digits (2^32 - 1 too),
 * some with leading zeros (12 digits in all), between separators of every kind and count:
 * what V8 writes (`,` and `\n,`) and what it may (spaces, `\r\n`, tabs, five in a row).
 */
function oddNumbersSnapshot(): string {
  const meta = (JSON.parse(syntheticSnapshot()) as { snapshot: { meta: unknown } }).snapshot.meta;
  const N = 3000,
    NF = 5;
  const wide = [0, 7, 42, 123, 4096, 65535, 1048576, 12345678, 987654321, 4294967295];
  const seps = [',', '\n,', ', ', ' ,\r\n\t ', ',\t'];
  const join = (record: string[], i: number): string => record.join(seps[i % seps.length]!);
  const nodes: string[] = [],
    edges: string[] = [];
  for (let i = 0; i < N; i++) {
    const id = i === 3 ? '4294967295' : String(wide[(i * 7) % wide.length]);
    const self = i === 5 ? '000000000007' : i % 11 === 0 ? '0000000042' : String(wide[i % wide.length]);
    nodes.push(join([i === 0 ? '9' : '3', String(i % 13), id, self, i < N - 1 ? '1' : '0'], i));
    if (i < N - 1)
      edges.push(
        join(
          [String(i % 3 === 0 ? 1 : 2), String(i % 3 === 0 ? wide[i % wide.length] : i % 13), String((i + 1) * NF)],
          i,
        ),
      );
  }
  const strings = Array.from({ length: 13 }, (_, i) => `s${i}`);
  return `{"snapshot":{"meta":${JSON.stringify(meta)},"node_count":${N},"edge_count":${N - 1},"trace_function_count":0},\n"nodes":[${nodes.join('\n,')}],\n"edges":[${edges.join('\n,')}],\n"trace_function_infos":[],"trace_tree":[],"samples":[],"locations":[],\n"strings":${JSON.stringify(strings)}}`;
}

describe('heap analysis: a hand-written graph', () => {
  const graph = new HeapGraph(parseHeapSnapshot(syntheticSnapshot()));
  const byName = (name: string): number => {
    for (let n = 0; n < graph.nodeCount; n++) if (graph.nodeName(n) === name) return n;
    throw new Error(`no node ${name}`);
  };

  it('computes dominators and retained sizes equal to the hand-computed ones', () => {
    const expected: Record<string, [string, number]> = {
      App: ['', 150],
      Beta: ['App', 20],
      Gamma: ['App', 30],
      Delta: ['App', 90],
      Eps: ['Delta', 50],
      Fox: ['', 60],
    };
    for (const [name, [dom, retained]] of Object.entries(expected)) {
      const n = byName(name);
      assert.equal(graph.retainedSize(n), retained, `retained size of ${name}`);
      assert.equal(graph.nodeName(graph.dominators[n]!), dom, `dominator of ${name}`);
    }
    assert.equal(graph.retainedSize(0), 210, 'the root retains everything');
  });

  it('finds the shortest retainer path, never through a weak edge', () => {
    assert.equal(graph.retainerPath(byName('Eps')), 'App "app" → Beta "b" → Delta "d" → Eps "e"');
    assert.equal(graph.retainerPath(byName('Fox')), '(unreachable)');
  });

  it('totals by constructor', () => {
    const totals = classTotals(graph);
    assert.deepEqual(totals.get('Delta'), { name: 'Delta', count: 1, selfSize: 40, retainedSize: 90 });
    assert.deepEqual(totals.get('App'), { name: 'App', count: 1, selfSize: 10, retainedSize: 150 });
  });

  it('handles a 200,000-long chain (a deep dominator tree) without recursion', () => {
    const chain = new HeapGraph(parseHeapSnapshot(chainSnapshot(200_000)));
    assert.equal(chain.retainedSize(1), 200_000, 'the first link retains the whole chain');
    assert.equal(chain.retainedSize(200_000), 1);
    assert.equal(chain.dominators[150_000], 149_999);
    const totals = classTotals(chain);
    assert.equal(totals.get('Link')?.retainedSize, 200_000, 'links holding links count once');
  });

  it('reads the same arrays whatever the chunk size (tokens split across reads), with the C loop and the JS one', async () => {
    const file = path.join(tmp, 'synthetic.heapsnapshot');
    fs.writeFileSync(file, syntheticSnapshot());
    const whole = parseHeapSnapshot(syntheticSnapshot());
    assert.deepEqual([...whole.nodeIds], [1, 3, 5, 7, 9, 11, 13]);
    try {
      for (const scanner of ['native', 'js'] as const) {
        heapScanner(scanner);
        for (const chunkBytes of [1, 3, 7, 64])
          assertSameColumns(
            await readHeapSnapshot(file, { chunkBytes }),
            whole,
            `with ${chunkBytes}-byte reads (${scanner})`,
          );
      }
    } finally {
      heapScanner('native');
    }
  });

  it('reads a gzipped snapshot like the plain one; a cut or corrupt gzip stream is BAD_SNAPSHOT', async () => {
    const text = Buffer.from(syntheticSnapshot());
    const gz = path.join(tmp, 'synthetic.heapsnapshot.gz');
    const packed = zlib.gzipSync(text);
    fs.writeFileSync(gz, packed);
    const progress: number[] = [];
    assertSameColumns(
      await readHeapSnapshot(gz, { onProgress: (read) => progress.push(read) }),
      parseHeapSnapshot(text),
      'from gzip',
    );
    assert.equal(progress.at(-1), packed.length, "progress counts the file's (compressed) bytes");
    fs.writeFileSync(gz, packed.subarray(0, packed.length - 20));
    await assert.rejects(readHeapSnapshot(gz), { code: ErrorCode.BAD_SNAPSHOT, message: /gzip/ });
    const flipped = Buffer.from(packed);
    flipped[20] = flipped[20]! ^ 0xff;
    fs.writeFileSync(gz, flipped);
    await assert.rejects(readHeapSnapshot(gz), { code: ErrorCode.BAD_SNAPSHOT });
    fs.writeFileSync(gz, zlib.gzipSync('not a snapshot at all'));
    await assert.rejects(readHeapSnapshot(gz), { code: ErrorCode.BAD_SNAPSHOT, message: /not a heap snapshot/ });
  });

  it('reads records of numbers of every length between any separators alike with the C loop and the JS one', async function () {
    needs(this, HEAP_SCAN);
    const text = oddNumbersSnapshot();
    const file = path.join(tmp, 'odd-numbers.heapsnapshot');
    fs.writeFileSync(file, text);
    try {
      heapScanner('js');
      const js = parseHeapSnapshot(text);
      assert.equal(js.nodeIds[3], 4294967295, 'the largest id');
      assert.equal(js.selfSizes[5], 7, 'a 12-digit number with leading zeros');
      heapScanner('native');
      for (const chunkBytes of [7, 1000, 4 << 20])
        assertSameColumns(await readHeapSnapshot(file, { chunkBytes }), js, `with ${chunkBytes}-byte reads`);
      // Faults deep in each array, far from its start: the same coded error from both loops.
      const nodesAt = text.indexOf('"nodes":[') + 5000,
        edgesAt = text.indexOf('"edges":[') + 5000;
      const cut = (at: number, insert: string): string => {
        const start = text.indexOf(',', at) + 1;
        return text.slice(0, start) + insert + text.slice(text.indexOf(',', start));
      };
      const faults = {
        'a number over 2^32 - 1': cut(nodesAt, '4294967296'),
        'a letter': cut(nodesAt, '12x4'),
        'a negative number': cut(edgesAt, '-5'),
        'an 11-digit number': cut(edgesAt, '12345678901'),
      };
      for (const [what, bad] of Object.entries(faults)) {
        const errors: string[] = [];
        for (const scanner of ['native', 'js'] as const) {
          heapScanner(scanner);
          const err = await readHeapSnapshot(writeFile(`odd-${what}`, bad)).then(
            () => assert.fail(`${what} was read (${scanner})`),
            (e: unknown) => e as SysprobeError,
          );
          assert.equal(err.code, ErrorCode.BAD_SNAPSHOT, `${what} (${scanner})`);
          errors.push(err.message.replace(/near byte \d+/, 'near byte …')); // the JS loop says where its window began
        }
        assert.equal(errors[0], errors[1], `the same message for ${what}`);
      }
    } finally {
      heapScanner('native');
    }
  });

  it('uses the C loop when the addon built', function () {
    needs(this, HEAP_SCAN);
    assert.equal(heapScanner(), 'native');
  });

  it('reads less when asked: without edge names (same dominators, no paths), without edges (nodes only)', async () => {
    const file = path.join(tmp, 'synthetic-parts.heapsnapshot');
    fs.writeFileSync(file, syntheticSnapshot());
    const unnamed = new HeapGraph(await readHeapSnapshot(file, { edgeNames: false }));
    assert.deepEqual(unnamed.retainedSizes, graph.retainedSizes);
    assert.deepEqual(unnamed.dominators, graph.dominators);
    assert.throws(() => unnamed.retainerPath(byName('Eps')), /without its edge names/);
    const nodesOnly = await readHeapSnapshot(file, { edges: false });
    assert.equal(nodesOnly.edgeTargets.length, 0);
    assert.deepEqual(nodesOnly.nodeIds, parseHeapSnapshot(syntheticSnapshot()).nodeIds);
    assert.throws(() => new HeapGraph(nodesOnly).analyze(), /without its edges/);
  });

  it('an IdSet answers like a Set, for dense ids (a bitmap), sparse ones (binary search), and dense ones with a few far out', () => {
    let seed = 7;
    const rand = (n: number): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    const cases: Array<[string, Uint32Array, number]> = [
      ['dense from 0', Uint32Array.from({ length: 5_000 }, () => rand(20_000)), 20_000],
      ['dense from 1e6', Uint32Array.from({ length: 5_000 }, () => 1e6 + rand(20_000)), 1e6 + 20_000],
      ['sparse', Uint32Array.from({ length: 5_000 }, () => rand(2 ** 31) * 2 + (rand(2) ? 1 : 0)), 2 ** 32 - 1],
      [
        // A snapshot's ids: odd, from 1 upwards, and a few native objects' near 2^32.
        'dense with outliers',
        Uint32Array.from({ length: 5_000 }, (_, i) =>
          i % 500 === 0 ? 2 ** 32 - 1 - rand(1000) * 2 : rand(20_000) * 2 + 1,
        ),
        2 ** 32 - 1,
      ],
      ['empty', new Uint32Array(0), 1000],
      ['one', Uint32Array.of(2 ** 32 - 1), 2 ** 32 - 1],
    ];
    for (const [what, ids, range] of cases) {
      const set = new IdSet(ids),
        reference = new Set(ids);
      for (let k = 0; k < 20_000; k++) {
        const probe = k % 2 && ids.length ? ids[rand(ids.length)]! : rand(range + 1);
        assert.equal(set.has(probe), reference.has(probe), `id ${probe} in a set, ${what}`);
      }
      for (const probe of [0, 1, range, range + 1, ...ids.slice(0, 3).map((id) => id + 1)])
        assert.equal(set.has(probe), reference.has(probe), `id ${probe} in a set, ${what}`);
    }
  });

  it('decodes escaped and non-ASCII strings, whichever byte a read ends on; a bad escape is BAD_SNAPSHOT', async () => {
    const text = syntheticSnapshot().replace('"Fox"', '"F\\"o\\\\x\\n\\u00e9 ü"');
    const raw = parseHeapSnapshot(text);
    assert.ok(raw.strings.toArray().includes('F"o\\x\né ü'));
    const file = path.join(tmp, 'escaped.heapsnapshot');
    fs.writeFileSync(file, text);
    for (const chunkBytes of [1, 2, 3, 5])
      assert.deepEqual(
        (await readHeapSnapshot(file, { chunkBytes })).strings.toArray(),
        raw.strings.toArray(),
        `${chunkBytes}-byte reads`,
      );
    fs.writeFileSync(file, syntheticSnapshot().replace('"Fox"', '"F\\qox"'));
    await assert.rejects(
      readHeapSnapshot(file),
      (err: SysprobeError) => err.code === ErrorCode.BAD_SNAPSHOT && /bad escape/.test(err.message),
    );
  });
});

for (const scanner of ['native', 'js'] as const)
  describe(`heap analysis: malformed input ends in a coded error (${scanner} number loop)`, () => {
    before(() => {
      heapScanner(scanner);
    });
    after(() => {
      heapScanner('native');
    });
    const cases: Record<string, () => Buffer | string> = {
      'an empty file': () => '',
      'not JSON': () => 'hello, this is not a heap snapshot\n',
      'JSON that is not a snapshot': () => JSON.stringify({ nodes: [1, 2, 3], strings: [] }),
      'random bytes': () => Buffer.from(Array.from({ length: 100_000 }, (_, i) => (i * 7919 + 13) % 251)),
      'a wrong meta (no "id" field)': () => syntheticSnapshot().replace('"type","name","id"', '"type","name","ident"'),
      'a node count that disagrees with the array': () =>
        syntheticSnapshot().replace('"node_count":7', '"node_count":9'),
      'a truncated file': () => syntheticSnapshot().slice(0, 400),
      'an edge pointing outside the nodes': () => syntheticSnapshot().replace('"edges":[2,7,5', '"edges":[2,7,500'),
      'a letter inside the nodes': () => syntheticSnapshot().replace('"nodes":[9,0,1', '"nodes":[9,x,1'),
      'a number above 2^32 - 1': () => syntheticSnapshot().replace('"nodes":[9,0,1', '"nodes":[9,0,4294967296'),
      'a nodes array that ends inside a record': () =>
        syntheticSnapshot().replace('"nodes":[9,0,1', '"nodes":[9,9,0,1'),
    };
    for (const [name, make] of Object.entries(cases)) {
      it(`rejects ${name}`, async () => {
        const file = path.join(tmp, `bad-${name.replace(/\W+/g, '-')}.heapsnapshot`);
        fs.writeFileSync(file, make());
        await assert.rejects(readHeapSnapshot(file), (err: unknown) => {
          assert.ok(err instanceof SysprobeError, String(err));
          assert.equal(err.code, ErrorCode.BAD_SNAPSHOT);
          return true;
        });
      });
    }

    it('rejects a missing file with the same code', async () => {
      await assert.rejects(readHeapSnapshot(path.join(tmp, 'nope.heapsnapshot')), { code: ErrorCode.BAD_SNAPSHOT });
    });

    it('survives fuzzed bytes: every mutation parses or fails with BAD_SNAPSHOT, none hangs or throws otherwise', () => {
      const good = Buffer.from(syntheticSnapshot());
      let seed = 12345;
      const rand = (n: number): number => {
        seed = (seed * 1103515245 + 12345) & 0x7fffffff;
        return seed % n;
      };
      let rejected = 0;
      for (let round = 0; round < 2000; round++) {
        const buf = Buffer.from(good);
        for (let k = 1 + rand(3); k > 0; k--) buf[rand(buf.length)] = rand(256);
        try {
          const graph = new HeapGraph(parseHeapSnapshot(rand(4) === 0 ? buf.subarray(0, rand(buf.length)) : buf));
          graph.analyze();
          graph.retainerPath(graph.nodeCount - 1);
        } catch (err) {
          assert.equal((err as SysprobeError).code, ErrorCode.BAD_SNAPSHOT, `round ${round}: ${String(err)}`);
          rejected++;
        }
      }
      assert.ok(rejected > 500, `most mutations are caught (${rejected} of 2000)`);
    });
  });

describe('heap analysis: real snapshots with known leaks', function () {
  this.timeout(120_000);
  const snapshots = new Map<LeakKind, string[]>();
  before(async () => {
    const kinds: LeakKind[] = ['map', 'closure', 'listener'];
    const files = await Promise.all(kinds.map((k) => leakSnapshots(k)));
    kinds.forEach((k, i) => snapshots.set(k, files[i]!));
  });

  const expectations: Array<[LeakKind, string, RegExp]> = [
    ['map', 'LeakyEntry', /Object "app" → Map "sessionCache" → LeakyEntry$/],
    ['closure', 'ClosureLeak', /remember\(\) → context → Array "seen" → ClosureLeak$/],
    [
      'listener',
      'ListenerLeak',
      /EventEmitter "bus" → Object "_events" → Array "tick" → onTick\(\) → context → ListenerLeak$/,
    ],
  ];
  for (const [kind, ctor, pathPattern] of expectations) {
    it(`the 3-snapshot diff ranks a leak through a ${kind} first, with a retainer path that names the holder`, async () => {
      const d = await diffHeapSnapshots(snapshots.get(kind)!, { inProcess: true, top: 10 });
      const first = d.leaks[0]!;
      assert.equal(first.constructor, ctor, JSON.stringify(d.leaks.slice(0, 3), null, 1));
      assert.equal(first.count, 3000, 'the objects made between A and B, not the 200 after');
      assert.ok(first.retainedSize >= 3000 * 200, `retains at least the payloads: ${first.retainedSize}`);
      assert.match(first.retainerPath, pathPattern);
      assert.ok(!d.leaks.some((l) => l.constructor === 'Transient'), 'garbage that died before C is no leak');
      // The per-constructor delta counts all that survive in C.
      const delta = d.constructors.find((c) => c.name === ctor)!;
      assert.equal(delta.countDelta, 3200);
      assert.ok(d.newObjects.byConstructor.some((c) => c.name === ctor && c.count === 3000));
    });
  }

  it('runs in a child process by default and gives the same answer', async () => {
    const files = snapshots.get('map')!;
    const readTo = new Map<number, [number, number]>();
    const [child, local] = await Promise.all([
      diffHeapSnapshots(files, { top: 5, onProgress: (p) => readTo.set(p.fileIndex, [p.bytesRead, p.totalBytes]) }),
      diffHeapSnapshots(files, { top: 5, inProcess: true }),
    ]);
    assert.deepEqual(child.leaks, local.leaks);
    assert.deepEqual(child.constructors, local.constructors);
    // The last file is read on a second thread meanwhile, so files report in any order; each to its end.
    assert.deepEqual([...readTo.keys()].sort(), [0, 1, 2], 'progress from the child for every file');
    for (const [i, [read, total]] of readTo)
      assert.ok(read === total && total === fs.statSync(files[i]!).size, `file ${i} read to its end`);
    const summary = await summarizeHeapSnapshot(files[2]!, { top: 10 });
    assert.ok(summary.constructors.some((c) => c.name === 'LeakyEntry' && c.count === 3200));
    const map = summary.topRetainers.find((r) => r.name === 'Map');
    assert.match(
      map?.retainerPath ?? '',
      /Object "app" → Map "sessionCache"$/,
      'the leaking Map is among the largest retainers',
    );
  });

  it('a two-snapshot diff has deltas and new objects but no leak list', async () => {
    const [a, b] = snapshots.get('map')!;
    const d = await diffHeapSnapshots([a!, b!], { inProcess: true });
    assert.deepEqual(d.leaks, []);
    assert.equal(d.constructors.find((c) => c.name === 'LeakyEntry')?.countDelta, 3000);
  });

  it('the C number loop and the JS one read a real snapshot alike', async function () {
    needs(this, HEAP_SCAN);
    const file = snapshots.get('listener')![2]!;
    try {
      heapScanner('js');
      const js = await readHeapSnapshot(file, { chunkBytes: 100_003 }); // odd chunks: numbers cut at every boundary
      heapScanner('native');
      assertSameColumns(await readHeapSnapshot(file), js, 'of a real snapshot');
    } finally {
      heapScanner('native');
    }
  });

  it('the C dominator pass and path search and the JS ones give the same tree, pre-order, retained sizes and paths, on every real snapshot', async function () {
    needs(this, HEAP_SCAN);
    try {
      for (const [kind, files] of snapshots) {
        const raw = await readHeapSnapshot(files[2]!);
        assert.equal(useNativeDominatorPass(false), false);
        assert.equal(useNativePathSearch(false), false);
        const js = new HeapGraph(raw);
        // Both passes run on first use: now, with the JS loops.
        assert.equal(js.retainerPath(0), '(root)');
        assert.equal(useNativeDominatorPass(true), true);
        assert.equal(useNativePathSearch(true), true);
        const c = new HeapGraph(raw);
        assert.deepEqual(c.dominators, js.dominators, `dominators, ${kind}`);
        assert.deepEqual(c.retainedSizes, js.retainedSizes, `retained sizes, ${kind}`);
        for (let n = 0; n < raw.nodeCount; n += 97)
          assert.equal(c.isStronglyHeld(n), js.isStronglyHeld(n), `pre-order, node ${n}, ${kind}`);
        let differ = 0;
        for (let n = 0; n < raw.nodeCount; n++) if (c.parentEdge(n) !== js.parentEdge(n)) differ++;
        assert.equal(differ, 0, `nodes whose path's last edge differs, ${kind}`);
        assert.equal(c.retainerPath(raw.nodeCount - 1), js.retainerPath(raw.nodeCount - 1), `a path, ${kind}`);
      }
    } finally {
      useNativeDominatorPass(true);
      useNativePathSearch(true);
    }
  });

  it('the dominator pass takes its arrays made (and their pages touched) on another thread, with the same answer', async function () {
    needs(this, HEAP_SCAN);
    const raw = await readHeapSnapshot(snapshots.get('map')![0]!, { edgeNames: false });
    const shape = dominatorScratchShape(raw.nodeCount, raw.edgeCount);
    const scratch = await touchedArraysInThread(shape);
    assert.ok(scratch, 'the thread made them');
    for (const [name, [kind, length]] of Object.entries(shape)) {
      const a: Uint32Array | Float64Array = scratch[name as keyof typeof shape];
      assert.ok(a instanceof (kind === 'f64' ? Float64Array : Uint32Array), `${name} is ${kind}`);
      assert.equal(a.length, length, `${name}'s length`);
      assert.ok(
        a.every((x) => x === 0),
        `${name} is zeroed`,
      );
    }
    const given = new HeapGraph(raw);
    given.analyze(scratch);
    assert.equal(given.dominators.buffer, scratch.semi.buffer, 'the pass used the given arrays');
    const own = new HeapGraph(raw);
    assert.deepEqual(own.dominators, given.dominators);
    assert.deepEqual(own.retainedSizes, given.retainedSizes);
    // Arrays of another graph's sizes are not used.
    const other = new HeapGraph(raw);
    other.analyze(await touchedArraysInThread(dominatorScratchShape(raw.nodeCount + 1, raw.edgeCount)));
    assert.deepEqual(other.dominators, own.dominators);
  });

  it('big analysis arrays are zeroed typed arrays of the size asked (huge pages are only a hint)', () => {
    const check = (a: Uint8Array | Uint32Array | Float64Array, bytesPer: number): void => {
      assert.equal(a.length, HUGE_PAGE_MIN_BYTES / bytesPer + 1000);
      assert.equal(a[0], 0);
      assert.equal(a[a.length - 1], 0);
    };
    const u8 = bigArray(Uint8Array, HUGE_PAGE_MIN_BYTES + 1000);
    assert.ok(u8 instanceof Uint8Array);
    check(u8, 1);
    const u32 = bigArray(Uint32Array, HUGE_PAGE_MIN_BYTES / 4 + 1000);
    assert.ok(u32 instanceof Uint32Array);
    check(u32, 4);
    const f64 = bigArray(Float64Array, HUGE_PAGE_MIN_BYTES / 8 + 1000);
    assert.ok(f64 instanceof Float64Array);
    check(f64, 8);
  });

  it('a process dedicated to analysis (the CLI, the runner) frees the arrays a diff is done with at once, without --expose-gc', () => {
    // A child without the flag these tests run with: the CLI's process is started without it too.
    const arrays = path.join(__dirname, '../src/heap/arrays.js');
    const script = `
      const { dedicateProcessToAnalysis, releaseDeadArrays } = require(${JSON.stringify(arrays)});
      dedicateProcessToAnalysis();
      const ref = new WeakRef(new Uint32Array(1 << 20));
      // A WeakRef keeps its target until the job that made it ends.
      setImmediate(() => {
        releaseDeadArrays();
        console.log(JSON.stringify({ freed: ref.deref() === undefined, exposed: typeof globalThis.gc }));
      });
    `;
    const out = execFileSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 30_000 });
    // The collector is reached without putting gc() on the global object.
    assert.deepEqual(JSON.parse(out), { freed: true, exposed: 'undefined' });
  });

  it('reads the last file on a second thread or on one, with the same answer; a bad file on either side rejects with BAD_SNAPSHOT', async () => {
    const files = snapshots.get('closure')!;
    const [parallel, serial] = await Promise.all([
      diffHeapSnapshots(files, { top: 5, inProcess: true }),
      diffHeapSnapshots(files, { top: 5, inProcess: true, parallel: false }),
    ]);
    assert.deepEqual(parallel.leaks, serial.leaks);
    assert.deepEqual(parallel.constructors, serial.constructors);
    assert.ok(
      'waitedMs' in parallel.timings && !('waitedMs' in serial.timings),
      'only the parallel diff waited for a thread',
    );
    const truncated = path.join(tmp, 'truncated-last.heapsnapshot');
    const text = fs.readFileSync(files[2]!);
    fs.writeFileSync(truncated, text.subarray(0, text.length >> 1));
    await assert.rejects(diffHeapSnapshots([files[0]!, files[1]!, truncated], { inProcess: true }), {
      code: ErrorCode.BAD_SNAPSHOT,
      message: /truncated/,
    });
    // The first file fails while the thread still reads the last: the thread is stopped, nothing is left unhandled.
    await assert.rejects(diffHeapSnapshots([truncated, files[1]!, files[2]!], { inProcess: true }), {
      code: ErrorCode.BAD_SNAPSHOT,
    });
    await assert.rejects(diffHeapSnapshots(files, { parallel: 'yes' } as never), { code: ErrorCode.INVALID_OPTION });
  });

  it("by default reads on a second thread only when free memory is at least the files' total size", async () => {
    const files = snapshots.get('map')!;
    assert.equal(roomForAThread(files), true, `${files.length} small files, ${os.freemem()} bytes free`);
    const huge = path.join(tmp, 'sparse-huge.heapsnapshot');
    fs.closeSync(fs.openSync(huge, 'w'));
    fs.truncateSync(huge, os.freemem() + 2 ** 30); // sparse: no disk used
    try {
      assert.equal(roomForAThread([files[0]!, files[1]!, huge]), false);
      assert.equal(
        roomForAThread([files[0]!, path.join(tmp, 'missing.heapsnapshot')]),
        false,
        'a missing file: read in turn, and fail there',
      );
      const d = await diffHeapSnapshots(files, { top: 3, inProcess: true });
      assert.ok('waitedMs' in d.timings, 'the default diff of small files used the thread');
    } finally {
      fs.rmSync(huge);
    }
  });

  it('a bad file rejects from the child process with BAD_SNAPSHOT; bad options with INVALID_OPTION', async () => {
    const bad = path.join(tmp, 'child-bad.heapsnapshot');
    fs.writeFileSync(bad, '{"snapshot":');
    await assert.rejects(summarizeHeapSnapshot(bad), { code: ErrorCode.BAD_SNAPSHOT });
    await assert.rejects(diffHeapSnapshots([bad]), { code: ErrorCode.INVALID_OPTION });
    await assert.rejects(summarizeHeapSnapshot(bad, { maxMemoryMb: 1 }), { code: ErrorCode.INVALID_OPTION });
    await assert.rejects(summarizeHeapSnapshot(bad, { fast: true } as never), { code: ErrorCode.INVALID_OPTION });
  });
});
