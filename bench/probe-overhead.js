'use strict';
// Probe and dependency-map overhead: the `probes` section of `npm run bench:net`
// (`npm run bench:net -- --sections probes [--quick | --rounds N --seconds S]`).
//
// Each configuration runs a small service in its own child process: every request it serves
// makes one outgoing request to an upstream (in the same child, over a keep-alive agent), so the
// dependency map's diagnostics-channel handlers run on each request. autocannon (in this
// process) loads the child; configurations alternate in rounds, and 'base' runs twice per round
// ('base-2') as an A/A control: the spread between the two is the noise floor.
//
//   base     sysprobe start() with dependencies: false and no probes
//   deps     sysprobe with the dependency map on (the default)
//   probes   the map plus 4 probes every 1 s (http and tcp to the upstream and to the service itself)
//
// First, a micro-benchmark: the map's cost per request on a kept-alive socket, in ns, by
// publishing on the real channel with a real connected socket (1e6 times, http and https).
//
// Results: bench/results/probes.json (req/s per run, medians, ratios to base).

const { fork } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');

const CONFIGS = ['base', 'deps', 'base-2', 'probes'];
const RESULTS = path.join(__dirname, 'results', 'probes.json');

if (require.main === module) {
  if (process.argv[2] === '--child') child(process.argv[3]);
  else
    parent(process.argv.slice(2)).catch((err) => {
      console.error(err);
      process.exit(1);
    });
}
module.exports = { measureProbeOverhead: parent };

async function child(config) {
  const upstream = http.createServer((_req, res) => res.end('upstream'));
  await new Promise((resolve) => upstream.listen(0, '127.0.0.1', resolve));
  const upstreamPort = upstream.address().port;
  const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
  const server = http.createServer((req, res) => {
    http
      .get({ host: 'localhost', port: upstreamPort, path: '/', agent }, (up) => {
        up.resume();
        up.on('end', () => res.end('ok'));
      })
      .on('error', () => {
        res.statusCode = 502;
        res.end();
      });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = server.address().port;
  const { start } = require('..');
  const { MeterProvider } = require('@opentelemetry/sdk-metrics');
  await start({
    serviceName: 'bench-probes',
    logger: require('pino')({ level: 'silent' }),
    meterProvider: new MeterProvider(),
    dependencies: config !== 'base' && config !== 'base-2',
    probes:
      config === 'probes'
        ? [
            { name: 'upstream', target: `http://localhost:${upstreamPort}/`, intervalMs: 1000 },
            { name: 'upstream-tcp', target: `tcp://127.0.0.1:${upstreamPort}`, intervalMs: 1000 },
            { name: 'self', target: `http://127.0.0.1:${port}/`, intervalMs: 1000 },
            { name: 'self-tcp', target: `tcp://127.0.0.1:${port}`, intervalMs: 1000 },
          ]
        : [],
  });
  process.send({ port });
}

function parseArgs(argv) {
  const opts = argv.includes('--quick') ? { rounds: 2, seconds: 3 } : { rounds: 3, seconds: 8 };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--rounds') opts.rounds = Number(argv[++i]);
    else if (argv[i] === '--seconds') opts.seconds = Number(argv[++i]);
    else if (argv[i] !== '--quick')
      throw new Error(
        `unknown flag ${argv[i]}; usage: node bench/probe-overhead.js [--quick] [--rounds N] [--seconds S]`,
      );
  }
  if (!(Number.isInteger(opts.rounds) && opts.rounds > 0 && opts.seconds >= 1))
    throw new Error('--rounds needs a positive integer, --seconds a number >= 1');
  return opts;
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

async function runOne(config, seconds) {
  const autocannon = require('autocannon');
  const proc = fork(__filename, ['--child', config], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  try {
    const { port } = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${config}: the child did not start within 15 s`)), 15_000);
      proc.once('message', (m) => {
        clearTimeout(timer);
        resolve(m);
      });
      proc.once('exit', (code) => reject(new Error(`${config}: the child exited with ${code}`)));
    });
    const url = `http://127.0.0.1:${port}/`;
    await autocannon({ url, connections: 10, duration: 1 }); // warm-up: JIT, connection pools
    const result = await autocannon({ url, connections: 10, duration: seconds });
    if (result.non2xx > 0 || result.errors > 0)
      throw new Error(`${config}: ${result.non2xx} non-2xx, ${result.errors} errors`);
    return { reqPerSec: result.requests.average, latencyP99Ms: result.latency.p99 };
  } finally {
    proc.kill();
  }
}

/** ns per `http.client.request.start` message for a request on a socket the map already saw. */
async function handlerNs() {
  const dc = require('node:diagnostics_channel');
  const net = require('node:net');
  const { DependencyMap } = require('../dist/src/dependencies/map.js');
  const server = net.createServer(() => {});
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const socket = net.connect(server.address().port, '127.0.0.1');
  await new Promise((resolve) => socket.once('connect', resolve));
  const channel = dc.channel('http.client.request.start');
  const { EventEmitter } = require('node:events');
  // A stand-in request per message (an EventEmitter, as ClientRequest is): an http one, and an
  // https one that an agent hands its pooled socket with a 'socket' event. The difference is the map.
  const measure = (n, protocol) => {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) {
      const request = new EventEmitter();
      request.protocol = protocol;
      request.host = 'localhost';
      channel.publish({ request });
      request.emit('socket', socket);
    }
    return Number((Number(process.hrtime.bigint() - t0) / n).toFixed(1));
  };
  const map = new DependencyMap();
  const runs = () => {
    measure(100_000, 'http:');
    measure(100_000, 'https:');
    return { httpNs: measure(1_000_000, 'http:'), httpsNs: measure(1_000_000, 'https:') };
  };
  const without = runs();
  map.start();
  const withMap = runs();
  map.stop();
  socket.destroy();
  server.close();
  return {
    withoutMap: without,
    withMap,
    note: 'ns per request on a kept-alive socket, including creating and emitting a stand-in request; the difference is the map',
  };
}

async function parent(argv) {
  const opts = parseArgs(argv);
  const micro = await handlerNs();
  console.log(
    `per request on a known socket, ns: without the map ${JSON.stringify(micro.withoutMap)}, with it ${JSON.stringify(micro.withMap)}`,
  );
  const runs = Object.fromEntries(CONFIGS.map((c) => [c, []]));
  for (let round = 1; round <= opts.rounds; round++) {
    for (const config of CONFIGS) {
      const run = await runOne(config, opts.seconds);
      runs[config].push(run);
      console.log(
        `round ${round} ${config.padEnd(7)} ${run.reqPerSec.toFixed(0).padStart(7)} req/s  p99 ${run.latencyP99Ms} ms`,
      );
    }
  }
  const medians = Object.fromEntries(CONFIGS.map((c) => [c, median(runs[c].map((r) => r.reqPerSec))]));
  const ratio = (c) => Number((medians[c] / medians.base).toFixed(4));
  const result = {
    date: new Date().toISOString(),
    node: process.version,
    cpus: require('node:os').cpus().length,
    options: opts,
    service:
      'each request makes one outgoing request to an upstream over a keep-alive agent (the map sees every request)',
    handlerPerRequest: micro,
    medianReqPerSec: medians,
    ratioToBase: { 'base-2 (A/A noise)': ratio('base-2'), deps: ratio('deps'), probes: ratio('probes') },
    runs,
  };
  fs.mkdirSync(path.dirname(RESULTS), { recursive: true });
  fs.writeFileSync(RESULTS, `${JSON.stringify(result, null, 2)}\n`);
  console.log(JSON.stringify(result.ratioToBase), `→ ${path.relative(process.cwd(), RESULTS)}`);
  return result;
}
