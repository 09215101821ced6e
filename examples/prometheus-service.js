'use strict';
// A small HTTP service instrumented with sysprobe, exported to Prometheus.
//
//   npm run example:prometheus            # then open the printed /metrics URL
//   PORT=0 METRICS_PORT=0 node examples/prometheus-service.js   # free ports, for tests
//
// Env: HOST (default 127.0.0.1), PORT (default 3000), METRICS_PORT (default 9464);
// a port of 0 picks a free one. LOAD=1/0 forces the self-generated load on/off
// (default: on when started from a terminal).
// stdout gets one JSON line when ready: {"event":"ready","port":...,"metricsPort":...}.
// Everything else (sysprobe's logs, the human hint) goes to stderr.

const http = require('node:http');
const pino = require('pino');
const { MeterProvider } = require('@opentelemetry/sdk-metrics');
const { resourceFromAttributes } = require('@opentelemetry/resources');
const { PrometheusExporter } = require('@opentelemetry/exporter-prometheus');
const { start } = require('sysprobe');

const host = process.env.HOST || '127.0.0.1';
const port = Number(process.env.PORT ?? 3000);
const metricsPort = Number(process.env.METRICS_PORT ?? 9464);
const interactive = Boolean(process.stdout.isTTY);
const selfLoad = process.env.LOAD ? process.env.LOAD !== '0' : interactive;

/** Burns ~`ms` of CPU so /work shows up in CPU time and event-loop delay. */
function busyWork(ms) {
  const end = Date.now() + ms;
  let x = 0;
  while (Date.now() < end) x += Math.sqrt(x + 1);
  return x;
}

function listen(server, p) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(p, host, () => resolve(server.address().port));
  });
}

async function main() {
  // The exporter's own server treats port 0 as "use 9464", so we serve its handler ourselves.
  const exporter = new PrometheusExporter({ preventServerStart: true });
  // The app owns the OpenTelemetry SDK and its resource; sysprobe only creates instruments on it.
  const meterProvider = new MeterProvider({
    readers: [exporter],
    resource: resourceFromAttributes({ 'service.name': 'prometheus-example' }),
  });
  const metricsServer = http.createServer((req, res) => {
    if (req.url === '/metrics') exporter.getMetricsRequestHandler(req, res);
    else res.writeHead(404).end('try /metrics\n');
  });

  const probe = await start({
    serviceName: 'prometheus-example',
    sampleIntervalMs: 500,
    meterProvider,
    logger: pino({ level: process.env.SYSPROBE_LOG_LEVEL ?? 'info' }, pino.destination(2)),
    dumpDir: process.env.DUMP_DIR || './sysprobe-dumps', // where captures would go
  });

  const app = http.createServer((req, res) => {
    if (req.url === '/work') {
      busyWork(20);
      res.end('worked\n');
    } else if (req.url === '/block') {
      busyWork(400); // a stall: sysprobe's worker sees it while it lasts and logs "event loop stalled"
      res.end('blocked 400 ms\n');
    } else {
      res.end('hello world\n');
    }
  });

  const appPort = await listen(app, port);
  const boundMetricsPort = await listen(metricsServer, metricsPort);
  process.stdout.write(JSON.stringify({ event: 'ready', port: appPort, metricsPort: boundMetricsPort }) + '\n');
  if (interactive) {
    process.stderr.write(
      `Service on http://${host}:${appPort}/ — metrics at http://${host}:${boundMetricsPort}/metrics (Ctrl-C to stop)\n`,
    );
  }

  // A trickle of requests so the numbers move when someone is watching, and a stall every 10 s.
  let ticks = 0;
  const load = selfLoad
    ? setInterval(() => {
        const paths = ++ticks % 40 === 0 ? ['/block'] : ['/', '/work'];
        for (const path of paths)
          fetch(`http://${host}:${appPort}${path}`).then(
            (r) => r.text(),
            () => {},
          );
      }, 250)
    : undefined;
  // What sysprobe saw, every 5 s, from its flight recorder.
  const report = interactive
    ? setInterval(async () => {
        const samples = await probe.recent({ sinceMs: 5000 }).catch(() => []);
        const last = samples.at(-1);
        if (!last) return;
        const lagMax = Math.max(...samples.map((s) => s.eventLoop?.lagMaxMs ?? 0));
        const main = last.threads?.find((t) => t.role === 'main');
        process.stderr.write(
          `[sysprobe] last 5 s: longest the loop went without turning ${lagMax.toFixed(0)} ms (${probe.loopWatch} loop watch), ` +
            `ELU ${((last.eventLoop?.utilization ?? 0) * 100).toFixed(0)}%, process CPU ${((last.cpu?.utilization ?? 0) * 100).toFixed(0)}%` +
            `${main ? ` (main thread ${(main.utilization * 100).toFixed(0)}%)` : ''}, heap ${((last.memory?.heapUsed ?? 0) / 1048576).toFixed(1)} MB` +
            `${last.memory?.rss ? `, RSS ${(last.memory.rss / 1048576).toFixed(0)} MB` : ''}\n`,
        );
      }, 5000)
    : undefined;

  let stopping = false;
  const shutdown = async (signal) => {
    if (stopping) return;
    stopping = true;
    clearInterval(load);
    clearInterval(report);
    await probe.stop();
    await Promise.all(
      [app, metricsServer].map(
        (s) =>
          new Promise((resolve) => {
            s.close(() => resolve());
            s.closeAllConnections(); // keep-alive sockets would hold close() open
          }),
      ),
    );
    await meterProvider.shutdown();
    process.stderr.write(`stopped on ${signal}\n`);
  };
  process.once('SIGTERM', () => shutdown('SIGTERM'));
  process.once('SIGINT', () => shutdown('SIGINT'));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
