'use strict';
// Cost of persisting the run record (src/crash/run-keeper.ts): `npm run bench:run-record`.
//
// A real probe runs for a few seconds so its samples have their real shape (per-thread CPU,
// GC kinds, handles, the cgroup); the newest one with every field is copied, with its time
// shifted, into a 5-minute window at 1 s (300 samples: what the record holds at the
// defaults); as at the defaults, only every tenth carries per-thread CPU (the worker reads
// it when it drains, every 10 s). Then the record is written as the worker writes it (JSON.stringify, then a
// .partial and a rename), ROUNDS times; CPU per write is this process's CPU over the write
// (the file system calls run on libuv's pool: all threads count). At one write a minute,
// the amortized cost is CPU per write / 60 s.

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const ROUNDS = 20;
const RESULTS = path.join(__dirname, 'results', 'run-record.json');

async function main() {
  const { start } = require('../dist/src/index.js');
  const { RunKeeper } = require('../dist/src/crash/run-keeper.js');
  const dumpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sysprobe-bench-run-'));
  const probe = await start({ serviceName: 'bench', dumpDir, sampleIntervalMs: 250, defaultRules: false });
  const deadline = Date.now() + 30_000;
  let full;
  while (!full && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 500));
    full = (await probe.recent()).reverse().find((s) => s.threads && s.memory && s.gc);
  }
  await probe.stop();
  if (!full) throw new Error('no full sample in 30 s');
  const now = Date.now();
  const { threads, ...lean } = full;
  const samples = Array.from({ length: 300 }, (_, i) => ({
    ...(i % 10 === 9 ? full : lean),
    time: now - (299 - i) * 1000,
  }));
  const keeper = new RunKeeper({ dumpDir, service: 'bench' });
  await keeper.begin({ heapLimit: 1 });
  const cpuMs = [];
  for (let i = 0; i < ROUNDS; i++) {
    const before = process.cpuUsage();
    await keeper.persistNow(samples, {});
    const used = process.cpuUsage(before);
    cpuMs.push((used.user + used.system) / 1000);
  }
  const bytes = fs.statSync(keeper.file).size;
  keeper.end();
  fs.rmSync(dumpDir, { recursive: true, force: true });
  cpuMs.sort((a, b) => a - b);
  const median = cpuMs[Math.floor(ROUNDS / 2)];
  const result = {
    node: process.version,
    samples: samples.length,
    sampleFields: Object.keys(full),
    threads: full.threads.length,
    bytes,
    cpuMsPerWrite: { median, min: cpuMs[0], max: cpuMs.at(-1) },
    amortizedMsPerSecondAtOnePerMinute: median / 60,
  };
  fs.mkdirSync(path.dirname(RESULTS), { recursive: true });
  fs.writeFileSync(RESULTS, JSON.stringify(result, null, 2) + '\n');
  console.log(JSON.stringify(result, null, 2));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
