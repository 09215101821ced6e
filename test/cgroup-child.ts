// A child for the real-cgroup tests, started inside a cgroup the test made: it reads its own
// cgroup with the reader sysprobe uses and prints what it saw as one JSON line.
//   spin <ms>   read, keep a core busy for <ms> of wall time, read again
//   read        read once
import { CgroupReader } from '../src/containers/cgroup-reader.js';

async function main(): Promise<void> {
  const [mode, arg] = process.argv.slice(2);
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
  console.log(JSON.stringify({ location: reader.location, before, after, wallMs: performance.now() - startedAt, cpuMs: (cpu.user + cpu.system) / 1000, x }));
}

void main();
