/**
 * Issue 17, item 3: file descriptors exhausted without a token through the health port.
 * The attacker is another process holding real loopback connections that never read,
 * never finish their headers, or send garbage and then sit; this process counts its own
 * open descriptors in /proc/self/fd while its app's port keeps answering.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import type { AddressInfo } from 'node:net';
import { start, type Probe } from '../src/index.js';
import { MAX_CONNECTIONS, MAX_HEADER_BYTES } from '../src/internal/http-endpoint.js';
import { memoryLogger, sleep, waitFor } from './helpers.js';

const openFds = (): number => fs.readdirSync('/proc/self/fd').length;

/**
 * A child that opens `count` connections to `port` in three shapes, a third each: garbage then
 * silence (a parser error, whose answer it never reads), half a header line, and nothing at all.
 * It never reads, never closes, and prints how many connections are still open every 500 ms.
 */
function attacker(port: number, count: number): ChildProcess {
  const script = `
    const net = require('node:net');
    let open = 0;
    for (let i = 0; i < ${count}; i++) {
      const socket = net.connect(${port}, '127.0.0.1');
      socket.on('connect', () => {
        open += 1;
        socket.pause(); // never read
        if (i % 3 === 0) socket.write('GARBAGE / HTTP/9\\r\\nx\\r\\n\\r\\n');
        else if (i % 3 === 1) socket.write('GET /health HTTP/1.1\\r\\nHost: a');
      });
      socket.on('close', () => { open -= 1; });
      socket.on('error', () => {});
    }
    setInterval(() => process.stdout.write(open + '\\n'), 500);
  `;
  // The child's own limit is raised so it can hold all its sockets, whatever ours is.
  return spawn('sh', ['-c', `ulimit -n 8192; exec "${process.execPath}" -e "$0"`, script], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
}

function get(port: number, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path, agent: false, timeout: 3000 }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${path} timed out`)));
    req.on('error', reject);
  });
}

describe('security: the health port against a connection flood', () => {
  it('1,100 connections that never read: sysprobe holds at most maxConnections, cuts them within seconds, and the app keeps answering', async function () {
    this.timeout(60_000);
    const app = http.createServer((_req, res) => res.end('app'));
    await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', resolve));
    const appPort = (app.address() as AddressInfo).port;
    const probe = await start({ logger: memoryLogger().logger, health: { port: 0 } });
    const healthPort = probe.healthAddress()!.port;
    const child = attacker(healthPort, 1100);
    try {
      // Healthy before the flood. A probe started right after this process's loop was busy (the test files before
      // this one parse hostile snapshots for seconds) first reports that delay: wait for it to age out.
      await waitFor(
        '/health to answer 200 before the flood',
        async () => (await get(healthPort, '/health')) === 200 || undefined,
        20_000,
        250,
      );
      const before = openFds();
      let childOpen = 0;
      child.stdout!.on('data', (data: Buffer) => {
        childOpen = Number(data.toString().trim().split('\n').at(-1));
      });
      await waitFor('the attacker to connect', () => childOpen >= 1000 || undefined, 20_000);
      const during = openFds();
      assert.ok(
        during - before <= MAX_CONNECTIONS + 16,
        `sysprobe holds ${during - before} more descriptors during the flood (limit ${MAX_CONNECTIONS})`,
      );
      assert.equal(await get(appPort, '/'), 200, "the app's own port answers during the flood");
      // Every shape is cut: the garbage one once its answer is written, the silent and half-header ones by the header timeout.
      const started = Date.now();
      await waitFor(
        "sysprobe to let go of the attacker's connections",
        () => openFds() - before <= 8 || undefined,
        15_000,
        100,
      );
      const cutMs = Date.now() - started;
      assert.ok(cutMs < 12_000, `cut within seconds (${cutMs} ms)`);
      // It answers again: 200, or 503 when this (mocha's) main thread stalled under the flood's load, which it may.
      const again = await get(healthPort, '/health');
      assert.ok(again === 200 || again === 503, `the health port answers again (${again})`);
      assert.ok(child.exitCode === null, 'the attacker still runs (it never closes its side)');
    } finally {
      child.kill('SIGKILL');
      await probe.stop();
      await new Promise((resolve) => app.close(resolve));
    }
  });
});

/** Writes `data` on a fresh connection and resolves with everything read until the server closes it (or 5 s). */
function exchange(port: number, data: string | Buffer): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    let text = '';
    const timer = setTimeout(() => socket.destroy(), 5000);
    socket.on('data', (d: Buffer) => (text += d.toString('latin1')));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(text);
    });
    socket.write(data);
  });
}

const statusOf = (answer: string): number => Number(/^HTTP\/1\.1 (\d{3})/.exec(answer)?.[1] ?? 0);

describe('security: the health port counts raw header bytes', () => {
  let probe: Probe;
  let port: number;
  before(async () => {
    probe = await start({ logger: memoryLogger().logger, health: { port: 0 } });
    port = probe.healthAddress()!.port;
  });
  after(() => probe.stop());

  it('431 for a head over 8 KiB of whitespace: leading in a value, tabs, empty lines before the request line', async () => {
    const pad = MAX_HEADER_BYTES + 100;
    for (const [shape, head] of [
      [
        'spaces before a value',
        `GET /health HTTP/1.1\r\nHost: x\r\nX:${' '.repeat(pad)}v\r\nConnection: close\r\n\r\n`,
      ],
      ['tabs before a value', `GET /health HTTP/1.1\r\nHost: x\r\nX:${'\t'.repeat(pad)}v\r\nConnection: close\r\n\r\n`],
      ['empty lines first', `${'\r\n'.repeat(pad / 2)}GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`],
    ] as const) {
      assert.equal(statusOf(await exchange(port, head)), 431, shape);
    }
  });

  it('heads under the limit pass: three keep-alive requests of 7 KiB each on one connection, and a 4 KiB body after a 7 KiB head', async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const reused: boolean[] = [];
      for (let i = 0; i < 3; i++) {
        const status = await new Promise<number>((resolve, reject) => {
          const req = http.get(
            { host: '127.0.0.1', port, path: '/health', agent, headers: { 'x-pad': 'a'.repeat(7 * 1024) } },
            (res) => {
              res.resume();
              res.on('end', () => resolve(res.statusCode ?? 0));
            },
          );
          reused.push(req.reusedSocket);
          req.on('error', reject);
        });
        assert.equal(status, 200, `request ${i}`);
      }
      assert.deepEqual(reused, [false, true, true], 'one connection');
    } finally {
      agent.destroy();
    }
    const body = 'b'.repeat(4000);
    const answer = await exchange(
      port,
      `POST /health HTTP/1.1\r\nHost: x\r\nX-Pad: ${'a'.repeat(7 * 1024)}\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`,
    );
    assert.equal(statusOf(answer), 405, 'the body does not count as head');
  });
});

describe('security: the health port at its connection limit', () => {
  it('a new client closes the oldest idle connection instead of being refused: /health answers during a flood of silent connections', async function () {
    this.timeout(30_000);
    const probe = await start({ logger: memoryLogger().logger, health: { port: 0 } });
    const port = probe.healthAddress()!.port;
    const idle: net.Socket[] = [];
    const closed = new Set<number>();
    try {
      for (let i = 0; i < MAX_CONNECTIONS + 20; i++) {
        const socket = net.connect(port, '127.0.0.1');
        socket.on('error', () => undefined);
        socket.on('close', () => closed.add(i));
        if (i % 2) socket.on('connect', () => socket.write('GET /health HTTP/1.1\r\nHost: a')); // half a head
        idle.push(socket);
        await new Promise((r) => socket.once('connect', r));
      }
      await sleep(300);
      for (let i = 0; i < 3; i++) assert.equal(await get(port, '/health'), 200, `request ${i} during the flood`);
      assert.ok(closed.has(0) && closed.has(1), 'the oldest idle ones were closed');
      assert.ok(!closed.has(MAX_CONNECTIONS + 19), 'the newest is kept');
    } finally {
      for (const socket of idle) socket.destroy();
      await probe.stop();
    }
  });
});
