// A host for test/threads.test.ts: sysprobe runs only inside the app's worker threads, never on the
// main thread. argv[2] names the scenario; the process must end with exit code 0 and no signal.
//   cycle N   N times: a worker starts a probe, stops it, and exits
//   overlap N N times: two workers at once, each with its own probe
//   stall     a worker's probe sees its host block in crunchInWorker(); each 'stall' event is printed
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { start } from '../src/index.js';
import { loopTurnsFreely } from './helpers.js';

interface Job {
  dumpDir: string;
  loopWatch: 'auto' | 'heartbeat';
  stall?: boolean;
}

type Stall = { startedAt: number; durationMs: number };
/** The stall of the blocking function: the one under its middle (a start-up stall ends before it; the heartbeat's start may be a beat early). */
const covers = (s: Stall, crunchAt: number) =>
  s.startedAt <= crunchAt + 300 && s.startedAt + s.durationMs >= crunchAt + 300;

/** The app's blocking function, which the stall's stack must name. */
function crunchInWorker(ms: number): number {
  let x = 0;
  const end = Date.now() + ms;
  while (Date.now() < end) x += Math.sqrt(x + 1);
  return x;
}

async function inWorker(job: Job): Promise<void> {
  const probe = await start({
    serviceName: 'worker-probe-test',
    dumpDir: job.dumpDir,
    stallThresholdMs: 100,
    loopWatch: job.loopWatch,
    logger: require('pino')({ level: 'silent' }),
  });
  if (job.stall) {
    const stalls: unknown[] = [];
    probe.on('stall', (event) =>
      stalls.push({ ...event, stack: event.stack?.slice(0, 6), loopWatch: probe.loopWatch }),
    );
    await loopTurnsFreely(); // start-up can stall this loop (500 ms and more under load, in native code)
    const crunchAt = Date.now();
    crunchInWorker(600);
    for (let i = 0; i < 100 && !stalls.some((s) => covers(s as Stall, crunchAt)); i++)
      await new Promise((r) => setTimeout(r, 50));
    parentPort!.postMessage({ stalls, crunchAt });
  } else {
    await new Promise((r) => setTimeout(r, 20));
  }
  await probe.stop();
}

function runWorker(job: Job): Promise<number> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(__filename, { workerData: job, name: 'crunch' });
    worker.once('error', reject);
    worker.on('message', ({ stalls, crunchAt }) =>
      console.log(`STALLS ${JSON.stringify({ threadId: worker.threadId, stalls, crunchAt })}`),
    );
    worker.once('exit', resolve);
  });
}

async function main(): Promise<void> {
  const [scenario, times = '5', loopWatch = 'auto'] = process.argv.slice(2);
  const dumpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sysprobe-worker-probe-'));
  const job: Job = { dumpDir, loopWatch: loopWatch as Job['loopWatch'] };
  for (let i = 0; i < Number(times); i++) {
    const codes =
      scenario === 'stall'
        ? [await runWorker({ ...job, stall: true })]
        : scenario === 'overlap'
          ? await Promise.all([runWorker(job), runWorker({ ...job, dumpDir: `${dumpDir}-b` })])
          : [await runWorker(job)];
    if (codes.some((c) => c !== 0)) throw new Error(`a worker exited with ${codes.join(', ')}`);
  }
  fs.rmSync(dumpDir, { recursive: true, force: true });
  fs.rmSync(`${dumpDir}-b`, { recursive: true, force: true });
  console.log('DONE');
}

if (isMainThread) void main();
else void inWorker(workerData as Job);
