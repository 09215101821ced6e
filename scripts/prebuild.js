'use strict';
/**
 * Builds the binaries the package ships (run by `prepack`, so every tarball has them;
 * the packer has a compiler, the services that install it need none), in the
 * prebuildify convention that src/native.ts reads:
 *
 *   prebuilds/linux-x64/loop_watch.napi.glibc.node   Node-API: one binary for every Node version,
 *   prebuilds/linux-x64/heap_scan.napi.glibc.node    built against this node's headers (the oldest supported)
 *   prebuilds/linux-x64/gc_stats.abi<N>.glibc.node   V8's C++ API: one per Node ABI, for this node
 *   prebuilds/linux-x64/thread_stack.abi<N>.glibc.node  (likewise)
 *                                                    and the newest 22.x, 24.x and 26.x (scripts/node-builds.js)
 *
 * Builds in a scratch copy, so the checkout's build/ is left alone; a binary newer than
 * its source is kept. Each is stripped of its symbols. Fails (a packer must notice) when one
 * does not build.
 *
 *   node scripts/prebuild.js [--majors 22,24,26] [--force]
 */
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { newestOf, nodeBuild, hostNpm } = require('./node-builds.js');

const ROOT = path.resolve(__dirname, '..');
const args = process.argv.slice(2);
const MAJORS = (args.includes('--majors') ? args[args.indexOf('--majors') + 1] : '22,24,26').split(',').filter(Boolean);
const FORCE = args.includes('--force');

if (process.platform !== 'linux' || process.arch !== 'x64') {
  console.error(`prebuild: sysprobe ships linux-x64 binaries only; this is ${process.platform}-${process.arch}`);
  process.exit(1);
}

const LIBC = 'glibc'; // musl: not built here (see docs/native.md)
const OUT = path.join(ROOT, 'prebuilds', `${process.platform}-${process.arch}`);
const SOURCES = {
  loop_watch: 'native/loop_watch.c',
  heap_scan: 'native/heap_scan.c',
  gc_stats: 'native/gc_stats.cc',
  thread_stack: 'native/thread_stack.cc',
};
const NODE_GYP = path.join(
  path.dirname(fs.realpathSync(process.execPath)),
  '..',
  'lib',
  'node_modules',
  'npm',
  'node_modules',
  'node-gyp',
  'bin',
  'node-gyp.js',
);

function nodeGyp() {
  const file =
    [process.env.npm_config_node_gyp, NODE_GYP, hostNpm()?.nodeGyp].find((f) => f && fs.existsSync(f)) ?? NODE_GYP;
  if (!fs.existsSync(file)) throw new Error(`node-gyp not found (looked at ${file}); run this through npm`);
  return file;
}

/** This node's headers: npm's nodedir, else the ones beside the binary. */
function hostHeaders() {
  if (process.env.npm_config_nodedir) return process.env.npm_config_nodedir;
  return path.join(path.dirname(process.execPath), '..');
}

function upToDate(file, name, abi) {
  if (FORCE || !fs.existsSync(file)) return false;
  // gc_stats carries the ABI it was built for (native/gc_stats.cc): one of another ABI is rebuilt.
  if (abi && !fs.readFileSync(file).includes(`sysprobe-abi:${abi};`)) return false;
  const built = fs.statSync(file).mtimeMs;
  return [SOURCES[name], 'binding.gyp'].every((src) => fs.statSync(path.join(ROOT, src)).mtimeMs < built);
}

/** One addon against one node's headers, with that node running node-gyp. */
function buildOne(name, node, headers, out, abi) {
  if (upToDate(out, name, abi)) {
    console.log(`prebuild: ${path.relative(ROOT, out)} is up to date`);
    return;
  }
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'sysprobe-prebuild-'));
  try {
    fs.cpSync(path.join(ROOT, 'binding.gyp'), path.join(scratch, 'binding.gyp'));
    fs.cpSync(path.join(ROOT, 'native'), path.join(scratch, 'native'), { recursive: true });
    const run = (...gypArgs) => {
      try {
        execFileSync(node, [nodeGyp(), gypArgs[0], `--nodedir=${headers}`, ...gypArgs.slice(1)], {
          cwd: scratch,
          stdio: ['ignore', 'ignore', 'pipe'],
          encoding: 'utf8',
          // npm_config_nodedir too: node-gyp takes it over --nodedir, and one left by the caller
          // (test:matrix sets it) built every gc_stats against that one version's headers.
          env: {
            ...process.env,
            PATH: `${path.dirname(node)}${path.delimiter}${process.env.PATH}`,
            npm_config_nodedir: headers,
          },
        });
      } catch (err) {
        throw new Error(
          `${name} for ${node}: node-gyp ${gypArgs[0]} failed:\n${String(err.stderr ?? err.message).slice(-3000)}`,
        );
      }
    };
    run('configure', '--', `-Dsysprobe_addon=${name}`);
    run('build');
    fs.mkdirSync(OUT, { recursive: true });
    fs.copyFileSync(path.join(scratch, 'build', 'Release', `${name}.node`), out);
    try {
      execFileSync('strip', ['--strip-unneeded', out]);
    } catch {
      /* unstripped still works */
    }
    execFileSync(node, ['-e', 'require(process.argv[1])', out]); // it loads in the node it is for
    console.log(`prebuild: ${path.relative(ROOT, out)} (${fs.statSync(out).size} bytes)`);
  } finally {
    fs.rmSync(scratch, { recursive: true, force: true });
  }
}

const host = { node: process.execPath, headers: hostHeaders(), abi: process.versions.modules };
for (const name of ['loop_watch', 'heap_scan'])
  buildOne(name, host.node, host.headers, path.join(OUT, `${name}.napi.${LIBC}.node`));

const targets = [
  host,
  ...MAJORS.map((major) => {
    const b = nodeBuild(newestOf(major));
    return {
      node: b.node,
      headers: b.dir,
      abi: execFileSync(b.node, ['-p', 'process.versions.modules'], { encoding: 'utf8' }).trim(),
    };
  }),
];
const abis = new Set();
for (const t of targets) {
  if (abis.has(t.abi)) continue;
  abis.add(t.abi);
  for (const name of ['gc_stats', 'thread_stack'])
    buildOne(name, t.node, t.headers, path.join(OUT, `${name}.abi${t.abi}.${LIBC}.node`), t.abi);
}
