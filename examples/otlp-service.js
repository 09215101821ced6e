'use strict';
// sysprobe pushing its metrics over OTLP/HTTP, e.g. to an OpenTelemetry Collector (docs/opentelemetry.md).
//
//   npm run build && OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318 node examples/otlp-service.js
//
// Env: OTEL_EXPORTER_OTLP_ENDPOINT (default http://localhost:4318; metrics go to /v1/metrics),
// OTEL_METRIC_EXPORT_INTERVAL in ms (default 60000), PORT (default 3000; 0 picks a free port).
const http = require('node:http');
const { start, exportOtlp } = require('sysprobe');

async function main() {
  // A MeterProvider with a periodic OTLP/HTTP reader (needs @opentelemetry/exporter-metrics-otlp-http).
  const otlp = exportOtlp({ serviceName: 'otlp-example' });
  const probe = await start({ serviceName: 'otlp-example', meterProvider: otlp.meterProvider });

  const server = http.createServer((req, res) => res.end('hello\n'));
  server.listen(Number(process.env.PORT ?? 3000), '127.0.0.1', () => {
    console.log(`otlp-example listening on http://127.0.0.1:${server.address().port}/ (metrics pushed to ${otlp.url})`);
  });

  process.once('SIGTERM', async () => {
    server.close();
    await probe.stop();
    await otlp.close(); // one last push
  });
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
