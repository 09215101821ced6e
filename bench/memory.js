'use strict';
// Memory benchmark: `npm run bench:memory [-- --sizes 100,500]`.
//
// 1. The growth detector's cost per sample (the worker runs it once per sample).
// 2. How long the main thread is paused by a heap snapshot of a heap holding N MB,
//    through sysprobe (safety checks, the sink: partial file, fsync, rename, sidecar)
//    through plain v8.writeHeapSnapshot and through heapdump (the optional backend),
//    rotating the order, each in a fresh child.
// 3. What knowing each GC's reclaimed bytes costs: CPU time of a scavenge-heavy loop
//    (--max-semi-space-size=1) with nothing, with sysprobe's GC addon, and with
//    v8.GCProfiler (which Node offers for the same purpose).

const { fork } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const RESULTS_DIR = path.join(__dirname, 'results');
const args = process.argv.slice(2);
const sizesArg = args.includes('--sizes') ? args[args.indexOf('--sizes') + 1] : '100,500';
const SIZES_MB = sizesArg.split(',').map(Number);
const ROUNDS = 2;

async function child(mode, sizeMb) {
  // Live objects the snapshot must walk: arrays of small objects, ~sizeMb of heap.
  const retained = [];
  for (let i = 0; i < sizeMb * 10; i++) retained.push(Array.from({ length: 2500 }, (_, j) => ({ j })));
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sysprobe-bench-snap-'));
  const heapUsed = require('node:v8').getHeapStatistics().used_heap_size;
  let pauseMs;
  let bytes;
  if (mode === 'sysprobe') {
    const { start } = require('..');
    const probe = await start({ logger: require('pino')({ level: 'silent' }), dumpDir: dir, defaultRules: false });
    const result = await probe.captureHeapSnapshot();
    pauseMs = result.pauseMs;
    bytes = result.bytes;
    await probe.stop();
  } else {
    const file = path.join(dir, 'plain.heapsnapshot');
    const write =
      mode === 'heapdump'
        ? (f) => require('heapdump').writeSnapshot(f)
        : (f) => require('node:v8').writeHeapSnapshot(f);
    const t0 = performance.now();
    write(file);
    pauseMs = performance.now() - t0;
    bytes = fs.statSync(file).size;
  }
  fs.rmSync(dir, { recursive: true, force: true });
  process.send({ mode, sizeMb, heapUsed, pauseMs, bytes, retained: retained.length });
}

/** CPU ms of a loop that triggers thousands of scavenges, with the given GC hook on. */
function gcHookChild(mode) {
  // Each round ends with a read, as a probe reading once per sample interval would.
  let read = () => undefined;
  let stop = () => undefined;
  if (mode === 'sysprobe-gc-addon') {
    const addon = require('../build/Release/gc_stats.node');
    const out = new Float64Array(14);
    addon.start();
    read = () => addon.read(out);
    stop = () => addon.stop();
  } else if (mode === 'v8.GCProfiler') {
    // Its data comes only from stop(), so a periodic reader stops and starts it again.
    const profiler = new (require('node:v8').GCProfiler)();
    profiler.start();
    read = () => {
      profiler.stop();
      profiler.start();
    };
    stop = () => profiler.stop();
  }
  const t0 = process.cpuUsage();
  let kept = 0;
  for (let r = 0; r < 40; r++) {
    let batch = [];
    for (let i = 0; i < 1_000_000; i++) {
      batch.push({ i });
      if (batch.length > 5000) batch = [];
    }
    kept += batch.length;
    read();
  }
  const used = process.cpuUsage(t0);
  stop();
  process.send({ mode, cpuMs: (used.user + used.system) / 1000, kept });
}

function gcHookRun(mode) {
  return new Promise((resolve, reject) => {
    const c = fork(__filename, ['--gc-child', mode], { execArgv: ['--max-semi-space-size=1'] });
    c.once('message', (m) => {
      resolve(m);
      c.kill();
    });
    c.once('exit', (code) => reject(new Error(`${mode} exited with ${code}`)));
  });
}

function growthCost() {
  const { GrowthTracker } = require('../dist/src/memory/growth.js');
  const tracker = new GrowthTracker(10 * 60_000, 30_000);
  const samples = 200_000;
  for (let i = 0; i < 2000; i++) {
    tracker.add(i * 1000, 1e8 + (i % 7) * 1e6);
    tracker.growth();
  } // warm-up
  const t0 = process.hrtime.bigint();
  for (let i = 2000; i < 2000 + samples; i++) {
    tracker.add(i * 1000, 1e8 + i * 100 + (i % 7) * 1e6);
    tracker.growth();
  }
  return Number(process.hrtime.bigint() - t0) / samples / 1000; // µs per sample
}

function run(mode, sizeMb) {
  return new Promise((resolve, reject) => {
    const c = fork(__filename, ['--child', mode, String(sizeMb)], { execArgv: ['--max-old-space-size=4096'] });
    c.once('message', (m) => {
      resolve(m);
      c.kill();
    });
    c.once('exit', (code) => reject(new Error(`${mode} ${sizeMb} MB exited with ${code}`)));
  });
}

async function main() {
  const perSampleUs = growthCost();
  console.log(
    `growth detector: ${perSampleUs.toFixed(2)} µs per sample (add + fit over a 10-minute window of 30 s floors)`,
  );
  const gcModes = ['none', 'sysprobe-gc-addon', 'v8.GCProfiler'];
  const gcRows = [];
  for (let round = 0; round < 3; round++) {
    for (const mode of round % 2 ? [...gcModes].reverse() : gcModes) gcRows.push(await gcHookRun(mode));
  }
  const rows = [];
  const modes = ['sysprobe', 'v8.writeHeapSnapshot', 'heapdump'];
  for (const sizeMb of SIZES_MB) {
    for (let round = 0; round < ROUNDS; round++) {
      for (const mode of [...modes.slice(round % modes.length), ...modes.slice(0, round % modes.length)]) {
        const r = await run(mode, sizeMb);
        rows.push(r);
        console.log(
          `  ${sizeMb} MB ${mode.padEnd(21)} heap ${(r.heapUsed / 1048576).toFixed(0)} MB, pause ${r.pauseMs.toFixed(0)} ms, file ${(r.bytes / 1048576).toFixed(0)} MB`,
        );
      }
    }
  }
  const median = (xs) => {
    const s = [...xs].sort((a, b) => a - b);
    const m = s.length >> 1;
    return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
  };
  const date = new Date().toISOString();
  const table = SIZES_MB.map((sizeMb) => {
    const of = (mode) => rows.filter((r) => r.sizeMb === sizeMb && r.mode === mode);
    const s = of('sysprobe');
    const p = of('v8.writeHeapSnapshot');
    const h = of('heapdump');
    const ms = (rs) => median(rs.map((r) => r.pauseMs));
    return `| ${sizeMb} MB (heap ${(median(s.map((r) => r.heapUsed)) / 1048576).toFixed(0)} MB) | ${ms(s).toFixed(0)} | ${ms(p).toFixed(0)} | ${ms(h).toFixed(0)} | ${(ms(s) / ms(p)).toFixed(2)} | ${(ms(s) / ms(h)).toFixed(2)} | ${(median(s.map((r) => r.bytes)) / 1048576).toFixed(0)} MB |`;
  });
  const gcMedian = (mode) => median(gcRows.filter((r) => r.mode === mode).map((r) => r.cpuMs));
  const gcTable = gcModes.map(
    (mode) => `| ${mode} | ${gcMedian(mode).toFixed(0)} | ${(gcMedian(mode) - gcMedian('none')).toFixed(0)} |`,
  );
  const md = [
    `# sysprobe memory benchmark (${date})`,
    '',
    `Machine: ${os.cpus().length}× ${os.cpus()[0]?.model.trim()}, Node ${process.version}. ${ROUNDS} rounds per size, alternating, each run in a fresh child.`,
    '',
    `Growth detector: ${perSampleUs.toFixed(2)} µs per sample (add a reading and refit over a 10-minute window of 30 s floors).`,
    '',
    'Main-thread pause for a heap snapshot (median ms); sysprobe includes its safety checks and writes through the sink (partial file, fsync, rename, sidecar):',
    '',
    '| live heap | sysprobe pause ms | v8.writeHeapSnapshot ms | heapdump ms | ratio to v8 | ratio to heapdump | file |',
    '|---|---:|---:|---:|---:|---:|---:|',
    ...table,
    '',
    "What knowing each GC's reclaimed bytes costs: CPU ms of 40 M short-lived allocations with `--max-semi-space-size=1` (about 3,200 scavenges), read after each million, as a probe reads once per interval; median of 3:",
    '',
    '| GC hook | CPU ms | extra ms |',
    '|---|---:|---:|',
    ...gcTable,
  ].join('\n');
  fs.mkdirSync(RESULTS_DIR, { recursive: true });
  const stamp = date.replace(/[:.]/g, '-').replace(/-\d{3}Z$/, 'Z');
  fs.writeFileSync(
    path.join(RESULTS_DIR, `memory-${stamp}.json`),
    JSON.stringify({ date, perSampleUs, rows, gcRows }, null, 2),
  );
  fs.writeFileSync(path.join(RESULTS_DIR, 'memory-latest.md'), `${md}\n`);
  console.log(`\n${md}\n\nwrote bench/results/memory-${stamp}.json and bench/results/memory-latest.md`);
}

if (args[0] === '--child')
  child(args[1], Number(args[2])).catch((err) => {
    console.error(err);
    process.exit(1);
  });
else if (args[0] === '--gc-child') gcHookChild(args[1]);
else
  main().catch((err) => {
    console.error(err);
    process.exit(1);
  });
