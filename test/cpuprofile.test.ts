import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import {
  BUSY_LOOP_MIN_SHARE,
  summarizeProfile,
  type CpuProfile,
  type ProfileSummary,
} from '../src/captures/cpuprofile.js';
import { captureCpuProfile, deepRecursion, node, profileOf, weighedDeltas } from './cpuprofile-helpers.js';
import { spinCpu } from './helpers.js';

const HELPERS_FILE = require.resolve('./helpers.js');

function callerOfSpinForSummaryTest(): number {
  return spinCpu(200);
}

/** The function named `name` in the summary, or a failed assertion listing the names there are. */
function fn(summary: ProfileSummary, name: string): ProfileSummary['topFunctions'][number] {
  const found = summary.topFunctions.find((f) => f.functionName === name);
  assert.ok(found, `${name} among ${summary.topFunctions.map((f) => f.functionName).join(', ')}`);
  return found;
}

describe('CPU profile summary', () => {
  describe('on a real V8 profile of a busy function', () => {
    let profile: CpuProfile;
    let summary: ProfileSummary;
    before(async () => {
      profile = await captureCpuProfile(callerOfSpinForSummaryTest);
      summary = summarizeProfile(profile);
    });

    it('names the spinning function as the busy loop, with its 0-based line in its file', () => {
      const { busyLoop } = summary;
      assert.equal(busyLoop.detected, true, `busy loop share ${busyLoop.share}`);
      assert.ok(busyLoop.share >= BUSY_LOOP_MIN_SHARE && busyLoop.share <= 1);
      const name = busyLoop.frame?.functionName;
      const accepted = ['spinCpu', 'callerOfSpinForSummaryTest'];
      assert.ok(
        name !== undefined && accepted.includes(name),
        `busy frame ${name}: expected spinCpu, or callerOfSpinForSummaryTest if V8 inlined the spin into its caller`,
      );
      assert.equal(summary.topFunctions[0]?.functionName, name, 'the busy loop is the top function by self time');
      const file = name === 'spinCpu' ? HELPERS_FILE : __filename;
      const zeroBasedLine = fs
        .readFileSync(file, 'utf8')
        .split('\n')
        .findIndex((line) => line.includes(`function ${name}(`));
      assert.ok(zeroBasedLine > 0);
      assert.equal(
        busyLoop.frame?.lineNumber,
        zeroBasedLine,
        `${name} is declared on 0-based line ${zeroBasedLine} of ${file}`,
      );
      assert.ok(busyLoop.frame?.url.endsWith(file), busyLoop.frame?.url);
    });

    it('has shares in [0, 1] that add up to at most 1, and total time at least self time', () => {
      let sum = 0;
      for (const f of summary.topFunctions) {
        assert.ok(f.selfShare >= 0 && f.selfShare <= 1, `${f.functionName} selfShare ${f.selfShare}`);
        assert.ok(f.totalMs >= f.selfMs - 1e-9, `${f.functionName} total ${f.totalMs} < self ${f.selfMs}`);
        sum += f.selfShare;
      }
      assert.ok(sum > 0.5 && sum <= 1 + 1e-9, `shares sum to ${sum}`);
      for (const share of [summary.idleShare, summary.gcShare, summary.programShare])
        assert.ok(share >= 0 && share <= 1);
    });

    it('takes the counts and times from the samples and their deltas', () => {
      const deltas = profile.timeDeltas ?? [];
      assert.equal(summary.sampleCount, profile.samples?.length);
      assert.ok(summary.sampleCount > 100, `${summary.sampleCount} samples in ~200 ms at 100 µs`);
      assert.equal(summary.durationMs, (profile.endTime - profile.startTime) / 1000);
      // Each delta counts (none below 0), the first at most the mean of the others (it holds the profiler's start-up).
      const sumMs = weighedDeltas(deltas).reduce((a, b) => a + b, 0) / 1000;
      assert.ok(
        Math.abs(summary.sampleIntervalMs - sumMs / deltas.length) < 1e-9,
        `interval ${summary.sampleIntervalMs}`,
      );
      const busy = fn(summary, summary.busyLoop.frame?.functionName ?? '');
      assert.ok(Math.abs(busy.selfMs - busy.selfShare * sumMs) < 1e-6, 'selfShare is self time over all sampled time');
    });
  });

  describe('on hand-made profiles', () => {
    it('gives each sample the delta that ends at it', () => {
      const summary = summarizeProfile({
        nodes: [node(1, '(root)', [2, 3]), node(2, 'a'), node(3, 'b')],
        startTime: 0,
        endTime: 100,
        samples: [2, 3],
        timeDeltas: [10, 90],
      });
      assert.equal(fn(summary, 'a').selfMs, 0.01);
      assert.equal(fn(summary, 'b').selfMs, 0.09);
      assert.equal(summary.sampleIntervalMs, 0.05);
    });

    it("weighs the first sample at most the mean interval: its delta holds the profiler's start-up", () => {
      const summary = summarizeProfile({
        nodes: [node(1, '(root)', [2, 3]), node(2, 'startup'), node(3, 'busy')],
        startTime: 0,
        endTime: 50_000 + 3 * 1000,
        samples: [2, 3, 3, 3],
        timeDeltas: [50_000, 1000, 1000, 1000],
      });
      assert.equal(fn(summary, 'startup').selfMs, 1);
      assert.equal(fn(summary, 'busy').selfMs, 3);
      assert.equal(summary.topFunctions[0]?.functionName, 'busy');
      assert.equal(summary.sampleIntervalMs, 1);
    });

    it('gives nothing to a sample V8 stamped before the one it follows (a negative delta)', () => {
      const summary = summarizeProfile({
        nodes: [node(1, '(root)', [2, 3]), node(2, 'a'), node(3, 'b')],
        startTime: 0,
        endTime: 100,
        samples: [2, 3, 2],
        timeDeltas: [20, -5, 45],
      });
      assert.equal(fn(summary, 'a').selfMs, 0.065);
      assert.equal(fn(summary, 'b').selfMs, 0);
    });

    it('adds up nodes of one function, and counts a recursive function once per sample in total time', () => {
      // (root) → f → g → f, samples: f, g, inner f twice
      const nodes = [node(1, '(root)', [2]), node(2, 'f', [3]), node(3, 'g', [4]), node(4, 'f')];
      const summary = summarizeProfile(profileOf(nodes, [2, 3, 4, 4]));
      assert.deepEqual(
        summary.topFunctions.map((f) => [f.functionName, f.selfMs, f.totalMs, f.selfShare]),
        [
          ['f', 3, 4, 0.75],
          ['g', 1, 3, 0.25],
          ['(root)', 0, 4, 0],
        ],
      );
    });

    it('keeps same-named functions at different places apart', () => {
      const elsewhere = node(3, 'handler');
      elsewhere.callFrame.lineNumber = 99;
      const summary = summarizeProfile(
        profileOf([node(1, '(root)', [2, 3]), node(2, 'handler'), elsewhere], [2, 3, 3]),
      );
      assert.deepEqual(
        summary.topFunctions.slice(0, 2).map((f) => [f.functionName, f.lineNumber, f.selfMs]),
        [
          ['handler', 99, 2],
          ['handler', 10, 1],
        ],
      );
    });

    it('reports anonymous functions as (anonymous) and keeps V8 line and column numbers 0-based', () => {
      const anonymous = node(2, '');
      anonymous.callFrame.lineNumber = 0;
      anonymous.callFrame.columnNumber = 0;
      const summary = summarizeProfile(profileOf([node(1, '(root)', [2]), anonymous], [2]));
      assert.deepEqual(summary.busyLoop.frame, {
        functionName: '(anonymous)',
        url: 'file:///app/server.js',
        lineNumber: 0,
        columnNumber: 0,
      });
    });

    it('falls back to hit counts times the mean interval when there are no samples', () => {
      const summary = summarizeProfile({
        nodes: [node(1, '(root)', [2, 3]), node(2, 'a', [], { hitCount: 3 }), node(3, 'b', [], { hitCount: 1 })],
        startTime: 0,
        endTime: 8000,
      });
      assert.equal(summary.sampleCount, 4);
      assert.equal(summary.sampleIntervalMs, 2);
      assert.deepEqual(
        summary.topFunctions.slice(0, 2).map((f) => [f.functionName, f.selfMs, f.selfShare]),
        [
          ['a', 6, 0.75],
          ['b', 2, 0.25],
        ],
      );
    });

    it('measures the busy loop against non-idle time and never blames a V8 synthetic node', () => {
      const nodes = [
        node(1, '(root)', [2, 3, 4, 5, 6]),
        node(2, '(idle)'),
        node(3, 'spin'),
        node(4, 'other'),
        node(5, '(garbage collector)'),
        node(6, '(program)'),
      ];
      // 10 samples: idle 5, spin 3, other 1, gc 1: spin holds 3 of 5 non-idle samples.
      const summary = summarizeProfile(profileOf(nodes, [2, 2, 2, 2, 2, 3, 3, 3, 4, 5]));
      assert.deepEqual(summary.busyLoop, {
        detected: true,
        frame: { functionName: 'spin', url: 'file:///app/server.js', lineNumber: 10, columnNumber: 2 },
        share: 0.6,
      });
      assert.deepEqual([summary.idleShare, summary.gcShare, summary.programShare], [0.5, 0.1, 0]);

      // GC and the VM's own work dominate: no function is spinning.
      const vmBound = summarizeProfile(profileOf(nodes, [6, 6, 6, 5, 5, 3, 4]));
      assert.equal(vmBound.busyLoop.detected, false);
      assert.equal(vmBound.busyLoop.frame, undefined);
      assert.ok(Math.abs(vmBound.busyLoop.share - 1 / 7) < 1e-9, `share ${vmBound.busyLoop.share}`);
      assert.ok(Math.abs(vmBound.programShare - 3 / 7) < 1e-9);
    });

    it(`detects a busy loop from exactly ${BUSY_LOOP_MIN_SHARE * 100}% of non-idle time, not below`, () => {
      const nodes = [node(1, '(root)', [2, 3, 4]), node(2, 'spin'), node(3, 'a'), node(4, 'b')];
      assert.equal(summarizeProfile(profileOf(nodes, [2, 2, 3, 4])).busyLoop.detected, true);
      const spread = summarizeProfile(profileOf(nodes, [2, 2, 3, 3, 4]));
      assert.deepEqual(spread.busyLoop, { detected: false, share: 0.4 });
    });

    it('returns the top N functions, 10 by default', () => {
      const names = Array.from({ length: 12 }, (_, i) => `f${i}`);
      const nodes = [
        node(
          1,
          '(root)',
          names.map((_, i) => i + 2),
        ),
        ...names.map((name, i) => node(i + 2, name)),
      ];
      // f0 gets 12 samples, f1 11, ... f11 1.
      const samples = names.flatMap((_, i) => Array.from({ length: 12 - i }, () => i + 2));
      assert.deepEqual(
        summarizeProfile(profileOf(nodes, samples)).topFunctions.map((f) => f.functionName),
        names.slice(0, 10),
      );
      assert.deepEqual(
        summarizeProfile(profileOf(nodes, samples), { top: 2 }).topFunctions.map((f) => f.functionName),
        ['f0', 'f1'],
      );
      assert.throws(
        () => summarizeProfile(profileOf(nodes, samples), { top: -1 }),
        /top must be a non-negative integer/,
      );
    });

    it('summarizes a profile without samples as zero time, nothing busy', () => {
      const summary = summarizeProfile(profileOf([node(1, '(root)', [2]), node(2, 'a')], []));
      assert.equal(summary.sampleCount, 0);
      assert.equal(summary.sampleIntervalMs, 0);
      assert.deepEqual(summary.busyLoop, { detected: false, share: 0 });
      assert.ok(summary.topFunctions.every((f) => f.selfMs === 0 && f.selfShare === 0));
    });

    it('stays linear on a 100k-deep recursion (no quadratic walk, no stack overflow)', () => {
      const depth = 100_000;
      const started = process.hrtime.bigint();
      const summary = summarizeProfile(deepRecursion(depth));
      const elapsedMs = Number(process.hrtime.bigint() - started) / 1e6;
      assert.deepEqual(
        summary.topFunctions.map((f) => [f.functionName, f.selfMs, f.totalMs]),
        [
          ['recurse', depth, depth],
          ['(root)', 0, depth],
        ],
      );
      assert.ok(elapsedMs < 2000, `took ${elapsedMs.toFixed(0)} ms`);
    });
  });

  describe('on malformed input', () => {
    const ok = (): CpuProfile => profileOf([node(1, '(root)', [2]), node(2, 'a')], [2, 2]);
    const cases: Array<[string, unknown, RegExp]> = [
      ['null', null, /not an object/],
      ['a string', '{"nodes":[]}', /not an object/],
      ['an array', [], /not an object/],
      ['no nodes', { startTime: 0, endTime: 1 }, /nodes is not an array/],
      ['empty nodes', { ...ok(), nodes: [] }, /nodes is empty/],
      ['no startTime', { ...ok(), startTime: undefined }, /startTime and endTime must be finite numbers/],
      ['end before start', { ...ok(), endTime: 0 }, /endTime 0 is before startTime 1000000/],
      ['a node that is not an object', { ...ok(), nodes: [node(1, '(root)'), 7] }, /nodes\[1\] is not an object/],
      [
        'a node without an id',
        { ...ok(), nodes: [{ callFrame: node(1, 'a').callFrame }] },
        /nodes\[0\]\.id is not an integer/,
      ],
      ['a node without a callFrame', { ...ok(), nodes: [{ id: 1 }] }, /node 1 has no callFrame object/],
      [
        'a callFrame without a url',
        { ...ok(), nodes: [{ id: 1, callFrame: { functionName: 'a', lineNumber: 0, columnNumber: 0 } }] },
        /node 1: callFrame\.functionName and callFrame\.url must be strings/,
      ],
      [
        'a callFrame with a string line',
        { ...ok(), nodes: [{ id: 1, callFrame: { ...node(1, 'a').callFrame, lineNumber: '3' } }] },
        /node 1: callFrame\.lineNumber/,
      ],
      [
        'a line number below -1',
        { ...ok(), nodes: [{ id: 1, callFrame: { ...node(1, 'a').callFrame, lineNumber: -2 } }] },
        /node 1: callFrame\.lineNumber and callFrame\.columnNumber must be integers from -1/,
      ],
      [
        'a negative hitCount',
        { ...ok(), nodes: [node(1, 'a', [], { hitCount: -1 })] },
        /node 1: hitCount must be a non-negative integer/,
      ],
      [
        'children that are not an array',
        { ...ok(), nodes: [{ ...node(1, 'a'), children: 2 }] },
        /node 1: children is not an array/,
      ],
      [
        'a duplicate node id',
        { ...ok(), nodes: [node(1, '(root)', [2]), node(2, 'a'), node(2, 'b')] },
        /node id 2 appears twice/,
      ],
      [
        'a child that does not exist',
        { ...ok(), nodes: [node(1, '(root)', [2, 9]), node(2, 'a')] },
        /node 1 has child 9, which is not a node/,
      ],
      [
        'a node with two parents',
        { ...ok(), nodes: [node(1, '(root)', [2, 3]), node(2, 'a', [3]), node(3, 'b')] },
        /node 3 is a child of more than one node/,
      ],
      [
        'a cycle',
        { ...ok(), nodes: [node(1, '(root)'), node(2, 'a', [3]), node(3, 'b', [2])] },
        /2 nodes cannot be reached from a root/,
      ],
      ['a sample id that is not a node', { ...ok(), samples: [2, 5] }, /samples\[1\] is 5, expected the id of a node/],
      ['samples that are not an array', { ...ok(), samples: {} }, /samples is not an array/],
      [
        'an infinite time delta',
        { ...ok(), timeDeltas: [1000, Infinity] },
        /timeDeltas\[1\] is Infinity, expected a finite number/,
      ],
      ['a non-numeric time delta', { ...ok(), timeDeltas: [1000, '5'] }, /timeDeltas\[1\] is "5"/],
      ['fewer deltas than samples', { ...ok(), timeDeltas: [1000] }, /2 samples but 1 timeDeltas/],
    ];
    for (const [what, input, message] of cases) {
      it(`rejects ${what} with an Error that says so`, () => {
        assert.throws(
          () => summarizeProfile(input),
          (err: unknown) => {
            assert.ok(err instanceof Error && err.constructor === Error, `a plain Error, not ${String(err)}`);
            assert.match(err.message, /^Invalid CPU profile: /);
            assert.match(err.message, message);
            return true;
          },
        );
      });
    }

    it('accepts the well-formed profile those cases start from', () => {
      assert.equal(summarizeProfile(ok()).topFunctions[0]?.selfMs, 2);
    });
  });
});
