'use strict';
// Soak: `npm run soak [-- --seconds S --cycles-every S]` (issue 17, "How it is checked").
//
// A host process (this file with --host) runs a real probe (health and control endpoints, incidents,
// a dump directory on a 64 MiB tmpfs when mount works, else dumpMaxBytes 32 MiB) and does what the
// driver (this process) tells it over IPC. For --seconds (default 180) the driver runs, all at once:
// slow clients (a header byte a second), half-open clients (half a head, never read), floods against
// /health and the control endpoint (bad and good tokens), stalls that open incidents with captures,
// probe-worker crashes, start/stop cycles, and heap snapshots / CPU profiles into the small disk.
// It measures GET /health latency all along (from this process: the host's stalls cannot delay it),
// and reports descriptors, RSS and heap of the host and the probe worker at the start and the end,
// and every incident folder and capture that was announced and is gone at the end, with why.
// A start/stop series at the end (--cycles N, default 200) measures RSS per cycle; heap snapshots of
// the host before and after it go to `sysprobe heap diff`.
// Results: bench/results/soak-latest.md (and a dated .json).

const { fork, execFileSync, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const ROOT = path.join(__dirname, '..');
const TOKEN = 'soak-token-'.padEnd(48, 'x');
const MiB = 1 << 20;

if (process.argv[2] === '--host') host();
else
  driver().catch((err) => {
    console.error(err);
    process.exit(1);
  });

// ---------------------------------------------------------------------------------------------
// The host: a real probe, driven over IPC.
function host() {
  const v8 = require('node:v8');
  const pino = require('pino');
  const { start, summarizeHeapSnapshot } = require(path.join(ROOT, 'dist', 'src', 'index.js'));
  const { probeInternals } = require(path.join(ROOT, 'dist', 'src', 'probe', 'internals.js'));
  const dumpDir = process.env.SOAK_DUMP_DIR;
  const logFile = fs.createWriteStream(path.join(process.env.SOAK_WORK, 'host-log.jsonl'));
  const logger = pino({ level: 'info' }, logFile);
  // Everything announced, in order: incident folders (with their last phase) and capture files.
  const announced = new Map();
  const errors = {};
  let probe;
  let ports = { health: 0, control: 0 };

  async function begin() {
    probe = await start({
      logger,
      serviceName: 'soak',
      dumpDir,
      dumpMaxBytes: Number(process.env.SOAK_DUMP_MAX_BYTES),
      sampleIntervalMs: 250,
      stallThresholdMs: 150,
      capturesPerMinute: 30,
      heapSnapshotsPerDay: 100,
      incidents: { quietMs: 1500, beforeMs: 5000 },
      health: { port: ports.health },
      control: { port: ports.control, token: TOKEN, ratePerMinute: 600 },
    });
    ports = { health: probe.healthAddress().port, control: probe.controlAddress().port };
    probe.on('incident', (e) => {
      const seen = announced.get(e.dir);
      if (seen) seen.phase = e.phase;
      else announced.set(e.dir, { kind: 'incident', path: e.dir, phase: e.phase });
    });
    probe.on('capture', (c) => announced.set(c.file, { kind: 'capture', path: c.file }));
  }
  const count = (err) => {
    const code = (err && err.code) || 'Error';
    errors[code] = (errors[code] || 0) + 1;
  };
  const stats = () => {
    global.gc?.();
    const m = process.memoryUsage();
    const fdKinds = {};
    for (const fd of fs.readdirSync('/proc/self/fd')) {
      let target = '?';
      try {
        target = fs
          .readlinkSync(`/proc/self/fd/${fd}`)
          .replace(/\[\d+\]$/, '')
          .replace(/^\/.*/, 'file');
      } catch {
        // closed while listing (the listing's own descriptor)
      }
      fdKinds[target] = (fdKinds[target] || 0) + 1;
    }
    const fdFiles = fs
      .readdirSync('/proc/self/fd')
      .map((fd) => {
        try {
          return fs.readlinkSync(`/proc/self/fd/${fd}`);
        } catch {
          return '';
        }
      })
      .filter((t) => t.startsWith('/'));
    return {
      fds: fs.readdirSync('/proc/self/fd').length,
      fdKinds,
      fdFiles,
      rss: m.rss,
      heapUsed: m.heapUsed,
      external: m.external,
      arrayBuffers: m.arrayBuffers,
      workerRestarts: probeInternals(probe).supervisor.restarts,
    };
  };
  const workerHeap = async () => {
    const stream = await probeInternals(probe).supervisor.workerHeapSnapshotForBench();
    if (!stream) return undefined;
    const file = path.join(process.env.SOAK_WORK, `worker-${Date.now()}.heapsnapshot`);
    await new Promise((resolve, reject) => {
      const out = fs.createWriteStream(file);
      stream.pipe(out).on('finish', resolve).on('error', reject);
    });
    const summary = await summarizeHeapSnapshot(file, { inProcess: true });
    fs.rmSync(file, { force: true });
    return summary.totalSize;
  };

  const commands = {
    ports: async () => ports,
    stats: async () => stats(),
    workerHeap,
    stall: async ({ ms }) => {
      const until = Date.now() + ms;
      while (Date.now() < until);
    },
    crashWorker: async () => probeInternals(probe).supervisor.crashForTest(),
    cycle: async ({ times }) => {
      for (let i = 0; i < times; i++) {
        await probe.stop();
        await begin();
      }
      return ports;
    },
    capture: async ({ kind }) => {
      const run = kind === 'heap' ? probe.captureHeapSnapshot() : probe.captureCpuProfile({ durationMs: 300 });
      await run.then(
        () => count({ code: `${kind}:written` }),
        (err) => count({ code: `${kind}:${err.code}` }),
      );
    },
    hostHeapSnapshot: async ({ file }) => {
      global.gc?.();
      return v8.writeHeapSnapshot(file);
    },
    finish: async () => {
      const incidents = probe.incidents().map((i) => i.dir);
      await probe.stop();
      return { announced: [...announced.values()], listed: incidents, errors };
    },
  };
  process.on('message', ({ id, name, args }) => {
    commands[name](args ?? {}).then(
      (value) => process.send({ id, value }),
      (err) => process.send({ id, error: String(err && err.stack) }),
    );
  });
  begin().then(
    () => process.send({ ready: true }),
    (err) => {
      console.error(err);
      process.exit(1);
    },
  );
}

// ---------------------------------------------------------------------------------------------
// The driver.
function args() {
  const out = { seconds: 180, cycles: 200, cyclesEvery: 10 };
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '').replace(/-(\w)/g, (_, c) => c.toUpperCase());
    if (!(key in out)) throw new Error(`unknown option ${argv[i]}; options: --seconds --cycles --cycles-every`);
    out[key] = Number(argv[i + 1]);
  }
  return out;
}

async function driver() {
  const opts = args();
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'sysprobe-soak-'));
  const dumpDir = path.join(work, 'dumps');
  fs.mkdirSync(dumpDir, { mode: 0o700 });
  let tmpfs = false;
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=560m,mode=0700', 'tmpfs', dumpDir], { stdio: 'ignore' });
    tmpfs = true;
  } catch {
    // not root, or no mount in this container: the dump directory's byte limit is the pressure
  }
  const tmpfsMounted = () => tmpfs;
  const child = fork(__filename, ['--host'], {
    execArgv: ['--expose-gc'],
    env: { ...process.env, SOAK_DUMP_DIR: dumpDir, SOAK_WORK: work, SOAK_DUMP_MAX_BYTES: String(32 * MiB) },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  let nextId = 0;
  const waiting = new Map();
  child.on('message', (m) => {
    if (m.ready) return waiting.get('ready')?.();
    const w = waiting.get(m.id);
    waiting.delete(m.id);
    if (m.error) w.reject(new Error(m.error));
    else w.resolve(m.value);
  });
  const hostExit = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  let ready = false;
  await Promise.race([
    new Promise((resolve) => waiting.set('ready', resolve)),
    hostExit.then((exit) => {
      if (ready) return;
      if (tmpfsMounted()) spawnSync('umount', [dumpDir]);
      throw new Error(`the host exited before it was ready: ${JSON.stringify(exit)}`);
    }),
  ]);
  ready = true;
  const ask = (name, args) =>
    new Promise((resolve, reject) => {
      const id = nextId++;
      waiting.set(id, { resolve, reject });
      child.send({ id, name, args });
    });

  let ports = await ask('ports');
  const startStats = { ...(await ask('stats')), workerHeap: await ask('workerHeap') };
  const startedAt = Date.now();
  const endAt = startedAt + opts.seconds * 1000;
  const running = () => Date.now() < endAt;
  const counts = {};
  const bump = (k, n = 1) => (counts[k] = (counts[k] || 0) + n);

  // /health latency, from this process, one request at a time on a keep-alive connection.
  const latencies = [];
  const healthAgent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const latencyLoop = (async () => {
    while (running()) {
      const t0 = performance.now();
      const status = await get(ports.health, '/health', healthAgent).catch((err) => `error ${err.code ?? err.message}`);
      latencies.push(performance.now() - t0);
      bump(`health ${status}`);
      await sleep(50);
    }
  })();

  // Attackers: slow clients, half-open clients, floods (all re-aimed after each start/stop cycle).
  const sockets = new Set();
  const hold = (socket) => {
    sockets.add(socket);
    socket.on('error', () => undefined);
    socket.on('close', () => sockets.delete(socket));
    return socket;
  };
  const slowLoop = (async () => {
    while (running()) {
      for (const port of [ports.health, ports.control]) {
        if (sockets.size > 400) break;
        const s = hold(net.connect(port, '127.0.0.1'));
        s.on('connect', () => {
          const head = 'GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ';
          let i = 0;
          const drip = setInterval(() => {
            if (s.destroyed || i >= head.length) return clearInterval(drip);
            s.write(head[i++]);
          }, 1000);
        });
        const h = hold(net.connect(port, '127.0.0.1'));
        h.on('connect', () => {
          h.pause(); // never reads
          h.write('GET /health HTTP/1.1\r\nHost: a');
        });
        bump('slow and half-open clients', 2);
      }
      await sleep(200);
    }
  })();
  const floodLoop = (async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
    while (running()) {
      const batch = [];
      for (let i = 0; i < 32; i++) {
        const control = i % 2 === 1;
        const auth = i % 4 === 1 ? `Bearer ${TOKEN}` : 'Bearer wrong-token';
        batch.push(
          get(
            control ? ports.control : ports.health,
            control ? '/samples?last=5' : '/health',
            agent,
            control ? { authorization: auth } : {},
          )
            .then((status) => bump(`flood ${control ? 'control' : 'health'} ${status}`))
            .catch((err) => bump(`flood error ${err.code ?? err.message}`)),
        );
      }
      await Promise.all(batch);
    }
    agent.destroy();
  })();

  // The host's own trouble, in turn.
  const chores = (async () => {
    let turn = 0;
    while (running()) {
      turn += 1;
      await ask('stall', { ms: 400 });
      bump('stalls');
      if (turn % 3 === 0) await ask('capture', { kind: turn % 6 === 0 ? 'heap' : 'cpu' });
      if (turn % 5 === 0) {
        await ask('crashWorker');
        bump('worker crashes');
        await sleep(500);
      }
      if (turn % opts.cyclesEvery === 0) {
        ports = await ask('cycle', { times: 3 });
        bump('start/stop cycles', 3);
      }
      await sleep(1000);
    }
  })();

  await Promise.all([latencyLoop, slowLoop, floodLoop, chores]);
  for (const s of sockets) s.destroy();
  healthAgent.destroy();
  await sleep(3000); // the last incident closes (quietMs 1.5 s)
  const endStats = { ...(await ask('stats')), workerHeap: await ask('workerHeap') };

  // Start/stop cycles alone: RSS per cycle, and the host heap diff over them.
  const snapshots = [];
  const cycleRss = [];
  for (let done = 0; done < opts.cycles;) {
    const step = Math.min(50, opts.cycles - done);
    if (done === 0 || done === 50)
      snapshots.push(await ask('hostHeapSnapshot', { file: path.join(work, `host-${done}.heapsnapshot`) }));
    await ask('cycle', { times: step });
    done += step;
    cycleRss.push({ cycles: done, ...(await ask('stats')) });
  }
  snapshots.push(await ask('hostHeapSnapshot', { file: path.join(work, `host-${opts.cycles}.heapsnapshot`) }));
  const diff = spawnSync(
    process.execPath,
    [path.join(ROOT, 'dist', 'src', 'cli', 'main.js'), 'heap', 'diff', ...snapshots],
    {
      encoding: 'utf8',
      maxBuffer: 64 * MiB,
    },
  );

  const finish = await ask('finish');
  child.disconnect();
  const exit = await hostExit;
  const lost = lostEvidence(finish, work);
  if (process.env.SOAK_KEEP) execFileSync('cp', ['-a', dumpDir, path.join(work, 'dumps-at-end')]);
  if (tmpfs) spawnSync('umount', [dumpDir]);

  const result = {
    at: new Date().toISOString(),
    node: process.version,
    seconds: opts.seconds,
    dumpDir: tmpfs
      ? 'tmpfs of 560 MiB (sysprobe keeps 512 MiB free: captures are refused as it fills)'
      : 'dumpMaxBytes 32 MiB (no tmpfs)',
    counts,
    hostErrors: finish.errors,
    start: startStats,
    end: endStats,
    health: {
      requests: latencies.length,
      p50: pct(latencies, 0.5),
      p99: pct(latencies, 0.99),
      max: Math.max(...latencies),
    },
    cycles: cycleRss,
    heapDiff: diff.stdout.slice(0, 6000) || diff.stderr.slice(0, 2000),
    lost,
    hostExit: exit,
  };
  const stamp = result.at.replace(/:/g, '-').replace(/\.\d+Z$/, 'Z');
  fs.writeFileSync(path.join(__dirname, 'results', `soak-${stamp}.json`), JSON.stringify(result, null, 2));
  fs.writeFileSync(path.join(__dirname, 'results', 'soak-latest.md'), markdown(result));
  process.stdout.write(markdown(result));
  if (!process.env.SOAK_KEEP) fs.rmSync(work, { recursive: true, force: true });
}

/** Incident folders and captures announced during the run that are gone at the end, and why (from the host's log). */
function lostEvidence(finish, work) {
  const log = fs
    .readFileSync(path.join(work, 'host-log.jsonl'), 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l));
  // The main thread's sink logs what rotation removed; the worker's sink (CPU profiles, stacks) has no logger.
  const rotated = new Set(
    log
      .filter((l) => l.msg === 'sysprobe rotated out old evidence')
      .flatMap((l) => l.removed ?? [])
      .map((name) => path.basename(name)),
  );
  const all = finish.announced;
  const exists = all.map((a) => fs.existsSync(a.path));
  const why = (i) => {
    if (rotated.has(path.basename(all[i].path)))
      return 'rotated out, logged (dump directory over maxFiles 20 or its bytes)';
    const newerKept = exists.slice(i + 1).filter(Boolean).length;
    return newerKept >= 20 ? `rotated out by the worker's sink (${newerKept} newer kept; maxFiles 20)` : 'unexplained';
  };
  const gone = all
    .map((a, i) => ({ ...a, name: path.basename(a.path), why: exists[i] ? undefined : why(i) }))
    .filter((a) => a.why);
  return {
    incidentsAnnounced: all.filter((a) => a.kind === 'incident').length,
    incidentsGone: gone.filter((a) => a.kind === 'incident'),
    capturesAnnounced: all.filter((a) => a.kind === 'capture').length,
    capturesGone: gone.filter((a) => a.kind === 'capture'),
    errorLines: log
      .filter((l) => l.level >= 50)
      .map((l) => (l.err?.message ? `${l.msg} (${l.err.message})` : l.msg))
      .slice(0, 20),
  };
}

function markdown(r) {
  const mb = (b) => (b === undefined ? '—' : (b / MiB).toFixed(1));
  const row = (name, key, f = mb) => `| ${name} | ${f(r.start[key])} | ${f(r.end[key])} |`;
  const gone = (list, key) =>
    list.length === 0 ? 'none' : list.map((x) => `${x[key]} (${x.phase ? `${x.phase}, ` : ''}${x.why})`).join('; ');
  const byWhy = (list) => list.reduce((m, x) => ((m[x.why] = (m[x.why] || 0) + 1), m), {});
  const first = r.cycles[0];
  const last = r.cycles.at(-1);
  return `# Soak (${r.at}, Node ${r.node}, ${r.seconds} s, dump directory: ${r.dumpDir})

Reproduce: \`npm run soak -- --seconds ${r.seconds} --cycles ${last?.cycles ?? 0}\` (bench/soak.js).

## Host and worker, start and end of the hostile phase

| | start | end |
| --- | ---: | ---: |
${row('descriptors', 'fds', String)}
${row('host RSS, MiB', 'rss')}
${row('host heap used, MiB', 'heapUsed')}
${row('host external, MiB', 'external')}
${row('probe worker heap (snapshot total), MiB', 'workerHeap')}
${row('worker restarts', 'workerRestarts', String)}
${row('descriptors by kind', 'fdKinds', (k) =>
  k
    ? Object.entries(k)
        .map(([n, c]) => `${n} ${c}`)
        .join(', ')
    : '—',
)}

## GET /health during it

${r.health.requests} requests, one at a time from the driver: p50 ${r.health.p50.toFixed(1)} ms, p99 ${r.health.p99.toFixed(1)} ms, max ${r.health.max.toFixed(0)} ms.

## What ran

${Object.entries(r.counts)
  .sort()
  .map(([k, v]) => `- ${k}: ${v}`)
  .join('\n')}
- host captures: ${JSON.stringify(r.hostErrors)}

## Start/stop cycles alone

${r.cycles.map((c) => `- after ${c.cycles} cycles: RSS ${mb(c.rss)} MiB, heap ${mb(c.heapUsed)} MiB, descriptors ${c.fds}`).join('\n')}

RSS per cycle from the first to the last step: ${first && last && last.cycles > first.cycles ? ((last.rss - first.rss) / (last.cycles - first.cycles) / 1024).toFixed(1) : '—'} KiB.

Host heap diff over the cycles (\`sysprobe heap diff\`, snapshots after 0, 50 and ${last?.cycles} cycles):

\`\`\`
${r.heapDiff.trim()}
\`\`\`

## Lost

- incident folders announced: ${r.lost.incidentsAnnounced}; gone at the end: ${r.lost.incidentsGone.length} ${JSON.stringify(byWhy(r.lost.incidentsGone))}: ${gone(r.lost.incidentsGone, 'name')}
- captures announced: ${r.lost.capturesAnnounced}; gone at the end: ${r.lost.capturesGone.length} ${JSON.stringify(byWhy(r.lost.capturesGone))}
- error lines in the host's log: ${r.lost.errorLines.length ? r.lost.errorLines.join('; ') : 'none'}
- host exit: ${JSON.stringify(r.hostExit)}
`;
}

function get(port, pathname, agent, headers = {}) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: pathname, agent, headers, timeout: 5000 }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'TIMEOUT' })));
    req.on('error', reject);
  });
}

function pct(values, p) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? NaN;
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
