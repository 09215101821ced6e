// End to end: the example service exports through @opentelemetry/exporter-prometheus,
// a real Prometheus server scrapes it, and we read sysprobe's metrics back via PromQL.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { createInterface } from 'node:readline';
import { tempDir } from './helpers.js';
import { needs, PROMETHEUS as PROMETHEUS_SERVER, PROMETHEUS_BIN } from './requirements.js';

const ROOT = path.resolve(__dirname, '..', '..'); // dist/test -> repo root
const EXAMPLE = path.join(ROOT, 'examples', 'prometheus-service.js');
const PROMETHEUS = PROMETHEUS_BIN;
const JOB = 'sysprobe-example';
const HOST = '127.0.0.1';

/** One series of an instant-query result. */
interface Series {
  metric: Record<string, string>;
  value: [number, string];
}

/** A child process plus the tail of its stderr, for failure messages. */
interface Child {
  proc: ChildProcess;
  stderr: () => string;
}

function spawnChild(command: string, args: string[], env: NodeJS.ProcessEnv = process.env): Child {
  const proc = spawn(command, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  proc.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    err = (err + chunk).slice(-4000);
  });
  proc.once('exit', (code, signal) => {
    err += `\n(exited: ${code ?? signal})`;
  });
  return { proc, stderr: () => err };
}

/** A port that was free a moment ago (Prometheus cannot be told to pick one itself). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer().once('error', reject);
    server.listen(0, HOST, () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
/** fetch with a bound, so a hung server fails the test instead of hanging it. */
const get = (url: string) => fetch(url, { signal: AbortSignal.timeout(3000) });

const hasExited = (child: Child | undefined) =>
  child !== undefined && (child.proc.exitCode !== null || child.proc.signalCode !== null);

/** Stops a child politely, then forcefully; resolves once it has exited. */
async function kill(child: Child | undefined): Promise<void> {
  if (!child || hasExited(child)) return;
  const exited = new Promise<void>((resolve) => child.proc.once('exit', () => resolve()));
  child.proc.kill('SIGTERM');
  // Clear the grace timer, so no stray Timeout outlives this file (other tests count active resources).
  const grace = setTimeout(() => child.proc.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(grace);
}

describe('Prometheus end to end (examples/prometheus-service.js + a real prometheus)', function () {
  this.timeout(30_000);
  let tmp: string | undefined;
  let service: Child | undefined;
  let prometheus: Child | undefined;
  let appUrl = '';
  let promUrl = '';

  const logs = () =>
    `--- example stderr ---\n${service?.stderr() ?? ''}\n--- prometheus stderr ---\n${prometheus?.stderr() ?? ''}`;

  /** Polls `probe` until it returns a value; fails naming what it waited for, at once if a child died. */
  async function waitFor<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    let lastError: unknown;
    while (Date.now() < deadline) {
      if (hasExited(service) || hasExited(prometheus))
        assert.fail(`A child process exited while waiting for ${what}.\n${logs()}`);
      try {
        const value = await probe();
        if (value !== undefined) return value;
      } catch (err) {
        lastError = err; // not up yet; keep polling
      }
      await sleep(200);
    }
    assert.fail(
      `Timed out after ${timeoutMs} ms waiting for ${what}.${lastError ? ` Last error: ${String(lastError)}.` : ''}\n${logs()}`,
    );
  }

  async function query(expr: string): Promise<Series[]> {
    const res = await get(`${promUrl}/api/v1/query?query=${encodeURIComponent(expr)}`);
    const body = (await res.json()) as {
      status: string;
      error?: string;
      data?: { resultType: string; result: Series[] };
    };
    assert.equal(body.status, 'success', `query ${expr} failed: ${body.error ?? res.status}`);
    assert.equal(body.data?.resultType, 'vector', `query ${expr}`);
    return body.data.result;
  }

  /** The value of a query that must return exactly one series. */
  async function scalar(expr: string): Promise<number> {
    const result = await query(expr);
    assert.equal(result.length, 1, `expected one series for ${expr}, got ${JSON.stringify(result)}`);
    return Number(result[0]!.value[1]);
  }

  before(async function () {
    this.timeout(40_000); // the bounded waits below add up to 35 s at worst; a normal start takes ~5 s
    // Skipped, and named in the run's summary, without a prometheus binary; under SYSPROBE_TEST_STRICT=1 (CI) a failure.
    needs(this, PROMETHEUS_SERVER);

    tmp = tempDir('sysprobe-prom-');

    // 1. The example service on free ports; it reports them on its ready line.
    service = spawnChild(process.execPath, [EXAMPLE], {
      ...process.env,
      HOST,
      PORT: '0',
      METRICS_PORT: '0',
      LOAD: '0',
      DUMP_DIR: path.join(tmp, 'dumps'),
      SYSPROBE_LOG_LEVEL: 'warn',
    });
    const ready = await new Promise<{ port: number; metricsPort: number }>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`example not ready within 10 s\n${logs()}`)), 10_000);
      service!.proc.once('exit', () => {
        clearTimeout(timer);
        reject(new Error(`example exited before it was ready\n${logs()}`));
      });
      createInterface({ input: service!.proc.stdout! }).on('line', (line) => {
        try {
          const msg = JSON.parse(line) as { event?: string; port: number; metricsPort: number };
          if (msg.event === 'ready') {
            clearTimeout(timer);
            resolve(msg);
          }
        } catch {
          /* not our JSON line */
        }
      });
    });
    appUrl = `http://${HOST}:${ready.port}`;

    // 2. Prometheus scraping the example's metrics port every second, everything in the temp dir.
    const promPort = await freePort();
    promUrl = `http://${HOST}:${promPort}`;
    writeFileSync(
      path.join(tmp, 'prometheus.yml'),
      [
        'global:',
        '  scrape_interval: 1s',
        '  scrape_timeout: 1s',
        'scrape_configs:',
        `  - job_name: ${JOB}`,
        '    static_configs:',
        `      - targets: ['${HOST}:${ready.metricsPort}']`,
        '',
      ].join('\n'),
    );
    prometheus = spawnChild(PROMETHEUS, [
      `--config.file=${path.join(tmp, 'prometheus.yml')}`,
      `--storage.tsdb.path=${path.join(tmp, 'data')}`,
      `--web.listen-address=${HOST}:${promPort}`,
      '--log.level=warn',
    ]);
    await waitFor('Prometheus /-/ready', 10_000, async () => ((await get(`${promUrl}/-/ready`)).ok ? true : undefined));

    // 3. Until a scrape has brought in the samples (the first one may precede sysprobe's first sample).
    await waitFor('a scrape with sysprobe memory and CPU metrics', 15_000, async () =>
      (await query('sysprobe_memory_heap_used')).length > 0 && (await query('process_cpu_time_total')).length > 0
        ? true
        : undefined,
    );
  });

  after(async function () {
    this.timeout(15_000);
    await Promise.all([kill(service), kill(prometheus)]);
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it('scrapes the target successfully (up == 1)', async () => {
    assert.equal(await scalar(`up{job="${JOB}"}`), 1);
  });

  it('exposes the metrics under the names exporter-prometheus gives them', async () => {
    // exporter-prometheus 0.223 turns dots into underscores and adds _total to monotonic
    // counters, but appends no unit suffix (the unit only appears in a # UNIT comment).
    const res = await get(`${promUrl}/api/v1/label/__name__/values`);
    const names = ((await res.json()) as { data: string[] }).data;
    for (const name of [
      'nodejs_eventloop_delay_max',
      'nodejs_eventloop_delay_p99',
      'nodejs_eventloop_utilization',
      'nodejs_eventloop_time_total',
      'process_cpu_time_total',
      'process_cpu_utilization',
      'process_memory_usage',
      'v8js_memory_heap_used',
      'v8js_memory_heap_limit',
      'sysprobe_memory_heap_used',
      'sysprobe_memory_heap_limit',
      'sysprobe_eventloop_lag',
      'sysprobe_eventloop_delay_bucket',
      'sysprobe_eventloop_delay_count',
      'sysprobe_eventloop_delay_sum',
      'sysprobe_worker_restarts_total',
      'target_info',
    ]) {
      assert.ok(
        names.includes(name),
        `Prometheus has no metric ${name}; sysprobe-related names: ${names.filter((n) => !n.startsWith('prometheus_') && !n.startsWith('scrape_')).join(', ')}`,
      );
    }
    const series = await query('sysprobe_memory_heap_used');
    assert.equal(series[0]?.metric.job, JOB);
    assert.equal(series[0]?.metric.otel_scope_name, 'sysprobe');
  });

  it('reports plausible event-loop values', async () => {
    const delayMax = await scalar('nodejs_eventloop_delay_max');
    assert.ok(delayMax > 0 && delayMax < 10, `nodejs_eventloop_delay_max = ${delayMax} s`);
    const utilization = await scalar('nodejs_eventloop_utilization');
    assert.ok(utilization >= 0 && utilization <= 1, `nodejs_eventloop_utilization = ${utilization}`);
  });

  it('reports plausible memory values', async () => {
    const heapUsed = await scalar('sysprobe_memory_heap_used');
    const heapLimit = await scalar('sysprobe_memory_heap_limit');
    const rss = await scalar('process_memory_usage');
    assert.ok(heapUsed > 1e6 && heapUsed < heapLimit, `heap used ${heapUsed} B, limit ${heapLimit} B`);
    assert.ok(rss > heapUsed, `rss ${rss} B <= heap used ${heapUsed} B`);
    const spaces = await query('v8js_memory_heap_used');
    assert.ok(
      spaces.some((s) => s.metric.v8js_heap_space_name === 'old_space'),
      `no old_space in ${JSON.stringify(spaces.map((s) => s.metric))}`,
    );
    const perSpace = await scalar('sum(v8js_memory_heap_used)');
    assert.ok(perSpace > 1e6 && perSpace < heapLimit, `sum of v8js_memory_heap_used = ${perSpace} B`);
  });

  it('exports the event-loop delay histogram with cumulative buckets', async () => {
    const buckets = await query('sysprobe_eventloop_delay_bucket');
    const byLe = buckets
      .map((s) => ({ le: Number(s.metric.le === '+Inf' ? Infinity : s.metric.le), n: Number(s.value[1]) }))
      .sort((a, b) => a.le - b.le);
    assert.equal(byLe.length, 16, `expected 15 bounds + Inf, got le=${byLe.map((b) => b.le).join(',')}`);
    assert.equal(byLe.at(-1)?.le, Infinity);
    for (let i = 1; i < byLe.length; i++)
      assert.ok(byLe[i]!.n >= byLe[i - 1]!.n, `buckets not cumulative: ${JSON.stringify(byLe)}`);
    const count = await scalar('sysprobe_eventloop_delay_count');
    assert.ok(count > 0, 'no heartbeat gaps recorded');
    assert.equal(byLe.at(-1)?.n, count, 'the +Inf bucket must equal _count');
    const p99 = await scalar('histogram_quantile(0.99, sysprobe_eventloop_delay_bucket)');
    assert.ok(p99 > 0 && p99 <= 10, `histogram_quantile(0.99) = ${p99} s`);
  });

  it('sees process CPU time increase between scrapes while the service works', async () => {
    const cpu = () => scalar('sum(process_cpu_time_total)');
    const first = await cpu();
    const modes = (await query('process_cpu_time_total')).map((s) => s.metric.cpu_mode).sort();
    assert.deepEqual(modes, ['system', 'user']);
    const later = await waitFor('process_cpu_time_total to increase', 10_000, async () => {
      // Some CPU work on the service, so the next scrape has something to show.
      await Promise.all(Array.from({ length: 5 }, () => get(`${appUrl}/work`).then((r) => r.text())));
      const now = await cpu();
      return now > first ? now : undefined;
    });
    assert.ok(later > first);
  });
});
