import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { start, type IncidentManifest, type Sample } from '../src/index.js';
import { memoryLogger, waitFor, tempDir } from './helpers.js';
import { FileSink } from '../src/sink/file-sink.js';
import { makeIncident, XSS_RULE } from './incident-helpers.js';

function readManifest(dir: string): IncidentManifest {
  return JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8')) as IncidentManifest;
}

describe('incidents', function () {
  this.timeout(40_000);
  let made: Awaited<ReturnType<typeof makeIncident>>;
  before(async () => {
    made = await makeIncident();
  });
  after(async () => {
    await made?.probe.stop();
  });

  it('opens one incident for a stall and a CPU spike, and the concurrent firings join it', () => {
    const manifest = readManifest(made.dir);
    assert.equal(manifest.status, 'closed');
    // The stall and the rules its busy loop fires arrive in either order; all join one incident.
    for (const rule of ['stall', 'cpu-spike', XSS_RULE])
      assert.ok(manifest.rules.includes(rule), `${rule} in ${JSON.stringify(manifest.rules)}`);
    assert.equal(made.events.filter((e) => e.phase === 'open').length, 1, 'one incident, not one per trigger');
    assert.ok(made.events.some((e) => e.phase === 'update' && e.trigger?.rule === 'cpu-spike'));
    const listed = made.probe.incidents();
    assert.equal(listed.length, 1);
    assert.deepEqual([listed[0]?.id, listed[0]?.status], [manifest.id, 'closed']);
    assert.equal(path.basename(made.dir), manifest.id);
    assert.match(
      manifest.id,
      /^\d{4}-\d\d-\d\dT\d{6}\.\d{3}Z-[a-z0-9._-]+$/i,
      'a stamp and the first rule, made safe for a folder name',
    );
  });

  it('writes the manifest fields: triggers with values, times, service, pid, host, versions', () => {
    const manifest = readManifest(made.dir);
    const stall = manifest.triggers.find((t) => t.kind === 'stall');
    assert.ok(stall && stall.observed >= 350 && stall.threshold === 150, JSON.stringify(stall));
    const spike = manifest.triggers.find((t) => t.rule === 'cpu-spike');
    assert.ok(
      spike && spike.observed > 0.3 && spike.threshold === 0.3 && spike.value === 'cpu.utilization',
      JSON.stringify(spike),
    );
    assert.equal(manifest.pid, process.pid);
    assert.equal(manifest.hostname, os.hostname());
    assert.equal(manifest.versions.node, process.version);
    assert.equal(manifest.versions.v8, process.versions.v8);
    assert.match(manifest.versions.sysprobe, /^\d+\.\d+\.\d+/);
    assert.equal(typeof manifest.service, 'string');
    assert.deepEqual(manifest.traces, [], 'no active span in this test');
    assert.equal(manifest.closeReason, 'quiet');
  });

  it('holds every capture inside the folder, one per kind', () => {
    const manifest = readManifest(made.dir);
    const kinds = manifest.captures.map((c) => c.kind);
    assert.equal(
      kinds.filter((k) => k === 'cpu-profile').length,
      1,
      `one CPU profile for two firings: ${kinds.join(', ')}`,
    );
    for (const kind of ['stall-stack', 'cpu-profile', 'cpu-profile-pprof', 'cpu-profile-sidecar', 'rule-stack'])
      assert.ok(kinds.includes(kind), `${kind} in ${kinds.join(', ')}`);
    for (const capture of manifest.captures) {
      const stat = fs.statSync(path.join(made.dir, capture.file));
      assert.equal(stat.size, capture.bytes, capture.file);
    }
    assert.ok(
      manifest.notTaken.some((n) => n.includes('cpuProfile: already taken for the open incident')),
      JSON.stringify(manifest.notTaken),
    );
    const stack = JSON.parse(fs.readFileSync(path.join(made.dir, 'stall-stack.json'), 'utf8')) as {
      frames: Array<{ functionName: string }>;
      durationMs: number;
    };
    assert.ok(
      stack.frames.some((f) => f.functionName === 'stallInJs'),
      JSON.stringify(stack.frames.slice(0, 3)),
    );
    assert.ok(!fs.existsSync(path.join(made.dir, '.open')), 'the open marker goes at the close');
  });

  it('keeps the samples from before the trigger to the close, and the log events of that window', () => {
    const manifest = readManifest(made.dir);
    const samples = JSON.parse(fs.readFileSync(path.join(made.dir, 'samples.json'), 'utf8')) as Sample[];
    const first = Math.min(...manifest.triggers.map((t) => t.at));
    const last = Math.max(...manifest.triggers.map((t) => t.at));
    assert.ok(samples.filter((s) => s.time < first).length >= 3, 'samples before the trigger');
    assert.ok(
      samples.some((s) => s.time > last + 1000),
      'samples after the last trigger, up to the close',
    );
    assert.equal(manifest.samples?.count, samples.length);
    const logs = fs
      .readFileSync(path.join(made.dir, 'logs.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { msg: string; app?: string; time: number });
    const messages = logs.map((l) => l.msg);
    for (const msg of [
      'event loop stalled',
      'sysprobe rule fired',
      'sysprobe opened an incident',
      'before the stall',
      'after the spike',
    ]) {
      assert.ok(messages.includes(msg), `${msg} in ${messages.join(' | ')}`);
    }
    assert.ok(
      logs.every((l) => l.time <= manifest.closedAt!),
      'nothing after the close',
    );
    assert.deepEqual(
      manifest.logTraceIds,
      ['4bf92f3577b34da6a3ce929d0e0e4736'],
      'the trace id an app log line carried',
    );
  });

  it('closes after quietMs without a trigger', () => {
    const manifest = readManifest(made.dir);
    const last = Math.max(...manifest.triggers.map((t) => t.at));
    const quietFor = manifest.closedAt! - last;
    // The last trigger's `at` is its sample's time; the rule event reaches the main thread after its 400 ms profile.
    assert.ok(quietFor >= 2000 && quietFor < 2000 + 5000, `closed ${quietFor} ms after the last trigger`);
  });
});

describe('incidents: the file sink rotation', () => {
  it('deletes a closed incident folder whole as one old capture, and never an open one', async () => {
    const dir = tempDir('sysprobe-rotation-');
    const folder = (name: string, open: boolean) => {
      const f = path.join(dir, 'incidents', name);
      fs.mkdirSync(f, { recursive: true });
      fs.writeFileSync(path.join(f, 'manifest.json'), '{}');
      fs.writeFileSync(path.join(f, 'samples.json'), 'x'.repeat(1000));
      if (open) fs.writeFileSync(path.join(f, '.open'), '1');
      return f;
    };
    const closedOld = folder('2020-01-01T000000.000Z-stall', false);
    const openOld = folder('2020-01-01T000001.000Z-cpu-high', true);
    const sink = new FileSink({ dir, maxFiles: 3, reserveBytes: 0 });
    await sink.write({ kind: 'cpu-profile', extension: '.cpuprofile', sidecar: {}, body: 'a' });
    assert.ok(fs.existsSync(closedOld), 'within maxFiles: kept');
    await sink.write({ kind: 'cpu-profile', extension: '.cpuprofile', sidecar: {}, body: 'b' });
    assert.ok(!fs.existsSync(closedOld), 'the oldest closed incident went, whole');
    assert.ok(fs.existsSync(path.join(openOld, 'samples.json')), 'the open incident stays');
    await sink.write({ kind: 'cpu-profile', extension: '.cpuprofile', sidecar: {}, body: 'c' });
    assert.ok(fs.existsSync(path.join(openOld, 'samples.json')), 'still, though over maxFiles');
    fs.rmSync(path.join(openOld, '.open'));
    await sink.write({ kind: 'cpu-profile', extension: '.cpuprofile', sidecar: {}, body: 'd' });
    assert.ok(!fs.existsSync(openOld), 'once closed, it rotates like the others');
  });
});

describe('incidents: bounded without captures', () => {
  it('a new incident rotates the dump directory, so stall-only incidents do not pile up', async () => {
    const dumpDir = tempDir('sysprobe-pileup-');
    for (let i = 0; i < 25; i++) {
      const old = path.join(dumpDir, 'incidents', `2020-01-01T0000${String(i).padStart(2, '0')}.000Z-stall`);
      fs.mkdirSync(old, { recursive: true });
      fs.writeFileSync(path.join(old, 'manifest.json'), '{}');
    }
    const probe = await start({
      logger: memoryLogger().logger,
      dumpDir,
      sampleIntervalMs: 100,
      stallThresholdMs: 100,
      defaultRules: false,
      incidents: { quietMs: 60_000 },
    });
    try {
      const opened: string[] = [];
      probe.on('incident', (e: { phase: string; dir: string }) => {
        if (e.phase === 'open') opened.push(e.dir);
      });
      const until = Date.now() + 300;
      while (Date.now() < until);
      const dir = await waitFor('the incident', () => opened[0], 5000);
      const left = await waitFor(
        'the rotation',
        () => {
          const names = fs.readdirSync(path.join(dumpDir, 'incidents'));
          return names.length <= 20 ? names : undefined;
        },
        5000,
      );
      assert.equal(left.length, 20, 'the default maxFiles of the dump directory');
      assert.ok(left.includes(path.basename(dir)), 'the open incident stays');
      assert.ok(!left.includes('2020-01-01T000000.000Z-stall'), 'the oldest went first');
    } finally {
      await probe.stop();
    }
  });
});

describe('incidents: the option', () => {
  it('refuses bad incident options at start() with a message naming the field', async () => {
    const refused = async (incidents: unknown, mentions: RegExp) =>
      assert.rejects(
        start({ logger: memoryLogger().logger, incidents } as never),
        (err: Error & { code?: string }) => err.code === 'SYSPROBE_ERR_INVALID_OPTION' && mentions.test(err.message),
      );
    await refused('yes', /Option incidents must be true, false or an object/);
    await refused({ quietMs: 5 }, /incidents\.quietMs must be an integer from 100/);
    await refused({ after: 1 }, /Unknown option incidents\.after/);
    await refused(
      { quietMs: 5000, maxOpenMs: 1000 },
      /incidents\.maxOpenMs \(1000\) must be at least incidents\.quietMs/,
    );
  });

  it('with incidents: false, a stall writes no incident', async () => {
    const dumpDir = tempDir('sysprobe-no-incidents-');
    const probe = await start({
      logger: memoryLogger().logger,
      dumpDir,
      sampleIntervalMs: 100,
      stallThresholdMs: 100,
      defaultRules: false,
      incidents: false,
    });
    try {
      const stalls: unknown[] = [];
      probe.on('stall', (e) => stalls.push(e));
      const until = Date.now() + 300;
      while (Date.now() < until);
      await waitFor('the stall event', () => stalls[0], 5000);
      await new Promise((r) => setTimeout(r, 200));
      assert.deepEqual(probe.incidents(), []);
      assert.ok(!fs.existsSync(path.join(dumpDir, 'incidents')));
    } finally {
      await probe.stop();
    }
  });
});

describe('incidents: closed by stop()', () => {
  it('an incident still open at stop() closes with its dependencies and no error about a stopped probe', async () => {
    const dumpDir = tempDir('sysprobe-stop-close-');
    const { logger, lines } = memoryLogger();
    const probe = await start({
      logger,
      dumpDir,
      sampleIntervalMs: 100,
      stallThresholdMs: 100,
      defaultRules: false,
      incidents: { quietMs: 60_000 },
    });
    const opened: string[] = [];
    probe.on('incident', (e: { phase: string; dir: string }) => {
      if (e.phase === 'open') opened.push(e.dir);
    });
    const stalled = new Promise((resolve) => probe.once('stall', resolve));
    const until = Date.now() + 300;
    while (Date.now() < until);
    const dir = await waitFor('the incident', () => opened[0], 5000);
    // The stall's own warning line may come after the incident opened: only what stop() logs counts.
    await stalled;
    const before = lines.length;
    await probe.stop();
    const manifest = readManifest(dir);
    assert.equal(manifest.status, 'closed');
    assert.ok(Array.isArray(manifest.dependencies), 'the dependencies were read at close');
    const bad = lines.slice(before).filter((l) => (l.level as number) >= 40);
    assert.deepEqual(
      bad.map((l) => `${String(l.msg)} ${JSON.stringify(l.err ?? '')}`),
      [],
      'no warning or error while closing at stop()',
    );
  });
});
