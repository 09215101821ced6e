// The package as a service installs it: `npm pack`, then `npm install <tarball>` into an
// empty app with a PATH that holds node, npm and a few basic tools but no compiler, make
// or python, on the node running this test (the host's in `npm test`; each version's in
// `npm run test:matrix`). The prebuilt binaries must be found before any build is tried,
// start() must run the native loop watch, and `sysprobe doctor --json` must say so.
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { tempDir } from './helpers.js';
import { needs, type Requirement } from './requirements.js';

const ROOT = path.resolve(__dirname, '..', '..');
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { hostNpm } = require(path.join(ROOT, 'scripts', 'node-builds.js')) as { hostNpm(): { cli: string } | undefined };
const PREBUILDS = path.join(ROOT, 'prebuilds', `${process.platform}-${process.arch}`);
const BASIC_TOOLS = ['sh', 'env', 'uname', 'cat', 'ls', 'rm', 'mkdir', 'cp', 'mv', 'sed', 'grep', 'tar', 'gzip'];
const BUILD_TOOLS = ['cc', 'gcc', 'g++', 'c++', 'clang', 'make', 'python', 'python3', 'node-gyp'];

/** Making the prebuilds (the packer's job) needs what the installing machine must not. */
const PACKER_TOOLS: Requirement = {
  name: "a compiler, make and python3 to make the prebuilds (the packer's side)",
  missing: () => {
    if (process.platform !== 'linux' || process.arch !== 'x64')
      return `prebuilds are made for linux-x64 only, not ${process.platform}-${process.arch}`;
    for (const tool of ['g++', 'make', 'python3'])
      if (spawnSync(tool, ['--version'], { stdio: 'ignore' }).error) return `${tool} is missing`;
    return hostNpm() ? undefined : 'no npm on PATH';
  },
  install: 'apt-get install g++ make python3',
};

/** A folder of symlinks to node, a wrapper for npm, and basic tools: a slim image's PATH. */
function slimPath(dir: string, npmCli: string): string {
  fs.mkdirSync(dir, { recursive: true });
  fs.symlinkSync(process.execPath, path.join(dir, 'node'));
  fs.writeFileSync(path.join(dir, 'npm'), `#!/bin/sh\nexec "${process.execPath}" "${npmCli}" "$@"\n`, { mode: 0o755 });
  for (const tool of BASIC_TOOLS) {
    const found = ['/usr/bin', '/bin'].map((d) => path.join(d, tool)).find((f) => fs.existsSync(f));
    if (found) fs.symlinkSync(found, path.join(dir, tool));
  }
  return dir;
}

describe('install without a compiler: the packed tarball on this node', function () {
  this.timeout(300_000);
  let work: string;
  let env: NodeJS.ProcessEnv;
  let app: string;
  let installLog: string;

  before(function () {
    needs(this, PACKER_TOOLS);
    work = tempDir('sysprobe-install-');
    // The packer's side: prebuilds for every ABI (kept when newer than their sources), then the tarball.
    execFileSync(process.execPath, [path.join(ROOT, 'scripts', 'prebuild.js')], { cwd: ROOT, stdio: 'pipe' });
    const packed = JSON.parse(
      execFileSync(
        process.execPath,
        [hostNpm()!.cli, 'pack', '--ignore-scripts', '--json', '--pack-destination', work],
        { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] },
      ),
    ) as Array<{ filename: string; files: Array<{ path: string }> }>;
    const tarball = path.join(work, packed[0]!.filename);
    const shipped = packed[0]!.files.map((f) => f.path);
    for (const name of [
      'loop_watch.napi.glibc.node',
      'heap_scan.napi.glibc.node',
      `gc_stats.abi${process.versions.modules}.glibc.node`,
      `thread_stack.abi${process.versions.modules}.glibc.node`,
    ]) {
      assert.ok(shipped.includes(`prebuilds/linux-x64/${name}`), `the tarball ships ${name}`);
    }

    // The service's side: a slim PATH and an environment with none of this checkout's npm settings.
    const bin = slimPath(path.join(work, 'bin'), hostNpm()!.cli);
    for (const tool of BUILD_TOOLS) assert.ok(!fs.existsSync(path.join(bin, tool)), `${tool} is not on the slim PATH`);
    env = { PATH: bin, HOME: process.env.HOME, npm_config_cache: path.join(process.env.HOME ?? work, '.npm') };
    if (process.env.NODE_EXTRA_CA_CERTS) env.NODE_EXTRA_CA_CERTS = process.env.NODE_EXTRA_CA_CERTS;
    for (const tool of BUILD_TOOLS) {
      assert.ok(
        spawnSync(tool, ['--version'], { env, stdio: 'ignore' }).error,
        `${tool} cannot be found on the slim PATH`,
      );
    }
    app = path.join(work, 'app');
    fs.mkdirSync(app);
    fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true }));
    installLog = execFileSync(
      path.join(bin, 'npm'),
      ['install', tarball, '--foreground-scripts', '--no-audit', '--no-fund', '--prefer-offline'],
      { cwd: app, env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 240_000 },
    );
  });

  after(() => {
    if (work) fs.rmSync(work, { recursive: true, force: true });
  });

  it('finds every prebuild before trying a build: nothing is compiled', () => {
    for (const name of ['loop_watch', 'heap_scan', 'gc_stats', 'thread_stack']) {
      assert.match(
        installLog,
        new RegExp(`sysprobe: ${name}: loaded prebuilds/linux-x64/${name}\\.`),
        `${name} from its prebuild:\n${installLog}`,
      );
    }
    assert.doesNotMatch(installLog, /built from source|not available/);
    assert.ok(!fs.existsSync(path.join(app, 'node_modules', 'sysprobe', 'build')), 'no build folder');
  });

  it("start({ serviceName }) resolves to a probe whose loopWatch is 'native'", () => {
    const script = `require('sysprobe').start({ serviceName: 'install-test', logger: require('pino')({ level: 'silent' }) })
      .then(async (probe) => { console.log(JSON.stringify({ loopWatch: probe.loopWatch })); await probe.stop(); });`;
    const out = execFileSync(path.join(work, 'bin', 'node'), ['-e', script], {
      cwd: app,
      env,
      encoding: 'utf8',
      timeout: 30_000,
    });
    assert.deepEqual(JSON.parse(out.trim().split('\n').pop()!), { loopWatch: 'native' });
  });

  it('sysprobe doctor --json prints one JSON document: this node, and each native part loaded', () => {
    const out = execFileSync(
      path.join(work, 'bin', 'node'),
      [path.join(app, 'node_modules', '.bin', 'sysprobe'), 'doctor', '--json'],
      { cwd: app, env, encoding: 'utf8', timeout: 30_000 },
    );
    const report = JSON.parse(out) as {
      node: { version: string };
      loopWatch: string;
      watchdogParks: boolean;
      native: Array<{ name: string; loaded: boolean; reason: string }>;
    };
    assert.equal(report.node.version, process.version);
    assert.equal(report.loopWatch, 'native');
    assert.equal(report.watchdogParks, true, 'the prebuilt watchdog parks while the loop waits');
    assert.deepEqual(
      report.native.map((p) => [p.name, p.loaded]),
      [
        ['loop_watch', true],
        ['gc_stats', true],
        ['heap_scan', true],
        ['thread_stack', true],
      ],
    );
    for (const p of report.native) assert.match(p.reason, /prebuilds\/linux-x64/);
  });
});
