import assert from 'node:assert/strict';
import { resolveOptions } from '../src/probe/options.js';
import { ErrorCode } from '../src/errors.js';
import { start } from '../src/index.js';
import { BaselineRule, type ProbeRun } from '../src/synthetics/baseline.js';
import { DependencyMap } from '../src/dependencies/map.js';

function rejects(probes: unknown, pattern: RegExp): void {
  assert.throws(
    () => resolveOptions({ probes }),
    (err: { code?: string; message: string }) => {
      assert.equal(err.code, ErrorCode.INVALID_OPTION);
      assert.match(err.message, pattern);
      return true;
    },
  );
}

describe('probes option', () => {
  it('fills defaults and names each probe after its target', () => {
    const { probes, dependencies } = resolveOptions({
      probes: [
        { target: 'tcp://127.0.0.1:5432' },
        { name: 'api', target: 'https://api.example/health?x=1', intervalMs: 500 },
      ],
    });
    assert.equal(dependencies, true);
    assert.deepEqual(probes[0], {
      name: 'tcp://127.0.0.1:5432',
      target: 'tcp://127.0.0.1:5432',
      kind: 'tcp',
      host: '127.0.0.1',
      port: 5432,
      path: '',
      intervalMs: 10_000,
      timeoutMs: 5000,
      method: 'GET',
      expectStatus: undefined,
      rejectUnauthorized: true,
      ca: undefined,
      baseline: { factor: 3, forMs: 60_000, windowMs: 600_000, cooldownMs: 300_000 },
    });
    assert.deepEqual(
      [probes[1]?.name, probes[1]?.kind, probes[1]?.host, probes[1]?.port, probes[1]?.path, probes[1]?.intervalMs],
      ['api', 'https', 'api.example', 443, '/health?x=1', 500],
    );
    assert.equal(resolveOptions({ probes: [{ target: 'tcp://[::1]:80', baseline: false }] }).probes[0]?.host, '::1');
    assert.equal(
      resolveOptions({ probes: [{ target: 'tcp://[::1]:80', baseline: false }] }).probes[0]?.baseline,
      false,
    );
  });

  it('rejects bad targets, schemes and numbers with a coded error that names the option', () => {
    rejects({ target: 'tcp://x:1' }, /probes must be an array/);
    rejects([{ target: 'not a url' }], /probes\[0\]\.target is not a valid URL/);
    rejects([{ target: 'ftp://files.example/' }], /unsupported scheme "ftp:"/);
    rejects([{ target: 'tcp://db.example' }], /needs a port for tcp/);
    rejects([{ target: 'tcp://db.example:0' }], /port 0/);
    rejects([{ target: 'http://db.example:99999/' }], /not a valid URL/);
    rejects([{ target: 'tcp://db:1', intervalMs: 50 }], /probes\[0\]\.intervalMs must be an integer from 100/);
    rejects([{ target: 'tcp://db:1', timeoutMs: 0 }], /probes\[0\]\.timeoutMs/);
    rejects([{ target: 'tcp://db:1', method: 'GET' }], /http\(s\) targets only/);
    rejects([{ target: 'http://db/', expectStatus: 99 }], /expectStatus/);
    rejects([{ target: 'http://db/', baseline: { factor: 0.5 } }], /baseline\.factor must be a number from 1\.1/);
    rejects([{ target: 'http://db/', baseline: { forMs: 10 } }], /baseline\.forMs/);
    rejects([{ target: 'http://db/', retries: 3 }], /Unknown option probes\[0\]\.retries/);
    rejects([{ target: 'http://db/' }, { target: 'http://db/' }], /used twice/);
    rejects([{ target: 'https://db/', ca: 'not pem' }], /ca must be PEM/);
    assert.throws(() => resolveOptions({ dependencies: 'yes' }), /dependencies must be true or false/);
  });

  it('fails start() before anything runs', async () => {
    await assert.rejects(start({ probes: [{ target: 'udp://dns:53' }] }), {
      code: ErrorCode.INVALID_OPTION,
      message: /unsupported scheme "udp:"/,
    });
  });
});

const OPTIONS = { factor: 3, forMs: 1000, windowMs: 5000, cooldownMs: 10_000 };

/** Runs every 100 ms from t=100: `latency(t)` ms, or a failure where it returns undefined. */
function feed(rule: BaselineRule, fromMs: number, toMs: number, latency: (t: number) => number | undefined) {
  const firings = [];
  for (let t = fromMs; t <= toMs; t += 100) {
    const ms = latency(t);
    const run: ProbeRun =
      ms === undefined ? { time: t, outcome: 'failure', totalMs: 1 } : { time: t, outcome: 'success', totalMs: ms };
    const firing = rule.observe(run);
    if (firing) firings.push(firing);
  }
  return firings;
}

describe('probe baseline rule', () => {
  it('stays quiet on a steady latency, and on single slow runs', () => {
    const rule = new BaselineRule('api', OPTIONS);
    assert.deepEqual(
      feed(rule, 100, 10_000, (t) => (t % 1000 === 0 ? 200 : 20)),
      [],
    );
    assert.equal(rule.view.baselineMs, 20);
    assert.equal(rule.view.firing, false);
  });

  it('fires once the recent median exceeds factor × the baseline, then rests for the cooldown', () => {
    const rule = new BaselineRule('api', OPTIONS);
    assert.deepEqual(
      feed(rule, 100, 3000, () => 20),
      [],
    );
    const firings = feed(rule, 3100, 4000, () => 100);
    assert.equal(rule.view.firing, true, 'the condition holds while the window is slow');
    firings.push(...feed(rule, 4100, 8000, () => 100));
    assert.equal(firings.length, 1, 'one firing within the cooldown');
    const [firing] = firings;
    assert.equal(firing?.rule, 'probe-latency:api');
    assert.equal(firing?.value, 'probe.latencyMs');
    assert.equal(firing?.threshold, 60);
    assert.equal(firing?.observed, 100);
    // More than half of the 1 s window must be slow: it fires 0.6 s into the slow runs, not at the first.
    assert.ok(firing!.firedAt >= 3500 && firing!.firedAt <= 3700, `fired at ${firing?.firedAt}`);
    // The baseline reaches back only windowMs: by now it has absorbed the slower runs.
    assert.equal(rule.view.firing, false);
    assert.equal(rule.view.baselineMs, 100);
  });

  it('needs a departure of at least 10 ms on a sub-millisecond baseline', () => {
    const rule = new BaselineRule('lo', OPTIONS);
    assert.deepEqual(
      feed(rule, 100, 6000, (t) => (t < 3000 ? 0.3 : 5)),
      [],
      '5 ms is 16× of 0.3 ms but within jitter',
    );
    assert.equal(feed(rule, 6100, 8000, () => 30).length, 1);
  });

  it('fires when most recent runs fail', () => {
    const rule = new BaselineRule('db', OPTIONS);
    feed(rule, 100, 3000, () => 20);
    const [firing] = feed(rule, 3100, 5000, () => undefined);
    assert.equal(firing?.value, 'probe.failureRatio');
    assert.ok(firing!.observed >= 0.5);
  });

  it('does not fire before it has a baseline', () => {
    assert.deepEqual(
      feed(new BaselineRule('new', OPTIONS), 100, 900, () => 500),
      [],
    );
  });
});

describe('dependency map', () => {
  it('keeps at most `max` remotes, dropping the least recently seen', () => {
    let now = 0;
    const map = new DependencyMap({ max: 3, now: () => ++now });
    const run = (port: number) =>
      map.noteProbe({
        name: `p${port}`,
        target: `tcp://10.0.0.1:${port}`,
        time: 0,
        outcome: 'success',
        phases: { total: 1 },
        remoteAddress: '10.0.0.1',
        remotePort: port,
      });
    run(1);
    run(2);
    run(3);
    run(1);
    run(4);
    assert.deepEqual(
      map.entries().map((e) => e.remotePort),
      [4, 1, 3],
      'port 2 was least recently seen',
    );
    assert.deepEqual(map.entries()[0], {
      remoteAddress: '10.0.0.1',
      remotePort: 4,
      hostnames: [],
      connections: 0,
      states: {},
      probes: ['p4'],
      lastSeenAt: 5,
    });
  });
});
