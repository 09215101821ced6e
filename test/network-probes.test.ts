import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import * as net from 'node:net';
import * as path from 'node:path';
import type { DataPoint, Histogram, MetricData } from '@opentelemetry/sdk-metrics';
import { start, type Probe, type RuleEvent } from '../src/index.js';
import { findMetric, memoryLogger, memoryMetrics, pointValue, waitFor } from './helpers.js';

interface LossyProxy {
  port: number;
  stats: { accepted: number; forwarded: number; dropped: number };
  listen(): Promise<LossyProxy>;
  set(settings: { latencyMs?: number; dropRatio?: number; drop?: 'reset' | 'hang' }): LossyProxy;
  close(): Promise<void>;
}
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { LossyProxy } = require('../../examples/lib/lossy-proxy.js') as {
  LossyProxy: new (options: {
    target: { port: number };
    latencyMs?: number;
    dropRatio?: number;
    drop?: 'reset' | 'hang';
  }) => LossyProxy;
};

const FIXTURES = path.join(__dirname, '..', '..', 'test', 'fixtures');
const CERT = fs.readFileSync(path.join(FIXTURES, 'localhost-cert.pem'), 'utf8');
const KEY = fs.readFileSync(path.join(FIXTURES, 'localhost-key.pem'), 'utf8');

/** Every connection each test server accepted, so that closing it never waits on a peer (a plain net.Server has no closeAllConnections). */
const connections = new WeakMap<net.Server, Set<net.Socket>>();

function listen<S extends net.Server>(server: S): Promise<number> {
  const open = new Set<net.Socket>();
  connections.set(server, open);
  server.on('connection', (socket: net.Socket) => {
    open.add(socket);
    socket.on('close', () => open.delete(socket));
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port)),
  );
}
const close = (server: net.Server) =>
  new Promise<void>((resolve) => {
    server.close(() => resolve());
    for (const socket of connections.get(server) ?? []) socket.destroy();
  });

/** A histogram point's count and sum, for one probe and phase. */
function histogram(metrics: MetricData[], probe: string, phase: string): { count: number; sum: number } {
  const metric = findMetric(metrics, 'sysprobe.probe.duration');
  const point = (metric.dataPoints as Array<DataPoint<Histogram>>).find(
    (p) => p.attributes['sysprobe.probe'] === probe && p.attributes['sysprobe.probe.phase'] === phase,
  );
  return point ? { count: point.value.count, sum: point.value.sum ?? 0 } : { count: 0, sum: 0 };
}
function results(metrics: MetricData[], probe: string, outcome: string): number {
  try {
    return pointValue(findMetric(metrics, 'sysprobe.probe.results'), {
      'sysprobe.probe': probe,
      'sysprobe.probe.outcome': outcome,
    });
  } catch {
    return 0;
  }
}

describe('synthetic probes (real sockets on loopback)', function () {
  this.timeout(30_000);
  const servers: net.Server[] = [];
  const proxies: LossyProxy[] = [];
  let probe: Probe | undefined;
  let httpPort = 0;
  let tcpPort = 0;

  before(async () => {
    const web = http.createServer((_req, res) => res.end('ok'));
    const raw = net.createServer((socket) => socket.end());
    servers.push(web, raw);
    httpPort = await listen(web);
    tcpPort = await listen(raw);
  });
  afterEach(async () => {
    await probe?.stop();
    probe = undefined;
    await Promise.all(proxies.splice(0).map((p) => p.close()));
  });
  after(async () => {
    await Promise.all(servers.map(close));
  });

  it('times each phase, counts outcomes, and fires the baseline rule when the proxy turns slow', async () => {
    // 20 ms each way: a baseline of ~40 ms, well above the loopback jitter of a busy machine.
    const slow = await new LossyProxy({ target: { port: httpPort }, latencyMs: 20 }).listen();
    const hang = await new LossyProxy({ target: { port: httpPort }, dropRatio: 1, drop: 'hang' }).listen();
    const reset = await new LossyProxy({ target: { port: httpPort }, dropRatio: 1, drop: 'reset' }).listen();
    proxies.push(slow, hang, reset);
    const { meterProvider, collect, shutdown } = memoryMetrics();
    const { logger, lines } = memoryLogger();
    const linux = process.platform === 'linux';
    probe = await start({
      meterProvider,
      logger,
      defaultRules: false,
      ...(linux ? { sockets: { intervalMs: 60_000, ss: false } } : {}),
      probes: [
        {
          name: 'web',
          target: `http://localhost:${slow.port}/`,
          intervalMs: 100,
          timeoutMs: 2000,
          baseline: { factor: 3, forMs: 1500, windowMs: 3000 },
        },
        { name: 'raw', target: `tcp://127.0.0.1:${tcpPort}`, intervalMs: 100, baseline: false },
        { name: 'hang', target: `http://127.0.0.1:${hang.port}/`, intervalMs: 100, timeoutMs: 150, baseline: false },
        { name: 'reset', target: `http://127.0.0.1:${reset.port}/`, intervalMs: 100, baseline: false },
      ],
    });
    const fired: RuleEvent[] = [];
    probe.on('rule', (event: RuleEvent) => fired.push(event));

    // A baseline of fast runs (the rule needs 5 runs older than forMs), then 150 ms each way: ~300 ms a run.
    await waitFor(
      'a baseline for web',
      async () => (await probe!.probeStatus()).find((s) => s.name === 'web')?.baselineMs !== undefined,
      10_000,
    );
    const before = await collect();
    const fast = histogram(before, 'web', 'first_byte');
    assert.ok(fast.count >= 5, `first_byte recorded for the fast runs (${fast.count})`);
    assert.ok(histogram(before, 'web', 'dns').count >= 5, 'localhost is looked up each run');
    assert.ok(histogram(before, 'raw', 'connect').count >= 5);
    assert.equal(histogram(before, 'raw', 'first_byte').count, 0, 'a tcp probe only connects');
    assert.equal(fired.length, 0, 'nothing fires on a steady latency');

    const changedAt = Date.now();
    slow.set({ latencyMs: 150 });
    const event = await waitFor(
      'the probe-latency rule',
      () => fired.find((e) => e.firing.rule === 'probe-latency:web'),
      10_000,
    );
    assert.equal(event.firing.value, 'probe.latencyMs');
    assert.ok(event.firing.observed > event.firing.threshold, `${event.firing.observed} > ${event.firing.threshold}`);
    assert.ok(event.firing.firedAt > changedAt, 'it fired on the change, not on noise before it');
    assert.ok(
      event.firing.observed >= 290,
      `the window's median carries the added latency (${event.firing.observed} ms)`,
    );
    assert.ok(
      lines.some((l) => l.msg === 'sysprobe rule fired' && l.rule === 'probe-latency:web'),
      'logged like any rule',
    );
    if (linux) {
      // The socket picture taken at the firing, not the minute-old sweep: this test's listeners are in it.
      const sockets = event.captures.sockets;
      assert.ok(sockets?.supported && sockets.time >= changedAt, JSON.stringify(sockets)?.slice(0, 300));
      assert.ok(
        sockets.listeners.some((l) => l.port === slow.port),
        'the proxy listens in this process',
      );
    }

    const after = await collect();
    const slowRuns = histogram(after, 'web', 'first_byte');
    const meanSlowMs = ((slowRuns.sum - fast.sum) / (slowRuns.count - fast.count)) * 1000;
    assert.ok(meanSlowMs >= 200, `first byte after the change averages ${meanSlowMs.toFixed(1)} ms`);
    assert.equal(pointValue(findMetric(after, 'sysprobe.rule.firings'), { 'sysprobe.rule': 'probe-latency:web' }), 1);
    assert.ok(results(after, 'hang', 'timeout') >= 3, 'held connections time out');
    assert.equal(results(after, 'hang', 'success'), 0);
    assert.ok(results(after, 'reset', 'failure') >= 3, 'reset connections fail');
    assert.ok(results(after, 'raw', 'success') >= 5);

    const status = await probe.probeStatus();
    const web = status.find((s) => s.name === 'web')!;
    assert.equal(web.target, `http://localhost:${slow.port}/`);
    assert.equal(web.lastResult?.status, 200);
    assert.ok(web.latencyMs && web.latencyMs.p99 >= 290 && web.baselineMs! < 290, JSON.stringify(web));
    const hung = status.find((s) => s.name === 'hang')!;
    assert.equal(hung.failing, true);
    assert.equal(hung.lastResult?.outcome, 'timeout');
    assert.ok(hung.timeouts >= 3 && hung.successes === 0);
    const health = probe.health();
    const dependency = health.reasons.find((r) => r.kind === 'dependency' && r.source === 'hang');
    assert.ok(dependency && dependency.status === 'degraded', JSON.stringify(health));
    assert.match(dependency.message, /probe hang \(http:\/\/127\.0\.0\.1:\d+\/\) failing/);
    assert.notEqual(health.status, 'ok');
    await shutdown();
  });

  it('reads at most 64 KiB of a body: an endless response is a success, not a timeout', async () => {
    const chunk = Buffer.alloc(16 * 1024, 'x');
    const endless = http.createServer((_req, res) => {
      const write = () => {
        while (!res.destroyed && res.write(chunk));
      };
      res.on('drain', write);
      write();
    });
    servers.push(endless);
    const port = await listen(endless);
    probe = await start({
      logger: memoryLogger().logger,
      probes: [{ name: 'endless', target: `http://127.0.0.1:${port}/`, intervalMs: 100, timeoutMs: 2000 }],
    });
    const [status] = await waitFor('two runs', async () => {
      const s = await probe!.probeStatus();
      return s[0] && s[0].successes + s[0].failures + s[0].timeouts >= 2 ? s : undefined;
    });
    assert.equal(status?.lastResult?.outcome, 'success', JSON.stringify(status?.lastResult));
    assert.deepEqual([status?.failures, status?.timeouts], [0, 0]);
    assert.ok(
      status!.lastResult!.phases.total < 1000,
      `stopped reading early (${status?.lastResult?.phases.total} ms)`,
    );
  });

  it('never overlaps two runs of a probe, even when a run takes longer than the interval', async () => {
    let inFlight = 0;
    let maxInFlight = 0;
    let requests = 0;
    const slow = http.createServer((_req, res) => {
      requests++;
      maxInFlight = Math.max(maxInFlight, ++inFlight);
      setTimeout(() => {
        inFlight--;
        res.end('slow');
      }, 300);
    });
    servers.push(slow);
    const port = await listen(slow);
    probe = await start({
      logger: memoryLogger().logger,
      probes: [{ name: 'slow', target: `http://127.0.0.1:${port}/`, intervalMs: 100, timeoutMs: 2000 }],
    });
    await waitFor('three requests', () => requests >= 3 || undefined);
    assert.equal(maxInFlight, 1);
  });

  it('probes https with a trusted CA, or without verification, and fails an untrusted certificate', async () => {
    const secure = https.createServer({ cert: CERT, key: KEY }, (_req, res) => res.end('secure'));
    servers.push(secure);
    const port = await listen(secure);
    probe = await start({
      logger: memoryLogger().logger,
      probes: [
        { name: 'ca', target: `https://localhost:${port}/`, intervalMs: 100, ca: CERT },
        { name: 'insecure', target: `https://127.0.0.1:${port}/`, intervalMs: 100, rejectUnauthorized: false },
        { name: 'untrusted', target: `https://localhost:${port}/`, intervalMs: 100 },
      ],
    });
    const status = await waitFor(
      'three runs of each',
      async () => {
        const s = await probe!.probeStatus();
        return s.every((p) => p.successes + p.failures + p.timeouts >= 3) ? s : undefined;
      },
      10_000,
    );
    const [ca, insecure, untrusted] = status;
    assert.equal(ca?.lastResult?.outcome, 'success');
    assert.ok(ca?.lastResult?.phases.tls !== undefined && ca.lastResult.phases.tls > 0, 'the TLS handshake is timed');
    assert.equal(insecure?.lastResult?.outcome, 'success');
    assert.equal(untrusted?.lastResult?.outcome, 'failure');
    assert.match(untrusted?.lastResult?.error ?? '', /self.signed|certificate/i);
  });

  it('maps outgoing requests to their remote address, port and host name', async () => {
    const secure = https.createServer({ cert: CERT, key: KEY }, (_req, res) => res.end('secure'));
    servers.push(secure);
    const securePort = await listen(secure);
    // A port nobody listens on: bound, then closed.
    const closed = net.createServer();
    const closedPort = await listen(closed);
    await close(closed);
    probe = await start({
      logger: memoryLogger().logger,
      probes: [
        { name: 'raw', target: `tcp://127.0.0.1:${tcpPort}`, intervalMs: 100 },
        { name: 'down', target: `tcp://127.0.0.1:${closedPort}`, intervalMs: 100 },
      ],
    });
    await new Promise<void>((resolve, reject) =>
      http.get(`http://localhost:${httpPort}/`, (res) => res.resume().on('end', resolve)).on('error', reject),
    );
    await new Promise<void>((resolve, reject) =>
      https
        .get(`https://localhost:${securePort}/`, { ca: CERT, agent: false }, (res) => res.resume().on('end', resolve))
        .on('error', reject),
    );
    await (await fetch(`http://localhost:${httpPort}/fetched`)).text();

    const deps = await waitFor('the probe target in the map', async () => {
      const d = await probe!.dependencies();
      return d.some((e) => e.remotePort === tcpPort && e.latencyMs) && d.some((e) => e.probes?.includes('down'))
        ? d
        : undefined;
    });
    const web = deps.find((d) => d.remotePort === httpPort);
    assert.ok(web, JSON.stringify(deps));
    assert.ok(['127.0.0.1', '::1'].includes(web.remoteAddress));
    assert.deepEqual(web.hostnames, ['localhost']);
    assert.equal(web.connections, 2, 'one connection from http.get, one from fetch');
    assert.ok(Date.now() - web.lastSeenAt < 10_000);
    const tls = deps.find((d) => d.remotePort === securePort);
    assert.deepEqual(
      [tls?.hostnames, tls?.connections],
      [['localhost'], 1],
      'https sockets are seen through the request channel',
    );
    const down = deps.find((d) => d.probes?.includes('down'));
    assert.deepEqual(
      [down?.remoteAddress, down?.remotePort, down?.latencyMs],
      ['127.0.0.1', closedPort, undefined],
      'a target that refuses is in the map too',
    );
    const raw = deps.find((d) => d.remotePort === tcpPort)!;
    assert.deepEqual([raw.remoteAddress, raw.connections, raw.probes], ['127.0.0.1', 0, ['raw']]);
    assert.ok(raw.latencyMs!.p50 > 0 && raw.latencyMs!.p99 >= raw.latencyMs!.p50);
  });

  it('with the socket sampler on, the open sockets to a remote join its entry: states and queued bytes', async function () {
    if (process.platform !== 'linux') this.skip();
    // A server that never reads: two connections to it stay ESTABLISHED with bytes waiting.
    const held: net.Socket[] = [];
    const sink = net.createServer((socket) => {
      socket.pause();
      held.push(socket);
    });
    servers.push(sink);
    const sinkPort = await listen(sink);
    probe = await start({ logger: memoryLogger().logger, sockets: { intervalMs: 100, ss: false } });
    const clients = await Promise.all(
      [0, 1].map(
        () =>
          new Promise<net.Socket>((resolve, reject) => {
            const socket = net.connect(sinkPort, '127.0.0.1', () => resolve(socket)).on('error', reject);
          }),
      ),
    );
    for (const c of clients) c.write(Buffer.alloc(16 * 1024 * 1024));
    try {
      const entry = await waitFor('the open sockets in the dependency entry', async () => {
        const e = (await probe!.dependencies()).find((d) => d.remotePort === sinkPort);
        return e?.states.ESTABLISHED === 2 && (e.sendQueueBytes ?? 0) > 0 ? e : undefined;
      });
      assert.equal(entry.connections, 2);
      assert.equal(entry.remoteAddress, '127.0.0.1');
    } finally {
      for (const c of [...clients, ...held]) c.destroy();
    }
  });

  it('sees nothing with dependencies: false', async () => {
    probe = await start({ logger: memoryLogger().logger, dependencies: false });
    await new Promise<void>((resolve, reject) =>
      http.get(`http://localhost:${httpPort}/`, (res) => res.resume().on('end', resolve)).on('error', reject),
    );
    assert.deepEqual(await probe.dependencies(), []);
  });

  it('stop() cancels runs in flight and leaves nothing that keeps the process alive', async () => {
    const hang = await new LossyProxy({ target: { port: httpPort }, dropRatio: 1, drop: 'hang' }).listen();
    proxies.push(hang);
    // A child process: it starts probes that hang for 60 s, stops, and must then exit on its own.
    const script = `
      const { start } = require(${JSON.stringify(path.join(__dirname, '..', 'src', 'index.js'))});
      const http = require('node:http');
      (async () => {
        const probe = await start({ logger: { debug() {}, info() {}, warn() {}, error() {}, child() { return this; } },
          probes: [{ target: 'http://127.0.0.1:${hang.port}/', intervalMs: 100, timeoutMs: 60000 }, { target: 'tcp://127.0.0.1:${tcpPort}', intervalMs: 100 }] });
        await new Promise((r) => http.get('http://127.0.0.1:${httpPort}/', (res) => res.resume().on('end', r)));
        await new Promise((r) => setTimeout(r, 500));
        const inFlight = (await probe.probeStatus())[0];
        await probe.stop();
        console.log(JSON.stringify({ hangRuns: inFlight.successes + inFlight.failures + inFlight.timeouts, stoppedAt: Date.now() }));
      })();`;
    const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => {
      out += chunk.toString();
    });
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    const exitedAt = Date.now();
    const { hangRuns, stoppedAt } = JSON.parse(out) as { hangRuns: number; stoppedAt: number };
    assert.equal(code, 0);
    assert.equal(hangRuns, 0, 'the hanging run was still in flight at stop()');
    assert.ok(
      exitedAt - stoppedAt < 3000,
      `exited ${exitedAt - stoppedAt} ms after stop(), not after the 60 s timeout`,
    );
  });
});
