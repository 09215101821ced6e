// A service for test/stalls.test.ts: sysprobe on, an HTTP server whose /block handler stalls the loop in
// the way argv[2] names, and each 'stall' event printed as one JSON line. Driven from the parent process,
// so the stall cannot delay the requests that measure it.
import * as cp from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { start } from '../src/index.js';

const mode = process.argv[2];
const dumpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sysprobe-stalls-'));
const fifo = path.join(dumpDir, 'blocking.fifo');

/** A heap of a few hundred MB of small objects, so that a full GC takes a while. */
let heap: unknown[] = [];

function block(): void {
  switch (mode) {
    case 'busy': {
      const end = Date.now() + Number(process.argv[3] ?? 600);
      while (Date.now() < end); // spin
      return;
    }
    case 'exec':
      cp.execSync('sleep 0.6');
      return;
    case 'gc':
      (globalThis as { gc?: () => void }).gc!();
      return;
    case 'fifo': {
      // r+ does not wait for a writer; the read then blocks until the parent writes.
      const fd = fs.openSync(fifo, 'r+');
      fs.readSync(fd, Buffer.alloc(16));
      fs.closeSync(fd);
      return;
    }
    default:
      throw new Error(`unknown mode ${mode}`);
  }
}

async function main(): Promise<void> {
  if (mode === 'fifo') cp.execFileSync('mkfifo', [fifo]);
  if (mode === 'gc') heap = Array.from({ length: 2_500_000 }, (_, i) => ({ i, list: [i] }));
  // OpenTelemetry is loaded before sysprobe watches: a slow module load is not the stall under test.
  const traced = mode === 'span' ? inSpans() : undefined;
  const probe = await start({
    serviceName: 'stalls-test',
    dumpDir,
    stallThresholdMs: 100,
    health: { port: 0 },
    logger: require('pino')({ level: 'silent' }),
  });
  probe.on('stall', (event) => {
    const { stack, ...rest } = event;
    console.log(`STALL ${JSON.stringify({ ...rest, top: stack?.slice(0, 4) })}`);
  });
  const server = http.createServer(
    traced ??
      ((req, res) => {
        if (req.url?.startsWith('/block')) block();
        res.end(`ok ${heap.length}`);
      }),
  );
  server.listen(0, '127.0.0.1', () => {
    console.log(
      `READY ${JSON.stringify({ port: (server.address() as AddressInfo).port, health: probe.healthAddress()?.port, fifo })}`,
    );
  });
  process.on('SIGTERM', () => {
    void probe.stop().then(() => {
      server.close();
      fs.rmSync(dumpDir, { recursive: true, force: true });
      process.exit(0);
    });
  });
}

/**
 * `span`: OpenTelemetry's AsyncLocalStorage context manager and SDK tracer; /block spins inside an
 * active span, after an await (the context crosses it), and prints the span's ids; /plain spins in none.
 */
function inSpans(): http.RequestListener {
  /* eslint-disable @typescript-eslint/no-require-imports */
  const api = require('@opentelemetry/api') as typeof import('@opentelemetry/api');
  const { AsyncLocalStorageContextManager } =
    require('@opentelemetry/context-async-hooks') as typeof import('@opentelemetry/context-async-hooks');
  const { BasicTracerProvider } =
    require('@opentelemetry/sdk-trace-base') as typeof import('@opentelemetry/sdk-trace-base');
  /* eslint-enable @typescript-eslint/no-require-imports */
  api.context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  api.trace.setGlobalTracerProvider(new BasicTracerProvider());
  const tracer = api.trace.getTracer('stalls-child');
  const spin = (ms: number): void => {
    const end = Date.now() + ms;
    while (Date.now() < end); // spin
  };
  return (req, res) => {
    if (req.url === '/plain') {
      spin(600);
      res.end('ok');
      return;
    }
    if (req.url !== '/block') return void res.end('ok');
    void tracer.startActiveSpan('GET /block', async (span) => {
      await new Promise((resolve) => setImmediate(resolve));
      const { traceId, spanId } = span.spanContext();
      console.log(`SPAN ${JSON.stringify({ traceId, spanId })}`);
      spin(800);
      span.end();
      res.end('ok');
    });
  };
}

void main();
