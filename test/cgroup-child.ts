// A child for the real-cgroup tests, started inside a cgroup the test made: it reads its own
// cgroup with the reader sysprobe uses and prints what it saw as one JSON line.
//   spin <ms>   read, keep a core busy for <ms> of wall time, read again
//   read        read once
//   probe <dir> start sysprobe and spin under the quota (below)
import { CgroupReader } from '../src/containers/cgroup-reader.js';

async function main(): Promise<void> {
  const [mode, arg] = process.argv.slice(2);
  if (mode === 'probe') return probeUnderQuota();
  const reader = new CgroupReader();
  const before = await reader.read();
  if (mode === 'read') {
    console.log(JSON.stringify({ location: reader.location, before }));
    return;
  }
  const wallMs = Number(arg);
  const startedAt = performance.now();
  const cpuBefore = process.cpuUsage();
  let x = 0;
  while (performance.now() - startedAt < wallMs) for (let i = 0; i < 10_000; i++) x += Math.sqrt(i);
  const cpu = process.cpuUsage(cpuBefore);
  const after = await reader.read();
  console.log(
    JSON.stringify({
      location: reader.location,
      before,
      after,
      wallMs: performance.now() - startedAt,
      cpuMs: (cpu.user + cpu.system) / 1000,
      x,
    }),
  );
}

void main();

/**
 * `probe`: sysprobe itself under the quota: spins in 500 ms blocks (each a stall the quota
 * stretches), draining the worker between them, then prints the stalls, the throttled rule's
 * firings and the exported metrics.
 */
export async function probeUnderQuota(): Promise<void> {
  const { start } = await import('../src/index.js');
  const { memoryMetrics } = await import('./helpers.js');
  const metrics = memoryMetrics();
  const stalls: Array<{ durationMs: number; throttledMs?: number }> = [];
  const firings: unknown[] = [];
  const noop = () => undefined;
  const logger = {
    debug: noop,
    info: noop,
    warn: noop,
    error: (o: object, m?: string) => console.error(m, JSON.stringify(o)),
    child: () => logger,
  };
  const probe = await start({
    serviceName: 'quota-test',
    dumpDir: process.argv[3]!,
    meterProvider: metrics.meterProvider,
    sampleIntervalMs: 100,
    stallThresholdMs: 200,
    defaultRules: false,
    incidents: false,
    logger: logger as never,
    rules: [
      {
        name: 'throttled',
        value: 'cgroup.cpuThrottledRatio',
        above: 0.5,
        cooldownMs: 60_000,
        actions: [(firing) => firings.push(firing)],
      },
    ],
  });
  probe.on('stall', (event) => stalls.push({ durationMs: event.durationMs, throttledMs: event.throttledMs }));
  for (let round = 0; round < 6; round++) {
    const until = performance.now() + 500;
    let x = 0;
    while (performance.now() < until) for (let i = 0; i < 10_000; i++) x += Math.sqrt(i);
    await new Promise((r) => setTimeout(r, 300));
    await probe.recent(); // a drain: the worker reads the cgroup again
  }
  await new Promise((r) => setTimeout(r, 300));
  const samples = await probe.recent();
  const collected = await metrics.collect();
  const value = (name: string) => {
    const metric = collected.find((m) => m.descriptor.name === name);
    return metric?.dataPoints[0]?.value as number | undefined;
  };
  console.log(
    JSON.stringify({
      stalls,
      firings,
      metrics: Object.fromEntries(
        [
          'sysprobe.cgroup.cpu.quota',
          'sysprobe.cgroup.cpu.periods',
          'sysprobe.cgroup.cpu.throttled_periods',
          'sysprobe.cgroup.cpu.throttled_time',
          'sysprobe.cgroup.cpu.throttled_ratio',
          'process.cpu.utilization',
          'container.memory.usage',
        ].map((n) => [n, value(n)]),
      ),
      quotaUtilization: samples.map((s) => s.cpu?.quotaUtilization).filter((v) => v !== undefined),
    }),
  );
  await probe.stop();
  await metrics.shutdown();
}
