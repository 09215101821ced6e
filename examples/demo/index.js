'use strict';
// `npm run demo`: the three case studies, one after another, on a small service instrumented
// with sysprobe (service.js, a child process so its stalls do not block this narrator).
// Every measurement printed here comes from sysprobe: its events, captures, health and samples,
// relayed from the service over IPC. Lines marked [demo] say what the demo itself did.
//
//   node examples/demo/index.js [--fast] [--json-summary FILE] [--dump-dir DIR]

const { fork, execFile } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');

const CLI = path.join(__dirname, '..', '..', 'dist', 'src', 'cli', 'main.js');
const MB = 1024 * 1024;
const HEALTHY_LATENCY_MS = 20;

// ---------------------------------------------------------------------------------------------
// Arguments and output.

function parseArgs(argv) {
  const args = { fast: false, jsonSummary: undefined, dumpDir: undefined };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--fast') args.fast = true;
    else if (argv[i] === '--json-summary') args.jsonSummary = argv[++i];
    else if (argv[i] === '--dump-dir') args.dumpDir = argv[++i];
    else
      throw new Error(`unknown argument ${argv[i]}; usage: index.js [--fast] [--json-summary FILE] [--dump-dir DIR]`);
  }
  return args;
}

const args = parseArgs(process.argv.slice(2));
const startedAt = Date.now();
const color = process.stdout.isTTY && !process.env.NO_COLOR;
const paint = (code) => (text) => (color ? `\x1b[${code}m${text}\x1b[0m` : text);
const bold = paint('1');
const dim = paint('2');
const red = paint('31');
const green = paint('32');
const yellow = paint('33');

function clock() {
  return dim(`[${((Date.now() - startedAt) / 1000).toFixed(1).padStart(5)}s]`);
}
function say(text) {
  process.stdout.write(`${clock()} ${text}\n`);
}
function heading(text) {
  process.stdout.write(`\n${bold(text)}\n`);
}
const ms = (value) => `${Math.round(value)} ms`;
const mb = (bytes) => `${(bytes / MB).toFixed(1)} MB`;
const rel = (file) => (file ? path.relative(process.cwd(), file) || file : file);
const frameText = (f) => `${f.functionName || '(anonymous)'} (${path.basename(f.url || '?')}:${f.lineNumber + 1})`;

// ---------------------------------------------------------------------------------------------
// The service, and what it relays.

/** Everything the service sent, in arrival order, with a waiter list. */
class Inbox {
  constructor() {
    this.events = [];
    this.listeners = new Set();
  }
  push(event) {
    this.events.push(event);
    for (const listener of [...this.listeners]) listener(event);
  }
  /** Calls `onEvent` for every event from now on until the returned function is called. */
  follow(onEvent) {
    this.listeners.add(onEvent);
    return () => this.listeners.delete(onEvent);
  }
}

class Service {
  constructor(env) {
    this.inbox = new Inbox();
    this.pending = new Map();
    this.nextId = 1;
    this.child = fork(path.join(__dirname, 'service.js'), [], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    this.exited = new Promise((resolve) => this.child.once('exit', (code, signal) => resolve({ code, signal })));
    // A service that died answers nothing more: fail what waits for it now, not at its time limit.
    this.child.once('exit', (code, signal) => {
      this.exitedWith = signal || `code ${code}`;
      for (const [id, waiter] of this.pending)
        waiter({ id, error: { message: `the service exited (${this.exitedWith})` } });
      this.pending.clear();
      this.inbox.push({ type: 'exit', how: this.exitedWith });
    });
    this.child.on('message', (message) => {
      if (message.type === 'reply') {
        const waiter = this.pending.get(message.id);
        this.pending.delete(message.id);
        if (waiter) waiter(message);
      } else {
        this.inbox.push(message);
      }
    });
  }

  waitReady(timeoutMs) {
    return waitFor(this.inbox, (m) => m.type === 'ready' || m.type === 'fatal', timeoutMs, 'the service to start').then(
      (m) => {
        if (m.type === 'fatal') throw new Error(`the service failed to start: ${m.error.stack || m.error.message}`);
        return m;
      },
    );
  }

  /** Asks the service; rejects after `timeoutMs` (a stalled service answers late, not never). */
  request(cmd, args = {}, timeoutMs = 10_000) {
    const id = this.nextId++;
    if (this.exitedWith)
      return Promise.reject(new Error(`the service exited (${this.exitedWith}); cannot ask it ${cmd}`));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`the service did not answer ${cmd} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, (message) => {
        clearTimeout(timer);
        if (message.error) reject(Object.assign(new Error(message.error.message), { code: message.error.code }));
        else resolve(message.result);
      });
      this.child.send({ id, cmd, args }, (err) => {
        if (!err) return;
        clearTimeout(timer);
        this.pending.delete(id);
        reject(err);
      });
    });
  }
}

/** The first event (from now on) that matches, or a rejection after `timeoutMs`. */
function waitFor(inbox, match, timeoutMs, what) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      unfollow();
      reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`));
    }, timeoutMs);
    const unfollow = inbox.follow((event) => {
      if (!match(event)) return;
      clearTimeout(timer);
      unfollow();
      resolve(event);
    });
  });
}

/** Follows the service's events through `onEvent` until `done()` says the case has seen enough, or `timeoutMs`. */
function followCase(inbox, onEvent, done, timeoutMs) {
  return new Promise((resolve, reject) => {
    const finish = (timedOut, err) => {
      clearTimeout(timer);
      clearInterval(check);
      unfollow();
      if (err) reject(err);
      else resolve({ timedOut });
    };
    const timer = setTimeout(() => finish(true), timeoutMs);
    // Some cases are done by what the narrator polls, not by an event.
    const check = setInterval(() => {
      if (done()) finish(false);
    }, 250);
    const unfollow = inbox.follow((message) => {
      if (message.type === 'exit')
        finish(false, new Error(`the service exited (${message.how}) in the middle of a case`));
      if (message.type !== 'event') return;
      onEvent(message.name, message.payload);
      if (done()) finish(false);
    });
  });
}

const sleep = (millis) => new Promise((resolve) => setTimeout(resolve, millis));

function run(file, argv, timeoutMs) {
  return new Promise((resolve) => {
    execFile(process.execPath, [file, ...argv], { timeout: timeoutMs, maxBuffer: 64 * MB }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr, err });
    });
  });
}

// ---------------------------------------------------------------------------------------------
// The dependency the service calls in case 2: a tiny payments server behind the lossy proxy.

/** The slow, lossy link: the proxy the network tests use. */
async function createProxy({ upstreamPort, latencyMs, dropRate }) {
  const { LossyProxy } = require('../lib/lossy-proxy.js');
  const proxy = await new LossyProxy({ target: { port: upstreamPort }, latencyMs, dropRatio: dropRate }).listen();
  proxy.server.unref();
  return {
    port: proxy.port,
    set: (next) => proxy.set({ latencyMs: next.latencyMs, dropRatio: next.dropRate }),
    close: () => proxy.close(),
  };
}

async function startPayments() {
  const server = http.createServer((req, res) => {
    req.resume();
    res.writeHead(200, { 'content-type': 'application/json' }).end('{"status":"authorized"}\n');
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  server.unref();
  // 20 ms when healthy: a baseline well above the loopback jitter of a busy machine.
  const proxy = await createProxy({ upstreamPort: server.address().port, latencyMs: HEALTHY_LATENCY_MS, dropRate: 0 });
  return { server, proxy, url: `http://127.0.0.1:${proxy.port}/` };
}

// ---------------------------------------------------------------------------------------------
// Health over HTTP, served by the probe worker: it answers during a stall.

/** The worker-served GET /health, from probe.healthAddress(). */
function healthUrl({ address, port }) {
  return `http://${address.includes(':') ? `[${address}]` : address}:${port}/health`;
}

function getHealth(url) {
  return new Promise((resolve) => {
    const req = http.get(url, { timeout: 1000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk) => {
        if (body.length < 64 * 1024) body += chunk;
      });
      res.on('end', () => {
        let parsed;
        try {
          parsed = JSON.parse(body);
        } catch {
          parsed = undefined;
        }
        resolve({ statusCode: res.statusCode, status: parsed && parsed.status });
      });
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (err) => resolve({ error: err.message }));
  });
}

// ---------------------------------------------------------------------------------------------
// Case 1: a stall and a CPU spike.

async function caseStall(service, ready, summary) {
  heading('Case 1 of 3: a background job falls into a busy loop');
  const result = {
    detected: false,
    stall: undefined,
    cpuProfile: undefined,
    guard: undefined,
    health: { wentUnhealthy: false, recovered: false, http: [] },
    evidence: [],
  };
  summary.cases.stall = result;
  const runs = args.fast ? 1 : 2;
  say(
    `[demo] ${runs} of the next runs of the guarded job 'settle-payouts' (every 3 s, timeoutMs 1500) meet data on which reconcileLedger() never converges`,
  );
  await service.request('poisonLedger', { runs });

  // While the service is stalled only its worker can answer: poll the worker-served /health.
  const url = healthUrl(ready.healthAddress);
  let polling = true;
  const httpPoll = (async () => {
    let last;
    while (polling) {
      const answer = await getHealth(url);
      const key = answer.error ? 'error' : `${answer.statusCode} ${answer.status}`;
      if (key !== last) {
        say(
          `GET /health from the probe worker → ${answer.error ? red(answer.error) : `${answer.statusCode} ${answer.status}`}`,
        );
        result.health.http.push({ at: Date.now(), ...answer });
      }
      last = key;
      await sleep(250);
    }
  })();

  let jobStalls = 0;
  let lastJobStallAt = 0;
  let lastOkAt = 0;
  const onEvent = (name, payload) => {
    if (name === 'stall') {
      const stack = payload.stack || [];
      const inLoop = stack.some((f) => f.functionName === 'reconcileLedger');
      const { capture } = payload;
      say(
        `${red('stall')}: event loop blocked ${ms(payload.durationMs)} (capture: ${capture.how}${capture.latencyMs !== undefined ? `, stack taken ${ms(capture.latencyMs)} after detection` : ''}${capture.reason ? `: ${capture.reason}` : ''})`,
      );
      if (payload.cause) say(`    cause: ${payload.cause} (${payload.diagnosis.why})`);
      for (const r of payload.requests || [])
        say(`    blocked request: ${r.method} ${r.route || r.path}, running ${ms(r.runningMs)}`);
      if (capture.span) say(`    in trace ${capture.span.traceId}, span ${capture.span.spanId} (OpenTelemetry)`);
      for (const frame of stack.slice(0, 4)) say(`    at ${frameText(frame)}`);
      if (!inLoop) return;
      jobStalls += 1;
      lastJobStallAt = Date.now();
      result.stall ??= {
        durationMs: payload.durationMs,
        how: capture.how,
        inLoop,
        stack: stack.slice(0, 8).map((f) => f.functionName),
        cause: payload.cause,
        requests: (payload.requests || []).map((r) => `${r.method} ${r.route || r.path}`),
        traceId: capture.span && capture.span.traceId,
      };
    } else if (name === 'rule' && payload.firing.rule === 'loop-stalled') {
      const { firing, captures } = payload;
      say(
        `${yellow('rule')} ${firing.rule}: eventLoop.lagMaxMs ${ms(firing.observed)} > ${firing.threshold} → markUnhealthy, CPU profile`,
      );
      const profile = captures.cpuProfile;
      if (profile) {
        const { topFunctions, busyLoop } = profile.summary;
        const top = topFunctions.find((f) => f.url) || topFunctions[0];
        const busy =
          busyLoop.detected && busyLoop.frame
            ? `, busy loop in ${busyLoop.frame.functionName} (${(busyLoop.share * 100).toFixed(0)}% of busy time)`
            : '';
        say(
          `    CPU profile ${rel(profile.file)}: top function ${bold(top.functionName)} ${(top.selfShare * 100).toFixed(0)}% self time${busy}`,
        );
        // The profile of the job's stall is the one whose heaviest function is the service's own code.
        const inService = /service\.js$/.test(top.url || '');
        if (!result.cpuProfile || (inService && !result.cpuProfile.inService)) {
          result.cpuProfile = {
            file: profile.file,
            pprofFile: profile.pprofFile,
            topFunction: top.functionName,
            selfShare: top.selfShare,
            inService,
          };
        }
      }
      for (const why of captures.notTaken || []) say(dim(`    not taken: ${why}`));
    } else if (name === 'guard') {
      say(`${red('guard')}: ${payload.code}: ${payload.message}`);
      result.guard ??= payload;
    } else if (name === 'health') {
      const status = payload.status || (payload.healthy ? 'ok' : 'unhealthy');
      const why = (payload.reasons || []).map((r) => r.rule || `${r.kind}: ${r.message}`).join(', ');
      say(`health: probe.health() → ${payload.healthy ? green(status) : red(status)}${why ? ` (${why})` : ''}`);
      if (!payload.healthy) {
        result.health.wentUnhealthy = true;
        result.health.recovered = false;
      } else {
        lastOkAt = Date.now();
        if (result.health.wentUnhealthy) result.health.recovered = true;
      }
    }
  };
  // Done when each poisoned run was seen stalling, and health is back after the last of them.
  const enough = () =>
    jobStalls >= runs &&
    result.guard &&
    result.cpuProfile &&
    result.cpuProfile.inService &&
    result.health.wentUnhealthy &&
    result.health.recovered &&
    lastOkAt > lastJobStallAt;
  const { timedOut } = await followCase(service.inbox, onEvent, enough, 30_000);
  polling = false;
  await httpPoll;
  if (timedOut) say(yellow('(case 1 ended by its time limit; the summary shows what was seen)'));
  result.detected = Boolean(result.stall && result.cpuProfile && result.guard && result.health.wentUnhealthy);
  if (result.cpuProfile) result.evidence.push(result.cpuProfile.file, result.cpuProfile.pprofFile);
}

// ---------------------------------------------------------------------------------------------
// Case 2: a slow, lossy dependency.

function describeProbeStatus(status) {
  return status
    .map((p) =>
      [
        p.latencyMs && `p50 ${ms(p.latencyMs.p50)} p99 ${ms(p.latencyMs.p99)}`,
        `successes ${p.successes}, failures ${p.failures}, timeouts ${p.timeouts}`,
        p.baselineMs !== undefined && `baseline ${ms(p.baselineMs)}`,
        p.failing && red('failing'),
      ]
        .filter(Boolean)
        .join(', '),
    )
    .join(' | ');
}

function describeSockets(sockets) {
  const states = Object.entries(sockets.byState || {})
    .map(([state, n]) => `${state} ${n}`)
    .join(', ');
  return `${sockets.total} TCP sockets (${states})${sockets.retransmitsPerSec !== undefined ? `, retransmits ${sockets.retransmitsPerSec.toFixed(1)}/s` : ''}`;
}

async function caseNetwork(service, ready, payments, summary) {
  heading('Case 2 of 3: calls to a dependency through a slow, lossy link');
  const result = {
    detected: false,
    ruleFired: undefined,
    socketsAtFiring: undefined,
    dependency: undefined,
    evidence: [],
  };
  summary.cases.network = result;

  say(`probe payments before: ${describeProbeStatus(await service.request('probeStatus'))}`);
  const latencyMs = 400;
  const dropRate = 0.3;
  say(
    `[demo] the proxy to payments now adds ${latencyMs} ms (was ${HEALTHY_LATENCY_MS}) and resets ${dropRate * 100}% of new connections`,
  );
  payments.proxy.set({ latencyMs, dropRate });

  const onEvent = (name, payload) => {
    if (name === 'health') {
      // A probe whose last 3 runs failed is a reason of kind `dependency` (degraded).
      const why = (payload.reasons || []).map((r) => r.rule || `${r.kind}: ${r.message}`).join(', ');
      say(
        `health: probe.health() → ${payload.status || (payload.healthy ? 'ok' : 'unhealthy')}${why ? ` (${why})` : ''}`,
      );
    }
    if (name === 'rule' && /^probe-latency:/.test(payload.firing.rule)) {
      const { firing } = payload;
      const num = (v) => (Math.abs(v) < 10 ? v.toFixed(2) : String(Math.round(v)));
      say(
        `${yellow('rule')} ${firing.rule}: ${firing.value} ${num(firing.observed)} ≥ ${num(firing.threshold)} for ${ms(firing.aboveForMs)}`,
      );
      result.ruleFired ??= { rule: firing.rule, observed: firing.observed, threshold: firing.threshold };
      // The socket picture the worker took as the rule fired.
      const sockets = payload.captures.sockets;
      if (sockets) {
        say(`    sockets as it fired: ${describeSockets(sockets)}`);
        const remote = (sockets.byRemote || []).find((r) => r.port === payments.proxy.port);
        if (remote)
          say(
            `    to 127.0.0.1:${remote.port} (the proxy): ${remote.connections} connections ${JSON.stringify(remote.states)}, ${remote.sendQueueBytes} bytes unacknowledged`,
          );
        result.socketsAtFiring ??= { total: sockets.total, byState: sockets.byState, toDependency: remote };
      }
    }
  };
  const look = async () => {
    say(`probe payments: ${describeProbeStatus(await service.request('probeStatus'))}`);
    const dep = (await service.request('dependencies')).find((d) => d.remotePort === payments.proxy.port);
    if (dep) {
      const states = Object.keys(dep.states).length ? ` open ${JSON.stringify(dep.states)}` : '';
      say(
        `dependency ${dep.remoteAddress}:${dep.remotePort}: ${dep.connections} connections opened${states}${dep.latencyMs ? `, probe p50 ${ms(dep.latencyMs.p50)} p99 ${ms(dep.latencyMs.p99)}` : ''}`,
      );
      result.dependency = dep;
    }
  };
  let stop = false;
  const watch = (async () => {
    while (!stop) {
      await sleep(1500);
      if (!stop) await look();
    }
  })();
  const { timedOut } = await followCase(
    service.inbox,
    onEvent,
    () => Boolean(result.ruleFired),
    args.fast ? 20_000 : 30_000,
  );
  stop = true;
  await watch;
  if (timedOut) say(yellow('(the baseline rule did not fire within the time limit)'));
  await look(); // the picture as the rule fired
  payments.proxy.set({ latencyMs: HEALTHY_LATENCY_MS, dropRate: 0 });
  say('[demo] the link is healthy again');
  result.detected = Boolean(result.ruleFired && result.dependency && Object.keys(result.dependency.states).length > 0);
}

// ---------------------------------------------------------------------------------------------
// Case 3: a leak.

/** `sysprobe heap diff A B C --json`, as a person would run it on the captured files. */
async function heapDiff(files) {
  const { code, stdout, stderr } = await run(CLI, ['heap', 'diff', ...files, '--json'], 120_000);
  if (code !== 0) throw new Error(`sysprobe heap diff exited ${code}: ${stderr.trim().slice(0, 500)}`);
  return JSON.parse(stdout);
}

async function caseLeak(service, summary) {
  heading('Case 3 of 3: a cache that stops evicting on an error path');
  const result = {
    detected: false,
    growthPerMin: undefined,
    snapshots: [],
    diff: undefined,
    fix: undefined,
    evidence: [],
  };
  summary.cases.leak = result;
  const perTick = 12;
  say(`[demo] checkout traffic starts; on errors the handler forgets to delete its SessionRecord from a Map`);
  await service.request('startLeak', { perTick, everyMs: 100 });
  let refused = false;
  const onEvent = (name, payload) => {
    if (name !== 'rule' || payload.firing.rule !== 'heap-leaking') return;
    const { firing, captures } = payload;
    say(
      `${yellow('rule')} ${firing.rule}: heap growing ${mb(firing.observed)}/min (> ${mb(firing.threshold)}/min for ${ms(firing.aboveForMs)})`,
    );
    result.growthPerMin ??= firing.observed;
    if (captures.heapSnapshot) {
      const snap = captures.heapSnapshot;
      say(
        `    heap snapshot ${result.snapshots.length + 1}: ${rel(snap.file)} (${mb(snap.bytes)}, paused the service ${ms(snap.pauseMs)})`,
      );
      result.snapshots.push(snap.file);
    }
    for (const why of captures.notTaken || []) {
      say(dim(`    not taken: ${why}`));
      if (/budget/.test(why)) refused = true;
    }
  };
  const { timedOut } = await followCase(
    service.inbox,
    onEvent,
    () => result.snapshots.length >= 3 || refused,
    args.fast ? 45_000 : 60_000,
  );
  const { entries } = await service.request('stopLeak');
  say(`[demo] traffic stopped with ${entries} entries left in the Map`);
  if (timedOut) say(yellow('(fewer than three snapshots within the time limit)'));

  if (result.snapshots.length >= 2) {
    // Three snapshots: what was allocated between the first two and is still alive in the last.
    const files =
      result.snapshots.length === 2
        ? result.snapshots
        : [result.snapshots[0], result.snapshots[1], result.snapshots.at(-1)];
    say(`$ sysprobe heap diff ${files.map((f) => path.basename(f)).join(' ')} --json`);
    try {
      const diff = await heapDiff(files);
      const diffFile = path.join(summary.dumpDir, 'heap-diff.json');
      fs.writeFileSync(diffFile, JSON.stringify(diff, null, 2));
      result.evidence.push(diffFile);
      const grew = diff.constructors.filter((c) => c.countDelta > 0).slice(0, 3);
      say(`    more objects: ${grew.map((c) => `${c.name} +${c.countDelta}`).join(', ')}`);
      const leak = diff.leaks[0];
      if (leak) {
        say(`${red('leak')}: ${bold(leak.constructor)} × ${leak.count}, ${mb(leak.retainedSize)} retained`);
        say(`    retained by: ${leak.retainerPath}`);
      }
      result.diff = {
        file: diffFile,
        growing: diff.constructors.slice(0, 5).map((c) => c.name),
        leakingConstructor: leak && leak.constructor,
        retainerPath: leak && leak.retainerPath,
        count: leak && leak.count,
      };
    } catch (err) {
      say(red(`heap diff failed: ${err.message}`));
      result.diff = { error: err.message };
    }
  }

  const max = 100;
  say(`[demo] the fix: the same handler on probe.cache('sessions', { max: ${max} })`);
  await service.request('startFixed', { perTick, everyMs: 100, max });
  // Until the cache has been full for a while: it stays at its limit, the oldest entries go.
  const until = Date.now() + 15_000;
  for (let full = 0; full < 2 && Date.now() < until;) {
    await sleep(1000);
    const stats = await service.request('fixedStats');
    say(`cache sessions: ${stats.size} entries, ${stats.evictions} evicted`);
    if (stats.evictions > 0) full += 1;
  }
  const stats = await service.request('stopFixed');
  result.fix = { max, size: stats.size, evictions: stats.evictions };
  result.evidence.push(...result.snapshots);
  result.detected = Boolean(
    result.growthPerMin && result.snapshots.length >= 2 && result.diff && result.diff.leakingConstructor,
  );
}

// ---------------------------------------------------------------------------------------------
// The end: incident reports, and the summary.

/** The incident folders: from `'incident'` events, and on disk under <dumpDir>/incidents. */
function incidentDirs(service, dumpDir) {
  const fromEvents = service.inbox.events
    .filter((m) => m.type === 'event' && m.name === 'incident')
    .map((m) => m.payload.dir)
    .filter(Boolean);
  const incidentsDir = path.join(dumpDir, 'incidents');
  const fromDisk = fs.existsSync(incidentsDir)
    ? fs
        .readdirSync(incidentsDir)
        .map((d) => path.join(incidentsDir, d))
        .filter((d) => fs.statSync(d).isDirectory())
    : [];
  return [...new Set([...fromEvents, ...fromDisk])];
}

async function reports(service, summary) {
  heading('Incident reports');
  // The service has stopped: every incident is closed, and the leak's has its heap diff (incidents.heapDiff).
  const dirs = incidentDirs(service, summary.dumpDir);
  summary.incidents = dirs;
  for (const dir of dirs) {
    const { code, stdout, stderr } = await run(CLI, ['report', dir], 60_000);
    const file = code === 0 ? stdout.trim().split('\n').pop() || path.join(dir, 'report.html') : undefined;
    if (file && fs.existsSync(file)) {
      const manifest = JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8'));
      say(
        `report ${rel(file)}  ${dim(`(${manifest.rules.join(', ')}${manifest.heapDiff ? '; with the heap diff' : ''})`)}`,
      );
      summary.reports.push({ dir, file, rules: manifest.rules, heapDiff: Boolean(manifest.heapDiff) });
    } else {
      say(red(`sysprobe report ${rel(dir)} failed (${code}): ${stderr.trim().slice(0, 300)}`));
    }
  }
}

function printSummary(summary) {
  heading(`Summary (${((Date.now() - startedAt) / 1000).toFixed(0)} s; captures in ${rel(summary.dumpDir)})`);
  const { stall, network, leak } = summary.cases;
  const mark = (ok, ran) => (!ran ? red('not run') : ok ? green('detected') : red('missed'));
  const rows = [
    [
      '1 stall / CPU',
      mark(stall && stall.detected, stall && true),
      stall
        ? [
            stall.stall &&
              `stall ${ms(stall.stall.durationMs)} in ${stall.stall.stack[0]}${stall.stall.requests.length ? `, blocking ${stall.stall.requests.join(', ')}` : ''}`,
            stall.cpuProfile && `profile top ${stall.cpuProfile.topFunction}`,
            stall.guard && 'guard timed out',
            stall.health.wentUnhealthy && `unhealthy${stall.health.recovered ? ' and back' : ''}`,
          ]
            .filter(Boolean)
            .join('; ')
        : '',
    ],
    [
      '2 network',
      mark(network && network.detected, network && true),
      network
        ? [
            network.ruleFired && `${network.ruleFired.rule} fired`,
            network.socketsAtFiring && `${network.socketsAtFiring.total} sockets as it fired`,
            network.dependency && `dependency ${JSON.stringify(network.dependency.states)}`,
          ]
            .filter(Boolean)
            .join('; ')
        : '',
    ],
    [
      '3 leak',
      mark(leak && leak.detected, leak && true),
      leak
        ? [
            leak.growthPerMin && `growth ${mb(leak.growthPerMin)}/min`,
            `${leak.snapshots.length} snapshots`,
            leak.diff &&
              (leak.diff.leakingConstructor ? `diff: ${leak.diff.leakingConstructor}` : 'diff: no leak named'),
            leak.fix && `bounded cache ${leak.fix.size}/${leak.fix.max}`,
          ]
            .filter(Boolean)
            .join('; ')
        : '',
    ],
  ];
  for (const [name, state, what] of rows)
    process.stdout.write(`  ${name.padEnd(14)} ${state.padEnd(color ? 17 : 8)}  ${what}\n`);
  const evidence = [
    ...(stall ? stall.evidence : []),
    ...(leak ? leak.evidence : []),
    ...summary.reports.map((r) => r.file),
  ];
  process.stdout.write(`\n  evidence:\n${evidence.map((f) => `    ${rel(f)}`).join('\n') || '    (none)'}\n`);
  process.stdout.write(`  sysprobe's log: ${rel(path.join(summary.dumpDir, 'sysprobe.log'))}\n`);
}

async function main() {
  const dumpDir = path.resolve(args.dumpDir || fs.mkdtempSync(path.join(os.tmpdir(), 'sysprobe-demo-')));
  fs.mkdirSync(dumpDir, { recursive: true });
  const summary = { fast: args.fast, dumpDir, cases: {}, incidents: [], reports: [], durationMs: 0 };
  const payments = await startPayments();
  heading(`sysprobe demo${args.fast ? ' (fast)' : ''}: a service with three bugs, and what sysprobe sees`);
  const service = new Service({ DEMO_DUMP_DIR: dumpDir, DEMO_PAYMENTS_URL: payments.url });
  let failed;
  try {
    const ready = await service.waitReady(30_000);
    say(
      `service started (pid ${ready.pid}); sysprobe watches its loop with the ${ready.loopWatch} watch; captures go to ${rel(dumpDir)}`,
    );
    // The service calls its payments dependency all along; case 2 makes the link sick.
    await service.request('startPayments', { everyMs: 250 });
    await caseStall(service, ready, summary);
    await caseNetwork(service, ready, payments, summary);
    await caseLeak(service, summary);
    await service.request('stop', {}, 15_000).catch((err) => say(red(`stopping the service: ${err.message}`)));
    await reports(service, summary);
  } catch (err) {
    failed = err;
    say(red(`demo failed: ${err.stack || err.message}`));
  } finally {
    const kill = setTimeout(() => service.child.kill('SIGKILL'), 10_000);
    await service.exited;
    clearTimeout(kill);
    await payments.proxy.close();
    payments.server.close();
  }
  summary.durationMs = Date.now() - startedAt;
  printSummary(summary);
  if (args.jsonSummary) fs.writeFileSync(args.jsonSummary, `${JSON.stringify(summary, null, 2)}\n`);
  if (failed) process.exitCode = 1;
}

main().catch((err) => {
  process.stderr.write(`${err.stack || err.message}\n`);
  process.exitCode = 1;
});
