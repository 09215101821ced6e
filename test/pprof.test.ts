import assert from 'node:assert/strict';
import { gunzipSync } from 'node:zlib';
import { Profile } from 'pprof-format';
import type { CpuProfile } from '../src/captures/cpuprofile.js';
import { MAX_PPROF_STACK_DEPTH, toPprof } from '../src/captures/pprof.js';
import { captureCpuProfile, deepRecursion, node, profileOf, weighedDeltas } from './cpuprofile-helpers.js';
import { spinCpu } from './helpers.js';

function callerOfSpinForPprofTest(): number {
  return spinCpu(200);
}

interface DecodedSample {
  count: number;
  nanos: number;
  /** Leaf first: [function name, file, line, column]. */
  stack: Array<[string, string, number, number]>;
}

/** Decodes with pprof-format, an independent implementation, and resolves ids and strings. */
function decode(gzipped: Buffer): { profile: Profile; strings: string[]; samples: DecodedSample[] } {
  const profile = Profile.decode(gunzipSync(gzipped));
  const strings = profile.stringTable.strings;
  const text = (n: number | bigint): string => strings[Number(n)] ?? assert.fail(`string ${n} is not in the table`);
  const locations = new Map(profile.location.map((l) => [Number(l.id), l]));
  const functions = new Map(profile.function.map((f) => [Number(f.id), f]));
  const samples = profile.sample.map((sample) => ({
    count: Number(sample.value[0]),
    nanos: Number(sample.value[1]),
    stack: sample.locationId.map((id): [string, string, number, number] => {
      const location = locations.get(Number(id)) ?? assert.fail(`location ${id} is missing`);
      assert.equal(location.line.length, 1);
      const line = location.line[0]!;
      const fn = functions.get(Number(line.functionId)) ?? assert.fail(`function ${line.functionId} is missing`);
      return [text(fn.name), text(fn.filename), Number(line.line), Number(line.column)];
    }),
  }));
  return { profile, strings, samples };
}

describe('pprof encoding', () => {
  describe('of a real V8 profile', () => {
    let cpuProfile: CpuProfile;
    let decoded: ReturnType<typeof decode>;
    const startedAtMs = Date.now();
    before(async () => {
      cpuProfile = await captureCpuProfile(callerOfSpinForPprofTest);
      decoded = decode(toPprof(cpuProfile, { startedAtMs }));
    });

    it('has the sample types, period and times pprof tools expect', () => {
      const { profile, strings } = decoded;
      assert.equal(strings[0], '');
      assert.deepEqual(
        profile.sampleType.map((t) => `${strings[Number(t.type)]}/${strings[Number(t.unit)]}`),
        ['samples/count', 'cpu/nanoseconds'],
      );
      assert.equal(
        `${strings[Number(profile.periodType?.type)]}/${strings[Number(profile.periodType?.unit)]}`,
        'cpu/nanoseconds',
      );
      const deltas = weighedDeltas(cpuProfile.timeDeltas ?? []);
      const meanNanos = (deltas.reduce((a, b) => a + b, 0) / deltas.length) * 1000;
      assert.ok(
        Math.abs(Number(profile.period) - meanNanos) <= 0.5,
        `period ${profile.period} ns, mean delta ${meanNanos} ns`,
      );
      assert.equal(Number(profile.durationNanos), (cpuProfile.endTime - cpuProfile.startTime) * 1000);
      assert.equal(
        BigInt(profile.timeNanos),
        BigInt(startedAtMs) * 1_000_000n,
        'time_nanos is wall time, past 2^53 so it needs 64-bit varints',
      );
    });

    it('keeps every sample and every microsecond (the first at most the mean interval)', () => {
      const { samples } = decoded;
      const totalNanos = samples.reduce((sum, s) => sum + s.nanos, 0);
      const expectedNanos = weighedDeltas(cpuProfile.timeDeltas ?? []).reduce((a, b) => a + b, 0) * 1000;
      // Each pprof sample holds whole nanoseconds (the first delta's weighing makes fractions): up to half of one each.
      assert.ok(
        Math.abs(totalNanos - expectedNanos) <= samples.length / 2,
        `${totalNanos} ns in ${samples.length} samples, ${expectedNanos} ns in the profile`,
      );
      assert.equal(
        samples.reduce((sum, s) => sum + s.count, 0),
        cpuProfile.samples?.length,
      );
    });

    it('puts the spinning function at location 0 (the leaf) of the heaviest sample', () => {
      const heaviest = decoded.samples.reduce((a, b) => (b.nanos > a.nanos ? b : a));
      const leaf = heaviest.stack[0]?.[0];
      assert.ok(
        leaf === 'spinCpu' || leaf === 'callerOfSpinForPprofTest',
        `leaf ${leaf}: expected spinCpu, or callerOfSpinForPprofTest if V8 inlined the spin into its caller`,
      );
      assert.ok(
        heaviest.stack.every(([name]) => name !== '(root)'),
        'the synthetic (root) is left out of stacks',
      );
    });
  });

  describe('of hand-made profiles', () => {
    it('writes stacks leaf first with 1-based lines and columns, one Sample per leaf node with summed values', () => {
      // (root) → main → work; samples: work, work, main
      const anonymous = node(4, '');
      const samples = decode(
        toPprof(profileOf([node(1, '(root)', [2]), node(2, 'main', [3, 4]), node(3, 'work'), anonymous], [3, 3, 2, 4])),
      ).samples;
      assert.deepEqual(samples, [
        { count: 1, nanos: 1_000_000, stack: [['main', 'file:///app/server.js', 11, 3]] },
        {
          count: 2,
          nanos: 2_000_000,
          stack: [
            ['work', 'file:///app/server.js', 11, 3],
            ['main', 'file:///app/server.js', 11, 3],
          ],
        },
        {
          count: 1,
          nanos: 1_000_000,
          stack: [
            ['(anonymous)', 'file:///app/server.js', 11, 3],
            ['main', 'file:///app/server.js', 11, 3],
          ],
        },
      ]);
    });

    it('has one Location per node and one Function per name, file and line', () => {
      const nodes = [node(1, '(root)', [2]), node(2, 'f', [3]), node(3, 'f', [4]), node(4, '(garbage collector)')];
      const { profile, strings, samples } = decode(toPprof(profileOf(nodes, [3, 4])));
      assert.equal(profile.location.length, 3, 'f, f again, (garbage collector); not (root)');
      assert.deepEqual(
        profile.function.map((f) => [strings[Number(f.name)], Number(f.startLine)]),
        [
          ['f', 11],
          ['(garbage collector)', 0],
        ],
      );
      assert.deepEqual(
        samples[1]?.stack.map(([name, , line]) => [name, line]),
        [
          ['(garbage collector)', 0],
          ['f', 11],
          ['f', 11],
        ],
      );
    });

    it('leaves time_nanos out unless told the wall-clock start, since V8 times are monotonic', () => {
      assert.equal(
        Number(decode(toPprof(profileOf([node(1, '(root)', [2]), node(2, 'a')], [2]))).profile.timeNanos),
        0,
      );
      assert.throws(
        () => toPprof(profileOf([node(1, '(root)')], []), { startedAtMs: -1 }),
        /startedAtMs must be a non-negative number/,
      );
    });

    it('falls back to hit counts when there are no samples', () => {
      const { samples, profile } = decode(
        toPprof({ nodes: [node(1, '(root)', [2]), node(2, 'a', [], { hitCount: 4 })], startTime: 0, endTime: 2000 }),
      );
      assert.deepEqual(
        samples.map((s) => [s.count, s.nanos]),
        [[4, 2_000_000]],
      );
      assert.equal(Number(profile.period), 500_000);
    });

    it(`keeps the leaf-most ${MAX_PPROF_STACK_DEPTH} frames of deeper stacks, and all the time`, () => {
      const depth = MAX_PPROF_STACK_DEPTH + 500;
      const { samples } = decode(toPprof(deepRecursion(depth)));
      assert.equal(samples.length, depth);
      assert.equal(Math.max(...samples.map((s) => s.stack.length)), MAX_PPROF_STACK_DEPTH);
      assert.equal(
        samples.reduce((sum, s) => sum + s.nanos, 0),
        depth * 1_000_000,
      );
    });

    it('is gzip, and rejects a malformed profile with the same clear Error as the summary', () => {
      const gzipped = toPprof(profileOf([node(1, '(root)')], []));
      assert.deepEqual([...gzipped.subarray(0, 2)], [0x1f, 0x8b]);
      assert.throws(
        () => toPprof({ ...profileOf([node(1, '(root)', [2]), node(2, 'a')], [2]), timeDeltas: [NaN] }),
        /^Error: Invalid CPU profile: timeDeltas\[0\] is NaN/,
      );
    });
  });
});
