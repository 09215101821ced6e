/** A real incident, made by a real probe, for the incident and report tests. */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import pino from 'pino';
import { incidentLogStream, start, type IncidentEvent, type Probe } from '../src/index.js';
import { memoryLogger, waitFor, tempDir } from './helpers.js';

/** Keeps the loop busy but turning (20 ms of work per turn) for `ms`, so readings keep coming. */
async function busyFor(ms: number): Promise<void> {
  const end = Date.now() + ms;
  await new Promise<void>((resolve) => {
    const busyTurn = (): void => {
      const until = Date.now() + 20;
      while (Date.now() < until);
      if (Date.now() < end) setImmediate(busyTurn);
      else resolve();
    };
    busyTurn();
  });
}

/** Blocks the loop in JS (not in native code), so the stall's stack names this function. */
function stallInJs(ms: number): void {
  const until = Date.now() + ms;
  while (Date.now() < until);
}

/** The XSS probe carried by a rule name into manifest.json; the report must show it as text. */
export const XSS_RULE = 'loop-busy<script>window.__xss=1</script>';

/**
 * A real incident: a stall (the loop blocked 400 ms), then a CPU spike that fires two rules at
 * once, both asking for a CPU profile. Made once, read by the incident and report tests.
 */
export async function makeIncident(): Promise<{ dir: string; events: IncidentEvent[]; probe: Probe; dumpDir: string }> {
  const dumpDir = tempDir('sysprobe-incidents-');
  const probe = await start({
    logger: memoryLogger().logger,
    dumpDir,
    sampleIntervalMs: 100,
    stallThresholdMs: 150,
    defaultRules: false,
    capturesPerMinute: 60,
    incidents: { quietMs: 2000, beforeMs: 5000 },
    rules: [
      {
        name: 'cpu-spike',
        value: 'cpu.utilization',
        above: 0.3,
        forMs: 300,
        cooldownMs: 500,
        actions: [{ captureCpuProfile: { durationMs: 400 } }],
      },
      {
        name: XSS_RULE,
        value: 'eventLoop.utilization',
        above: 0.5,
        forMs: 300,
        cooldownMs: 500,
        actions: [{ captureCpuProfile: { durationMs: 400 } }, 'captureStack'],
      },
    ],
  });
  const events: IncidentEvent[] = [];
  probe.on('incident', (event: IncidentEvent) => events.push(event));
  const app = pino({ base: { app: 'incident-test' } }, incidentLogStream(probe));
  await new Promise((r) => setTimeout(r, 800)); // samples before the trigger
  app.info('before the stall');
  stallInJs(400);
  await waitFor('the incident to open', () => events.find((e) => e.phase === 'open'), 10_000);
  await busyFor(1200);
  app.warn({ trace_id: '4bf92f3577b34da6a3ce929d0e0e4736', span_id: '00f067aa0ba902b7' }, 'after the spike');
  const closed = await waitFor('the incident to close', () => events.find((e) => e.phase === 'closed'), 20_000);
  return { dir: closed.dir, events, probe, dumpDir };
}
