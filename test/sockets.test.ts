import assert from 'node:assert/strict';
import * as net from 'node:net';
import { once } from 'node:events';
import { start, type Probe, type SocketPicture } from '../src/index.js';
import { findMetric, memoryLogger, memoryMetrics, pointValue, waitFor } from './helpers.js';
import { needs, SS } from './requirements.js';

const CONNECTIONS = 3;

/** A loopback server whose sockets never read (paused) and never close on their own (half-open allowed). */
async function stubbornServer(): Promise<{ server: net.Server; port: number; accepted: net.Socket[] }> {
  const accepted: net.Socket[] = [];
  const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (socket) => accepted.push(socket));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, port: (server.address() as net.AddressInfo).port, accepted };
}

async function connect(port: number, n: number): Promise<net.Socket[]> {
  return Promise.all(
    Array.from({ length: n }, async () => {
      const socket = net.connect(port, '127.0.0.1');
      await once(socket, 'connect');
      return socket;
    }),
  );
}

/** Sweeps run every 100 ms: wait for one that shows what the test set up. */
function pictureWhere(probe: Probe, what: string, ok: (p: SocketPicture) => boolean): Promise<SocketPicture> {
  return waitFor(
    what,
    async () => {
      const p = await probe.sockets();
      return ok(p) ? p : undefined;
    },
    5000,
    100,
  );
}

describe('socket sampler on real loopback sockets (Linux)', function () {
  let probe: Probe;
  const metrics = memoryMetrics();
  const log = memoryLogger();
  const cleanup: Array<() => void> = [];

  before(async function () {
    if (process.platform !== 'linux') this.skip();
    probe = await start({
      sockets: { intervalMs: 100 },
      sampleIntervalMs: 100,
      logger: log.logger,
      meterProvider: metrics.meterProvider,
      defaultRules: false,
    });
  });
  afterEach(() => {
    for (const fn of cleanup.splice(0)) fn();
  });
  after(async () => {
    await probe?.stop();
    await metrics.shutdown();
  });

  it('a server that stops reading fills the client send queue; the ESTABLISHED counts match', async () => {
    const { server, port, accepted } = await stubbornServer();
    const clients = await connect(port, CONNECTIONS);
    cleanup.push(() => {
      clients.forEach((c) => c.destroy());
      accepted.forEach((s) => s.destroy());
      server.close();
    });
    // More than the kernel's buffers on both sides hold (receive window and send buffer, a few MB at most on loopback): the rest waits in Node.
    for (const client of clients) client.write(Buffer.alloc(16 * 1024 * 1024));
    const p = await pictureWhere(
      probe,
      'full send queues towards the paused server',
      (p) =>
        (p.byRemote.find((r) => r.port === port)?.sendQueueBytes ?? 0) > 0 &&
        p.listeners.some((l) => l.port === port && l.states.ESTABLISHED === CONNECTIONS),
    );
    const towardsServer = p.byRemote.find((r) => r.port === port)!;
    assert.equal(towardsServer.connections, CONNECTIONS);
    assert.deepEqual(towardsServer.states, { ESTABLISHED: CONNECTIONS });
    assert.ok(towardsServer.sendQueueBytes > 0);
    assert.ok(p.sendQueueBytes >= towardsServer.sendQueueBytes);
    assert.ok(p.recvQueueBytes > 0, 'the paused server side holds unread bytes');
    const listener = p.listeners.find((l) => l.port === port)!;
    assert.deepEqual(listener.addresses, ['127.0.0.1']);
    assert.equal(listener.acceptQueue, 0, 'node accepted them all');
    // Both ends are ours: the clients' and the server's sockets.
    assert.ok((p.byState.ESTABLISHED ?? 0) >= 2 * CONNECTIONS);
    assert.ok((p.byState.LISTEN ?? 0) >= 1);
    assert.equal(p.supported, true);
    // The flight recorder carries the summary.
    const samples = await probe.recent();
    const last = samples.findLast((s) => s.sockets)?.sockets;
    assert.ok(last && last.sendQueueBytes > 0 && last.total >= 2 * CONNECTIONS + 1, JSON.stringify(last));
  });

  it('half-closed connections show CLOSE_WAIT on the server side (and FIN_WAIT2 on the client side) with the right count', async () => {
    const { server, port, accepted } = await stubbornServer();
    const clients = await connect(port, CONNECTIONS);
    cleanup.push(() => {
      clients.forEach((c) => c.destroy());
      accepted.forEach((s) => s.destroy());
      server.close();
    });
    await waitFor('the server to accept', () => accepted.length === CONNECTIONS);
    // The clients send FIN; the server never closes its side.
    for (const client of clients) client.end();
    const p = await pictureWhere(
      probe,
      'CLOSE_WAIT on the server port',
      (p) => p.listeners.find((l) => l.port === port)?.states.CLOSE_WAIT === CONNECTIONS,
    );
    assert.deepEqual(p.listeners.find((l) => l.port === port)!.states, { CLOSE_WAIT: CONNECTIONS });
    assert.deepEqual(p.byRemote.find((r) => r.port === port)?.states, { FIN_WAIT2: CONNECTIONS });
    assert.ok((p.byState.CLOSE_WAIT ?? 0) >= CONNECTIONS);
    // ...and a rule on sockets.closeWait sees it in the samples.
    const samples = await waitFor('a sample with the CLOSE_WAIT sockets', async () =>
      (await probe.recent()).findLast((s) => (s.sockets?.byState.CLOSE_WAIT ?? 0) >= CONNECTIONS),
    );
    assert.ok(samples.sockets!.total >= 2 * CONNECTIONS + 1);
  });

  it('exports system.network.connection.count by network.connection.state, and sysprobe.tcp.* through a real MeterProvider', async () => {
    const { server, port, accepted } = await stubbornServer();
    const clients = await connect(port, CONNECTIONS);
    cleanup.push(() => {
      clients.forEach((c) => c.destroy());
      accepted.forEach((s) => s.destroy());
      server.close();
    });
    await pictureWhere(
      probe,
      'the connections',
      (p) => p.listeners.find((l) => l.port === port)?.states.ESTABLISHED === CONNECTIONS,
    );
    const established = await waitFor('the established count in the metrics', async () => {
      const count = findMetric(await metrics.collect(), 'system.network.connection.count');
      const n = pointValue(count, { 'network.connection.state': 'established', 'network.transport': 'tcp' });
      return n >= 2 * CONNECTIONS ? count : undefined;
    });
    assert.ok(pointValue(established, { 'network.connection.state': 'listen' }) >= 1);
    assert.equal(
      pointValue(established, { 'network.connection.state': 'syn_received' }),
      0,
      'every state is reported, 0 when empty',
    );
    const all = await metrics.collect();
    for (const name of [
      'sysprobe.tcp.send_queue.size',
      'sysprobe.tcp.receive_queue.size',
      'sysprobe.tcp.accept_queue.size',
      'sysprobe.tcp.retransmitted_segments',
      'sysprobe.tcp.timeouts',
      'sysprobe.tcp.listen.overflows',
      'sysprobe.tcp.listen.drops',
      'sysprobe.tcp.retransmit.rate',
    ]) {
      assert.ok(pointValue(findMetric(all, name)) >= 0, name);
    }
  });

  it('with ss installed, adds RTT per remote and the listen backlog limit', async function () {
    needs(this, SS); // iproute2 missing: the rest is tested above
    const p = await probe.sockets();
    assert.equal(p.ss, 'ok');
    const { server, port, accepted } = await stubbornServer();
    const clients = await connect(port, 1);
    cleanup.push(() => {
      clients.forEach((c) => c.destroy());
      accepted.forEach((s) => s.destroy());
      server.close();
    });
    const q = await pictureWhere(
      probe,
      'an RTT towards the server',
      (p) => p.byRemote.find((r) => r.port === port)?.rttMsMean !== undefined,
    );
    assert.ok(q.byRemote.find((r) => r.port === port)!.rttMsMean! >= 0);
    assert.ok((q.listeners.find((l) => l.port === port)?.acceptQueueMax ?? 0) > 0, 'ss gives the backlog limit');
    assert.equal(typeof q.retransmitsTotal, 'number');
  });

  it('probe.sockets() rejects with a coded error when the sampler is off', async () => {
    await probe.stop();
    const other = await start({ logger: log.logger, defaultRules: false });
    try {
      await assert.rejects(other.sockets(), { code: 'SYSPROBE_ERR_UNSUPPORTED' });
    } finally {
      await other.stop();
    }
  });
});

describe('socket sampler without ss', () => {
  it('says "ss unavailable" once in the log and keeps the rest of the picture', async function () {
    if (process.platform !== 'linux') this.skip();
    const { SocketSampler } = await import('../src/sockets/sampler.js');
    const logs: string[] = [];
    const sampler = new SocketSampler({ intervalMs: 1000, ss: true, maxRemotes: 20 }, (_level, msg) => logs.push(msg));
    const server = net.createServer().listen(0, '127.0.0.1');
    await once(server, 'listening');
    const path = process.env.PATH;
    // execFile looks ss up on PATH at each call: an empty PATH is a machine without iproute2.
    process.env.PATH = '/nonexistent';
    try {
      const [a, b] = [await sampler.sweep(), await sampler.sweep()];
      for (const p of [a, b]) {
        assert.equal(p.ss, 'unavailable');
        assert.equal(p.supported, true);
        assert.ok(
          p.listeners.some((l) => l.port === (server.address() as net.AddressInfo).port),
          'the /proc part still works',
        );
        assert.equal(p.retransmitsTotal, undefined, 'no per-socket figures without ss');
      }
      assert.deepEqual(logs.filter((m) => m.startsWith('ss unavailable')).length, 1);
    } finally {
      process.env.PATH = path;
      server.close();
    }
  });
});
