'use strict';
// sysprobe in an Express service, its metrics served for Prometheus.
//
//   npm run build && node examples/express-service.js
//   curl localhost:3000/work; curl localhost:3000/debug/sysprobe; curl localhost:9464/metrics
//
// Env: PORT (default 3000), METRICS_PORT (default 9464); 0 picks a free port.
const express = require('express');
const { start, servePrometheus } = require('sysprobe');

async function main() {
  const metrics = await servePrometheus({
    port: Number(process.env.METRICS_PORT ?? 9464),
    host: '127.0.0.1',
    serviceName: 'express-example',
  });
  const probe = await start({ serviceName: 'express-example', meterProvider: metrics.meterProvider });

  const app = express();
  app.get('/', (req, res) => res.send('hello\n'));
  app.get('/work', (req, res) => {
    const end = Date.now() + 20; // 20 ms of CPU
    while (Date.now() < end);
    res.send('worked\n');
  });
  // What sysprobe saw over the last 5 s; keep such a route behind your own auth in production.
  app.get('/debug/sysprobe', async (req, res) => res.json(await probe.recent({ sinceMs: 5000 })));

  const server = app.listen(Number(process.env.PORT ?? 3000), '127.0.0.1', () => {
    console.log(`express-example listening on http://127.0.0.1:${server.address().port}/ (metrics at ${metrics.url})`);
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
