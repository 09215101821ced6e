'use strict';
// The demo's service: a small "shop" instrumented with sysprobe, run as a child of index.js so
// that its stalls do not block the narrator. It carries the three bugs of the case studies and
// turns each on when the narrator asks (IPC); everything sysprobe reports (events, captures,
// health, samples) is relayed to the narrator as it is, for it to print.
//
// Messages to the narrator: { type: 'ready', healthAddress, ... }, { type: 'event', name, payload },
// { type: 'reply', id, result | error }. Commands from it: { id, cmd, args }.

const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');
const pino = require('pino');
const { start } = require('sysprobe');

const dumpDir = process.env.DEMO_DUMP_DIR;
const paymentsUrl = process.env.DEMO_PAYMENTS_URL; // the lossy proxy in front of the payments service
const MB = 1024 * 1024;

function send(message) {
  if (process.connected) process.send(message);
}

function relay(name, payload) {
  send({ type: 'event', name, payload });
}

// ---------------------------------------------------------------------------------------------
// sysprobe, with windows and thresholds short enough for a demo (minutes in production).

function probeOptions() {
  return {
    serviceName: 'demo-shop',
    // sysprobe's own log lines go to a file, so the terminal shows only the story.
    logger: pino({ level: 'info' }, pino.destination({ dest: path.join(dumpDir, 'sysprobe.log'), sync: true })),
    dumpDir,
    sampleIntervalMs: 200,
    stallThresholdMs: 300,
    capturesPerMinute: 20,
    growthWindowMs: 10_000,
    // Three for the leak's diff, and room for one the service's own start-up growth may take.
    heapSnapshotsPerDay: 5,
    defaultRules: false,
    rules: [
      // A stall over 400 ms: profile the CPU while it lasts, and report unhealthy for 4 s.
      {
        name: 'loop-stalled',
        value: 'eventLoop.lagMaxMs',
        above: 400,
        forMs: 0,
        cooldownMs: 4000,
        actions: ['markUnhealthy', { captureCpuProfile: { durationMs: 1000 } }],
      },
      // Heap growth sustained for 1 s (fitted over a 10 s window): a heap snapshot each time.
      {
        name: 'heap-leaking',
        value: 'memory.heapGrowthPerMin',
        above: 40 * MB,
        forMs: 1000,
        cooldownMs: 2500,
        actions: ['captureHeapSnapshot'],
      },
    ],
    // This process's TCP sockets, swept each second by the worker.
    sockets: { intervalMs: 1000 },
    // The payments service through the proxy; its latency rule fires as `probe-latency:payments`
    // when the recent median is 3× the probe's own baseline for 2 s.
    probes: [
      {
        name: 'payments',
        target: paymentsUrl,
        intervalMs: 250,
        timeoutMs: 2000,
        baseline: { factor: 3, forMs: 2000, windowMs: 15_000, cooldownMs: 120_000 },
      },
    ],
    // GET /health from the probe worker (port 0: any free port), so it answers during a stall.
    health: { port: 0, host: '127.0.0.1' },
    // An incident closes 5 s after its last trigger (the leak rule fires every ~2.5 s, so its
    // snapshots share one incident), and the leak's incident diffs its snapshots.
    incidents: { quietMs: 5000, heapDiff: true },
  };
}

// ---------------------------------------------------------------------------------------------
// Case 1: a background job that sometimes spins in a loop that never converges.

let ledgerPoisoned = 0; // how many of the next runs meet the bad data

/** One pass over the ledger; returns how far the books are from closing. */
function nudgeEntries(entries) {
  for (let i = 0; i < entries.length; i++) entries[i] = (entries[i] * 31 + 7) % 1_000_003;
  return entries.poisoned ? 1 : 0;
}

/** Balances the ledger by nudging entries until the books close; with bad data they never do. */
function reconcileLedger(entries, budgetMs) {
  const giveUpAt = Date.now() + budgetMs;
  let drift = 1;
  while (drift !== 0 && Date.now() < giveUpAt) drift = nudgeEntries(entries);
  return drift;
}

let payoutRuns = 0;

async function settlePayouts(signal) {
  const entries = Array.from({ length: 2000 }, (_, i) => i);
  // Every other run meets the bad data, so each stall's health episode (4 s) ends before the next.
  payoutRuns += 1;
  if (ledgerPoisoned > 0 && payoutRuns % 2 === 0) {
    ledgerPoisoned -= 1;
    entries.poisoned = true;
  }
  // Work in rounds, yielding between them, as a well-behaved job should; a round that never
  // converges holds the event loop for its whole budget.
  for (let round = 0; round < 3; round++) {
    if (signal.aborted) throw signal.reason;
    reconcileLedger(entries, 2500);
    // A timer, not setImmediate: the guard's deadline (an older timer) gets its turn first.
    await new Promise((resolve) => setTimeout(resolve, 0));
  }
  return entries.length;
}

/**
 * The service traces its requests with OpenTelemetry (an AsyncLocalStorage context manager, as the
 * SDK sets up): the handler runs in an active span, whose trace the stall then names.
 */
function tracer() {
  const api = require('@opentelemetry/api');
  const { AsyncLocalStorageContextManager } = require('@opentelemetry/context-async-hooks');
  const { BasicTracerProvider } = require('@opentelemetry/sdk-trace-base');
  api.context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  api.trace.setGlobalTracerProvider(new BasicTracerProvider());
  return api.trace.getTracer('demo-shop');
}

let payoutsTimer;
let payoutsServer;
/** The job runs in a request handler, as a scheduler's or an admin's POST starts it: a stall then names the request. */
function runPayoutsEvery(ms, spans) {
  payoutsServer = http
    .createServer((req, res) => {
      spans.startActiveSpan('POST /payouts/settle', (span) =>
        probe.guard('settle-payouts', settlePayouts, { timeoutMs: 1500, overlap: 'refuse' }).then(
          () => {
            span.end();
            res.end('settled');
          },
          (err) => {
            span.end();
            relay('guard', { job: 'settle-payouts', code: err.code, message: err.message });
            res.statusCode = 503;
            res.end(err.code);
          },
        ),
      );
    })
    .listen(0, '127.0.0.1', () => {
      const { port } = payoutsServer.address();
      payoutsTimer = setInterval(() => {
        http
          .request({ host: '127.0.0.1', port, method: 'POST', path: '/payouts/settle?batch=nightly' }, (res) =>
            res.resume(),
          )
          .on('error', () => {})
          .end();
      }, ms);
    });
}

// ---------------------------------------------------------------------------------------------
// Case 2: the app calls the payments service through the proxy.

let paymentsTimer;
// A pool of kept-alive connections, as a service keeps to a dependency it calls often.
const paymentsAgent = new http.Agent({ keepAlive: true, maxSockets: 4 });
function callPayments() {
  const req = http.get(paymentsUrl, { agent: paymentsAgent, timeout: 1500 }, (res) => res.resume());
  req.on('timeout', () => req.destroy(new Error('timeout')));
  req.on('error', () => {}); // the app retries on its next tick; sysprobe is what watches
}

// ---------------------------------------------------------------------------------------------
// Case 3: a session cache that forgets to evict when the upstream call fails.

class SessionRecord {
  constructor(id) {
    this.id = id;
    this.cart = new Array(3000).fill(id); // ~24 KB
    this.createdAt = Date.now();
  }
}
const sessionCache = new Map();
let requestId = 0;
let leakTimer;

function handleCheckout(cache) {
  const id = requestId++;
  cache.set(id, new SessionRecord(id));
  try {
    if (id % 2 === 1) throw new Error('upstream timed out');
    cache.delete(id);
  } catch {
    // the bug: the error path returns without evicting
  }
}

let boundedCache;
let fixedTimer;

// ---------------------------------------------------------------------------------------------
// Commands from the narrator.

let probe;
let watchTimer;

const commands = {
  async poisonLedger({ runs }) {
    ledgerPoisoned = runs;
    return { runs };
  },
  async health() {
    return probe.health();
  },
  async recent({ sinceMs }) {
    return probe.recent({ sinceMs });
  },
  async startPayments({ everyMs }) {
    paymentsTimer = setInterval(callPayments, everyMs);
    return {};
  },
  async stopPayments() {
    clearInterval(paymentsTimer);
    return {};
  },
  async probeStatus() {
    return probe.probeStatus();
  },
  async sockets() {
    return probe.sockets();
  },
  async dependencies() {
    return probe.dependencies();
  },
  async startLeak({ perTick, everyMs }) {
    leakTimer = setInterval(() => {
      for (let i = 0; i < perTick; i++) handleCheckout(sessionCache);
    }, everyMs);
    return {};
  },
  async stopLeak() {
    clearInterval(leakTimer);
    return { entries: sessionCache.size };
  },
  async startFixed({ perTick, everyMs, max }) {
    // The fix: the same handler on a cache sysprobe bounds; eviction cannot be skipped.
    sessionCache.clear();
    boundedCache = probe.cache('sessions', { max });
    fixedTimer = setInterval(() => {
      for (let i = 0; i < perTick; i++) handleCheckout(boundedCache);
    }, everyMs);
    return {};
  },
  async fixedStats() {
    return boundedCache.stats();
  },
  async stopFixed() {
    clearInterval(fixedTimer);
    return boundedCache.stats();
  },
  async incidents() {
    return probe.incidents();
  },
  async stop() {
    await shutdown();
    setImmediate(() => {
      if (process.connected) process.disconnect();
    });
    return {};
  },
};

async function shutdown() {
  for (const timer of [payoutsTimer, paymentsTimer, leakTimer, fixedTimer, watchTimer]) clearInterval(timer);
  paymentsAgent.destroy();
  payoutsServer?.close();
  if (probe) await probe.stop();
}

// A narrator that went away (crashed, killed) must not leave the service running.
process.on('disconnect', () => {
  void shutdown();
});

process.on('message', async ({ id, cmd, args }) => {
  try {
    const result = await commands[cmd](args ?? {});
    send({ type: 'reply', id, result });
  } catch (err) {
    send({ type: 'reply', id, error: { code: err.code, message: err.message } });
  }
});

async function main() {
  fs.mkdirSync(dumpDir, { recursive: true });
  // Loaded before sysprobe watches: loading modules is start-up work, not one of the demo's bugs.
  const spans = tracer();
  probe = await start(probeOptions());
  for (const name of ['stall', 'rule', 'capture', 'cache', 'incident'])
    probe.on(name, (payload) => relay(name, payload));
  runPayoutsEvery(3000, spans);
  // Any request makes the worker turn the latest readings into samples, so rules see them within
  // a second; the health changes are relayed as probe.health() reports them.
  let lastHealth;
  watchTimer = setInterval(() => {
    probe.recent({ sinceMs: 0 }).catch(() => {});
    const health = probe.health();
    const key = JSON.stringify([health.status, health.healthy, (health.reasons || []).map((r) => r.rule || r.kind)]);
    if (key !== lastHealth) relay('health', health);
    lastHealth = key;
  }, 200);
  send({ type: 'ready', loopWatch: probe.loopWatch, healthAddress: probe.healthAddress(), pid: process.pid });
}

main().catch((err) => {
  send({ type: 'fatal', error: { code: err.code, message: err.message, stack: err.stack } });
  process.exitCode = 1;
});
