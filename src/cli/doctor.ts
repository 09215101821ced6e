/**
 * `sysprobe doctor [--json]`: what sysprobe can use on this machine. The Node version,
 * platform, arch and libc, and each native part (loop watch, GC statistics, heap
 * scanner): whether it loads here, from which file or why not, and what its absence
 * costs. Loads the addons in this process, exactly as `start()` would.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { libc, nativeParts, type NativePart } from '../native.js';
import { CliError, ExitCode, type Verb } from './cli-common.js';

const USAGE = `usage: sysprobe doctor [--json]

Prints the Node version, platform, arch and libc, and for each native part whether it
loaded, from where or why not, and what sysprobe does without it.
--json prints one JSON document instead.`;

export interface DoctorReport {
  sysprobe: string;
  node: { version: string; abi: string; napi: string };
  platform: NodeJS.Platform;
  arch: string;
  libc: string | null;
  /** What `start()` uses to see stalls with the default `loopWatch: 'auto'`. */
  loopWatch: 'native' | 'heartbeat';
  /** Whether the native watchdog sleeps while the loop waits (needs thread_stack too); else it looks every threshold. */
  watchdogParks: boolean;
  native: NativePart[];
}

export function doctorReport(): DoctorReport {
  const pkg = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', '..', 'package.json'), 'utf8')) as {
    version: string;
  };
  const native = nativeParts();
  return {
    sysprobe: pkg.version,
    node: { version: process.version, abi: process.versions.modules, napi: process.versions.napi ?? 'none' },
    platform: process.platform,
    arch: process.arch,
    libc: libc() ?? null,
    loopWatch: native.find((p) => p.name === 'loop_watch')?.loaded ? 'native' : 'heartbeat',
    watchdogParks: ['loop_watch', 'thread_stack'].every((name) => native.find((p) => p.name === name)?.loaded),
    native,
  };
}

function text(report: DoctorReport): string {
  const lines = [
    `sysprobe ${report.sysprobe} on Node ${report.node.version} (ABI ${report.node.abi}, Node-API ${report.node.napi}), ${report.platform}-${report.arch}${report.libc ? ` ${report.libc}` : ''}`,
    `stalls seen by: ${report.loopWatch}${report.loopWatch === 'native' ? `, watchdog ${report.watchdogParks ? 'parks while the loop waits' : 'looks every stall threshold (no thread_stack)'}` : ''}`,
    '',
  ];
  for (const p of report.native) {
    lines.push(`${p.name} (${p.part}): loaded: ${p.loaded}`);
    lines.push(`  ${p.reason}`);
    if (!p.loaded) lines.push(`  without it: ${p.cost}`);
  }
  return lines.join('\n');
}

export const verb: Verb = {
  async run(args) {
    let json = false;
    for (const arg of args) {
      if (arg === '--help' || arg === '-h') {
        process.stdout.write(`${USAGE}\n`);
        return ExitCode.OK;
      }
      if (arg === '--json') json = true;
      else throw new CliError(ExitCode.USAGE, `unknown argument ${arg}\n\n${USAGE}`);
    }
    const report = doctorReport();
    process.stdout.write(json ? `${JSON.stringify(report, null, 2)}\n` : `${text(report)}\n`);
    return ExitCode.OK;
  },
};
