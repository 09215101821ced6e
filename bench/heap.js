'use strict';
// Heap analysis benchmark: `npm run bench:heap [-- --shape both|map|large-leak] [--mb 275] [--leak 200000] [--rounds 2] [--no-memlab] [--keep] [--dir D] [--name heap]`.
// --leaks-only times only the leak searches (sysprobe's and memlab's), not the parse and load rows.
// --dir D keeps the snapshots in D/<shape>-<size>/ and reuses them on the next run (generating them is slow).
//
// 1. A child process writes three snapshots A, B, C, in one of two shapes (both by default,
//    each in its own table):
//    - map: a heap of about --mb MB of snapshot (a linked filler graph), snapshot A, --leak
//      objects leaked into a Map, B, a little more leak and filler, C.
//    - large-leak: a 60 MB baseline, A; 420,000 sessions leaked into a Map amid churn (a
//      ring of requests replaced as they come, ~90 MB of requests in flight), B; the requests
//      done, 420,000 more sessions, C: about 70 / 290 / 345 MB, the leak-size-bound case.
// 2. Each task runs in a fresh process under /usr/bin/time -v (wall time, peak RSS):
//    sysprobe parse of B, sysprobe parse + dominators + retained sizes of B, the
//    three-snapshot leak search (`sysprobe heap diff A B C --json`), and when memlab
//    2.0.5 is installed in bench/peers/ (PUPPETEER_SKIP_DOWNLOAD=1 npm install --prefix
//    bench/peers memlab@2.0.5; never a dependency of sysprobe) its full load of B
//    (`getFullHeapFromFile`: parse, dominators, retained sizes) and
//    `memlab find-leaks --trace-all-objects`.
// 3. Checks each leak search found the Map-held leak, prints ratios, writes
//    bench/results/<name>-<time>.json and bench/results/<name>-latest.md (name: heap).
//    Each task runs --rounds times, all tasks in turn each round, and keeps its fastest run.

const { execFileSync, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..');
const RESULTS_DIR = path.join(__dirname, 'results');
const PEERS = path.join(__dirname, 'peers');
const args = process.argv.slice(2);
const arg = (name, dflt) => (args.includes(name) ? args[args.indexOf(name) + 1] : dflt);
const TARGET_MB = Number(arg('--mb', '100'));
const LEAK = Number(arg('--leak', '200000'));
const WITH_MEMLAB = !args.includes('--no-memlab');
const KEEP = args.includes('--keep');
const LEAKS_ONLY = args.includes('--leaks-only');
const DIR = arg('--dir'); // keep and reuse the generated snapshots here
const ROUNDS = Number(arg('--rounds', '2'));
const NAME = arg('--name', 'heap'); // results go to bench/results/<name>-latest.md
const SHAPES = arg('--shape', 'both') === 'both' ? ['map', 'large-leak'] : [arg('--shape')];
const LARGE_LEAK = 420_000;
const FILLER_BYTES = 105; // snapshot bytes per filler object, measured on Node 20

const GENERATE = String.raw`
const v8 = require('node:v8');
const [dir, fillers, leak] = [process.argv[1], Number(process.argv[2]), Number(process.argv[3])];
class Filler { constructor(i, next) { this.id = i; this.next = next; this.tag = TAGS[i % TAGS.length]; } }
class LeakyEntry { constructor(i) { this.i = i; this.payload = 'session-' + i; } }
const TAGS = Array.from({ length: 1000 }, (_, i) => 'tag-' + i);
globalThis.world = { chunks: [] };
globalThis.app = { sessionCache: new Map() };
function fill(n) {
  for (let c = 0; c < n; c += 10000) {
    let head = null;
    for (let i = 0; i < 10000 && c + i < n; i++) head = new Filler(c + i, head);
    world.chunks.push(head);
  }
}
fill(fillers);
v8.writeHeapSnapshot(dir + '/a.heapsnapshot');
for (let i = 0; i < leak; i++) app.sessionCache.set('s' + i, new LeakyEntry(i));
v8.writeHeapSnapshot(dir + '/b.heapsnapshot');
for (let i = leak; i < leak + leak / 10; i++) app.sessionCache.set('s' + i, new LeakyEntry(i));
fill(fillers / 20);
v8.writeHeapSnapshot(dir + '/c.heapsnapshot');
`;

const GENERATE_LARGE = String.raw`
const v8 = require('node:v8');
const [dir, leak] = [process.argv[1], Number(process.argv[2])];
class Filler { constructor(i, next) { this.id = i; this.next = next; this.tag = TAGS[i % TAGS.length]; } }
class Session { constructor(i) { this.id = i; this.token = 'tok-' + i.toString(36).padStart(10, '0'); } }
class Request { constructor(i) { this.i = i; this.path = '/p/' + i; } }
const TAGS = Array.from({ length: 1000 }, (_, i) => 'tag-' + i);
globalThis.world = { chunks: [] };
globalThis.app = { sessions: new Map(), inflight: [] };
const ring = new Array(50000);
let served = 0;
function churn(n) { for (let i = 0; i < n; i++) ring[served++ % ring.length] = new Request(served); }
function fill(n) { for (let c = 0; c < n; c += 10000) { let head = null; for (let i = 0; i < 10000 && c + i < n; i++) head = new Filler(c + i, head); world.chunks.push(head); } }
let next = 0;
function leakSome(n) { for (let i = 0; i < n; i++, next++) { app.sessions.set('s' + next, new Session(next)); if (i % 4 === 0) churn(1); } }
fill(Math.round(60e6 / 105));
churn(100000);
v8.writeHeapSnapshot(dir + '/a.heapsnapshot');
leakSome(leak);
for (let i = 0; i < 90e6 / 200; i++) app.inflight.push(new Request(i));
v8.writeHeapSnapshot(dir + '/b.heapsnapshot');
app.inflight = [];
leakSome(leak);
churn(100000);
v8.writeHeapSnapshot(dir + '/c.heapsnapshot');
`;

const TASK = String.raw`
const [what, ...files] = process.argv.slice(1);
const t0 = process.hrtime.bigint();
const ms = () => Number(process.hrtime.bigint() - t0) / 1e6;
(async () => {
  if (what === 'sysprobe-parse') {
    const { readHeapSnapshot } = require(process.env.ROOT + '/dist/src/heap/reader.js');
    const raw = await readHeapSnapshot(files[0]);
    console.log(JSON.stringify({ parseMs: ms(), nodes: raw.nodeCount, edges: raw.edgeCount }));
  } else if (what === 'sysprobe-dominators') {
    const { readHeapSnapshot } = require(process.env.ROOT + '/dist/src/heap/reader.js');
    const { HeapGraph } = require(process.env.ROOT + '/dist/src/heap/graph.js');
    const g = new HeapGraph(await readHeapSnapshot(files[0]));
    const parseMs = ms();
    g.analyze();
    console.log(JSON.stringify({ parseMs, analyzeMs: ms() - parseMs, rootRetained: g.retainedSize(0) }));
  } else if (what === 'sysprobe-leaks-one-core') {
    const { diff } = require(process.env.ROOT + '/dist/src/heap/analysis.js');
    const d = await diff(files, { parallel: false });
    console.log(JSON.stringify({ totalMs: ms(), first: d.leaks[0], timings: d.timings }));
  } else if (what === 'memlab-load') {
    const { getFullHeapFromFile } = require(process.env.PEERS + '/node_modules/@memlab/heap-analysis');
    const heap = await getFullHeapFromFile(files[0]);
    console.log(JSON.stringify({ loadMs: ms(), nodes: heap.nodes.length }));
  }
})().catch((e) => { console.error(e); process.exit(1); });
`;

/** Runs a command under /usr/bin/time -v; returns wall ms, peak RSS MB, stdout. */
function timed(label, cmd, cmdArgs, env = {}) {
  process.stderr.write(`  ${label} …`);
  const r = spawnSync('/usr/bin/time', ['-v', cmd, ...cmdArgs], {
    env: { ...process.env, ROOT, PEERS, ...env },
    encoding: 'utf8',
    maxBuffer: 256 << 20,
    timeout: 30 * 60_000,
  });
  const rss = /Maximum resident set size \(kbytes\): (\d+)/.exec(r.stderr);
  const wall = /Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)/.exec(r.stderr);
  const wallMs = wall ? ((Number(wall[1] ?? 0) * 60 + Number(wall[2])) * 60 + Number(wall[3])) * 1000 : NaN;
  const user = /User time \(seconds\): ([\d.]+)/.exec(r.stderr),
    sys = /System time \(seconds\): ([\d.]+)/.exec(r.stderr);
  const cpuMs = user && sys ? (Number(user[1]) + Number(sys[1])) * 1000 : NaN;
  const result = {
    label,
    exitCode: r.status,
    wallMs,
    cpuMs,
    peakRssMb: rss ? Number(rss[1]) / 1024 : NaN,
    stdout: r.stdout,
  };
  Object.defineProperty(result, 'output', { value: r.stdout + r.stderr, enumerable: false }); // memlab prints its traces on stderr
  process.stderr.write(
    ` ${(wallMs / 1000).toFixed(2)} s, ${result.peakRssMb.toFixed(0)} MB peak RSS${r.status ? ` (exit ${r.status})` : ''}\n`,
  );
  if (r.status) result.stderrTail = r.stderr.split('\n').slice(-15).join('\n');
  return result;
}

function lastJson(stdout) {
  const line = stdout
    .trim()
    .split('\n')
    .reverse()
    .find((l) => l.startsWith('{'));
  return line ? JSON.parse(line) : undefined;
}

function main() {
  if (!fs.existsSync(path.join(ROOT, 'dist/src/heap/reader.js'))) throw new Error('run `npm run build` first');
  const tables = SHAPES.map(runShape);
  const md = [
    ...tables.map((t) => t.md),
    `Reproduce: \`npm run bench:heap --${args.length ? ` ${args.join(' ')}` : ''}\`.`,
    '',
  ].join('\n');
  fs.writeFileSync(path.join(RESULTS_DIR, `${NAME}-latest.md`), md);
  process.stdout.write(md);
  if (tables.some((t) => !t.ok)) process.exitCode = 1;
}

function runShape(shape) {
  const large = shape === 'large-leak';
  const leak = large ? LARGE_LEAK : LEAK;
  const dir = DIR
    ? path.join(DIR, large ? `large-leak-${leak}` : `map-${TARGET_MB}mb-${LEAK}`)
    : fs.mkdtempSync(path.join(os.tmpdir(), 'sysprobe-bench-heap-'));
  const reuse = DIR && ['a', 'b', 'c'].every((n) => fs.existsSync(path.join(dir, `${n}.heapsnapshot`)));
  if (DIR) fs.mkdirSync(dir, { recursive: true });
  if (reuse) process.stderr.write(`reusing the snapshots in ${dir}\n`);
  else if (large) {
    process.stderr.write(
      `generating the large-leak snapshots (${leak} sessions leaked between each pair, amid churn) in ${dir}\n`,
    );
    execFileSync(process.execPath, ['--max-old-space-size=16384', '-e', GENERATE_LARGE, dir, String(leak)], {
      stdio: 'inherit',
    });
  } else {
    const leakBytes = LEAK * 300; // a LeakyEntry, its string and its Map slots
    const fillers = Math.max(10_000, Math.round((TARGET_MB * 1e6 - 5e6 - leakBytes) / FILLER_BYTES));
    process.stderr.write(
      `generating snapshots (~${TARGET_MB} MB for B, ${fillers} filler objects, a ${LEAK}-object Map leak) in ${dir}\n`,
    );
    execFileSync(process.execPath, ['--max-old-space-size=16384', '-e', GENERATE, dir, String(fillers), String(LEAK)], {
      stdio: 'inherit',
    });
  }
  const [A, B, C] = ['a', 'b', 'c'].map((n) => path.join(dir, `${n}.heapsnapshot`));
  const sizes = [A, B, C].map((f) => fs.statSync(f).size / 1e6);
  process.stderr.write(`snapshot sizes: ${sizes.map((s) => `${s.toFixed(0)} MB`).join(', ')}\n`);

  // The snapshots were just written: flush them to disk first, or the first tasks timed
  // share the machine with the kernel's writeback.
  execFileSync('sync');
  const memlabBin = path.join(PEERS, 'node_modules/@memlab/cli/bin/memlab.js');
  const haveMemlab = WITH_MEMLAB && fs.existsSync(memlabBin);
  if (WITH_MEMLAB && !haveMemlab)
    process.stderr.write(
      'memlab is not installed: PUPPETEER_SKIP_DOWNLOAD=1 npm install --prefix bench/peers memlab@2.0.5\n',
    );
  const memlabEnv = { NODE_OPTIONS: '--max-old-space-size=16384' };
  const allTasks = [
    ['sysprobeParse', 'sysprobe parse B', ['-e', TASK, 'sysprobe-parse', B]],
    ['sysprobeDominators', 'sysprobe parse + dominators + retained B', ['-e', TASK, 'sysprobe-dominators', B]],
    [
      'sysprobeLeaks',
      'sysprobe heap diff A B C',
      [path.join(ROOT, 'dist/src/cli/main.js'), 'heap', 'diff', A, B, C, '--json'],
    ],
    [
      'sysprobeLeaksOneCore',
      'sysprobe leak search on one core (parallel: false)',
      ['-e', TASK, 'sysprobe-leaks-one-core', A, B, C],
    ],
    ...(haveMemlab
      ? [
          [
            'memlabLoad',
            'memlab getFullHeapFromFile B (parse + dominators + retained)',
            ['-e', TASK, 'memlab-load', B],
            memlabEnv,
          ],
          [
            'memlabLeaks',
            'memlab find-leaks --trace-all-objects A B C',
            [
              memlabBin,
              'find-leaks',
              '--baseline',
              A,
              '--target',
              B,
              '--final',
              C,
              '--trace-all-objects',
              '--work-dir',
              path.join(dir, 'memlab'),
            ],
            memlabEnv,
          ],
        ]
      : []),
  ];
  const tasks = LEAKS_ONLY ? allTasks.filter(([key]) => /Leaks/.test(key)) : allTasks;
  // Every task once per round, in turn; each keeps its fastest round (the least disturbed by the machine's noise).
  const runs = {};
  for (let round = 1; round <= ROUNDS; round++) {
    if (ROUNDS > 1) process.stderr.write(`round ${round} of ${ROUNDS}\n`);
    for (const [key, label, taskArgs, env] of tasks) {
      const r = timed(label, process.execPath, taskArgs, env);
      r.rounds = ROUNDS;
      if (!runs[key] || r.exitCode || (!runs[key].exitCode && r.wallMs < runs[key].wallMs)) runs[key] = r;
    }
  }
  const diff = JSON.parse(runs.sysprobeLeaks.stdout || '{"leaks":[]}');
  const first = diff.leaks[0];
  const [leakClass, holder] = large ? ['Session', 'sessions'] : ['LeakyEntry', 'sessionCache'];
  // The large shape's leak is counted within 1 %: V8 keeps a few of the newest entries elsewhere too.
  const sysprobeFound =
    first?.constructor === leakClass &&
    Math.abs(first.count - leak) <= (large ? leak / 100 : 0) &&
    new RegExp(`Map "${holder}"`).test(first.retainerPath);
  runs.sysprobeLeaks.found = sysprobeFound;
  runs.sysprobeLeaks.first = first;
  runs.sysprobeLeaks.stdout = undefined;

  if (haveMemlab) {
    const out = runs.memlabLeaks.output;
    // Found when some leak trace goes through the Map's property name to a LeakyEntry.
    const traces = out.split('--Similar leaks in this run');
    const hit = traces.findIndex((t) => t.includes(holder) && t.includes(`[${leakClass}]`));
    // "names the leak first": the Map-held leak is memlab's first trace, as it is sysprobe's first group.
    runs.memlabLeaks.found = hit === 1;
    runs.memlabLeaks.rankOfMapLeak = hit > 0 ? hit : undefined;
    runs.memlabLeaks.leakCount = Number(/MemLab found (\d+) leak/.exec(out)?.[1] ?? NaN);
    runs.memlabLeaks.stdout = undefined;
  }
  for (const r of Object.values(runs))
    if (r.stdout !== undefined) {
      r.result = lastJson(r.stdout);
      r.stdout = undefined;
    }
  const oneCoreFound = JSON.stringify(runs.sysprobeLeaksOneCore.result?.first) === JSON.stringify(first);

  const ratio = (ours, theirs) => theirs / ours;
  const ratios = haveMemlab
    ? {
        ...(LEAKS_ONLY
          ? {}
          : {
              loadWall: ratio(runs.sysprobeDominators.wallMs, runs.memlabLoad.wallMs),
              loadRss: ratio(runs.sysprobeDominators.peakRssMb, runs.memlabLoad.peakRssMb),
            }),
        leaksWall: ratio(runs.sysprobeLeaks.wallMs, runs.memlabLeaks.wallMs),
        leaksRss: ratio(runs.sysprobeLeaks.peakRssMb, runs.memlabLeaks.peakRssMb),
        leaksCpu: ratio(runs.sysprobeLeaks.cpuMs, runs.memlabLeaks.cpuMs),
      }
    : {};
  const result = {
    at: new Date().toISOString(),
    node: process.version,
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model,
    shape,
    targetMb: large ? undefined : TARGET_MB,
    leak,
    snapshotMb: sizes,
    nodes: runs.sysprobeParse?.result?.nodes,
    runs,
    ratios,
  };
  fs.mkdirSync(RESULTS_DIR, { recursive: true });
  const stamp = result.at.replace(/[:.]/g, '-').replace(/-\d+Z$/, 'Z');
  fs.writeFileSync(path.join(RESULTS_DIR, `${NAME}-${shape}-${stamp}.json`), `${JSON.stringify(result, null, 2)}\n`);

  const row = (name, r, extra = '') =>
    `| ${name} | ${(r.wallMs / 1000).toFixed(2)} s | ${r.peakRssMb.toFixed(0)} MB | ${extra} |`;
  const sp = runs.sysprobeDominators?.result ?? {};
  const md = [
    `# Heap analysis benchmark, ${large ? 'large-leak' : 'map'} shape (${result.at})`,
    '',
    `Node ${process.version}, ${result.cpus} CPUs, load average ${os
      .loadavg()
      .map((l) => l.toFixed(1))
      .join(
        ' ',
      )} at the end (the machine is shared). Snapshots A/B/C: ${sizes.map((s) => `${s.toFixed(0)} MB`).join(' / ')} ${result.nodes ? ` (${result.nodes} nodes in B)` : ''}, ${large ? `${leak} objects leaked into a Map between each pair, amid churn` : `a ${leak}-object leak held by a Map`}.`,
    `Each row is a fresh process under \`/usr/bin/time -v\`, the fastest of ${ROUNDS} round${ROUNDS > 1 ? 's' : ''} (every task once per round, in turn).`,
    '',
    '| task | wall | peak RSS | notes |',
    '| --- | --- | --- | --- |',
    ...(LEAKS_ONLY
      ? []
      : [
          row(
            'sysprobe: parse B',
            runs.sysprobeParse,
            `parse ${(runs.sysprobeParse.result?.parseMs / 1000).toFixed(2)} s in-process`,
          ),
          row(
            'sysprobe: parse + dominators + retained sizes of B',
            runs.sysprobeDominators,
            `parse ${(sp.parseMs / 1000).toFixed(2)} s, dominators + retained ${(sp.analyzeMs / 1000).toFixed(2)} s`,
          ),
        ]),
    row(
      'sysprobe: `heap diff A B C` (leak search)',
      runs.sysprobeLeaks,
      `${sysprobeFound ? 'found' : 'NOT found'}: #1 is ${first?.constructor} ×${first?.count}, ${first?.retainerPath}; CPU ${(runs.sysprobeLeaks.cpuMs / 1000).toFixed(2)} s`,
    ),
    row(
      'sysprobe: the same on one core (`parallel: false`)',
      runs.sysprobeLeaksOneCore,
      oneCoreFound ? 'found, the same #1' : 'NOT found',
    ),
    ...(haveMemlab
      ? [
          ...(LEAKS_ONLY
            ? []
            : [row('memlab 2.0.5: getFullHeapFromFile(B)', runs.memlabLoad, 'parse + dominators + retained sizes')]),
          row(
            'memlab 2.0.5: find-leaks --trace-all-objects',
            runs.memlabLeaks,
            `${runs.memlabLeaks.found ? 'found' : 'NOT first'}: the Map leak is trace #${runs.memlabLeaks.rankOfMapLeak} of ${runs.memlabLeaks.leakCount}; CPU ${(runs.memlabLeaks.cpuMs / 1000).toFixed(2)} s`,
          ),
          '',
          `Ratios (memlab ÷ sysprobe): ${LEAKS_ONLY ? '' : `load ${ratios.loadWall.toFixed(1)}× faster at ${ratios.loadRss.toFixed(1)}× less peak RSS; `}leak search ${ratios.leaksWall.toFixed(1)}× faster (wall; ${ratios.leaksCpu.toFixed(1)}× in CPU time) at ${(1 / ratios.leaksRss).toFixed(2)}× memlab's peak RSS. Targets: ≥ 8× faster, ≤ 0.25× the peak RSS.`,
        ]
      : []),
    '',
  ].join('\n');
  if (DIR) fs.rmSync(path.join(dir, 'memlab'), { recursive: true, force: true });
  else if (!KEEP) fs.rmSync(dir, { recursive: true, force: true });
  return { md, ok: sysprobeFound && oneCoreFound && (!haveMemlab || runs.memlabLeaks.found) };
}

main();
