// A service for test/profile-attribution.test.ts: a chunked CPU spike (no stall) in runBatch, whose
// time is all in the small callee scoreEntries, which TurboFan inlines into runBatch during the
// warm-up, before any profile. Then a CPU profile through sysprobe; prints its top functions.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { start } from '../src/index.js';

function scoreEntries(entries: number[], salt: number): number {
  let acc = salt;
  for (let i = 0; i < entries.length; i++) acc = (acc * 31 + entries[i]!) % 1_000_003;
  return acc;
}

function runBatch(entries: number[], ms: number): number {
  const end = Date.now() + ms;
  let acc = 0;
  let n = 0;
  while (Date.now() < end) acc ^= scoreEntries(entries, n++);
  return acc;
}

async function main(): Promise<void> {
  const dumpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sysprobe-attribution-'));
  const probe = await start({
    dumpDir,
    logger: require('pino')({ level: 'silent' }),
    defaultRules: false,
    stallThresholdMs: 5000,
  });
  const entries = Array.from({ length: 4000 }, (_, i) => i);
  // Warm: runBatch optimized with scoreEntries inlined, a turn of the loop between chunks (no stall).
  for (let i = 0; i < 60; i++) {
    runBatch(entries, 5);
    await new Promise((resolve) => setImmediate(resolve));
  }
  let spinning = true;
  const chunk = (): void => {
    runBatch(entries, 20);
    if (spinning) setImmediate(chunk);
  };
  chunk();
  const { summary } = await probe.captureCpuProfile({ durationMs: 800 });
  spinning = false;
  console.log(`TOP ${JSON.stringify(summary.topFunctions.slice(0, 3))}`);
  await probe.stop();
  fs.rmSync(dumpDir, { recursive: true, force: true });
}

void main();
