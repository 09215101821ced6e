'use strict';
// Overhead benchmark: `npm run bench:overhead [-- --quick | --rounds N --idle-seconds S --load-seconds S --only a,b]`.
//
// Each configuration runs as its own child (bench/server.js). The parent reads the
// child's CPU from /proc (so measuring never wakes the child) while it idles and
// while autocannon (in this process) loads it. Configurations alternate in rounds,
// and 'none' runs twice per round ('none-2') as an A/A control for the noise floor.

const { fork, execFileSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const autocannon = require('autocannon');

const DEFAULT_CONFIGS = ['none', 'sysprobe', 'prom-client', 'none-2', 'otel-runtime-node'];
// Opt-in with --only: sysprobe with the JS heartbeat instead of the
// native loop watch, and sysprobe at the same export cadence as otel-runtime-node.
const ALL_CONFIGS = [...DEFAULT_CONFIGS, 'sysprobe-heartbeat', 'sysprobe-export1s', 'sysprobe-norequests'];
const CONFIG_NOTES = {
  none: 'no instrumentation',
  'none-2': 'no instrumentation again (A/A control)',
  sysprobe:
    'start() defaults (native loop watch, stall threshold 200 ms, sample 1 s) + MeterProvider, PeriodicExportingMetricReader 10 min interval → InMemoryMetricExporter; the child lives ~1.5 min, so export cost is excluded (no export ever runs; `sysprobe-export1s` has it)',
  'sysprobe-heartbeat': "as sysprobe, but loopWatch: 'heartbeat' (the JS fallback: a main-thread timer every 200 ms)",
  'sysprobe-export1s': 'as sysprobe, but the reader exports every 1 s (same export cadence as otel-runtime-node)',
  'sysprobe-norequests':
    "as sysprobe, but samplers.requests off (no in-flight request table): sysprobe over this is the table's per-request cost",
  'prom-client': 'collectDefaultMetrics() with defaults (event-loop monitor at 10 ms); never scraped',
  'otel-runtime-node':
    'RuntimeNodeInstrumentation defaults (monitoringPrecision 10 ms) + MeterProvider, PeriodicExportingMetricReader 1 s interval → InMemoryMetricExporter',
};
const SERVER = path.join(__dirname, 'server.js');
const RESULTS_DIR = path.join(__dirname, 'results');
const START_TIMEOUT_MS = 15_000;
const CLK_TCK = clockTicks();

const USAGE = `usage: node bench/overhead.js [--quick] [--rounds N] [--idle-seconds S] [--load-seconds S]
       [--warmup-seconds S] [--connections N] [--only ${ALL_CONFIGS.join(',')}]
default configurations: ${DEFAULT_CONFIGS.join(', ')} ('none' always runs, as the baseline)`;

function parseArgs(argv) {
  const quick = argv.includes('--quick');
  // Default warm-up is 40 s: V8's memory reducer runs GCs in every isolate that allocated at
  // startup, from ~8 s up to ~35 s after start (tens of ms of CPU across main, worker and GC
  // helper threads), which a shorter warm-up puts inside the idle window as a spike.
  // Idle windows are 30 s by default: the worker batches every 10 s, and a shorter window can fall
  // between two batches (or catch two). --quick: a ~1.5 min smoke run; explicit flags override it.
  const opts = quick
    ? {
        quick,
        rounds: 2,
        idleSeconds: 3,
        loadSeconds: 2,
        warmupSeconds: 1,
        loadWarmupSeconds: 1,
        connections: 10,
        only: DEFAULT_CONFIGS,
      }
    : {
        quick,
        rounds: 3,
        idleSeconds: 30,
        loadSeconds: 10,
        warmupSeconds: 40,
        loadWarmupSeconds: 1,
        connections: 10,
        only: DEFAULT_CONFIGS,
      };
  const numeric = {
    '--rounds': 'rounds',
    '--idle-seconds': 'idleSeconds',
    '--load-seconds': 'loadSeconds',
    '--warmup-seconds': 'warmupSeconds',
    '--connections': 'connections',
  };
  for (let i = 0; i < argv.length; i++) {
    let [flag, value] = argv[i].split('=', 2);
    if (flag === '--quick') continue;
    if (flag === '--help' || flag === '-h') {
      console.log(USAGE);
      process.exit(0);
    }
    if (!(flag in numeric) && flag !== '--only') throw new Error(`unknown flag ${flag}\n${USAGE}`);
    value ??= argv[++i];
    if (value === undefined) throw new Error(`${flag} needs a value\n${USAGE}`);
    if (flag === '--only') {
      const names = value
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean);
      const unknown = names.filter((n) => !ALL_CONFIGS.includes(n));
      if (unknown.length)
        throw new Error(`unknown configuration(s) ${unknown.join(', ')}; known: ${ALL_CONFIGS.join(', ')}`);
      // 'none' is the baseline every ratio is paired with, so it always runs.
      opts.only = ALL_CONFIGS.filter((n) => n === 'none' || names.includes(n));
    } else {
      const n = Number(value);
      if (!(n > 0) || ((flag === '--rounds' || flag === '--connections') && !Number.isInteger(n)))
        throw new Error(`${flag} needs a positive number; got ${value}`);
      opts[numeric[flag]] = n;
    }
  }
  // autocannon counts whole seconds.
  opts.loadSeconds = Math.max(1, Math.round(opts.loadSeconds));
  return opts;
}

function clockTicks() {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' })) || 100;
  } catch {
    return 100;
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const median = (xs) => {
  const s = xs.filter(Number.isFinite).sort((a, b) => a - b);
  if (!s.length) return NaN;
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

// ---- /proc readings -------------------------------------------------------

/** utime+stime of the whole process, ms. Includes exited threads, but only 10 ms (1 tick) resolution. */
function processTicksMs(pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // fields[0] is stat field 3
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLK_TCK;
}

/** CPU time of one thread, ns: schedstat (ns resolution) where the kernel has it, else stat ticks. */
function threadCpuNs(pid, tid) {
  try {
    return Number(fs.readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
  } catch (err) {
    if (err.code !== 'ENOENT' || !fs.existsSync(`/proc/${pid}/task/${tid}`)) throw err;
    const stat = fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1e9) / CLK_TCK;
  }
}

function snapshot(pid) {
  const threads = new Map();
  for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
    try {
      threads.set(tid, threadCpuNs(pid, tid));
    } catch {
      /* the thread exited while we listed */
    }
  }
  return { at: process.hrtime.bigint(), ticksMs: processTicksMs(pid), threads };
}

/**
 * CPU between two snapshots. The whole-process figure from schedstat sums the live
 * threads (a thread that exits mid-window loses its CPU since `a`; counted in
 * `exitedThreads`); the stat-ticks figure includes exited threads but is coarse.
 */
function cpuBetween(a, b, pid, labels) {
  const wallS = Number(b.at - a.at) / 1e9;
  const byThread = { main: 0, other: 0 };
  let sumNs = 0;
  for (const [tid, ns] of b.threads) {
    const delta = ns - (a.threads.get(tid) ?? 0); // a new thread started inside the window
    sumNs += delta;
    const label = tid === String(pid) ? 'main' : (labels[tid] ?? 'other');
    byThread[label] = (byThread[label] ?? 0) + delta / 1e6;
  }
  const exitedThreads = [...a.threads.keys()].filter((tid) => !b.threads.has(tid)).length;
  return {
    wallS,
    processMs: sumNs / 1e6,
    processTicksMs: b.ticksMs - a.ticksMs,
    mainMs: byThread.main,
    byThreadMs: byThread,
    exitedThreads,
  };
}

// ---- children ---------------------------------------------------------------

const children = new Set();

function startServer(name) {
  return new Promise((resolve, reject) => {
    const child = fork(SERVER, [name], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
    children.add(child);
    child.once('exit', () => children.delete(child));
    const fail = (err) => {
      clearTimeout(timer);
      child.kill('SIGKILL');
      reject(err);
    };
    const onExit = (code, signal) => fail(new Error(`${name}: server exited (${signal ?? code}) before it was ready`));
    const timer = setTimeout(
      () => fail(new Error(`${name}: server not ready within ${START_TIMEOUT_MS / 1000} s`)),
      START_TIMEOUT_MS,
    );
    child.on('error', fail);
    child.once('exit', onExit);
    child.once('message', (msg) => {
      if (msg?.type !== 'ready') return fail(new Error(`${name}: server failed: ${msg?.error ?? JSON.stringify(msg)}`));
      clearTimeout(timer);
      child.off('exit', onExit);
      resolve({ child, pid: child.pid, url: `http://127.0.0.1:${msg.port}`, threads: msg.threads ?? {} });
    });
  });
}

async function stopServer(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
  await exited;
  clearTimeout(timer);
}

function killAll() {
  for (const child of children) child.kill('SIGKILL');
}
process.on('exit', killAll);
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'])
  process.on(signal, () => process.exit(128 + os.constants.signals[signal]));

// ---- one run ----------------------------------------------------------------

async function runOnce(name, opts) {
  const server = await startServer(name);
  try {
    const { pid, url, threads } = server;
    // Idle: let startup (JIT, worker start, first samples) settle, then read /proc at both ends only.
    await sleep(opts.warmupSeconds * 1000);
    const i0 = snapshot(pid);
    await sleep(opts.idleSeconds * 1000);
    const idle = cpuBetween(i0, snapshot(pid), pid, threads);

    // Load: a short untimed run first so every configuration is measured with a warm JIT.
    const load = (duration) => autocannon({ url, connections: opts.connections, duration });
    await load(opts.loadWarmupSeconds);
    const l0 = snapshot(pid);
    const result = await load(opts.loadSeconds);
    const cpu = cpuBetween(l0, snapshot(pid), pid, threads);
    const requests = result['2xx'];
    if (!requests) throw new Error(`${name}: no successful requests under load`);
    return {
      idle: {
        wallS: idle.wallS,
        mainMsPerS: idle.mainMs / idle.wallS,
        processMsPerS: idle.processMs / idle.wallS,
        processTicksMsPerS: idle.processTicksMs / idle.wallS,
        byThreadMsPerS: Object.fromEntries(Object.entries(idle.byThreadMs).map(([k, v]) => [k, v / idle.wallS])),
        exitedThreads: idle.exitedThreads,
      },
      load: {
        wallS: cpu.wallS,
        requests,
        errors: result.errors + result.timeouts + result.non2xx,
        reqPerS: requests / cpu.wallS,
        cpuUsPerReq: (cpu.processMs * 1000) / requests,
        cpuTicksUsPerReq: (cpu.processTicksMs * 1000) / requests,
        mainCpuUsPerReq: (cpu.mainMs * 1000) / requests,
        exitedThreads: cpu.exitedThreads,
      },
    };
  } finally {
    await stopServer(server.child);
  }
}

// ---- summary & output -------------------------------------------------------

function summarize(runs, configs) {
  const rounds = [...new Set(runs.map((r) => r.round))];
  const get = (round, config) => runs.find((r) => r.round === round && r.config === config);
  return configs.map((config) => {
    const own = runs.filter((r) => r.config === config);
    // Paired with 'none' of the same round, so drift across the run cancels out.
    const paired = rounds.map((round) => [get(round, config), get(round, 'none')]).filter(([c, n]) => c && n);
    const ratios = paired.map(([c, n]) => c.load.cpuUsPerReq / n.load.cpuUsPerReq);
    const m = (f) => median(own.map(f));
    return {
      config,
      rounds: own.length,
      idleMainMsPerS: m((r) => r.idle.mainMsPerS),
      idleProcessMsPerS: m((r) => r.idle.processMsPerS),
      idleProcessTicksMsPerS: m((r) => r.idle.processTicksMsPerS),
      idleSysprobeWorkerMsPerS: own.some((r) => 'sysprobe-worker' in r.idle.byThreadMsPerS)
        ? m((r) => r.idle.byThreadMsPerS['sysprobe-worker'])
        : undefined,
      idleSysprobeWatchdogMsPerS: own.some((r) => 'sysprobe-watchdog' in r.idle.byThreadMsPerS)
        ? m((r) => r.idle.byThreadMsPerS['sysprobe-watchdog'])
        : undefined,
      idleOtherThreadsMsPerS: m((r) => r.idle.byThreadMsPerS.other),
      idleProcessDeltaVsNoneMsPerS: median(paired.map(([c, n]) => c.idle.processMsPerS - n.idle.processMsPerS)),
      idleMainDeltaVsNoneMsPerS: median(paired.map(([c, n]) => c.idle.mainMsPerS - n.idle.mainMsPerS)),
      loadCpuUsPerReq: m((r) => r.load.cpuUsPerReq),
      loadMainCpuUsPerReq: m((r) => r.load.mainCpuUsPerReq),
      loadReqPerS: m((r) => r.load.reqPerS),
      loadRatioVsNone: median(ratios),
      loadRatioVsNoneMin: ratios.length ? Math.min(...ratios) : NaN,
      loadRatioVsNoneMax: ratios.length ? Math.max(...ratios) : NaN,
      // The in-flight request table's cost: sysprobe over sysprobe without it, paired by round.
      ...(config === 'sysprobe' && configs.includes('sysprobe-norequests')
        ? (() => {
            const own = rounds
              .map((round) => [get(round, 'sysprobe'), get(round, 'sysprobe-norequests')])
              .filter(([a, b]) => a && b)
              .map(([a, b]) => a.load.cpuUsPerReq / b.load.cpuUsPerReq);
            return {
              loadRatioVsNoRequests: median(own),
              loadRatioVsNoRequestsMin: Math.min(...own),
              loadRatioVsNoRequestsMax: Math.max(...own),
            };
          })()
        : {}),
    };
  });
}

function markdown(report) {
  const f = (x, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : '–');
  const signed = (x, d = 2) => (Number.isFinite(x) ? (x >= 0 ? '+' : '') + x.toFixed(d) : '–');
  const { settings: s, machine: mc } = report;
  const lines = [
    `# sysprobe overhead benchmark (${report.date})`,
    '',
    `Machine: ${mc.cpus}× ${mc.cpuModel}, ${mc.os}, Node ${mc.node}. Commit ${mc.commit}, dist/src hash ${report.dist.atStart}.`,
    ...(report.dist.changedDuringRun
      ? [
          '',
          `**Warning: dist/src was rebuilt during the run (hash ${report.dist.atEnd} at the end); later children loaded different code.**`,
        ]
      : []),
    `Settings: ${s.rounds} rounds (configurations alternate, order rotated each round), warm-up ${s.warmupSeconds} s, idle ${s.idleSeconds} s, ` +
      `load ${s.loadSeconds} s after a ${s.loadWarmupSeconds} s warm-up, autocannon ${s.connections} connections from the parent process${s.quick ? ' (--quick)' : ''}.`,
    '',
    'Idle CPU is ms of CPU per wall second, split by thread (medians across rounds, so the parts need not add up exactly; ' +
      'Δ is the median of per-round differences from `none`). "other threads" are V8\'s GC/compiler helpers and libuv\'s pool. ' +
      'Load CPU is server-process CPU µs per request; the ratio is the median of per-round ratios to `none` in the same round (min–max in brackets). ' +
      '`none-2` is identical to `none`: its row is the noise floor.',
    '',
    '| configuration | idle main thread ms/s | idle sysprobe worker ms/s | idle sysprobe watchdog ms/s | idle other threads ms/s | idle process ms/s | Δ process vs none | idle process ms/s (stat ticks) | load CPU µs/req | ratio vs none | req/s |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...report.summary.map(
      (r) =>
        `| ${r.config} | ${f(r.idleMainMsPerS)} | ${r.idleSysprobeWorkerMsPerS === undefined ? '' : f(r.idleSysprobeWorkerMsPerS)} | ` +
        `${r.idleSysprobeWatchdogMsPerS === undefined ? '' : f(r.idleSysprobeWatchdogMsPerS)} | ` +
        `${f(r.idleOtherThreadsMsPerS)} | ${f(r.idleProcessMsPerS)} | ${r.config === 'none' ? '' : signed(r.idleProcessDeltaVsNoneMsPerS)} | ` +
        `${f(r.idleProcessTicksMsPerS, 1)} | ${f(r.loadCpuUsPerReq, 1)} | ` +
        `${r.config === 'none' ? '1 (baseline)' : `${f(r.loadRatioVsNone, 3)} (${f(r.loadRatioVsNoneMin, 3)}–${f(r.loadRatioVsNoneMax, 3)})`} | ${f(r.loadReqPerS, 0)} |`,
    ),
    '',
    'Configurations:',
    ...report.settings.configs.map((c) => `- \`${c}\`: ${CONFIG_NOTES[c]}`),
    '',
    'Method: CPU read by the parent from /proc/<pid>/task/<tid>/schedstat (ns on CPU; whole process = sum of live threads) and /proc/<pid>/stat utime+stime ' +
      `(10 ms ticks, includes exited threads) at the start and end of each window only. Raw per-run numbers are in ${report.jsonFile}.`,
    '',
  ];
  return lines.join('\n');
}

/** A hash of the built SDK the children load, to notice a rebuild (e.g. a concurrent `npm test`) mid-run. */
function distHash() {
  const hash = crypto.createHash('sha256');
  const walk = (dir) => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const file = path.join(dir, entry.name);
      if (entry.isDirectory()) walk(file);
      else hash.update(file).update(fs.readFileSync(file));
    }
  };
  walk(path.join(__dirname, '..', 'dist', 'src'));
  return hash.digest('hex').slice(0, 12);
}

function machineInfo() {
  let commit = 'unknown';
  try {
    const git = (...args) =>
      execFileSync('git', args, {
        cwd: path.join(__dirname, '..'),
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'ignore'],
      }).trim();
    commit =
      git('rev-parse', '--short', 'HEAD') + (git('status', '--porcelain', '--', 'src') ? ' (src/ modified)' : '');
  } catch {
    /* not a git checkout */
  }
  return {
    node: process.version,
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model ?? 'unknown',
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    totalMemMiB: Math.round(os.totalmem() / 2 ** 20),
    loadavgAtStart: os.loadavg(),
    clockTicks: CLK_TCK,
    schedstat: fs.existsSync(`/proc/${process.pid}/task/${process.pid}/schedstat`),
    commit,
  };
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const configs = opts.only;
  const perRun = 0.5 + opts.warmupSeconds + opts.idleSeconds + opts.loadWarmupSeconds + opts.loadSeconds + 0.5; // + start and stop
  console.log(
    `overhead: ${configs.join(', ')} × ${opts.rounds} rounds, about ${((perRun * configs.length * opts.rounds) / 60).toFixed(1)} min`,
  );
  const machine = machineInfo();
  const distAtStart = distHash();
  const runs = [];
  for (let round = 0; round < opts.rounds; round++) {
    // Rotate the order each round so no configuration always runs first or last.
    const order = configs.map((_, i) => configs[(i + round) % configs.length]);
    for (const config of order) {
      const r = await runOnce(config, opts);
      runs.push({ round, config, ...r });
      const threads = Object.entries(r.idle.byThreadMsPerS)
        .map(([label, v]) => `${label.replace('sysprobe-', '')} ${v.toFixed(2)}`)
        .join(', ');
      console.log(
        `  round ${round + 1} ${config.padEnd(18)} idle process ${r.idle.processMsPerS.toFixed(2)} ms/s (${threads}); ` +
          `load ${r.load.cpuUsPerReq.toFixed(1)} µs/req, ${r.load.reqPerS.toFixed(0)} req/s`,
      );
    }
  }

  const date = new Date().toISOString();
  const jsonFile = `bench/results/overhead-${date.replace(/:/g, '-').replace(/\.\d+Z$/, 'Z')}${opts.quick ? '-quick' : ''}.json`;
  const distAtEnd = distHash();
  const report = {
    date,
    jsonFile,
    machine,
    dist: { atStart: distAtStart, atEnd: distAtEnd, changedDuringRun: distAtStart !== distAtEnd },
    settings: {
      ...opts,
      only: undefined,
      configs,
      configNotes: Object.fromEntries(configs.map((c) => [c, CONFIG_NOTES[c]])),
    },
    summary: summarize(runs, configs),
    runs,
  };
  const md = markdown(report);
  fs.mkdirSync(RESULTS_DIR, { recursive: true });
  fs.writeFileSync(
    path.join(__dirname, '..', jsonFile),
    JSON.stringify(report, (k, v) => (typeof v === 'number' ? Math.round(v * 1000) / 1000 : v), 2) + '\n',
  );
  fs.writeFileSync(path.join(RESULTS_DIR, 'overhead-latest.md'), md);
  console.log(`\n${md}\nwrote ${jsonFile} and bench/results/overhead-latest.md`);
}

main().catch((err) => {
  console.error(err.message ?? err);
  killAll();
  process.exitCode = 1;
});
