'use strict';
// Network benchmark: `npm run bench:net [-- --sockets 100,1000,10000] [--sections sockets,probes] [--quick]`.
//
// Built from sections, each a function that returns rows for the table and the JSON file;
// add one to SECTIONS to measure another part.
//
// sockets: CPU time of one socket-sampler sweep with N loopback sockets open in the process
//   (N/2 connections to its own server, both ends counted), with and without ss. Each N runs
//   in a fresh child whose descriptor limit is raised first (`ulimit -n`). "sampler CPU" is
//   the process's CPU over the sweep (the readlink calls run on libuv's pool, so all threads
//   count); "ss CPU" is the ss child's, from the reaped children's times in /proc/self/stat.
//   ss lists every TCP socket of the network namespace, so its cost also grows with the
//   machine's other sockets (reported as ssSockets).

const { execFileSync, spawn } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');

const RESULTS = path.join(__dirname, 'results', 'net.json');
const args = process.argv.slice(2);
const arg = (name, fallback) => (args.includes(`--${name}`) ? args[args.indexOf(`--${name}`) + 1] : fallback);
const SWEEPS = 5;

/** CPU ms of this process, and of its reaped children (utime, stime, cutime, cstime in clock ticks of 10 ms). */
function cpuTimes() {
  const stat = fs.readFileSync('/proc/self/stat', 'latin1');
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const usage = process.cpuUsage();
  return { selfMs: (usage.user + usage.system) / 1000, childrenMs: (Number(rest[13]) + Number(rest[14])) * 10 };
}

/** In the child: open `sockets` loopback sockets, then time sweeps. */
async function socketsChild(sockets, ss) {
  const { SocketSampler } = require('../dist/src/sockets/sampler.js');
  const server = net.createServer(() => {}).listen(0, '127.0.0.1', 4096);
  await new Promise((r) => server.once('listening', r));
  const { port } = server.address();
  const clients = [];
  // In batches, so the accept queue never overflows.
  for (let opened = 0; opened < sockets / 2;) {
    const batch = Math.min(200, sockets / 2 - opened);
    clients.push(
      ...(await Promise.all(
        Array.from(
          { length: batch },
          () =>
            new Promise((resolve, reject) => {
              const c = net.connect(port, '127.0.0.1', () => resolve(c)).on('error', reject);
            }),
        ),
      )),
    );
    opened += batch;
  }
  const sampler = new SocketSampler({ intervalMs: 10_000, ss, maxRemotes: 20 }, () => {});
  const first = await sampler.sweep(); // warm-up: code loaded, rates primed
  const runs = [];
  for (let i = 0; i < SWEEPS; i++) {
    const before = cpuTimes();
    const t0 = performance.now();
    const picture = await sampler.sweep();
    const wallMs = performance.now() - t0;
    const after = cpuTimes();
    runs.push({
      wallMs,
      cpuMs: after.selfMs - before.selfMs,
      ssCpuMs: after.childrenMs - before.childrenMs,
      total: picture.total,
      ss: picture.ss,
    });
  }
  const median = (key) => runs.map((r) => r[key]).sort((a, b) => a - b)[Math.floor(runs.length / 2)];
  const ssSockets = ss ? execFileSync('ss', ['-tanH']).toString().split('\n').filter(Boolean).length : undefined;
  process.send({
    sockets,
    ss,
    seen: Math.min(...runs.map((r) => r.total)),
    seenMax: Math.max(...runs.map((r) => r.total)),
    firstSeen: first.total,
    ssState: first.ss,
    wallMs: median('wallMs'),
    cpuMs: median('cpuMs'),
    ssCpuMs: median('ssCpuMs'),
    ssSockets,
  });
  for (const c of clients) c.destroy();
  server.close();
  process.exit(0);
}

function runChild(kind, ...params) {
  const limit = 4096 + Math.max(0, ...params.filter((p) => typeof p === 'number')) * 2;
  // Raise the descriptor limit in a shell before exec'ing node: as root both limits rise; else up to the hard limit.
  const script = `ulimit -n ${limit} 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$0" "$@"`;
  const child = spawn('sh', ['-c', script, process.execPath, __filename, '--child', kind, ...params.map(String)], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  return new Promise((resolve, reject) => {
    let result;
    child.on('message', (m) => {
      result = m;
    });
    child.on('exit', (code) =>
      result ? resolve(result) : reject(new Error(`${kind} child exited ${code} without a result`)),
    );
  });
}

const SECTIONS = {
  async sockets() {
    const counts = arg('sockets', '100,1000,10000').split(',').map(Number);
    const rows = [];
    for (const sockets of counts) {
      for (const ss of [false, true]) rows.push(await runChild('sockets', sockets, ss ? 'ss' : 'no-ss'));
    }
    console.log('\nsocket sampler, one sweep (median of 5)');
    console.table(
      rows.map((r) => ({
        sockets: r.sockets,
        seen: r.seen === r.seenMax ? r.seen : `${r.seen}-${r.seenMax}`,
        ss: r.ss ? r.ssState : 'off',
        'wall ms': r.wallMs.toFixed(1),
        'sampler CPU ms': r.cpuMs.toFixed(1),
        'ss CPU ms': r.ss ? r.ssCpuMs.toFixed(0) : '-',
        'ss sockets': r.ssSockets ?? '-',
      })),
    );
    return rows;
  },
  /** The probes' and the dependency map's cost on a service's throughput (bench/probe-overhead.js). */
  async probes() {
    const { measureProbeOverhead } = require('./probe-overhead.js');
    const passOn = ['quick', 'rounds', 'seconds'].flatMap((name) => {
      const i = args.indexOf(`--${name}`);
      return i < 0 ? [] : name === 'quick' ? ['--quick'] : [`--${name}`, args[i + 1]];
    });
    const result = await measureProbeOverhead(passOn);
    return {
      handlerPerRequest: result.handlerPerRequest,
      medianReqPerSec: result.medianReqPerSec,
      ratioToBase: result.ratioToBase,
    };
  },
};

async function main() {
  if (args[0] === '--child') {
    const [, kind, ...params] = args;
    if (kind === 'sockets') return socketsChild(Number(params[0]), params[1] === 'ss');
    throw new Error(`unknown child ${kind}`);
  }
  if (process.platform !== 'linux') {
    console.log('bench:net needs Linux (/proc/net); nothing measured.');
    return;
  }
  const chosen = arg('sections', Object.keys(SECTIONS).join(',')).split(',');
  // A run of some sections keeps the others' last results in the file (each section has its own date).
  let sections = {};
  try {
    sections = JSON.parse(fs.readFileSync(RESULTS, 'utf8')).sections ?? {};
  } catch {
    /* first run */
  }
  const results = { node: process.version, cpus: require('node:os').cpus().length, sections };
  for (const name of chosen) {
    const rows = await SECTIONS[name]();
    sections[name] = { date: new Date().toISOString(), rows };
  }
  fs.mkdirSync(path.dirname(RESULTS), { recursive: true });
  fs.writeFileSync(RESULTS, `${JSON.stringify(results, null, 2)}\n`);
  console.log(`\nwritten to ${path.relative(process.cwd(), RESULTS)}`);
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
