'use strict';
// sysprobe in a Fastify service: started before listen, stopped by Fastify's onClose hook.
//
//   npm run build && node examples/fastify-service.js
//   curl localhost:3000/work; curl localhost:9464/metrics
//
// Env: PORT (default 3000), METRICS_PORT (default 9464); 0 picks a free port.
const Fastify = require('fastify');
const { start, servePrometheus } = require('sysprobe');

async function main() {
  const metrics = await servePrometheus({
    port: Number(process.env.METRICS_PORT ?? 9464),
    host: '127.0.0.1',
    serviceName: 'fastify-example',
  });
  const probe = await start({ serviceName: 'fastify-example', meterProvider: metrics.meterProvider });

  const app = Fastify();
  app.addHook('onClose', async () => {
    await probe.stop();
    await metrics.close();
  });
  app.get('/', async () => 'hello\n');
  app.get('/work', async () => {
    const end = Date.now() + 20; // 20 ms of CPU
    while (Date.now() < end);
    return 'worked\n';
  });
  app.get('/debug/sysprobe', async () => probe.recent({ sinceMs: 5000 }));

  await app.listen({ port: Number(process.env.PORT ?? 3000), host: '127.0.0.1' });
  console.log(
    `fastify-example listening on http://127.0.0.1:${app.server.address().port}/ (metrics at ${metrics.url})`,
  );
  process.once('SIGTERM', () => app.close());
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
