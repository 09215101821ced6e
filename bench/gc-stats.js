'use strict';
// What measuring each GC costs: `npm run bench:gc [-- --rounds 5] [--node /path/to/node] [--addon build/Release/gc_stats.node]`.
//
// gc.ts needs, per GC kind, the bytes each GC reclaimed, and the heap left after the last
// full GC. Three ways to get them are compared against a run that measures nothing:
//   observer   Node's 'gc' performance entries only (count and pause: no bytes; the floor)
//   addon      the entries plus native/gc_stats.cc (V8's GC prologue/epilogue, two GetHeapStatistics per GC)
//   profiler   the entries plus v8.GCProfiler, stopped and restarted once a second as a sampler
//              would (it returns its per-GC before/after heap statistics only at stop())
// Each mode runs in a fresh process: a fixed allocation workload (young garbage and a slowly
// turning old set: scavenges and some mark-compacts), then an idle spell. Reported: CPU of the
// workload and its GC count, the extra CPU per GC against `none`, and idle CPU per second.
// Modes run interleaved, --rounds times; each keeps its median. Writes bench/results/gc-stats-latest.md.

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const args = process.argv.slice(2);
const arg = (name, dflt) => (args.includes(name) ? args[args.indexOf(name) + 1] : dflt);
const ROUNDS = Number(arg('--rounds', '5'));
const NODE = arg('--node', process.execPath);
const ADDON = path.resolve(arg('--addon', path.join(__dirname, '..', 'build', 'Release', 'gc_stats.node')));
const IDLE_MS = Number(arg('--idle-ms', '5000'));
const WORK = Number(arg('--work', '6000'));
// --callgrind: count instructions under valgrind (repeatable whatever else the machine does) instead of CPU time.
const CALLGRIND = args.includes('--callgrind');
const MODES = ['none', 'observer', 'addon', 'profiler'];

const CHILD = String.raw`
const v8 = require('node:v8');
const { PerformanceObserver } = require('node:perf_hooks');
const [mode, addonPath, idleMs, rounds] = [process.argv[1], process.argv[2], Number(process.argv[3]), Number(process.argv[4])];
let gcs = 0, reclaimed = 0, liveAfterMajor = -1;
if (mode !== 'none') new PerformanceObserver((list) => { gcs += list.getEntries().length; }).observe({ entryTypes: ['gc'] });
let addon, profiler, timer;
const buf = new Float64Array(14);
if (mode === 'addon') { addon = require(addonPath); addon.start(); }
function drainProfiler() {
  const data = profiler.stop();
  profiler = new v8.GCProfiler(); profiler.start();
  for (const s of data?.statistics ?? []) {
    const before = s.beforeGC.heapStatistics.usedHeapSize, after = s.afterGC.heapStatistics.usedHeapSize;
    if (before > after) reclaimed += before - after;
    if (s.gcType === 'MarkSweepCompact') liveAfterMajor = after;
  }
}
if (mode === 'profiler') { profiler = new v8.GCProfiler(); profiler.start(); timer = setInterval(drainProfiler, 1000); }
const old = new Array(200000);
function work(rounds) {
  let sink = 0;
  for (let r = 0; r < rounds; r++) {
    const young = [];
    for (let i = 0; i < 2000; i++) young.push({ i, s: 'x' + i, a: [i, r] });
    for (let k = 0; k < 40; k++) old[(r * 40 + k) % old.length] = young[(k * 50) % young.length];
    sink += young.length;
  }
  return sink;
}
const t0 = process.cpuUsage();
const w0 = process.hrtime.bigint();
work(rounds);
if (mode === 'addon') { addon.read(buf); reclaimed = buf[2] + buf[5] + buf[8] + buf[11]; liveAfterMajor = buf[12]; }
const busy = process.cpuUsage(t0);
const wall = Number(process.hrtime.bigint() - w0) / 1e6;
setTimeout(() => {
  if (mode === 'profiler') drainProfiler();
  const idle = process.cpuUsage(t0);
  clearInterval(timer);
  process.stdout.write(JSON.stringify({
    busyCpuMs: (busy.user + busy.system) / 1000, wallMs: wall, gcs,
    idleCpuMs: (idle.user + idle.system - busy.user - busy.system) / 1000,
    reclaimed, liveAfterMajor,
  }));
  process.exit(0);
}, idleMs);
`;

function runOnce(mode) {
  const childArgs = ['--max-semi-space-size=1', '-e', CHILD, mode, ADDON, String(IDLE_MS), String(WORK)];
  if (!CALLGRIND) {
    const res = spawnSync(NODE, childArgs, { encoding: 'utf8', env: process.env });
    if (res.status !== 0) throw new Error(`${mode}: exit ${res.status}: ${res.stderr}`);
    return JSON.parse(res.stdout);
  }
  const out = path.join(require('node:os').tmpdir(), `gc-stats-${process.pid}.callgrind`);
  const res = spawnSync(
    'valgrind',
    ['--tool=callgrind', `--callgrind-out-file=${out}`, NODE, '--jitless', ...childArgs],
    { encoding: 'utf8', env: process.env },
  );
  if (res.status !== 0) throw new Error(`${mode}: exit ${res.status}: ${res.stderr.slice(-2000)}`);
  fs.rmSync(out, { force: true });
  const collected = Number(/Collected : (\d+)/.exec(res.stderr)[1]);
  // Reported in the CPU columns as millions of instructions.
  return { ...JSON.parse(res.stdout), busyCpuMs: collected / 1e6, idleCpuMs: 0 };
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
};

const runs = Object.fromEntries(MODES.map((m) => [m, []]));
for (let r = 0; r < ROUNDS; r++) for (const mode of MODES) runs[mode].push(runOnce(mode));

const version = spawnSync(NODE, ['-p', 'process.version'], { encoding: 'utf8' }).stdout.trim();
const base = median(runs.none.map((x) => x.busyCpuMs));
const gcCount = median(runs.observer.map((x) => x.gcs));
const rows = MODES.map((mode) => {
  const busy = median(runs[mode].map((x) => x.busyCpuMs));
  const gcs = mode === 'none' ? gcCount : median(runs[mode].map((x) => x.gcs));
  const idle = median(runs[mode].map((x) => x.idleCpuMs));
  const last = runs[mode][runs[mode].length - 1];
  return {
    mode,
    busyCpuMs: busy,
    gcs,
    extraUsPerGc: mode === 'none' ? 0 : ((busy - base) * 1000) / gcs,
    idleCpuMsPerS: idle / (IDLE_MS / 1000),
    measuresBytes: last.reclaimed > 0,
    liveAfterMajor: last.liveAfterMajor,
  };
});
const lines = [
  `# GC statistics: cost per GC (${version}, ${ROUNDS} rounds, medians${CALLGRIND ? '; CPU columns are millions of instructions under callgrind --jitless' : ''})`,
  '',
  `Command: \`node bench/gc-stats.js ${args.join(' ')}\``,
  '',
  '| mode | workload CPU ms | GCs | extra µs per GC vs none | idle CPU ms/s | reclaimed bytes | live heap after last major |',
  '|---|---:|---:|---:|---:|---|---:|',
  ...rows.map(
    (r) =>
      `| ${r.mode} | ${r.busyCpuMs.toFixed(0)} | ${r.gcs} | ${r.extraUsPerGc.toFixed(1)} | ${r.idleCpuMsPerS.toFixed(3)} | ${r.measuresBytes ? 'yes' : 'no'} | ${r.liveAfterMajor > 0 ? r.liveAfterMajor : '-'} |`,
  ),
];
console.log(lines.join('\n'));
const dir = path.join(__dirname, 'results');
fs.mkdirSync(dir, { recursive: true });
fs.writeFileSync(
  path.join(dir, `gc-stats-${version}${CALLGRIND ? '-callgrind' : ''}-latest.md`),
  `${lines.join('\n')}\n`,
);
