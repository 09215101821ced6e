'use strict';
/**
 * sysprobe's install step: for each native addon, a binary that loads is looked for
 * first (a prebuild in prebuilds/<platform>-<arch>/ or an earlier build); only then is
 * it built from source, each addon in its own node-gyp run so that one that fails
 * never takes the others with it. Never fails the install: an addon that neither
 * loads nor builds is reported with what sysprobe does without it.
 *
 *   node scripts/install.js            # what `npm install` runs
 *   node scripts/install.js --build    # build all four from source (node-gyp, npm_config_nodedir's headers)
 *   node scripts/install.js --verbose  # show node-gyp's output
 */
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..');
const ADDONS = ['loop_watch', 'heap_scan', 'gc_stats', 'thread_stack'];
const args = process.argv.slice(2);
const FORCE_BUILD = args.includes('--build');
const VERBOSE = args.includes('--verbose');
const BUILD_TIMEOUT_MS = 10 * 60_000;

/** src/native.ts, once compiled: the same loader start() uses, so "it loads" means what it will mean at run time. */
function nativeLoader() {
  const file = path.join(ROOT, 'dist', 'src', 'native.js');
  if (!fs.existsSync(file)) return undefined;
  // A dist/ left by an older build has no nativeParts(): then build as if there were none.
  const loader = require(file);
  return typeof loader.nativeParts === 'function' ? loader : undefined;
}

/** The node-gyp that npm brings (npm says where), else one beside this node's npm, else one on PATH. */
function nodeGyp() {
  const candidates = [
    process.env.npm_config_node_gyp,
    path.join(
      path.dirname(process.execPath),
      '..',
      'lib',
      'node_modules',
      'npm',
      'node_modules',
      'node-gyp',
      'bin',
      'node-gyp.js',
    ),
    // An official build from the registry has no npm: the one on PATH (in a checkout only; the package ships no scripts/node-builds.js).
    fs.existsSync(path.join(__dirname, 'node-builds.js')) ? require('./node-builds.js').hostNpm()?.nodeGyp : undefined,
  ];
  const found = candidates.find((file) => file && fs.existsSync(file));
  return found ? [process.execPath, found] : ['node-gyp'];
}

function run(argv, label) {
  const [cmd, ...rest] = argv;
  const res = spawnSync(cmd, rest, {
    cwd: ROOT,
    stdio: VERBOSE ? 'inherit' : 'pipe',
    encoding: 'utf8',
    timeout: BUILD_TIMEOUT_MS,
  });
  if (res.status === 0) return undefined;
  const output = `${res.stdout ?? ''}${res.stderr ?? ''}`.trim().split('\n');
  const why = res.error ? res.error.message : res.signal ? `killed by ${res.signal}` : `exit code ${res.status}`;
  // The compiler's first error says more than node-gyp's closing lines.
  const firstError = output.find(
    (line) => /error|not found|ENOENT|find Python|make: /i.test(line) && !/^gyp (info|WARN)/.test(line),
  );
  return `${label} failed (${why})${firstError ? `: ${firstError.trim().slice(0, 300)}` : ''}`;
}

/** The headers to build against: npm's nodedir when set, else this node's own (an official build ships them in include/). */
function headersDir() {
  if (process.env.npm_config_nodedir) return process.env.npm_config_nodedir;
  const prefix = path.join(path.dirname(process.execPath), '..');
  return fs.existsSync(path.join(prefix, 'include', 'node', 'node_api.h')) ? prefix : undefined;
}

/** Builds one addon from source into build/Release; undefined when it built, else why not. */
function build(name) {
  const gyp = nodeGyp();
  const nodedir = headersDir() ? [`--nodedir=${headersDir()}`] : [];
  return (
    run([...gyp, 'configure', ...nodedir, '--', `-Dsysprobe_addon=${name}`], `node-gyp configure (${name})`) ??
    run([...gyp, 'build', ...nodedir], `node-gyp build (${name})`)
  );
}

function main() {
  const loader = nativeLoader();
  const results = [];
  if (FORCE_BUILD) fs.rmSync(path.join(ROOT, 'build'), { recursive: true, force: true });
  for (const name of ADDONS) {
    if (!FORCE_BUILD && loader) {
      const { addon } = loader.loadNative(name);
      if (addon) {
        const part = loader.nativeParts().find((p) => p.name === name);
        results.push(`sysprobe: ${name}: ${part.reason}`);
        continue;
      }
    }
    const failed = build(name);
    if (!failed) {
      results.push(`sysprobe: ${name}: built from source`);
      continue;
    }
    // A half-built file from this run must not stand in for a working one.
    fs.rmSync(path.join(ROOT, 'build', 'Release', `${name}.node`), { force: true });
    const cost = loader?.nativeParts().find((p) => p.name === name)?.cost;
    results.push(`sysprobe: ${name}: not available: ${failed}${cost ? `; without it: ${cost}` : ''}`);
  }
  for (const line of results) console.log(line);
  if (results.some((line) => line.includes('not available')))
    console.log('sysprobe: `npx sysprobe doctor` says the same at any time; see docs/native.md.');
}

try {
  main();
} catch (err) {
  // Never fail the host's install: sysprobe runs without its addons.
  console.warn(
    `sysprobe: the native addons were not set up (${err instanceof Error ? err.message : String(err)}); sysprobe falls back to its JS paths. See docs/native.md.`,
  );
}
process.exitCode = 0;
