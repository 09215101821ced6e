'use strict';
// Stall benchmark: `npm run bench:stall [-- --trials N --rounds N]`.
//
// 1. Latency: in a fresh child with sysprobe at its defaults (threshold 200 ms), block the
//    loop N times in a named function and read each stall event: how long after the
//    threshold the worker learned of the stall, and how long from then to the stack.
// 2. Slowdown while nothing stalls: the same await-heavy and compute-heavy work timed in
//    children with no instrumentation, with sysprobe, and with the Debugger domain left
//    enabled (what sysprobe avoids by enabling it only for a capture); configurations
//    alternate in rounds and 'none' runs twice as an A/A control.

const { fork } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const RESULTS_DIR = path.join(__dirname, 'results');
const args = process.argv.slice(2);
const flag = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : fallback;
};
const TRIALS = flag('--trials', 10);
const ROUNDS = flag('--rounds', 5);
const CONFIGS = ['none', 'sysprobe', 'none-2', 'debugger-enabled'];

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const max = (xs) => Math.max(...xs);

// ---- child side -------------------------------------------------------------

function spinInBench(ms) {
  const end = Date.now() + ms;
  let n = 0;
  while (Date.now() < end) n += 1;
  return n;
}

async function latencyChild() {
  const { start } = require('..');
  const probe = await start({ logger: require('pino')({ level: 'silent' }), capturesPerMinute: 600 });
  const results = [];
  // sysprobe keeps nothing alive, and the stall event comes after the block: hold the process open.
  const keepAlive = setInterval(() => {}, 1000);
  for (let i = 0; i < TRIALS; i++) {
    const event = new Promise((resolve) => probe.once('stall', resolve));
    await new Promise((resolve) => setTimeout(resolve, 300));
    spinInBench(500);
    const { startedAt, capture, stack } = await event;
    results.push({
      detectionDelayMs:
        capture.detectedAt -
        startedAt -
        require('../dist/src/probe/internals.js').probeInternals(probe).options.stallThresholdMs,
      detectionToStackMs: capture.takenAt - capture.detectedAt,
      latencyMs: capture.latencyMs,
      how: capture.how,
      top: stack && stack[0].functionName,
    });
  }
  clearInterval(keepAlive);
  await probe.stop();
  process.send(results);
}

async function workload() {
  const t0 = process.hrtime.bigint();
  // await-heavy: the kind of code an enabled debugger slows most.
  for (let i = 0; i < 300_000; i++) await null;
  const awaitMs = Number(process.hrtime.bigint() - t0) / 1e6;
  const t1 = process.hrtime.bigint();
  let text = JSON.stringify({
    items: Array.from({ length: 2000 }, (_, i) => ({ i, name: `item ${i}`, tags: ['a', 'b'] })),
  });
  for (let i = 0; i < 40; i++) text = JSON.stringify(JSON.parse(text));
  const computeMs = Number(process.hrtime.bigint() - t1) / 1e6;
  return { awaitMs, computeMs };
}

async function slowdownChild(config) {
  let stop = async () => {};
  if (config === 'sysprobe') {
    const probe = await require('..').start({ logger: require('pino')({ level: 'silent' }) });
    stop = () => probe.stop();
  } else if (config === 'debugger-enabled') {
    const inspector = require('node:inspector');
    const session = new inspector.Session();
    session.connect();
    await new Promise((resolve, reject) => session.post('Debugger.enable', (err) => (err ? reject(err) : resolve())));
    stop = async () => session.disconnect();
  }
  await new Promise((resolve) => setTimeout(resolve, 1000)); // let startup settle
  await workload(); // warm-up: JIT
  const runs = [];
  for (let i = 0; i < 5; i++) runs.push(await workload());
  await stop();
  // The median of five: one run is a few tens of ms, short enough for a stray GC or JIT task to skew it.
  process.send({ awaitMs: median(runs.map((r) => r.awaitMs)), computeMs: median(runs.map((r) => r.computeMs)) });
}

// ---- parent side ------------------------------------------------------------

function runChild(mode, config) {
  return new Promise((resolve, reject) => {
    const child = fork(__filename, ['--child', mode, config ?? '', '--trials', String(TRIALS)], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    child.once('message', (m) => {
      resolve(m);
      child.kill();
    });
    child.once('exit', (code) =>
      reject(new Error(`child ${mode} ${config ?? ''} exited with ${code} before answering`)),
    );
  });
}

async function main() {
  console.log(`stall: latency over ${TRIALS} stalls, slowdown over ${ROUNDS} rounds of ${CONFIGS.join(', ')}`);
  const latency = await runChild('latency');
  const rounds = [];
  for (let round = 0; round < ROUNDS; round++) {
    const order = CONFIGS.map((_, i) => CONFIGS[(i + round) % CONFIGS.length]);
    const byConfig = {};
    for (const config of order) byConfig[config] = await runChild('slowdown', config);
    rounds.push(byConfig);
    console.log(
      `  round ${round + 1}: ${CONFIGS.map((c) => `${c} await ${byConfig[c].awaitMs.toFixed(0)} ms, compute ${byConfig[c].computeMs.toFixed(0)} ms`).join('; ')}`,
    );
  }
  const ratio = (config, key) => rounds.map((r) => r[config][key] / r.none[key]);
  const summary = {
    detectionDelayMs: {
      median: median(latency.map((r) => r.detectionDelayMs)),
      max: max(latency.map((r) => r.detectionDelayMs)),
    },
    detectionToStackMs: {
      median: median(latency.map((r) => r.detectionToStackMs)),
      max: max(latency.map((r) => r.detectionToStackMs)),
    },
    stacksNamingTheCulprit: latency.filter((r) => r.top === 'spinInBench').length,
    slowdown: Object.fromEntries(
      CONFIGS.filter((c) => c !== 'none').map((c) => [
        c,
        {
          await: {
            median: median(ratio(c, 'awaitMs')),
            min: Math.min(...ratio(c, 'awaitMs')),
            max: max(ratio(c, 'awaitMs')),
          },
          compute: {
            median: median(ratio(c, 'computeMs')),
            min: Math.min(...ratio(c, 'computeMs')),
            max: max(ratio(c, 'computeMs')),
          },
        },
      ]),
    ),
  };
  const date = new Date().toISOString();
  const f = (x) => x.toFixed(1);
  const r = (x) => `${x.median.toFixed(3)} (${x.min.toFixed(3)}–${x.max.toFixed(3)})`;
  const md = [
    `# sysprobe stall benchmark (${date})`,
    '',
    `Machine: ${os.cpus().length}× ${os.cpus()[0]?.model.trim()}, Node ${process.version}. ${TRIALS} stalls of 500 ms at the default 200 ms threshold; ${ROUNDS} rounds of the slowdown workload.`,
    '',
    '| measure | median | max | target |',
    '|---|---:|---:|---|',
    `| detection delay after the threshold, ms | ${f(summary.detectionDelayMs.median)} | ${f(summary.detectionDelayMs.max)} | < 50 |`,
    `| detection to stack (Debugger.enable + pause), ms | ${f(summary.detectionToStackMs.median)} | ${f(summary.detectionToStackMs.max)} | < 100 |`,
    '',
    `Stacks whose top frame was the blocking function: ${summary.stacksNamingTheCulprit} of ${TRIALS}.`,
    '',
    'Main-thread slowdown while nothing stalls: time of the same work (median of 5 runs per child) relative to `none` in the same round, median across rounds (min–max). `none-2` is the A/A control.',
    '',
    '| configuration | await-heavy (300k awaits) | compute (JSON round trips) |',
    '|---|---:|---:|',
    ...Object.entries(summary.slowdown).map(([c, s]) => `| ${c} | ${r(s.await)} | ${r(s.compute)} |`),
    '',
    'Raw numbers: the JSON file next to this one.',
  ].join('\n');
  fs.mkdirSync(RESULTS_DIR, { recursive: true });
  const stamp = date.replace(/[:.]/g, '-').replace(/-\d{3}Z$/, 'Z');
  fs.writeFileSync(
    path.join(RESULTS_DIR, `stall-${stamp}.json`),
    JSON.stringify({ date, latency, rounds, summary }, null, 2),
  );
  fs.writeFileSync(path.join(RESULTS_DIR, 'stall-latest.md'), `${md}\n`);
  console.log(`\n${md}\n\nwrote bench/results/stall-${stamp}.json and bench/results/stall-latest.md`);
}

if (args[0] === '--child') {
  const run = args[1] === 'latency' ? latencyChild() : slowdownChild(args[2]);
  run.catch((err) => {
    console.error(err);
    process.exit(1);
  });
} else {
  main().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
