// Real cgroups for tests: made under this process's own v1 cgroup (so the machine's
// accounting still covers them), one child at a time, removed after.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { locateCgroup } from '../src/containers/cgroup-parse.js';

/**
 * Skips the running test with a reason when `condition` is false. A local stand-in until the
 * shared skip helper (helper `runtimes`, issue 15 item 5) lands in test/.
 */
export function skipUnless(context: Mocha.Context, condition: boolean, reason: string): void {
  if (condition) return;
  context.test!.title += ` (skipped: ${reason})`;
  context.skip();
}

/** This process's v1 cgroup directory for `controller`, when it is there and we may make cgroups in it (root). */
export function writableV1Dir(controller: 'cpu' | 'memory'): { dir?: string; reason?: string } {
  if (process.platform !== 'linux') return { reason: 'cgroups are Linux only' };
  if (process.getuid?.() !== 0) return { reason: 'making cgroups needs root' };
  const where = locateCgroup(
    fs.readFileSync('/proc/self/cgroup', 'utf8'),
    fs.readFileSync('/proc/self/mountinfo', 'utf8'),
  )[controller];
  if (!where || where.version !== 1) return { reason: `no cgroup v1 ${controller} controller is mounted` };
  try {
    fs.accessSync(where.dir, fs.constants.W_OK);
  } catch {
    return { reason: `${where.dir} is not writable` };
  }
  return { dir: where.dir };
}

let made = 0;

/** A new cgroup under `parent` with `settings` written into it (file name → value). */
export function makeCgroup(parent: string, settings: Record<string, string>): string {
  const dir = path.join(parent, `sysprobe-test-${process.pid}-${++made}`);
  fs.mkdirSync(dir);
  for (const [file, value] of Object.entries(settings)) fs.writeFileSync(path.join(dir, file), value);
  return dir;
}

/** Removes a cgroup once its processes are gone (the kernel refuses while it has any). */
export async function removeCgroup(dir: string | undefined): Promise<void> {
  if (!dir || !fs.existsSync(dir)) return;
  for (let attempt = 0; ; attempt++) {
    try {
      fs.rmdirSync(dir);
      return;
    } catch (err) {
      if (attempt >= 50) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** `sh -c` arguments that put the shell in `cgroup` and then exec `node args...`. */
export function inCgroup(cgroup: string, args: string[]): string[] {
  const quoted = [process.execPath, ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  return ['-c', `echo $$ > '${cgroup}/cgroup.procs' && exec ${quoted}`];
}
