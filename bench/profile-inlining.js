'use strict';
// What the CPU profile's inlining switch costs the host: `npm run bench:profile-inlining [-- --rounds N]`.
//
// sysprobe turns TurboFan inlining off while it profiles the main thread (docs/architecture.md,
// "The function that burns the CPU"). Each round, in a fresh child, a warmed-up workload of small
// functions (closures, getters, JSON) runs on the main thread and counts its operations per 500 ms
// window: 3 s before, during a 3 s CPU profile taken with sysprobe, and 6 s after (code compiled
// during the profile keeps its calls un-inlined until V8 reoptimizes it). Configurations: the
// profile through sysprobe (inlining off), the same profile taken with V8's default (inlining on,
// through the inspector directly), and no profile. Throughput is relative to each child's own
// before-window, so children are comparable.

const { fork } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const RESULTS_DIR = path.join(__dirname, 'results');
const args = process.argv.slice(2);
const ROUNDS = Number(args[args.indexOf('--rounds') + 1]) || 3;
const CONFIGS = ['none', 'profile-v8-default', 'profile-sysprobe'];
const WINDOW_MS = 500;

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

class Account {
  constructor(id) {
    this.id = id;
    this.cents = id * 7;
  }
  get balance() {
    return this.cents / 100;
  }
}
const fee = (x) => x * 0.01;
const valid = (a) => a.balance >= 0 && a.id % 13 !== 0;
function work(accounts) {
  const picked = accounts.filter(valid).map((a) => a.balance - fee(a.balance));
  const total = picked.reduce((s, x) => s + x, 0);
  return JSON.parse(JSON.stringify({ total, n: picked.length })).n;
}

async function child(config) {
  const { start } = require('..');
  const accounts = Array.from({ length: 500 }, (_, i) => new Account(i));
  const windows = [];
  let ops = 0;
  let windowStart = Date.now();
  let running = true;
  // The workload runs in slices with a turn of the loop between, so the profiler's worker and the timers run.
  const slice = () => {
    const end = Date.now() + 20;
    while (Date.now() < end) {
      work(accounts);
      ops += 1;
    }
    if (Date.now() - windowStart >= WINDOW_MS) {
      windows.push(ops);
      ops = 0;
      windowStart = Date.now();
    }
    if (running) setImmediate(slice);
  };
  for (let i = 0; i < 20_000; i++) work(accounts); // warm: optimized, inlined
  const probe =
    config === 'profile-sysprobe'
      ? await start({
          defaultRules: false,
          dumpDir: path.join(require('node:os').tmpdir(), `sysprobe-bench-inl-${process.pid}`),
          logger: require('pino')({ level: 'silent' }),
        })
      : undefined;
  slice();
  await new Promise((r) => setTimeout(r, 3000));
  const profileFrom = windows.length;
  if (config === 'profile-sysprobe') await probe.captureCpuProfile({ durationMs: 3000 });
  else if (config === 'profile-v8-default') await profileWithInspector(3000);
  else await new Promise((r) => setTimeout(r, 3000));
  const profileTo = windows.length;
  await new Promise((r) => setTimeout(r, 6000));
  running = false;
  await probe?.stop();
  process.send({ windows, profileFrom, profileTo });
}

/** V8's own behaviour: the same profile (1 ms sampling) from a worker's inspector session, inlining left on. */
function profileWithInspector(durationMs) {
  const { Worker } = require('node:worker_threads');
  const source = `
    const { parentPort, workerData } = require('node:worker_threads');
    const inspector = require('node:inspector');
    const s = new inspector.Session(); s.connectToMainThread();
    const post = (m, p = {}) => new Promise((res, rej) => s.post(m, p, (e, r) => e ? rej(e) : res(r)));
    const keep = setInterval(() => {}, 1000); // inspector calls do not keep a worker alive
    (async () => {
      await post('Profiler.enable'); await post('Profiler.setSamplingInterval', { interval: 1000 }); await post('Profiler.start');
      await new Promise((r) => setTimeout(r, workerData));
      await post('Profiler.stop'); await post('Profiler.disable');
      clearInterval(keep);
      parentPort.postMessage('done');
    })();`;
  return new Promise((resolve) => {
    const w = new Worker(source, { eval: true, workerData: durationMs });
    w.once('message', () =>
      setTimeout(() => {
        resolve();
        w.terminate();
      }, 100),
    );
  });
}

async function parent() {
  const rows = [];
  for (let round = 0; round < ROUNDS; round++) {
    for (const config of CONFIGS) {
      const result = await new Promise((resolve, reject) => {
        const c = fork(__filename, ['--child', config], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
        c.once('message', resolve);
        c.once('exit', (code) => code !== 0 && reject(new Error(`${config} exited ${code}`)));
      });
      const { windows, profileFrom, profileTo } = result;
      const before = median(windows.slice(1, profileFrom)); // the first window is still settling
      const during = median(windows.slice(profileFrom, profileTo));
      const after = windows.slice(profileTo);
      rows.push({
        round,
        config,
        during: during / before,
        afterFirst2s: median(after.slice(0, 4)) / before,
        afterLast2s: median(after.slice(-4)) / before,
      });
      console.log(JSON.stringify(rows.at(-1)));
    }
  }
  const summary = Object.fromEntries(
    CONFIGS.map((config) => {
      const mine = rows.filter((r) => r.config === config);
      return [
        config,
        {
          during: median(mine.map((r) => r.during)),
          afterFirst2s: median(mine.map((r) => r.afterFirst2s)),
          afterLast2s: median(mine.map((r) => r.afterLast2s)),
        },
      ];
    }),
  );
  console.log('throughput relative to the 3 s before (medians of rounds):');
  console.table(summary);
  fs.mkdirSync(RESULTS_DIR, { recursive: true });
  fs.writeFileSync(
    path.join(RESULTS_DIR, 'profile-inlining.json'),
    JSON.stringify({ node: process.version, rounds: ROUNDS, summary, rows }, null, 2),
  );
}

if (process.argv[2] === '--child') {
  child(process.argv[3]).catch((err) => {
    console.error(err);
    process.exit(1);
  });
} else {
  parent().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
