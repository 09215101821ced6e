'use strict';
// Report benchmark: `npm run bench:report [-- --samples N --nodes N]`.
//
// Builds a large incident folder (by default 15 minutes of samples at 100 ms: 9000 samples,
// and a CPU profile of 50 000 nodes and 200 000 samples), runs `sysprobe report` on it in a
// child process a few times, and records the wall time, the child's peak RSS and the size of
// the HTML. Results: bench/results/report.json.

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const args = process.argv.slice(2);
const flag = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : fallback;
};
const SAMPLES = flag('--samples', 9000);
const NODES = flag('--nodes', 50_000);
const PROFILE_SAMPLES = flag('--profile-samples', 200_000);
const RUNS = flag('--runs', 3);
const CLI = path.join(__dirname, '..', 'dist', 'src', 'cli', 'main.js');

// A deterministic pseudo-random sequence, so every run measures the same incident.
let seed = 42;
const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;

function makeIncident(dir) {
  const t0 = Date.UTC(2026, 10, 26, 12, 0, 0);
  const trigger = t0 + 10 * 60_000;
  const samples = [];
  for (let i = 0; i < SAMPLES; i++) {
    const time = t0 + i * 100;
    const hot = Math.abs(time - trigger) < 30_000;
    samples.push({
      time,
      intervalMs: 100,
      mainStale: false,
      eventLoop: {
        delayMaxMs: hot ? 200 + random() * 800 : random() * 20,
        lagMs: 0,
        lagMaxMs: hot ? 200 + random() * 800 : random() * 20,
        utilization: hot ? 0.95 : random() * 0.3,
      },
      cpu: { userMs: i * 50, systemMs: i * 5, utilization: hot ? 1 + random() * 0.2 : random() * 0.4 },
      memory: { heapUsed: 50e6 + i * 5000 + random() * 5e6, heapTotal: 120e6, heapLimit: 2e9, external: 1e6 },
      sockets: {
        total: 40 + Math.round(random() * 20),
        byState: { ESTABLISHED: 40 },
        sendQueueBytes: 0,
        recvQueueBytes: 0,
      },
    });
  }
  // A call tree: each new node hangs under a random earlier one (biased to recent, so it gets deep).
  const nodes = [
    {
      id: 1,
      callFrame: { functionName: '(root)', scriptId: '0', url: '', lineNumber: -1, columnNumber: -1 },
      hitCount: 0,
      children: [],
    },
  ];
  for (let id = 2; id <= NODES; id++) {
    const parent = nodes[Math.max(0, nodes.length - 1 - Math.floor(random() * Math.min(nodes.length, 50)))];
    parent.children.push(id);
    nodes.push({
      id,
      callFrame: {
        functionName: `fn${id % 3000}`,
        scriptId: String(id % 200),
        url: `file:///srv/app/lib/module${id % 200}.js`,
        lineNumber: id % 500,
        columnNumber: 4,
      },
      hitCount: 0,
      children: [],
    });
  }
  const profileSamples = [];
  const timeDeltas = [];
  for (let i = 0; i < PROFILE_SAMPLES; i++) {
    const id = 2 + Math.floor(random() ** 2 * (NODES - 1));
    profileSamples.push(id);
    timeDeltas.push(100);
    nodes[id - 1].hitCount += 1;
  }
  const profile = { nodes, startTime: 0, endTime: PROFILE_SAMPLES * 100, samples: profileSamples, timeDeltas };
  const profileFile = 'cpu-profile-2026-11-26T121000.000Z-1.cpuprofile';
  fs.writeFileSync(path.join(dir, profileFile), JSON.stringify(profile));
  fs.writeFileSync(path.join(dir, 'samples.json'), JSON.stringify(samples));
  fs.writeFileSync(
    path.join(dir, 'stall-stack.json'),
    JSON.stringify({
      startedAt: trigger,
      durationMs: 900,
      capture: { how: 'debugger-pause' },
      frames: [{ functionName: 'hot', url: 'file:///srv/app/hot.js', lineNumber: 9, columnNumber: 2 }],
    }),
  );
  const logs = [];
  for (let i = 0; i < 2000; i++) logs.push(JSON.stringify({ time: t0 + i * 450, level: 'info', msg: `request ${i}` }));
  fs.writeFileSync(path.join(dir, 'logs.jsonl'), `${logs.join('\n')}\n`);
  const manifest = {
    id: path.basename(dir),
    status: 'closed',
    rules: ['stall', 'cpu-high'],
    triggersDropped: 0,
    openedAt: trigger,
    closedAt: trigger + 5 * 60_000,
    closeReason: 'quiet',
    triggers: [
      { kind: 'stall', rule: 'stall', value: 'eventLoop.stallMs', observed: 900, threshold: 200, at: trigger },
      { kind: 'rule', rule: 'cpu-high', value: 'cpu.utilization', observed: 1.1, threshold: 0.9, at: trigger + 30_000 },
    ],
    service: 'bench',
    pid: 1,
    hostname: 'bench',
    versions: { node: process.version, v8: process.versions.v8, sysprobe: 'bench' },
    traces: [],
    captures: [
      { kind: 'cpu-profile', file: profileFile, bytes: fs.statSync(path.join(dir, profileFile)).size },
      { kind: 'stall-stack', file: 'stall-stack.json', bytes: 100 },
    ],
    notTaken: [],
  };
  fs.writeFileSync(path.join(dir, 'manifest.json'), JSON.stringify(manifest));
  return {
    profileBytes: fs.statSync(path.join(dir, profileFile)).size,
    samplesBytes: fs.statSync(path.join(dir, 'samples.json')).size,
  };
}

function main() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sysprobe-bench-report-'));
  const input = makeIncident(dir);
  const runs = [];
  for (let i = 0; i < RUNS; i++) {
    const started = process.hrtime.bigint();
    // /usr/bin/time is not everywhere: the child reports its own peak RSS on stderr.
    const child = spawnSync(
      process.execPath,
      [
        '-e',
        `
      const { main } = require(${JSON.stringify(CLI)});
      main(['report', ${JSON.stringify(dir)}]).then((code) => { process.stderr.write(JSON.stringify({ code, maxRssBytes: process.resourceUsage().maxRSS * 1024 })); process.exitCode = code; });
    `,
      ],
      { encoding: 'utf8' },
    );
    const wallMs = Number(process.hrtime.bigint() - started) / 1e6;
    if (child.status !== 0) throw new Error(`sysprobe report failed: ${child.stderr}`);
    runs.push({ wallMs: Math.round(wallMs), ...JSON.parse(child.stderr) });
  }
  const htmlBytes = fs.statSync(path.join(dir, 'report.html')).size;
  const walls = runs.map((r) => r.wallMs).sort((a, b) => a - b);
  const result = {
    date: new Date().toISOString(),
    node: process.version,
    cpus: os.cpus().length,
    loadAverage: os.loadavg(),
    input: { samples: SAMPLES, profileNodes: NODES, profileSamples: PROFILE_SAMPLES, ...input },
    report: {
      wallMsMedian: walls[walls.length >> 1],
      wallMs: walls,
      htmlBytes,
      childMaxRssBytes: Math.max(...runs.map((r) => r.maxRssBytes)),
    },
  };
  fs.mkdirSync(path.join(__dirname, 'results'), { recursive: true });
  fs.writeFileSync(path.join(__dirname, 'results', 'report.json'), `${JSON.stringify(result, null, 2)}\n`);
  console.log(JSON.stringify(result, null, 2));
  fs.rmSync(dir, { recursive: true, force: true });
}

main();
