// sysprobe/register: `node --import` and `node -r` start sysprobe in an app that never
// imports it, configured by SYSPROBE_* variables; bad values are reported and the app runs.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { envConfig } from '../src/probe/env-options.js';
import { loadPeer } from '../src/metrics/peers.js';
import { ErrorCode, servePrometheus } from '../src/index.js';
import { tempDir } from './helpers.js';
import {
  ROOT,
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

const APP = path.join('examples', 'register-app.mjs');
const APP_LINE = /register-app listening on (http:\/\/127\.0\.0\.1:\d+)\//;
const REGISTERED = /"prometheus":"(http:\/\/127\.0\.0\.1:\d+\/metrics)".*"msg":"sysprobe registered"/;

describe('sysprobe/register', function () {
  this.timeout(30_000);
  const children: Child[] = [];
  const run = (args: string[], env: Record<string, string>) => {
    const child = spawnNode(args, { PORT: '0', ...env });
    children.push(child);
    return child;
  };
  let receiver: Awaited<ReturnType<typeof otlpReceiver>> | undefined;
  let tmp: string | undefined;
  after(async () => {
    await Promise.all(children.map((c) => kill(c)));
    await receiver?.close();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it('node --import sysprobe/register: serves sysprobe metrics for Prometheus, configured by env', async () => {
    const child = run(['--import', 'sysprobe/register', APP], {
      SYSPROBE_SERVICE_NAME: 'register-esm',
      SYSPROBE_PROMETHEUS_PORT: '0',
      SYSPROBE_PROMETHEUS_HOST: '127.0.0.1',
      SYSPROBE_SAMPLE_INTERVAL_MS: '200',
    });
    const [, metricsUrl] = await line(child, REGISTERED);
    const [, appUrl] = await line(child, APP_LINE);
    assert.equal(await getText(`${appUrl}/work`), 'hello\n');
    assert.match(child.stdout(), /"sampleIntervalMs":200,/, 'the interval came from SYSPROBE_SAMPLE_INTERVAL_MS');
    const samples = await until(child, 'process_cpu_time_total on /metrics', async () => {
      const parsed = parsePrometheus(await getText(metricsUrl!));
      return values(parsed, 'process_cpu_time_total').length > 0 ? parsed : undefined;
    });
    assertSysprobeMetrics(samples, 'register-esm', output(child));
  });

  it('SYSPROBE_HEALTH_PORT serves GET /health from the worker', async () => {
    const child = run(['--import', 'sysprobe/register', APP], { SYSPROBE_HEALTH_PORT: '0' });
    const [, healthUrl] = await line(
      child,
      /"health":"(http:\/\/127\.0\.0\.1:\d+\/health)".*"msg":"sysprobe registered"/,
    );
    const response = await fetch(healthUrl!);
    const body = (await response.json()) as { status: string };
    assert.ok([200, 503].includes(response.status), `status ${response.status}`);
    assert.ok(['ok', 'degraded', 'unhealthy'].includes(body.status), JSON.stringify(body));
    assert.equal(response.status === 200, body.status !== 'unhealthy');
  });

  it('node -r sysprobe/register: pushes over OTLP/HTTP to SYSPROBE_OTLP_ENDPOINT', async () => {
    receiver = await otlpReceiver();
    const child = run(['-r', 'sysprobe/register', APP], {
      OTEL_SERVICE_NAME: 'register-cjs',
      SYSPROBE_OTLP_ENDPOINT: receiver.endpoint,
      OTEL_METRIC_EXPORT_INTERVAL: '300',
      SYSPROBE_LOG_LEVEL: 'warn',
    });
    await line(child, APP_LINE);
    const { payloads } = receiver;
    const metrics = await until(child, 'an OTLP payload with process.cpu.time', () => {
      const byName = otlpMetrics(payloads);
      return byName.get('process.cpu.time')?.length ? byName : undefined;
    });
    assert.ok(
      metrics.has('sysprobe.memory.heap.used') && metrics.has('nodejs.eventloop.utilization'),
      [...metrics.keys()].join(', '),
    );
    assert.ok(otlpServiceNames(payloads).includes('register-cjs'), 'OTEL_SERVICE_NAME names the service');
    assert.doesNotMatch(child.stdout(), /"level":30/, 'SYSPROBE_LOG_LEVEL=warn silences info lines');
  });

  for (const [variable, value] of [
    ['SYSPROBE_SAMPLE_INTERVAL_MS', 'often'],
    ['SYSPROBE_STALL_THRESHOLD_MS', '5'],
    ['SYSPROBE_PROMETHEUS_PORT', '70000'],
    ['SYSPROBE_OTLP_ENDPOINT', 'collector:4318'],
    ['SYSPROBE_PROMETHEUS_HOST', 'a host/with slash'],
  ] as const) {
    it(`a bad ${variable} is reported with its code on stderr, and the app runs without sysprobe`, async () => {
      const child = run(['--import', 'sysprobe/register', APP], { [variable]: value });
      const [, appUrl] = await line(child, APP_LINE);
      assert.equal(await getText(`${appUrl}/`), 'hello\n');
      await until(
        child,
        'the register error on stderr',
        () => child.stderr().includes(ErrorCode.INVALID_OPTION) || undefined,
      );
      assert.match(
        child.stderr(),
        new RegExp(
          `sysprobe did not start; the app runs without it: SYSPROBE_ERR_INVALID_OPTION: Environment variable ${variable}`,
        ),
      );
      assert.doesNotMatch(child.stdout(), /sysprobe started/);
    });
  }

  it('the registered line names the address Prometheus bound: 0.0.0.0 by default, not 127.0.0.1', async () => {
    const child = run(['--import', 'sysprobe/register', APP], { SYSPROBE_PROMETHEUS_PORT: '0' });
    const [, port] = await line(
      child,
      /"prometheus":"http:\/\/0\.0\.0\.0:(\d+)\/metrics".*"msg":"sysprobe registered"/,
    );
    const text = await until(child, '/metrics on loopback', async () => {
      const body = await getText(`http://127.0.0.1:${port}/metrics`);
      return body.includes('process_cpu_time') ? body : undefined;
    });
    assert.match(text, /process_cpu_time/);
  });

  it('a Prometheus host that does not resolve is SYSPROBE_ERR_LISTEN_FAILED on stderr (not ENOTFOUND), and the app runs', async () => {
    const child = run(['--import', 'sysprobe/register', APP], {
      SYSPROBE_PROMETHEUS_PORT: '0',
      SYSPROBE_PROMETHEUS_HOST: 'no-such-host.invalid',
    });
    const [, appUrl] = await line(child, APP_LINE);
    assert.equal(await getText(`${appUrl}/`), 'hello\n');
    await until(child, 'the register error on stderr', () => child.stderr().includes('did not start') || undefined);
    assert.match(
      child.stderr(),
      /sysprobe did not start; the app runs without it: SYSPROBE_ERR_LISTEN_FAILED: sysprobe could not serve Prometheus metrics on no-such-host\.invalid:0 \(ENOTFOUND/,
    );
  });

  it('NODE_OPTIONS preloads in every thread, but one probe starts: on the main thread', async () => {
    const script = [
      "const { Worker, isMainThread } = require('node:worker_threads');",
      "if (isMainThread) { new Worker(__filename); setTimeout(() => console.log('main done'), 1500); }",
      "else console.log('app worker sees', typeof globalThis[Symbol.for('sysprobe.probe')]);",
    ].join('\n');
    tmp = tempDir('sysprobe-register-');
    const file = path.join(tmp, 'threads.js');
    writeFileSync(file, script);
    const child = run([file], { NODE_OPTIONS: '-r sysprobe/register' });
    const code = await new Promise<number | null>((resolve) => child.proc.once('exit', (c) => resolve(c)));
    assert.equal(code, 0, output(child));
    assert.match(child.stdout(), /app worker sees undefined/);
    assert.match(child.stdout(), /main done/);
    assert.equal(child.stdout().match(/"msg":"sysprobe started"/g)?.length, 1, output(child));
  });

  it('SYSPROBE_DISABLE=1 starts nothing', async () => {
    const child = run(['-r', 'sysprobe/register', APP], { SYSPROBE_DISABLE: '1', SYSPROBE_PROMETHEUS_PORT: '0' });
    const [, appUrl] = await line(child, APP_LINE);
    assert.equal(await getText(`${appUrl}/`), 'hello\n');
    await new Promise((r) => setTimeout(r, 300)); // register is synchronous to the point of deciding; give a late start a chance to show
    assert.doesNotMatch(child.stdout(), /sysprobe/);
    assert.equal(child.stderr(), '');
  });

  it('does not keep a finished app alive, and stops the probe on the way out', async () => {
    const started = Date.now();
    const child = run(['-r', 'sysprobe/register', '-e', 'setTimeout(() => console.log("app done"), 300)'], {
      SYSPROBE_PROMETHEUS_PORT: '0',
      SYSPROBE_PROMETHEUS_HOST: '127.0.0.1',
    });
    const code = await new Promise<number | null>((resolve) => child.proc.once('exit', (c) => resolve(c)));
    assert.equal(code, 0, output(child));
    assert.ok(Date.now() - started < 10_000, `exited after ${Date.now() - started} ms`);
    assert.match(child.stdout(), /app done[\s\S]*"msg":"sysprobe stopped"/);
  });
});

describe('register: environment variables (envConfig)', () => {
  it('maps the variables to options, OTEL_* as fallbacks, and leaves unset ones out', () => {
    const config = envConfig({
      OTEL_SERVICE_NAME: 'otel-name',
      SYSPROBE_DUMP_DIR: '/var/dumps',
      SYSPROBE_SAMPLE_INTERVAL_MS: '500',
      SYSPROBE_STALL_THRESHOLD_MS: ' 100 ',
      SYSPROBE_PROMETHEUS_PORT: '0',
      OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318',
      SYSPROBE_HEALTH_PORT: '8081',
      SYSPROBE_LOG_LEVEL: 'debug',
    });
    assert.deepEqual(config.options, {
      serviceName: 'otel-name',
      dumpDir: '/var/dumps',
      sampleIntervalMs: 500,
      stallThresholdMs: 100,
    });
    assert.equal(config.prometheusPort, 0);
    assert.equal(config.otlpEndpoint, 'http://collector:4318');
    assert.deepEqual(config.health, { port: 8081 });
    assert.equal(config.logLevel, 'debug');
    assert.equal(config.disabled, false);
    assert.equal(envConfig({ SYSPROBE_SERVICE_NAME: 'mine', OTEL_SERVICE_NAME: 'otel' }).options.serviceName, 'mine');
    assert.equal(
      envConfig({ SYSPROBE_OTLP_ENDPOINT: 'https://a:1', OTEL_EXPORTER_OTLP_ENDPOINT: 'http://b:2' }).otlpEndpoint,
      'https://a:1',
    );
    assert.deepEqual(envConfig({}).options, {});
    assert.equal(envConfig({ SYSPROBE_DISABLE: '1' }).disabled, true);
    assert.equal(envConfig({ SYSPROBE_DISABLE: '0' }).disabled, false);
  });

  it('rejects unusable values with SYSPROBE_ERR_INVALID_OPTION naming the variable', () => {
    for (const [name, value] of [
      ['SYSPROBE_SAMPLE_INTERVAL_MS', '1.5'],
      ['SYSPROBE_SAMPLE_INTERVAL_MS', '99'],
      ['SYSPROBE_HEALTH_PORT', '-1'],
      ['SYSPROBE_LOG_LEVEL', 'loud'],
      ['OTEL_EXPORTER_OTLP_ENDPOINT', 'ftp://x'],
    ]) {
      assert.throws(
        () => envConfig({ [name!]: value }),
        (err: Error & { code?: string }) => err.code === ErrorCode.INVALID_OPTION && err.message.includes(name!),
        `${name}=${value}`,
      );
    }
    assert.throws(() => envConfig({ SYSPROBE_HEALTH_HOST: '0.0.0.0' }), /SYSPROBE_HEALTH_PORT/);
  });

  it('a missing exporter package is SYSPROBE_ERR_MISSING_PEER naming it', () => {
    assert.throws(
      () => loadPeer('@opentelemetry/exporter-that-is-not-installed', 'Exporting'),
      (err: Error & { code?: string }) =>
        err.code === ErrorCode.MISSING_PEER &&
        err.message.includes('npm install @opentelemetry/exporter-that-is-not-installed'),
    );
  });
});

describe('servePrometheus: bad hosts and ports', () => {
  it('a host that does not resolve or a port in use rejects with LISTEN_FAILED, a malformed host with INVALID_OPTION', async () => {
    await assert.rejects(
      servePrometheus({ port: 0, host: 'no-such-host.invalid' }),
      (err: Error & { code?: string }) => err.code === ErrorCode.LISTEN_FAILED && /ENOTFOUND/.test(err.message),
    );
    await assert.rejects(
      servePrometheus({ port: 0, host: 'a b' }),
      (err: Error & { code?: string }) => err.code === ErrorCode.INVALID_OPTION,
    );
    const first = await servePrometheus({ port: 0, host: '127.0.0.1' });
    try {
      await assert.rejects(
        servePrometheus({ port: first.port, host: '127.0.0.1' }),
        (err: Error & { code?: string }) => err.code === ErrorCode.LISTEN_FAILED && /EADDRINUSE/.test(err.message),
      );
    } finally {
      await first.close();
    }
  });
});

describe('module doors', () => {
  it(`the ES module door exports every runtime name of the CommonJS build, and require("sysprobe/register") resolves to the CommonJS entry`, async () => {
    const cjs = require(path.join(ROOT, 'dist', 'src', 'index.js')) as Record<string, unknown>;
    const esm = (await import(pathToFileURL(path.join(ROOT, 'esm', 'index.mjs')).href)) as Record<string, unknown>;
    assert.deepEqual(
      Object.keys(esm)
        .filter((k) => k !== 'default')
        .sort(),
      Object.keys(cjs).sort(),
    );
    for (const name of Object.keys(cjs))
      assert.equal(esm[name], cjs[name], `${name} is the same object through both doors`);
    const requireFromRoot = createRequire(path.join(ROOT, 'package.json'));
    assert.equal(requireFromRoot.resolve('sysprobe/register'), path.join(ROOT, 'dist', 'src', 'register.js'));
  });
});
