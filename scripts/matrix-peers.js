'use strict';
/**
 * The optional peers the tests and benches load (heapdump, v8-profiler-next) are addons on
 * V8's C++ API: one binary per Node ABI. The test matrix builds them once per Node version
 * into ~/.cache/sysprobe/peers/<version>/node_modules/<peer> (or $SYSPROBE_PEER_CACHE) and,
 * for that version's run, swaps their build/ into node_modules; the host's build/ is put
 * back afterwards. A peer that does not build for a version (v8-profiler-next on Node 26)
 * is recorded as such and left absent for that run, so the tests see what users see.
 *
 * The host's build/ dirs wait in node_modules/.sysprobe-matrix-host/ while swapped out:
 * a run killed beyond any handler (SIGKILL) leaves them there and the next run puts them back first.
 */
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { hostNpm } = require('./node-builds.js');

const ROOT = path.resolve(__dirname, '..');
const MODULES = path.join(ROOT, 'node_modules');
const CACHE = process.env.SYSPROBE_PEER_CACHE || path.join(os.homedir(), '.cache', 'sysprobe', 'peers');
const PEERS = ['heapdump', 'v8-profiler-next'];
const HOST_SAVED = path.join(MODULES, '.sysprobe-matrix-host');
const BUILT = '.sysprobe-built'; // holds the package version the cached build is of
const FAILED = '.sysprobe-failed'; // "<package version>\n<why>": not tried again for that version
const BUILD_TIMEOUT_MS = 10 * 60_000;

function packageVersion(dir) {
  return JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')).version;
}

function readMarker(file) {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}

/** Links a dependency of the peers' build (nan, node-pre-gyp) to the host's copy, replacing a stale link. */
function linkDependency(modules, name) {
  const target = path.join(MODULES, name);
  const link = path.join(modules, name);
  if (!fs.existsSync(target)) return;
  fs.mkdirSync(path.dirname(link), { recursive: true });
  fs.rmSync(link, { recursive: true, force: true });
  fs.symlinkSync(target, link);
}

/** Builds one peer for one Node build (scripts/node-builds.js); returns undefined when built, else why not. */
function buildPeer(build, env, name) {
  const source = path.join(MODULES, name);
  const modules = path.join(CACHE, build.version, 'node_modules');
  const dir = path.join(modules, name);
  const version = packageVersion(source);
  fs.rmSync(dir, { recursive: true, force: true });
  fs.cpSync(source, dir, { recursive: true, filter: (src) => path.relative(source, src) !== 'build' });
  linkDependency(modules, 'nan');
  linkDependency(modules, path.join('@xprofiler', 'node-pre-gyp'));
  const gyp = hostNpm()?.nodeGyp;
  const abi = spawnSync(build.node, ['-p', 'process.versions.modules'], { encoding: 'utf8' }).stdout.trim();
  // v8-profiler-next's binding.gyp wants node-pre-gyp's variables, and finds its binary where they say.
  const preGyp =
    name === 'v8-profiler-next'
      ? [
          '--module_name=profiler',
          `--module_path=build/binding/Release/node-v${abi}-${process.platform}-${process.arch}`,
        ]
      : [];
  const res = spawnSync(build.node, [gyp ?? 'node-gyp', 'rebuild', `--nodedir=${build.dir}`, ...preGyp], {
    cwd: dir,
    env,
    encoding: 'utf8',
    timeout: BUILD_TIMEOUT_MS,
  });
  if (res.status !== 0) {
    // The compiler's first error says more than node-gyp's closing lines.
    const lines = `${res.stdout ?? ''}${res.stderr ?? ''}`.split('\n');
    const first = lines.find((l) => /error/i.test(l) && !/^gyp (info|WARN|ERR)/.test(l)) ?? `exit ${res.status}`;
    const why = res.error ? res.error.message : first.trim().slice(0, 300);
    fs.writeFileSync(path.join(dir, FAILED), `${version}\n${why}\n`);
    return why;
  }
  fs.writeFileSync(path.join(dir, BUILT), version);
  return undefined;
}

/**
 * Each peer for this Node build, from the cache or built now: `{ name, build?: dir, why?: string }`
 * (build: the build/ to swap in; why: it does not build for this version).
 */
function peersFor(build, env) {
  return PEERS.filter((name) => fs.existsSync(path.join(MODULES, name, 'package.json'))).map((name) => {
    const version = packageVersion(path.join(MODULES, name));
    const dir = path.join(CACHE, build.version, 'node_modules', name);
    if (readMarker(path.join(dir, BUILT)) === version) return { name, build: path.join(dir, 'build') };
    const failed = readMarker(path.join(dir, FAILED));
    if (failed?.startsWith(`${version}\n`)) return { name, why: failed.split('\n')[1] };
    const why = buildPeer(build, env, name);
    return why ? { name, why } : { name, build: path.join(dir, 'build') };
  });
}

/** Puts the host's peer builds back (after a run, or left behind by a killed one). */
function restoreHostPeers() {
  if (!fs.existsSync(HOST_SAVED)) return;
  for (const name of fs.readdirSync(HOST_SAVED)) {
    const live = path.join(MODULES, name, 'build');
    fs.rmSync(live, { recursive: true, force: true });
    const saved = path.join(HOST_SAVED, name, 'build');
    if (fs.existsSync(saved)) fs.renameSync(saved, live);
    fs.rmSync(path.join(HOST_SAVED, name), { recursive: true, force: true });
  }
  fs.rmSync(HOST_SAVED, { recursive: true, force: true });
}

/** Swaps the given peers' builds into node_modules (none where a peer does not build); the host's wait in HOST_SAVED. */
function swapInPeers(peers) {
  restoreHostPeers();
  for (const peer of peers) {
    const live = path.join(MODULES, peer.name, 'build');
    const saved = path.join(HOST_SAVED, peer.name);
    fs.mkdirSync(saved, { recursive: true });
    if (fs.existsSync(live)) fs.renameSync(live, path.join(saved, 'build'));
    if (peer.build) fs.cpSync(peer.build, live, { recursive: true });
  }
}

module.exports = { PEERS, CACHE, peersFor, swapInPeers, restoreHostPeers };
