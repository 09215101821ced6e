/**
 * Tests that need a part of the system beyond Node and npm (Prometheus, Chromium, ss,
 * root for namespaces, mounts or cgroups, a native addon) call `needs(this, REQUIREMENT)`
 * first. When the part is missing the test skips, saying why, and the run ends with one
 * summary of what was skipped and the command that installs each part. With
 * SYSPROBE_TEST_STRICT=1 (as .ci/run sets it) a missing part fails the test instead:
 * CI never skips.
 *
 * Loaded by mocha as a root-hook plugin (.mocharc.json `require`), so the summary prints
 * once, after the whole run.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { loadNative, type NativeName } from '../src/native.js';
import { runningProbe } from '../src/probe/probe.js';

export interface Requirement {
  /** What is needed, in words. */
  name: string;
  /** Why it is missing here, or undefined when it is present. Asked once per run. */
  missing(): string | undefined;
  /** The command that provides it on Debian (what .ci/run does). */
  install: string;
}

function once(check: () => string | undefined): () => string | undefined {
  let answer: { why: string | undefined } | undefined;
  return () => (answer ??= { why: check() }).why;
}

function runs(cmd: string, args: string[]): string | undefined {
  const res = spawnSync(cmd, args, { stdio: 'ignore', timeout: 10_000 });
  if (res.error) return `${cmd} could not be run (${(res.error as NodeJS.ErrnoException).code ?? res.error.message})`;
  return res.status === 0 ? undefined : `${cmd} ${args.join(' ')} exited with ${res.status ?? res.signal}`;
}

const notRoot = (): string | undefined => (process.getuid?.() === 0 ? undefined : 'not running as root');

export const PROMETHEUS_BIN = process.env.PROMETHEUS_BIN ?? 'prometheus';
export const CHROMIUM_BIN = '/usr/bin/chromium';

export const PROMETHEUS: Requirement = {
  name: 'a Prometheus server binary',
  missing: once(() => runs(PROMETHEUS_BIN, ['--version'])),
  install: 'apt-get install prometheus (or set PROMETHEUS_BIN)',
};

export const CHROMIUM: Requirement = {
  name: "Debian's Chromium",
  missing: once(() => (fs.existsSync(CHROMIUM_BIN) ? undefined : `${CHROMIUM_BIN} is absent`)),
  install: 'apt-get install chromium fonts-dejavu-core',
};

export const SS: Requirement = {
  name: 'ss (iproute2)',
  missing: once(() => runs('ss', ['-V'])),
  install: 'apt-get install iproute2',
};

export const NETNS: Requirement = {
  name: 'root with unshare (util-linux) and ip (iproute2), for a network namespace',
  missing: once(() => {
    if (process.platform !== 'linux') return 'network namespaces are Linux only';
    return notRoot() ?? runs('unshare', ['-n', 'ip', 'link', 'set', 'lo', 'up']);
  }),
  install: 'run as root (sudo bash .ci/run); apt-get install iproute2 util-linux',
};

export const ROOT_MOUNT: Requirement = {
  name: 'root, to mount a small tmpfs',
  missing: once(() => {
    if (process.platform !== 'linux') return 'tmpfs mounts are Linux only';
    const why = notRoot();
    if (why) return why;
    try {
      execFileSync('mount', ['--version'], { stdio: 'ignore' });
      return undefined;
    } catch (err) {
      return `mount could not be run (${(err as Error).message.split('\n')[0]})`;
    }
  }),
  install: 'run as root (sudo bash .ci/run)',
};

/** Root with cgroup controllers it may write (the container tests). */
export const ROOT_CGROUPS: Requirement = {
  name: 'root with writable cgroups',
  missing: once(() => {
    if (process.platform !== 'linux') return 'cgroups are Linux only';
    return notRoot() ?? (fs.existsSync('/sys/fs/cgroup') ? undefined : '/sys/fs/cgroup is absent');
  }),
  install: 'run as root (sudo bash .ci/run) on a machine that mounts cgroups',
};

/** A native addon (a prebuild that fits this Node, or a build from source). */
export function nativeAddon(name: NativeName): Requirement {
  return {
    name: `the native addon ${name}`,
    missing: once(() => loadNative(name).error),
    install: 'apt-get install g++ make python3 && npm run build:native',
  };
}

export const STRICT = process.env.SYSPROBE_TEST_STRICT === '1';

interface Skip {
  test: string;
  requirement: Requirement;
  why: string;
}
const skipped: Skip[] = [];

/**
 * Skips the running test (or, from a hook, its suite) when `requirement` is missing here;
 * under SYSPROBE_TEST_STRICT=1 fails it instead.
 */
export function needs(context: Mocha.Context, requirement: Requirement): void {
  const why = requirement.missing();
  if (why === undefined) return;
  // From a before() hook the whole suite is skipped: name the suite.
  const runnable = context.test;
  const test =
    (runnable as { type?: string } | undefined)?.type === 'hook'
      ? `${runnable?.parent?.fullTitle() ?? '(a suite)'} (every test)`
      : (runnable?.fullTitle() ?? '(unknown test)');
  if (STRICT)
    throw new Error(
      `SYSPROBE_TEST_STRICT=1 and this test needs ${requirement.name}: ${why}. Install: ${requirement.install}`,
    );
  skipped.push({ test, requirement, why });
  context.skip();
}

/** The summary at the end of the run: each missing part, why, what it skipped, and how to install it. */
export function skipSummary(): string | undefined {
  if (skipped.length === 0) return undefined;
  const byPart = new Map<Requirement, Skip[]>();
  for (const s of skipped) byPart.set(s.requirement, [...(byPart.get(s.requirement) ?? []), s]);
  const lines = [
    `Skipped ${skipped.length} test(s): this machine lacks what they need (SYSPROBE_TEST_STRICT=1 makes these failures).`,
  ];
  for (const [req, skips] of byPart) {
    lines.push(`  ${req.name}: ${skips[0]!.why}`, `    install: ${req.install}`);
    for (const s of skips) lines.push(`    - ${s.test}`);
  }
  return lines.join('\n');
}

/** The probe that was running when the current test began (one a describe shares), if any. */
let probeAtTestStart: ReturnType<typeof runningProbe>;

/** The top-level describes that already stop a leftover probe once all their own hooks have run. */
const guarded = new WeakSet<Mocha.Suite>();

/** Stops the probe still running in this process, if any, saying so. */
async function stopLeftover(after: string): Promise<void> {
  const probe = runningProbe();
  if (!probe) return;
  console.log(`LEFTOVER: a probe was still running after ${after}; stopped`);
  await probe.stop().catch(() => undefined);
}

/**
 * Gives the top-level describe `test` belongs to a last after-all hook (added while it runs, so it comes after the
 * describe's own, which may still use a probe it shares between its tests): a probe left running past it is stopped,
 * so that the next describe's start() does not fail with ALREADY_STARTED.
 */
function guardTopLevelSuite(test: Mocha.Test): void {
  let top = test.parent;
  while (top?.parent && !top.parent.root) top = top.parent;
  if (!top || top.root || guarded.has(top)) return;
  guarded.add(top);
  const title = top.title;
  top.afterAll('stop a probe left running', () => stopLeftover(`"${title}"`));
}

/** Mocha root hooks: the summary once, after everything. */
export const mochaHooks = {
  beforeEach(this: Mocha.Context): void {
    probeAtTestStart = runningProbe();
    if (this.currentTest) guardTopLevelSuite(this.currentTest);
  },
  async afterEach(this: Mocha.Context): Promise<void> {
    const test = this.currentTest as (Mocha.Test & { currentRetry(): number }) | undefined; // public in mocha, protected in its types
    if (!test) return;
    // With mocha's --retries (CI), a test that passed only on a retry is named, never hidden.
    const retry = test.currentRetry();
    if (test.state === 'passed' && retry > 0) console.log(`RETRIED: ${test.fullTitle()} passed on retry ${retry}`);
    // A test that timed out goes on in the background and may still hold this process's probe. It is stopped when
    // the test that started it did not pass, so that its retry starts clean; a probe a describe shares between its
    // tests is left to it (and to the guard above, after the describe).
    const failed = test.state !== 'passed' && test.state !== 'pending';
    if (failed && runningProbe() !== probeAtTestStart) await stopLeftover(`"${test.fullTitle()}"`);
  },
  afterAll(): void {
    const summary = skipSummary();
    if (summary) console.log(`\n${summary}\n`);
  },
};
