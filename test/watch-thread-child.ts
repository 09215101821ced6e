// A host for test/threads.test.ts: sysprobe runs on the main thread only; the app's worker threads register
// with it through watchThread(). argv[2] names the scenario; the process must end by itself with exit code 0.
//   stall     a worker named image-resizer blocks in resizeImage(); each 'stall' and 'incident' event is printed
//   cycle N   N workers register and end: stop() and exit, exit still registered, or terminated mid-stall
//   errors    watchThread()'s refusals, each printed with its code
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { start, watchThread, type StallEvent, type Probe } from '../src/index.js';
import { probeInternals } from '../src/probe/internals.js';

type Job = { kind: 'stall' } | { kind: 'cycle'; ending: 'stop' | 'exit' | 'terminate' } | { kind: 'errors' };

/** The app's blocking function, which the stall's stack must name. */
function resizeImage(ms: number): number {
  let x = 0;
  const end = Date.now() + ms;
  while (Date.now() < end) x += Math.sqrt(x + 1);
  return x;
}

function codeOf(fn: () => unknown): string {
  try {
    fn();
    return 'none';
  } catch (err) {
    return String((err as { code?: unknown }).code);
  }
}

/** start() while this thread is watched, then (the watch stopped) watchThread() while its own probe runs. */
async function ownProbeCodes(
  watch: ReturnType<typeof watchThread> | undefined,
): Promise<{ startWhileWatched: string; watchWithOwnProbe: string; startAfterWatchStopped: string }> {
  const options = {
    dumpDir: fs.mkdtempSync(path.join(os.tmpdir(), 'sysprobe-watch-own-')),
    defaultRules: false,
    logger: require('pino')({ level: 'silent' }),
  };
  const startWhileWatched = await start(options).then(
    async (p) => {
      await p.stop();
      return 'none';
    },
    (err: { code?: string }) => String(err.code),
  );
  watch?.stop();
  let startAfterWatchStopped = 'none';
  let watchWithOwnProbe = 'none';
  try {
    const own = await start(options);
    watchWithOwnProbe = codeOf(() => watchThread());
    await own.stop();
  } catch (err) {
    startAfterWatchStopped = String((err as { code?: unknown }).code);
  }
  fs.rmSync(options.dumpDir, { recursive: true, force: true });
  return { startWhileWatched, watchWithOwnProbe, startAfterWatchStopped };
}

function inWorker(job: Job): void {
  const port = parentPort!;
  if (job.kind === 'errors') {
    port.postMessage({
      badName: codeOf(() => watchThread({ name: '' })),
      longName: codeOf(() => watchThread({ name: 'x'.repeat(65) })),
      unknownKey: codeOf(() => watchThread({ nmae: 'x' } as never)),
      badThreshold: codeOf(() => watchThread({ stallThresholdMs: 5 })),
      notObject: codeOf(() => watchThread('x' as never)),
    });
    port.once('message', (what: string) => {
      if (what === 'watch') {
        let watch: ReturnType<typeof watchThread> | undefined;
        const first = codeOf(() => (watch = watchThread({ name: 'errors' })));
        const twice = codeOf(() => watchThread());
        // A probe of its own in a watched thread, and watchThread() in a thread with its own probe: one watchdog per loop.
        void ownProbeCodes(watch).then((own) => port.postMessage({ first, twice, ...own }));
      } else port.postMessage({ notStarted: codeOf(() => watchThread()) });
      port.once('message', () => port.close());
    });
    return;
  }
  const handle = watchThread(job.kind === 'stall' ? { name: 'image-resizer' } : {});
  port.postMessage({ watching: handle.thread });
  port.on('message', (what: string) => {
    if (what === 'block') {
      port.postMessage({ blocking: true }); // delivered while it blocks
      resizeImage(2000);
      port.postMessage({ blocked: true });
    } else if (what === 'block-long') {
      resizeImage(5000); // terminated before it returns
    } else if (what === 'end') {
      if (job.kind === 'cycle' && job.ending === 'stop') handle.stop();
      port.close();
    }
  });
}

function message<T>(worker: Worker, test: (m: Record<string, unknown>) => boolean, timeoutMs = 20_000): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no message from the worker in time')), timeoutMs);
    const on = (m: Record<string, unknown>) => {
      if (!test(m)) return;
      clearTimeout(timer);
      worker.off('message', on);
      resolve(m as T);
    };
    worker.on('message', on);
  });
}

function getText(url: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const request = http.get(url, { timeout: 5000 }, (response) => {
      let body = '';
      response.setEncoding('utf8').on('data', (chunk: string) => (body += chunk));
      response.on('end', () => resolve(body));
    });
    request.on('timeout', () => request.destroy(new Error('timed out')));
    request.on('error', reject);
  });
}

const exited = (worker: Worker) => new Promise<number>((resolve) => worker.once('exit', resolve));

async function until(what: string, fn: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!fn()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function startProbe(dumpDir: string, stallThresholdMs: number): Promise<Probe> {
  return start({
    serviceName: 'watch-thread-test',
    dumpDir,
    stallThresholdMs,
    health: { port: 0 },
    logger: require('pino')({ level: 'silent' }),
  });
}

async function stallScenario(dumpDir: string): Promise<void> {
  const probe = await startProbe(dumpDir, 200);
  const stalls: StallEvent[] = [];
  probe.on('stall', (event: StallEvent) => {
    stalls.push(event);
    console.log(`STALL ${JSON.stringify({ ...event, stack: event.stack?.slice(0, 6) })}`);
  });
  probe.on('incident', (event: unknown) => console.log(`INCIDENT ${JSON.stringify(event)}`));
  const worker = new Worker(__filename, { workerData: { kind: 'stall' }, name: 'image-resizer' });
  const ended = exited(worker);
  const { watching } = await message<{ watching: { id: number; name: string } }>(worker, (m) => 'watching' in m);
  console.log(`WORKER ${JSON.stringify({ threadId: worker.threadId, watching })}`);
  // Let the probe worker see the registration (it follows the table without a timer; this is margin).
  await new Promise((r) => setTimeout(r, 300));
  const blocked = message(worker, (m) => 'blocked' in m);
  worker.postMessage('block');
  await message(worker, (m) => 'blocking' in m);
  // Mid-stall (it lasts 2 s; seen at 200 ms, its stack taken right after): the worker-served /health names the blocked
  // thread and its function. Asked until it does or the block is over: under load the stack can come a few hundred ms
  // after the stall is seen (node:http, not fetch: fetch's first use compiles undici's wasm, a stall of its own).
  let done = false;
  void blocked.then(() => (done = true));
  const { port } = probe.healthAddress()!;
  let health = '';
  while (!done && !/"blockedThreads":\[\{[^\]]*"function"/.test(health)) {
    await new Promise((r) => setTimeout(r, 100));
    health = await getText(`http://127.0.0.1:${port}/health`);
  }
  console.log(`HEALTH ${health}`);
  await blocked;
  await until('the worker stall event', () => stalls.some((s) => s.thread.id === worker.threadId));
  worker.postMessage('end');
  console.log(`EXIT ${await ended}`);
  await probe.stop();
}

async function cycleScenario(dumpDir: string, times: number): Promise<void> {
  const probe = await startProbe(dumpDir, 100);
  const table = probeInternals(probe).threadTable!;
  const endings = ['stop', 'exit', 'terminate'] as const;
  let gone = 0;
  for (let i = 0; i < times; i++) {
    const ending = endings[i % endings.length]!;
    const worker = new Worker(__filename, { workerData: { kind: 'cycle', ending } });
    const ended = exited(worker);
    await message(worker, (m) => 'watching' in m);
    if (ending === 'terminate') {
      worker.postMessage('block-long');
      await new Promise((r) => setTimeout(r, 250)); // past the threshold: its stall is in progress
      await worker.terminate();
    } else {
      worker.postMessage('end');
    }
    await ended;
    gone++;
  }
  // Every registration is freed: by stop(), or by the probe worker once the thread's loop is gone.
  await until('the thread table to empty', () => table.entries().length === 0);
  console.log(`CYCLES ${gone} LEFT ${table.entries().length}`);
  await probe.stop();
}

async function errorsScenario(dumpDir: string): Promise<void> {
  const result: Record<string, unknown> = { onMain: codeOf(() => watchThread()) };
  // Created before any start(): it never learns of a probe.
  const early = new Worker(__filename, { workerData: { kind: 'errors' } });
  await message(early, (m) => 'badName' in m);
  early.postMessage('watch');
  result.early = await message(early, (m) => 'first' in m);
  early.postMessage('end');
  await exited(early);
  const probe = await startProbe(dumpDir, 200);
  const worker = new Worker(__filename, { workerData: { kind: 'errors' } });
  result.options = await message(worker, (m) => 'badName' in m);
  worker.postMessage('watch');
  result.running = await message(worker, (m) => 'first' in m);
  worker.postMessage('end');
  await exited(worker);
  await probe.stop();
  const after = new Worker(__filename, { workerData: { kind: 'errors' } });
  await message(after, (m) => 'badName' in m);
  after.postMessage('not');
  result.stopped = await message(after, (m) => 'notStarted' in m);
  after.postMessage('end');
  await exited(after);
  console.log(`ERRORS ${JSON.stringify(result)}`);
}

async function main(): Promise<void> {
  const [scenario, times = '12'] = process.argv.slice(2);
  const dumpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sysprobe-watch-thread-'));
  try {
    if (scenario === 'stall') await stallScenario(dumpDir);
    else if (scenario === 'cycle') await cycleScenario(dumpDir, Number(times));
    else if (scenario === 'errors') await errorsScenario(dumpDir);
    else throw new Error(`unknown scenario ${scenario}`);
  } finally {
    fs.rmSync(dumpDir, { recursive: true, force: true });
  }
  console.log('DONE');
}

if (isMainThread) void main();
else inWorker(workerData as Job);
