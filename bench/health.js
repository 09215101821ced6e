'use strict';
// Health endpoint benchmark: `npm run bench:health [-- --seconds N --blocks N]`.
//
// The service runs in a child process with GET /health served by the probe worker; this
// process is the client, so a blocked service cannot slow the clock that measures it.
// 1. Latency while idle: sequential keep-alive requests, p50/p99.
// 2. Latency while the main thread is blocked: the child spins for 2 s in a named function,
//    several times; requests every 25 ms from 300 ms into each block (after the stall is seen at
//    200 ms), reported apart before 500 ms (the stall's stack capture may still be running).
// 3. Idle CPU cost: the child's CPU time per second over N seconds at rest, without the
//    endpoint, with it and no requests, and with it polled once a second (a load balancer).
// Results: bench/results/health.json.

const { fork } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');

const args = process.argv.slice(2);
const flag = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : fallback;
};
const SECONDS = flag('--seconds', 10);
const BLOCKS = flag('--blocks', 3);
const RESULTS = path.join(__dirname, 'results', 'health.json');

// ---- child: the service ----------------------------------------------------------------

function busyLoopInService(ms) {
  const end = Date.now() + ms;
  let x = 0;
  while (Date.now() < end) x += Math.sqrt(x + 1);
  return x;
}

async function child(config) {
  const { start } = require('..');
  const probe = await start({
    logger: require('pino')({ level: 'silent' }),
    ...(config === 'none' ? {} : { health: { port: 0 } }),
  });
  const keepAlive = setInterval(() => {}, 60_000);
  process.on('message', (message) => {
    if (message.cmd === 'block') {
      busyLoopInService(message.ms);
      process.send({ blocked: true });
    }
    if (message.cmd === 'cpu') {
      const u = process.cpuUsage();
      process.send({ cpuMs: (u.user + u.system) / 1000 });
    }
    if (message.cmd === 'stop')
      void probe.stop().then(() => {
        clearInterval(keepAlive);
        process.disconnect();
      });
  });
  process.send({ port: probe.healthAddress()?.port });
}

// ---- parent: the client ------------------------------------------------------------------

const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
function get(port) {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    http
      .get({ host: '127.0.0.1', port, path: '/health', agent }, (res) => {
        res.resume();
        res.on('end', () => resolve({ status: res.statusCode, ms: Number(process.hrtime.bigint() - t0) / 1e6 }));
      })
      .on('error', reject);
  });
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};
const summary = (xs) => ({
  n: xs.length,
  p50: +pct(xs, 50).toFixed(2),
  p99: +pct(xs, 99).toFixed(2),
  max: +Math.max(...xs).toFixed(2),
});

function spawn(config) {
  const proc = fork(__filename, ['--child', config], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const next = () => new Promise((resolve) => proc.once('message', resolve));
  return { proc, next, ready: next() };
}

async function cpuPerSecond(config, poll) {
  const { proc, next, ready } = spawn(config);
  const { port } = await ready;
  await sleep(2000); // start-up settles
  proc.send({ cmd: 'cpu' });
  const before = (await next()).cpuMs;
  const t0 = Date.now();
  while (Date.now() - t0 < SECONDS * 1000) {
    if (poll) await get(port);
    await sleep(1000);
  }
  proc.send({ cmd: 'cpu' });
  const after = (await next()).cpuMs;
  proc.send({ cmd: 'stop' });
  return +((after - before) / ((Date.now() - t0) / 1000)).toFixed(3);
}

async function main() {
  const { proc, next, ready } = spawn('health');
  const { port } = await ready;
  await sleep(1500);
  const idle = [];
  for (let i = 0; i < 500; i++) idle.push((await get(port)).ms);
  const blocked = [];
  const early = []; // 300-500 ms into a block: the worker may still be taking the stall's stack
  const statuses = {};
  for (let b = 0; b < BLOCKS; b++) {
    const done = next();
    proc.send({ cmd: 'block', ms: 2000 });
    await sleep(300);
    const t0 = Date.now();
    while (Date.now() - t0 < 1500) {
      const offset = 300 + Date.now() - t0;
      const { status, ms } = await get(port);
      (offset < 500 ? early : blocked).push(ms);
      statuses[status] = (statuses[status] ?? 0) + 1;
      await sleep(25);
    }
    await done;
    await sleep(1000);
  }
  proc.send({ cmd: 'stop' });
  agent.destroy();
  const cpu = {
    withoutEndpoint: await cpuPerSecond('none', false),
    withEndpointNoRequests: await cpuPerSecond('health', false),
    withEndpointPolledEverySecond: await cpuPerSecond('health', true),
  };
  const result = {
    date: new Date().toISOString(),
    node: process.version,
    cpus: require('node:os').cpus().length,
    loadavg: require('node:os').loadavg(),
    latencyMs: {
      idle: summary(idle),
      blockedFrom500ms: summary(blocked),
      blocked300to500ms: summary(early),
      blockedStatuses: statuses,
    },
    idleCpuMsPerSecond: { ...cpu, seconds: SECONDS },
  };
  fs.mkdirSync(path.dirname(RESULTS), { recursive: true });
  fs.writeFileSync(RESULTS, JSON.stringify(result, null, 2) + '\n');
  console.log(JSON.stringify(result, null, 2));
}

if (args[0] === '--child') void child(args[1]);
else
  main().catch((err) => {
    console.error(err);
    process.exitCode = 1;
  });
