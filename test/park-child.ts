// A host for test/park.test.ts: sysprobe on the main thread, then nothing that wakes it. It prints
//   WAKES {...}   the watchdog thread's runs (wake-ups) per second over an idle window (/proc schedstat)
//   STALL {...}   for each way a turn can start after an idle second: the stall event the probe emitted
//                 (or none), and when the block ran
//   DONE          at the end
// and exits by itself with code 0. Each stall starts after at least 1.2 s in which the main thread ran no JS,
// long enough for a parking watchdog to be parked, and is started by the turn's first entry into JS of one kind:
// a timer, socket data, a MessagePort message (with a setImmediate after it), a promise continuation after an
// fs.promises call. The thread that triggers them (a worker) never touches the main thread otherwise.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import type { AddressInfo } from 'node:net';
import pino from 'pino';
import { start, type StallEvent } from '../src/index.js';

const IDLE_MS = 1200;
const BLOCK_MS = 800;

function spin(ms: number): number {
  let x = 0;
  const end = Date.now() + ms;
  while (Date.now() < end) x += Math.sqrt(x + 1);
  return x;
}
// One name per way in: the stack the probe takes during the block must name it.
function blockInTimer(): number {
  return spin(BLOCK_MS);
}
function blockOnSocketData(): number {
  return spin(BLOCK_MS);
}
function blockOnMessage(): number {
  return spin(BLOCK_MS);
}
function blockInImmediate(): number {
  return spin(BLOCK_MS);
}
function blockAfterFsPromise(): number {
  return spin(BLOCK_MS);
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The worker: after IDLE_MS, does what it is told (writes to the socket, posts a message, opens the FIFO). */
function triggerer(): void {
  const { port, fifo } = workerData as { port: number; fifo: string };
  const socket = net.connect(port, '127.0.0.1');
  parentPort!.on('message', (what: string) => {
    setTimeout(() => {
      if (what === 'data') socket.write('x');
      else if (what === 'fifo') fs.writeFileSync(fifo, 'x');
      else parentPort!.postMessage(what);
    }, IDLE_MS);
  });
  parentPort!.once('close', () => socket.destroy());
}

/** The watchdog threads' kernel ids (named by native/loop_watch.c). */
function watchdogTids(): string[] {
  return fs
    .readdirSync('/proc/self/task')
    .filter((t) => fs.readFileSync(`/proc/self/task/${t}/comm`, 'utf8').trim() === 'sysprobe-watch');
}

function runs(tid: string): number {
  return Number(fs.readFileSync(`/proc/self/task/${tid}/schedstat`, 'utf8').trim().split(/\s+/)[2]);
}

async function main(): Promise<void> {
  const dumpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sysprobe-park-'));
  const stalls: StallEvent[] = [];
  const probe = await start({
    serviceName: 'park-test',
    dumpDir,
    capturesPerMinute: 60,
    sampleIntervalMs: 10_000, // the main thread's own readings: one in the idle window at most
    logger: pino({ level: 'silent' }),
  });
  probe.on('stall', (event: StallEvent) => stalls.push(event));
  const tids = watchdogTids();
  if (tids.length !== 1) throw new Error(`watchdog threads: ${tids.length}`);
  const windowSeconds = Number(process.argv[2] ?? 6);

  // The sockets and the worker first, so the idle window below has nothing left to settle.
  const fifo = path.join(dumpDir, 'fifo');
  execFileSync('mkfifo', [fifo]);
  const onData: Array<() => void> = [];
  const server = net.createServer((socket) => socket.on('data', () => onData.shift()?.()));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const worker = new Worker(__filename, { workerData: { port: (server.address() as AddressInfo).port, fifo } });
  await new Promise((resolve) => server.once('connection', resolve));
  const onMessage: Array<() => void> = [];
  worker.on('message', () => onMessage.shift()?.());

  await sleep(3000); // start-up's own work (the worker's first batches) is over
  const before = runs(tids[0]!);
  const mainBefore = runs(String(process.pid));
  const t0 = process.hrtime.bigint();
  await sleep(windowSeconds * 1000);
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const perSecond = (runs(tids[0]!) - before) / seconds;
  const mainPerSecond = (runs(String(process.pid)) - mainBefore) / seconds;
  console.log(`WAKES ${JSON.stringify({ perSecond, mainPerSecond, seconds })}`);

  const ways: Array<[string, (block: () => void) => void]> = [
    ['timer', (block) => setTimeout(block, IDLE_MS)],
    ['socket data', (block) => (onData.push(block), worker.postMessage('data'))],
    ['MessagePort message', (block) => (onMessage.push(block), worker.postMessage('message'))],
    ['setImmediate', (block) => (onMessage.push(() => setImmediate(block)), worker.postMessage('message'))],
    [
      'fs.promises continuation',
      (block) => void fs.promises.readFile(fifo).then(block),
      // readFile's open of the FIFO waits in libuv's thread pool until the worker opens it to write
    ],
  ];
  const blocks: Record<string, () => number> = {
    timer: blockInTimer,
    'socket data': blockOnSocketData,
    'MessagePort message': blockOnMessage,
    setImmediate: blockInImmediate,
    'fs.promises continuation': blockAfterFsPromise,
  };
  for (const [way, arm] of ways) {
    await sleep(500); // the previous stall's capture and event are done
    stalls.length = 0;
    const ran = await new Promise<{ blockedAt: number; unblockedAt: number }>((resolve) => {
      arm(() => {
        const blockedAt = Date.now();
        blocks[way]!();
        resolve({ blockedAt, unblockedAt: Date.now() });
      });
      if (way === 'fs.promises continuation') worker.postMessage('fifo');
    });
    const until = Date.now() + 5000;
    while (!stalls.some((s) => s.startedAt + s.durationMs >= ran.blockedAt) && Date.now() < until) await sleep(20);
    const event = stalls.find((s) => s.startedAt + s.durationMs >= ran.blockedAt);
    console.log(
      `STALL ${JSON.stringify({
        way,
        culprit: blocks[way]!.name,
        ...ran,
        event: event && {
          startedAt: event.startedAt,
          durationMs: event.durationMs,
          how: event.capture.how,
          takenAt: event.capture.takenAt,
          names: event.stack?.map((f) => f.functionName),
        },
      })}`,
    );
  }
  await worker.terminate();
  server.close();
  await probe.stop();
  fs.rmSync(dumpDir, { recursive: true, force: true });
  console.log('DONE');
}

if (isMainThread) {
  main().catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
} else triggerer();
