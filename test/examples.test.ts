// Each example in examples/ runs as its own process, as a user would start it, and is
// checked for sysprobe's metrics: scraped from its Prometheus endpoint, or received over
// OTLP/HTTP by a real receiver on loopback. (examples/prometheus-service.js is scraped by a
// real Prometheus server in prometheus.test.ts.)
import assert from 'node:assert/strict';
import * as path from 'node:path';
import {
  assertSysprobeMetrics,
  getText,
  kill,
  line,
  otlpMetrics,
  otlpReceiver,
  otlpServiceNames,
  output,
  parsePrometheus,
  spawnNode,
  until,
  values,
  type Child,
} from './children.js';

const example = (name: string) => path.join('examples', name);
const URL_LINE = /listening on (http:\/\/127\.0\.0\.1:\d+)\/ \(metrics at (http:\/\/127\.0\.0\.1:\d+\/metrics)\)/;

describe('examples', function () {
  this.timeout(30_000);

  for (const [file, service] of [
    ['http-service.js', 'http-example'],
    ['express-service.js', 'express-example'],
    ['fastify-service.js', 'fastify-example'],
  ] as const) {
    describe(file, () => {
      let child: Child | undefined;
      after(() => kill(child));

      it('serves requests and exports sysprobe metrics for Prometheus, and stops on SIGTERM', async () => {
        child = spawnNode([example(file)], { PORT: '0', METRICS_PORT: '0' });
        const [, appUrl, metricsUrl] = await line(child, URL_LINE);
        assert.equal(await getText(`${appUrl}/`), 'hello\n');
        for (let i = 0; i < 5; i++) assert.equal(await getText(`${appUrl}/work`), 'worked\n');
        // CPU time appears once the probe worker has taken its first sample (1 s interval).
        const samples = await until(child, 'process_cpu_time_total on /metrics', async () => {
          const parsed = parsePrometheus(await getText(metricsUrl!));
          return values(parsed, 'process_cpu_time_total').length > 0 ? parsed : undefined;
        });
        assertSysprobeMetrics(samples, service, output(child));
        // The flight recorder, as the example's debug route serves it.
        const recent = JSON.parse(await getText(`${appUrl}/debug/sysprobe`)) as Array<{
          time: number;
          memory?: { heapUsed: number };
        }>;
        assert.ok(
          recent.length > 0 && recent.every((s) => s.time > Date.now() - 10_000),
          `recent samples: ${recent.length}`,
        );
        assert.ok(recent.at(-1)!.memory!.heapUsed > 1e6, 'a recent sample carries the heap used');
        const exited = new Promise<number | null>((resolve) => child!.proc.once('exit', (code) => resolve(code)));
        child.proc.kill('SIGTERM');
        assert.equal(
          await exited,
          0,
          `the example should exit cleanly on SIGTERM (server closed, probe stopped)\n${output(child)}`,
        );
        assert.match(child.stdout(), /"msg":"sysprobe stopped"/);
      });
    });
  }

  describe('otlp-service.js', () => {
    let child: Child | undefined;
    let receiver: Awaited<ReturnType<typeof otlpReceiver>> | undefined;
    after(async () => {
      await kill(child);
      await receiver?.close();
    });

    it('pushes sysprobe metrics over OTLP/HTTP to a receiver that decodes them', async () => {
      receiver = await otlpReceiver();
      child = spawnNode([example('otlp-service.js')], {
        PORT: '0',
        OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint,
        OTEL_METRIC_EXPORT_INTERVAL: '300',
      });
      const [, appUrl] = await line(child, /listening on (http:\/\/127\.0\.0\.1:\d+)\//);
      assert.equal(await getText(`${appUrl}/`), 'hello\n');
      const { payloads } = receiver;
      const metrics = await until(child, 'an OTLP payload with process.cpu.time', () => {
        const byName = otlpMetrics(payloads);
        return byName.get('process.cpu.time')?.length ? byName : undefined;
      });
      assert.ok(
        receiver.contentTypes.every((t) => t.startsWith('application/json')),
        `content types: ${receiver.contentTypes.join(', ')}`,
      );
      assert.ok(
        otlpServiceNames(payloads).includes('otlp-example'),
        `service names: ${otlpServiceNames(payloads).join(', ')}`,
      );
      for (const name of [
        'nodejs.eventloop.utilization',
        'sysprobe.memory.heap.used',
        'process.memory.usage',
        'v8js.memory.heap.used',
        'sysprobe.worker.restarts',
      ]) {
        assert.ok(metrics.has(name), `${name} missing; got ${[...metrics.keys()].join(', ')}`);
      }
      const heapUsed = metrics.get('sysprobe.memory.heap.used')!.at(-1)!;
      assert.ok(heapUsed > 1e6 && heapUsed < 16e9, `sysprobe.memory.heap.used = ${heapUsed}`);
      const utilization = metrics.get('nodejs.eventloop.utilization')!.at(-1)!;
      assert.ok(utilization >= 0 && utilization <= 1, `nodejs.eventloop.utilization = ${utilization}`);
    });
  });
});
