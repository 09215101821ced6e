// A host for test/threads.test.ts: a probe runs only inside an app worker thread, whose loop is busy in its own
// named functions while the main thread idles. argv[2] names the scenario; the worker's findings are printed as
// one `RESULT <json>` line and the process must end with exit code 0.
//   demand  captureCpuProfile() while the worker resizes images (resizeImage), then captureAllocationProfile()
//           while it decodes tiles (decodeTiles); a second CPU profile asked for during the first joins it
//   rule    an eventLoop.utilization rule with a CPU profile fires while the worker resizes images
//   blocked a CPU profile asked for, then the worker's loop blocked (blockHost) before the request reached it
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { start } from '../src/index.js';

interface Job {
  dumpDir: string;
  scenario: string;
}

/** The worker's CPU-heavy function, which its CPU profiles must name: ~5 ms of arithmetic per call. */
function resizeImage(pixels: Float64Array): number {
  let sum = 0;
  const end = performance.now() + 5;
  while (performance.now() < end) {
    for (let i = 0; i < pixels.length; i++) {
      pixels[i] = (pixels[i]! * 1.0001 + i) % 255;
      sum += pixels[i]!;
    }
  }
  return sum;
}

/** The worker's allocating function, which its allocation profile must name: what it makes stays alive in `kept`. */
function decodeTiles(kept: unknown[]): void {
  for (let i = 0; i < 200; i++) kept.push({ tile: i, rows: new Array(64).fill(i), label: `tile-${i}-${kept.length}` });
}

/** Runs `step` in chunks until `done()`, the loop turning between chunks (a busy but responsive worker). */
function busyUntil(step: () => void, done: () => boolean): Promise<void> {
  return new Promise((resolve) => {
    const chunk = (): void => {
      if (done()) return resolve();
      const end = performance.now() + 20;
      while (performance.now() < end) step();
      setImmediate(chunk);
    };
    chunk();
  });
}

const pixels = new Float64Array(4096).fill(1);

/** The app's step that calls it. */
function resizeNext(): void {
  resizeImage(pixels);
}
const top = (summary: { topFunctions: Array<{ functionName: string; selfShare: number }> }) =>
  summary.topFunctions.slice(0, 3).map((f) => ({ functionName: f.functionName, selfShare: f.selfShare }));

async function inWorker(job: Job): Promise<void> {
  const rule = job.scenario === 'rule';
  const probe = await start({
    serviceName: 'worker-profile-test',
    dumpDir: job.dumpDir,
    defaultRules: false,
    sampleIntervalMs: 250,
    logger: require('pino')({ level: 'silent' }),
    ...(rule
      ? {
          rules: [
            {
              name: 'worker-busy',
              value: 'eventLoop.utilization' as const,
              above: 0.6,
              forMs: 0,
              cooldownMs: 600_000,
              actions: [{ captureCpuProfile: { durationMs: 1000 } }],
            },
          ],
        }
      : {}),
  });
  const result: Record<string, unknown> = {};
  if (job.scenario === 'demand') {
    let profiling = true;
    // A service that has been busy a while (its code optimized) when someone asks for a profile.
    const warm = new Promise((r) => setTimeout(r, 1000));
    const cpu = warm.then(() => probe.captureCpuProfile({ durationMs: 1500 }));
    // Asked for while the first runs: joins it (shared), as on the main thread.
    const joined = warm
      .then(() => new Promise((r) => setTimeout(r, 300)))
      .then(() => probe.captureCpuProfile({ durationMs: 1500 }));
    void Promise.allSettled([cpu, joined]).then(() => (profiling = false));
    await busyUntil(resizeNext, () => !profiling);
    const [first, second] = await Promise.all([cpu, joined]);
    result.cpu = {
      top: top(first.summary),
      file: first.file,
      sidecar: JSON.parse(fs.readFileSync(first.sidecarFile, 'utf8')),
    };
    result.joined = { shared: second.shared === true, sameFile: second.file === first.file };
    const kept: unknown[] = [];
    let sampling = true;
    const allocation = probe.captureAllocationProfile({ durationMs: 1500 });
    void allocation.finally(() => (sampling = false)).catch(() => undefined);
    // Named: a profile may charge decodeTiles' allocations to this caller (unnamed, Node 24 called it 'allocated',
    // the name of a later variable).
    const decodeStep = (): void => {
      if (kept.length < 400_000) decodeTiles(kept);
    };
    await busyUntil(decodeStep, () => !sampling);
    const allocated = await allocation;
    result.allocation = {
      top: allocated.summary.topFunctions.slice(0, 3).map((f) => ({ functionName: f.functionName, share: f.share })),
      file: allocated.file,
    };
    kept.length = 0;
  } else if (rule) {
    const fired = new Promise<unknown>((resolve) => probe.once('rule', resolve));
    let done = false;
    void fired.then(() => (done = true));
    const timeout = setTimeout(() => (done = true), 30_000);
    await busyUntil(resizeNext, () => done);
    clearTimeout(timeout);
    const event = (await Promise.race([fired, Promise.resolve(undefined)])) as
      | {
          firing: { rule: string };
          captures: { cpuProfile?: { summary: Parameters<typeof top>[0]; file: string }; notTaken?: string[] };
        }
      | undefined;
    result.rule = event && {
      rule: event.firing.rule,
      top: event.captures.cpuProfile && top(event.captures.cpuProfile.summary),
      notTaken: event.captures.notTaken,
    };
  } else if (job.scenario === 'blocked') {
    const cpu = probe.captureCpuProfile({ durationMs: 500 });
    // The request is on its way to the probe worker; block before its ask reaches this thread.
    const end = Date.now() + 1500;
    while (Date.now() < end) resizeImage(pixels);
    const profile = (await cpu) as Awaited<typeof cpu> & { startedLateMs?: number; note?: string };
    result.blocked = {
      startedLateMs: profile.startedLateMs,
      note: profile.note,
      sidecar: JSON.parse(fs.readFileSync(profile.sidecarFile, 'utf8')),
    };
  }
  await probe.stop();
  parentPort!.postMessage(result);
}

async function main(): Promise<void> {
  const scenario = process.argv[2] ?? 'demand';
  const dumpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sysprobe-worker-profile-'));
  const result = await new Promise<unknown>((resolve, reject) => {
    const worker = new Worker(__filename, { workerData: { dumpDir, scenario } satisfies Job, name: 'images' });
    let answer: unknown;
    worker.once('error', reject);
    worker.on('message', (m) => (answer = m));
    worker.once('exit', (code) => (code === 0 ? resolve(answer) : reject(new Error(`the worker exited with ${code}`))));
  });
  // The main thread did nothing meanwhile: a profile of it would show only (idle).
  console.log(`RESULT ${JSON.stringify(result)}`);
  fs.rmSync(dumpDir, { recursive: true, force: true });
}

if (isMainThread) void main();
else void inWorker(workerData as Job);
