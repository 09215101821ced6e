'use strict';
// Child process of bench/overhead.js: a hello-world node:http server with one
// instrumentation configuration applied. It tells the parent its port over IPC
// and then sends nothing more, so the parent's measurements never wake it.

const fs = require('node:fs');
const http = require('node:http');

const name = process.argv[2];

/** A MeterProvider whose reader exports to memory every `intervalMs` (no network in the measurement). */
function meterProvider(intervalMs) {
  const {
    MeterProvider,
    PeriodicExportingMetricReader,
    InMemoryMetricExporter,
    AggregationTemporality,
  } = require('@opentelemetry/sdk-metrics');
  const reader = new PeriodicExportingMetricReader({
    exporter: new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE),
    exportIntervalMillis: intervalMs,
    exportTimeoutMillis: Math.min(intervalMs, 30_000), // the SDK requires timeout <= interval
  });
  return new MeterProvider({ readers: [reader] });
}

/** Applies the configuration; returns thread labels for the parent (tid → name). */
async function instrument() {
  switch (name) {
    case 'none':
    case 'none-2': // A/A control: identical to 'none'
      return {};
    case 'sysprobe':
    case 'sysprobe-heartbeat':
    case 'sysprobe-export1s':
    case 'sysprobe-norequests': {
      const { start } = require('..');
      const probe = await start({
        serviceName: 'bench',
        // A fresh dump directory per child: the parent kills children without stop(), so a shared one holds a dead
        // run's record, and the next child opens a previous-run incident (files, samples) inside its idle window.
        dumpDir: fs.mkdtempSync(require('node:path').join(require('node:os').tmpdir(), 'sysprobe-bench-')),
        logger: require('pino')({ level: 'silent' }),
        meterProvider: meterProvider(name === 'sysprobe-export1s' ? 1_000 : 600_000),
        loopWatch: name === 'sysprobe-heartbeat' ? 'heartbeat' : 'auto',
        ...(name === 'sysprobe-norequests' ? { samplers: { requests: false } } : {}),
      });
      if (name !== 'sysprobe-heartbeat' && probe.loopWatch !== 'native')
        throw new Error('the native loop watch did not load: run npm ci (or npm run build:native)');
      // Label sysprobe's threads so the parent can split their CPU from the others.
      const labels = {};
      const workerTid = require('../dist/src/probe/internals.js').probeInternals(probe).supervisor.workerTid;
      if (workerTid) labels[workerTid] = 'sysprobe-worker';
      for (const tid of fs.readdirSync('/proc/self/task')) {
        if (fs.readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').trim() === 'sysprobe-watch')
          labels[tid] = 'sysprobe-watchdog';
      }
      return labels;
    }
    case 'prom-client':
      // Defaults only (event-loop delay monitor at 10 ms resolution); nothing scrapes it.
      require('prom-client').collectDefaultMetrics();
      return {};
    case 'otel-runtime-node': {
      const { RuntimeNodeInstrumentation } = require('@opentelemetry/instrumentation-runtime-node');
      new RuntimeNodeInstrumentation().setMeterProvider(meterProvider(1_000));
      return {};
    }
    default:
      throw new Error(`unknown configuration ${JSON.stringify(name)}`);
  }
}

async function main() {
  const threads = await instrument();
  const server = http.createServer((req, res) => res.end('hello world'));
  server.listen(0, '127.0.0.1', () => {
    process.send({ type: 'ready', port: server.address().port, threads });
  });
}

// If the parent goes away (crash, kill -9), do not linger.
process.on('disconnect', () => process.exit(0));

main().catch((err) => {
  process.send?.({ type: 'error', error: String((err && err.stack) || err) });
  process.exit(1);
});
