'use strict';
/**
 * The native loop watch's watchdog thread at idle: a process that only ran
 * start({ serviceName }) waits; its `sysprobe-watch` thread's CPU time and
 * number of runs (wake-ups) are read from /proc/self/task/<tid>/schedstat at
 * the start and the end of a window of at least 30 s (the worker's batches are
 * 10 s apart: shorter windows can fall between them).
 *
 *   npm run bench:watchdog-idle -- [--seconds 40] [--warmup 5] [--root <package dir>]
 *
 * Prints one JSON line: the watchdog's cpuMsPerS, wakeupsPerS and usPerWakeup, the main thread's
 * wake-ups (mainWakeupsPerS), the probe worker's workerCpuMsPerS and workerWakeupsPerS.
 */
const fs = require('node:fs');
const path = require('node:path');

const args = process.argv.slice(2);
const arg = (name, def) => (args.includes(name) ? args[args.indexOf(name) + 1] : def);
const SECONDS = Number(arg('--seconds', '40'));
const WARMUP = Number(arg('--warmup', '5'));
const ROOT = path.resolve(arg('--root', path.join(__dirname, '..')));

function watchdogTid() {
  return fs
    .readdirSync('/proc/self/task')
    .find((t) => fs.readFileSync(`/proc/self/task/${t}/comm`, 'utf8').trim() === 'sysprobe-watch');
}

/** [cpu ns, runs] of one thread. */
function schedstat(tid) {
  const [cpu, , runs] = fs.readFileSync(`/proc/self/task/${tid}/schedstat`, 'utf8').trim().split(/\s+/).map(Number);
  return [cpu, runs];
}

(async () => {
  const { start } = require(path.join(ROOT, 'dist', 'src', 'index.js'));
  const probe = await start({ serviceName: 'watchdog-idle', logger: require('pino')({ level: 'silent' }) });
  const tid = watchdogTid();
  if (!tid) throw new Error(`no sysprobe-watch thread (loopWatch ${probe.loopWatch})`);
  const hold = setInterval(() => {}, 1 << 30); // keeps the process alive without waking it
  await new Promise((r) => setTimeout(r, WARMUP * 1000));
  const workerTid = require(path.join(ROOT, 'dist', 'src', 'probe', 'internals.js')).probeInternals(probe).supervisor
    .workerTid;
  const [workerCpu0, workerRuns0] = schedstat(workerTid);
  const [cpu0, runs0] = schedstat(tid);
  const [, mainRuns0] = schedstat(process.pid);
  const t0 = process.hrtime.bigint();
  await new Promise((r) => setTimeout(r, SECONDS * 1000));
  const [cpu1, runs1] = schedstat(tid);
  const [workerCpu1, workerRuns1] = schedstat(workerTid);
  const [, mainRuns1] = schedstat(process.pid);
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  clearInterval(hold);
  await probe.stop();
  console.log(
    JSON.stringify({
      cpuMsPerS: +((cpu1 - cpu0) / 1e6 / seconds).toFixed(4),
      wakeupsPerS: +((runs1 - runs0) / seconds).toFixed(2),
      mainWakeupsPerS: +((mainRuns1 - mainRuns0) / seconds).toFixed(2),
      usPerWakeup: runs1 > runs0 ? +((cpu1 - cpu0) / 1e3 / (runs1 - runs0)).toFixed(1) : 0,
      workerCpuMsPerS: +((workerCpu1 - workerCpu0) / 1e6 / seconds).toFixed(4),
      workerWakeupsPerS: +((workerRuns1 - workerRuns0) / seconds).toFixed(2),
      seconds: +seconds.toFixed(1),
      loopWatch: probe.loopWatch,
      node: process.version,
    }),
  );
})();
