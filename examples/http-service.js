'use strict';
// sysprobe in a plain node:http service, its metrics served for Prometheus.
//
//   npm run build && node examples/http-service.js
//   curl localhost:3000/work; curl localhost:9464/metrics
//
// Env: PORT (default 3000), METRICS_PORT (default 9464); 0 picks a free port.
const http = require('node:http');
const { start, servePrometheus } = require('sysprobe'); // this package, by its own name

async function main() {
  // A MeterProvider whose metrics are served at /metrics (needs @opentelemetry/exporter-prometheus).
  const metrics = await servePrometheus({
    port: Number(process.env.METRICS_PORT ?? 9464),
    host: '127.0.0.1',
    serviceName: 'http-example',
  });
  const probe = await start({ serviceName: 'http-example', meterProvider: metrics.meterProvider });

  const server = http.createServer(async (req, res) => {
    if (req.url === '/work') {
      const end = Date.now() + 20; // 20 ms of CPU, so the event loop has something to show
      while (Date.now() < end);
      res.end('worked\n');
    } else if (req.url === '/debug/sysprobe') {
      // The flight recorder: what sysprobe sampled over the last 5 s.
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify(await probe.recent({ sinceMs: 5000 })));
    } else {
      res.end('hello\n');
    }
  });
  server.listen(Number(process.env.PORT ?? 3000), '127.0.0.1', () => {
    console.log(`http-example listening on http://127.0.0.1:${server.address().port}/ (metrics at ${metrics.url})`);
  });

  process.once('SIGTERM', async () => {
    server.close();
    await probe.stop();
    await metrics.close();
  });
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
