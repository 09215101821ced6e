import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as net from 'node:net';
import * as path from 'node:path';
import {
  classifyStall,
  parseFdLink,
  parsePollFds,
  parseSyscall,
  parseUnixTable,
  syscallName,
  type ThreadObservation,
} from '../src/stalls/cause.js';
import { InFlightReader, PATH_BYTES, RequestTracker } from '../src/stalls/requests.js';
import { parseTaskStat } from '../src/samples/proc.js';
import { kill, line, spawnNode, until, ROOT, type Child } from './children.js';
import { makeCgroup, removeCgroup, skipUnless, writableV1Dir } from './cgroup-helpers.js';

const FIXTURES = path.join(ROOT, 'test', 'fixtures', 'stalls');
const fixture = (name: string) => fs.readFileSync(path.join(FIXTURES, name), 'utf8');
const TRACE_ID = '0af7651916cd43dd8448eb211c80319c';

describe('stall causes: /proc task parsers (recorded content)', () => {
  it("reads a blocked thread's system call, a running one, and one blocked outside a call", () => {
    const pselect = parseSyscall(fixture('syscall-pselect6.txt'));
    assert.ok(pselect && !pselect.running);
    assert.equal(pselect.nr, 270);
    assert.equal(pselect.args.length, 6);
    assert.equal(pselect.args[0], 0xfbn);
    assert.equal(syscallName(pselect.nr, 'x64'), 'pselect6');
    const read = parseSyscall(fixture('syscall-read-fd22.txt'));
    assert.ok(read && !read.running);
    assert.equal(syscallName(read.nr, 'x64'), 'read');
    assert.equal(Number(read.args[0]), 22);
    assert.deepEqual(parseSyscall(fixture('syscall-running.txt')), { running: true });
    assert.deepEqual(parseSyscall(fixture('syscall-not-in-syscall.txt')), { running: false, nr: -1, args: [] });
    assert.equal(parseSyscall('garbage'), undefined);
    assert.equal(parseSyscall('0 0x1 zz 0x0 0x0 0x0 0x0 0x0 0x0'), undefined);
  });

  it('names system calls per architecture, and numbers it does not know', () => {
    assert.equal(syscallName(63, 'arm64'), 'read');
    assert.equal(syscallName(202, 'x64'), 'futex');
    assert.equal(syscallName(98, 'arm64'), 'futex');
    assert.equal(syscallName(9999, 'x64'), 'syscall 9999');
  });

  it('reads the thread state from stat, and what a descriptor is from its link', () => {
    assert.equal(parseTaskStat(fixture('stat-sleeping.txt'))?.state, 'S');
    assert.equal(parseTaskStat(fixture('stat-running.txt'))?.state, 'R');
    assert.deepEqual(parseFdLink('socket:[216017]'), { kind: 'socket', inode: 216017 });
    assert.deepEqual(parseFdLink('pipe:[42]'), { kind: 'pipe', inode: 42 });
    assert.deepEqual(parseFdLink('anon_inode:[eventpoll]'), { kind: 'anon', name: 'eventpoll' });
    assert.deepEqual(parseFdLink('/var/lib/app/data.db'), { kind: 'path', path: '/var/lib/app/data.db' });
    assert.equal(parseFdLink('socket:[x]'), undefined);
    const unix = parseUnixTable(fixture('net-unix.txt'));
    assert.equal(unix.get(20711), '/run/postgresql/.s.PGSQL.5432');
    assert.equal(unix.has(216017), false, 'an unbound socket has no path to name');
  });

  it('reads descriptors from a struct pollfd array, skipping negative ones', () => {
    const bytes = new Uint8Array(24);
    const view = new DataView(bytes.buffer);
    const little = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
    view.setInt32(0, 7, little);
    view.setInt32(8, -1, little);
    view.setInt32(16, 12, little);
    assert.deepEqual(parsePollFds(bytes, 3), [7, 12]);
    assert.deepEqual(parsePollFds(bytes, 1), [7]);
  });
});

describe('stall causes: classification', () => {
  const waiting: ThreadObservation = { at: 1, state: 'S', syscall: 'read', fd: 9, waitingOn: 'fifo /tmp/f' };
  const running: ThreadObservation = { at: 2, state: 'R' };
  const base = { durationMs: 1000, selfPaused: false, observations: [] as ThreadObservation[] };

  it('takes the causes in order: self, throttled, gc, native, js', () => {
    assert.equal(classifyStall({ ...base, selfPaused: true, gcMs: 900 }).cause, 'self');
    assert.equal(classifyStall({ ...base, throttledMs: 600, gcMs: 600 }).cause, 'throttled');
    assert.equal(classifyStall({ ...base, throttledMs: 400, gcMs: 600, captureHow: 'blocked-in-native' }).cause, 'gc');
    assert.equal(classifyStall({ ...base, gcMs: 400, captureHow: 'blocked-in-native' }).cause, 'native');
    assert.equal(classifyStall({ ...base, gcMs: 400, captureHow: 'debugger-pause' }).cause, 'js');
  });

  it('native: names the system call and what it waits on, and the app frame where JS resumed', () => {
    const stack = [
      { functionName: 'execSync', url: 'node:child_process', lineNumber: 1, columnNumber: 0 },
      { functionName: 'handler', url: 'file:///app/server.js', lineNumber: 9, columnNumber: 4 },
    ];
    const diagnosis = classifyStall({ ...base, captureHow: 'blocked-in-native', observations: [waiting], stack });
    assert.equal(diagnosis.cause, 'native');
    assert.deepEqual(diagnosis.blockedIn, waiting);
    assert.equal(diagnosis.calledFrom?.functionName, 'handler');
    assert.match(diagnosis.why, /read waiting on fifo \/tmp\/f/);
  });

  it('a thread the inspector paused at once ran JS, whatever a single look at it saw', () => {
    assert.equal(classifyStall({ ...base, captureHow: 'debugger-pause', observations: [waiting] }).cause, 'js');
  });

  it('without a stack capture, the looks decide: in a system call at least half the times is native', () => {
    assert.equal(classifyStall({ ...base, captureHow: 'skipped', observations: [waiting, running] }).cause, 'native');
    assert.equal(
      classifyStall({ ...base, captureHow: 'skipped', observations: [waiting, running, running] }).cause,
      'js',
    );
    assert.equal(classifyStall({ ...base, captureHow: 'skipped', observations: [] }).cause, 'js');
  });
});

describe('in-flight requests: the shared table', () => {
  let tracker: RequestTracker;
  let server: http.Server;
  let port: number;
  const held: http.ServerResponse[] = [];

  beforeEach(async () => {
    tracker = new RequestTracker(8);
    tracker.start();
    server = http.createServer((req, res) => {
      if (req.url?.startsWith('/hold')) held.push(res);
      else res.end('ok');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });

  afterEach(async () => {
    tracker.stop();
    for (const res of held.splice(0)) res.end();
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  /** Sends a raw request on its own socket; the socket is returned so a test can drop it. */
  function send(target: string, headers: Record<string, string> = {}, method = 'GET'): Promise<net.Socket> {
    return new Promise((resolve) => {
      const socket = net.connect(port, '127.0.0.1', () => {
        socket.write(
          `${method} ${target} HTTP/1.1\r\nHost: x\r\n${Object.entries(headers)
            .map(([k, v]) => `${k}: ${v}\r\n`)
            .join('')}\r\n`,
        );
        resolve(socket);
      });
      socket.on('error', () => undefined);
    });
  }
  const reader = () => new InFlightReader(tracker.buffer);
  const waitHeld = async (n: number) => {
    while (held.length < n) await new Promise((r) => setTimeout(r, 5));
  };

  it('names what is in flight from another reader of the buffer: method, path without the query, start, trace id', async () => {
    const before = Date.now();
    const a = await send('/hold/orders/42?token=secret', {
      TraceParent: `00-${TRACE_ID.toUpperCase()}-b7ad6b7169203331-01`,
    });
    await waitHeld(1);
    const b = await send('/hold/other', {}, 'POST');
    await waitHeld(2);
    const { requests } = reader().read();
    assert.equal(requests.length, 2);
    assert.equal(requests[0]!.method, 'GET');
    assert.equal(requests[0]!.path, '/hold/orders/42');
    assert.equal(requests[0]!.traceId, TRACE_ID);
    assert.ok(requests[0]!.startedAt >= before && requests[0]!.startedAt <= Date.now());
    assert.equal(requests[1]!.method, 'POST');
    assert.equal(requests[1]!.traceId, undefined);
    // Finished requests leave the table at once.
    held.shift()!.end('done');
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(
      reader()
        .read()
        .requests.map((r) => r.path),
      ['/hold/other'],
    );
    a.destroy();
    b.destroy();
  });

  it('a request whose client went away is reclaimed by the sweep; a full table counts what it could not hold', async () => {
    const sockets = [];
    for (let i = 0; i < 10; i++) sockets.push(await send(`/hold/${i}`));
    await waitHeld(10);
    const { requests, untracked } = reader().read();
    assert.equal(requests.length, 8);
    assert.equal(untracked, 2);
    for (const socket of sockets) socket.destroy();
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(reader().read().requests.length, 8, 'no finish comes for an aborted request');
    tracker.sweep();
    assert.equal(reader().read().requests.length, 0);
  });

  it('cuts long paths and says so; ignores malformed trace ids', async () => {
    const long = `/hold/${'x'.repeat(100)}`;
    const socket = await send(long, { traceparent: '00-zzzz' });
    await waitHeld(1);
    const [request] = reader().read().requests;
    assert.equal(request!.path, `${long.slice(0, PATH_BYTES)}…`);
    assert.equal(request!.traceId, undefined);
    socket.destroy();
  });

  it('Express: the main thread adds the matched route to a request the worker named, live or finished after a stall saw it', async () => {
    const express = require('express') as typeof import('express');
    const app = express();
    const router = express.Router();
    const holding: http.ServerResponse[] = [];
    router.get('/orders/:id', (_req: unknown, res: http.ServerResponse) => {
      holding.push(res);
    });
    app.use('/api', router);
    const appServer = app.listen(0, '127.0.0.1');
    await new Promise((resolve) => appServer.once('listening', resolve));
    try {
      const { port: appPort } = appServer.address() as AddressInfo;
      const socket = net.connect(appPort, '127.0.0.1', () =>
        socket.write('GET /api/orders/42?x=1 HTTP/1.1\r\nHost: x\r\n\r\n'),
      );
      socket.on('error', () => undefined);
      while (holding.length < 1) await new Promise((r) => setTimeout(r, 5));
      const [seen] = reader().read(true).requests; // as the worker reads it during a stall
      assert.equal(seen!.path, '/api/orders/42');
      assert.deepEqual(tracker.details(seen!.slot, seen!.seq), { route: '/api/orders/:id' });
      holding[0]!.end('done');
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(reader().read().requests.length, 0);
      assert.deepEqual(tracker.details(seen!.slot, seen!.seq), { route: '/api/orders/:id' }, 'kept after it finished');
      tracker.clearDetails();
      assert.deepEqual(tracker.details(seen!.slot, seen!.seq), {});
      socket.destroy();
    } finally {
      appServer.closeAllConnections();
      await new Promise((resolve) => appServer.close(resolve));
    }
  });

  it('Fastify: the route from its handler channel (tracing:fastify.request.handler:start), live or finished after a stall saw it', async () => {
    const fastify = (require('fastify') as typeof import('fastify')).default;
    const app = fastify();
    const holding: Array<{ send(body: string): unknown }> = [];
    app.register(
      async (scope) => {
        scope.get('/orders/:id', (_request, reply) => {
          holding.push(reply);
        });
      },
      { prefix: '/api' },
    );
    await app.listen({ port: 0, host: '127.0.0.1' });
    try {
      const { port: appPort } = app.server.address() as AddressInfo;
      const socket = net.connect(appPort, '127.0.0.1', () =>
        socket.write('GET /api/orders/42?x=1 HTTP/1.1\r\nHost: x\r\n\r\n'),
      );
      socket.on('error', () => undefined);
      while (holding.length < 1) await new Promise((r) => setTimeout(r, 5));
      const [seen] = reader().read(true).requests;
      assert.equal(seen!.path, '/api/orders/42');
      assert.deepEqual(tracker.details(seen!.slot, seen!.seq), { route: '/api/orders/:id' });
      holding[0]!.send('done');
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(reader().read().requests.length, 0);
      assert.deepEqual(tracker.details(seen!.slot, seen!.seq), { route: '/api/orders/:id' }, 'kept after it finished');
      socket.destroy();
    } finally {
      await app.close();
    }
  });

  it('counts request starts in a window and the rate before it', async () => {
    const from = Date.now();
    for (let i = 0; i < 5; i++)
      await new Promise<void>((resolve) =>
        http.get(`http://127.0.0.1:${port}/quick`, (res) => {
          res.resume();
          res.on('end', resolve);
        }),
      );
    const to = Date.now();
    assert.equal(tracker.startedBetween(from, to), 5);
    assert.equal(tracker.startedBetween(to + 1, to + 1000), 0);
    assert.ok(tracker.rateBefore(to + 1, 10_000) > 0);
  });
});

describe('stalls in a real service: the request and the cause', function () {
  this.timeout(60_000);
  let child: Child | undefined;
  afterEach(async () => {
    await kill(child);
    child = undefined;
  });

  async function serve(
    mode: string,
    extraArgs: string[] = [],
    nodeArgs: string[] = [],
  ): Promise<{ port: number; health: number; fifo: string }> {
    child = spawnNode([...nodeArgs, path.join(ROOT, 'dist', 'test', 'stalls-child.js'), mode, ...extraArgs]);
    const [, ready] = await line(child, /READY (.*)/, 30_000);
    return JSON.parse(ready!) as { port: number; health: number; fifo: string };
  }
  function get(
    port: number,
    target: string,
    headers: Record<string, string> = {},
  ): Promise<{ status: number; body: string }> {
    return new Promise((resolve, reject) => {
      http
        .get({ host: '127.0.0.1', port, path: target, headers }, (res) => {
          let body = '';
          res
            .setEncoding('utf8')
            .on('data', (c: string) => {
              body += c;
            })
            .on('end', () => resolve({ status: res.statusCode!, body }));
        })
        .on('error', reject);
    });
  }
  /** The stall of the request to `target` (a loaded machine may stall elsewhere too: start-up work, a slow accept). */
  function stallOf(target: string): Promise<Record<string, any>> {
    return until(
      child!,
      `the stall of ${target}`,
      () =>
        [...child!.stdout().matchAll(/^STALL (.*)$/gm)]
          .map((m) => JSON.parse(m[1]!) as Record<string, any>)
          .find((e) => (e.requests as Array<{ path: string }>).some((r) => r.path === target)),
      30_000,
    );
  }

  it('a busy loop in a handler: cause js, the request named with its trace id, in the event and in /health while blocked', async () => {
    const { port, health } = await serve('busy', ['2000']);
    await get(port, '/warm');
    const blocked = get(port, `/block/7?user=secret`, { traceparent: `00-${TRACE_ID}-b7ad6b7169203331-01` });
    await new Promise((r) => setTimeout(r, 600));
    const answer = await get(health, '/health');
    assert.equal(answer.status, 503);
    const blockedInfo = (JSON.parse(answer.body) as { blocked: { requests: Array<Record<string, unknown>> } }).blocked;
    assert.equal(blockedInfo.requests.length, 1, answer.body);
    assert.equal(blockedInfo.requests[0]!.path, '/block/7');
    assert.equal(blockedInfo.requests[0]!.traceId, TRACE_ID);
    assert.ok((blockedInfo.requests[0]!.runningMs as number) >= 300);
    // Requests sent during the stall wait behind it.
    const queued = [get(port, '/after'), get(port, '/after')];
    await blocked;
    await Promise.all(queued);
    const event = await stallOf('/block/7');
    assert.equal(event.cause, 'js', JSON.stringify(event));
    assert.deepEqual(event.thread, { id: 0, name: 'main' });
    assert.equal(event.requests.length, 1);
    assert.deepEqual(
      { method: event.requests[0].method, path: event.requests[0].path, traceId: event.requests[0].traceId },
      { method: 'GET', path: '/block/7', traceId: TRACE_ID },
    );
    assert.ok(event.requests[0].runningMs >= 1500);
    assert.ok(event.queued.count >= 1, JSON.stringify(event.queued));
  });

  it('a busy loop in a container throttled to a tenth of a CPU: the stack is still taken as JS (waits for a CPU are not native code)', async function () {
    const { dir: cpuRoot, reason } = writableV1Dir('cpu');
    skipUnless(this, cpuRoot !== undefined, reason ?? '');
    // Long enough for the stack to be taken inside the loop however slowly the throttled threads get to it.
    const { port } = await serve('busy', ['5000']);
    await get(port, '/warm');
    // 10 ms of CPU per 100 ms period: after its share, each thread waits up to 90 ms for the next period, far
    // longer than the 50 ms a JS thread takes to answer the inspector, only because it may not run.
    const cgroup = makeCgroup(cpuRoot!, { 'cpu.cfs_period_us': '100000', 'cpu.cfs_quota_us': '10000' });
    try {
      fs.writeFileSync(path.join(cgroup, 'cgroup.procs'), String(child!.proc.pid));
      await get(port, '/block/1');
      const event = await stallOf('/block/1');
      assert.equal(event.capture.how, 'debugger-pause', JSON.stringify(event.capture));
      assert.ok(['js', 'throttled'].includes(event.cause as string), JSON.stringify(event));
    } finally {
      await kill(child);
      child = undefined;
      await removeCgroup(cgroup);
    }
  });

  it('code that stalls inside an active OpenTelemetry span (AsyncLocalStorage context): the stall names its trace and span', async () => {
    const { port } = await serve('span');
    await get(port, '/block');
    const [, ids] = await line(child!, /SPAN (.*)/, 10_000);
    const event = await stallOf('/block');
    assert.equal(event.capture.how, 'debugger-pause', JSON.stringify(event));
    assert.deepEqual(event.capture.span, JSON.parse(ids!));
    // A stall outside any span names none.
    await get(port, '/plain');
    const plain = await stallOf('/plain');
    assert.equal(plain.capture.how, 'debugger-pause', JSON.stringify(plain));
    assert.equal(plain.capture.span, undefined, JSON.stringify(plain.capture));
  });

  it('execSync in a handler: cause native, waiting on the child process, the handler named as the caller', async () => {
    const { port } = await serve('exec');
    await get(port, '/block/exec');
    const event = await stallOf('/block/exec');
    assert.equal(event.cause, 'native', JSON.stringify(event));
    assert.match(event.diagnosis.blockedIn.waitingOn, /child \d+ .*sleep 0\.6/);
    assert.match(event.diagnosis.calledFrom.url, /stalls-child\.ts$/);
    assert.equal(event.requests[0].path, '/block/exec');
  });

  it('a synchronous read of a FIFO nobody writes: cause native, the FIFO named', async () => {
    const { port, fifo } = await serve('fifo');
    const blocked = get(port, '/block/fifo');
    await new Promise((r) => setTimeout(r, 700));
    fs.writeFileSync(fifo, 'go');
    await blocked;
    const event = await stallOf('/block/fifo');
    assert.equal(event.cause, 'native', JSON.stringify(event));
    assert.equal(event.diagnosis.blockedIn.syscall, 'read');
    assert.equal(event.diagnosis.blockedIn.waitingOn, `fifo ${fifo}`);
  });

  it('a forced full GC of a large heap: cause gc, with the GC time', async () => {
    const { port } = await serve('gc', [], ['--expose-gc']);
    await get(port, '/block/gc');
    const event = await stallOf('/block/gc');
    assert.equal(event.cause, 'gc', JSON.stringify(event));
    assert.ok(event.diagnosis.gcMs >= event.durationMs / 2);
  });
});
