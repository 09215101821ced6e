// A child for the crash tests: a service that starts sysprobe and then dies, or the next
// start of it. It prints one JSON line per thing the test asserts on.
//   leak-heap <dumpDir>     leak JS objects until V8 aborts (run with --max-old-space-size=64)
//   leak-native <dumpDir>   leak filled Buffers until the kernel's OOM killer (run in a memory cgroup)
//   next <dumpDir>          start, wait for the 'previousRun' event and its incident, stop
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as v8 from 'node:v8';
import { start } from '../src/index.js';

const print = (value: unknown) => console.log(JSON.stringify(value));

async function main(): Promise<void> {
  const [mode, dumpDir] = process.argv.slice(2) as [string, string];
  const probe = await start({
    serviceName: 'crash-test',
    dumpDir,
    sampleIntervalMs: 100,
    defaultRules: false,
    logger: silent(),
  });
  probe.on('rule', (event) => print({ rule: event.firing, captures: event.captures }));
  if (mode === 'next') {
    const event = await new Promise((resolve, reject) => {
      probe.once('previousRun', resolve);
      setTimeout(() => reject(new Error('no previousRun event in 10 s')), 10_000).unref();
    });
    print({ previousRun: event });
    // The incident's files are written one step at a time after the event.
    const deadline = Date.now() + 10_000;
    for (;;) {
      const incident = probe.incidents().find((i) => i.rules.includes('previous-run'));
      if (incident && fs.existsSync(path.join(incident.dir, 'previous-run.json'))) {
        print({ incident });
        break;
      }
      if (Date.now() > deadline) throw new Error('no previous-run incident in 10 s');
      await new Promise((r) => setTimeout(r, 100));
    }
    await probe.stop();
    return;
  }
  // Let the worker write the run record (it waits for the first cgroup reading).
  const runs = path.join(dumpDir, 'runs');
  while (!fs.existsSync(runs) || fs.readdirSync(runs).length === 0) await new Promise((r) => setTimeout(r, 20));
  print({ ready: true, pid: process.pid, heapLimit: v8.getHeapStatistics().heap_size_limit });
  const kept: unknown[] = [];
  if (mode === 'leak-native') {
    // Filled (not just reserved) memory, outside the JS heap: the cgroup counts it, V8 does not.
    setInterval(() => {
      kept.push(Buffer.alloc(4 << 20, 1));
    }, 10);
    return;
  }
  // Fast to about 70% of the old generation, then slowly, so the worker sees the approach
  // (it drains every 3.2 s here) and writes what is safe before V8 gives up.
  const heapUsed = () => v8.getHeapStatistics().used_heap_size;
  // In chunks, so no single array's doubling jumps the heap by megabytes at once.
  let chunk: unknown[] = [];
  const leak = (objects: number) => {
    for (let i = 0; i < objects; i++) {
      chunk.push({ i, s: `leaked-${i}-${kept.length}` });
      if (chunk.length === 10_000) {
        kept.push(chunk);
        chunk = [];
      }
    }
  };
  // ~0.3 MB/s over the last 20%: a dozen of the worker's drains before V8 gives up, on a loaded machine too.
  const timer = setInterval(() => leak(heapUsed() < 45 << 20 ? 8_000 : 150), 50);
  if (process.env.CRASH_CHILD_DEBUG) {
    setInterval(
      () =>
        void probe.recent({ sinceMs: 1000 }).then((s) => {
          const l = s.at(-1);
          const m = l?.memory;
          console.error('debug', m?.heapUsed, m?.heapAfterGc, l?.gcRates?.pauseShare?.toFixed(2), s.length);
        }),
      1000,
    );
  }
  timer.ref();
}

/** Warnings and errors to stderr (for a failing test's message), nothing on stdout but our lines. */
function silent() {
  const noop = () => undefined;
  const toStderr = (fields: object, msg?: string) => console.error(JSON.stringify({ msg, ...fields }));
  const logger = { debug: noop, info: noop, warn: toStderr, error: toStderr, child: () => logger };
  return logger as never;
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(2);
});
