/**
 * Issue 17, item 9: an unauthenticated flood of the control port must not erase an
 * incident's evidence. Each refusal used to add a warn line to the 1,000-line log ring,
 * so a flood left logs.jsonl holding nothing but "control request refused".
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { start, type IncidentEvent } from '../src/index.js';
import { RefusalLog } from '../src/control/refusal-log.js';
import { memoryLogger, tempDir, waitFor } from './helpers.js';

const TOKEN = 'f'.repeat(40);

describe('security: a refusal flood and the evidence', () => {
  it("3,000 refused control requests during an incident: its logs.jsonl keeps the incident's lines, refusals are counted in a few lines", async function () {
    this.timeout(60_000);
    const dumpDir = tempDir('sysprobe-flood-');
    const { logger } = memoryLogger();
    const probe = await start({
      logger,
      dumpDir,
      sampleIntervalMs: 100,
      stallThresholdMs: 150,
      defaultRules: false,
      incidents: { quietMs: 1500 },
      control: { port: 0, token: TOKEN },
    });
    try {
      const events: IncidentEvent[] = [];
      probe.on('incident', (event: IncidentEvent) => events.push(event));
      const until = Date.now() + 400;
      while (Date.now() < until); // a stall: the incident
      await waitFor('the incident to open', () => events.find((e) => e.phase === 'open'), 10_000);
      const port = probe.controlAddress()!.port;
      const agent = new http.Agent({ keepAlive: true, maxSockets: 20 });
      let answered = 0;
      const one = (i: number) =>
        new Promise<void>((resolve) => {
          const req = http.get(
            {
              host: '127.0.0.1',
              port,
              path: i % 2 ? '/captures' : '/samples',
              agent,
              headers: i % 3 ? { authorization: 'Bearer wrong' } : {},
            },
            (res) => {
              res.resume();
              res.on('end', () => {
                answered += res.statusCode === 401 || res.statusCode === 429 ? 1 : 0;
                resolve();
              });
            },
          );
          req.on('error', () => resolve());
        });
      for (let batch = 0; batch < 3000; batch += 100)
        await Promise.all(Array.from({ length: 100 }, (_, k) => one(batch + k)));
      agent.destroy();
      assert.ok(answered > 2900, `${answered} requests refused`);
      const closed = await waitFor('the incident to close', () => events.find((e) => e.phase === 'closed'), 20_000);
      const logs = fs
        .readFileSync(path.join(closed.dir, 'logs.jsonl'), 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { msg: string });
      const refusals = logs.filter((l) => l.msg.startsWith('sysprobe control request'));
      assert.ok(refusals.length <= 10, `${refusals.length} refusal lines in logs.jsonl`);
      assert.ok(
        logs.some((l) => l.msg === 'sysprobe opened an incident'),
        `the incident's own line is kept; got ${logs
          .map((l) => l.msg)
          .slice(0, 5)
          .join(' | ')}`,
      );
    } finally {
      await probe.stop();
    }
  });

  it('RefusalLog: the first of each kind on its own line, repeats counted into one line when the window ends', () => {
    let now = 0;
    const written: Array<{ msg: string; fields: Record<string, unknown> }> = [];
    const log = new RefusalLog(
      (msg, fields) => written.push({ msg, fields }),
      60_000,
      () => now,
    );
    const request = { method: 'GET', path: '/captures', remote: '127.0.0.1' };
    for (let i = 0; i < 1000; i++) log.refused(401, 'wrong token', request);
    log.refused(429, 'rate limit', request);
    assert.deepEqual(
      written.map((w) => w.fields.why),
      ['wrong token', 'rate limit'],
    );
    now = 60_000;
    log.refused(401, 'wrong token', request); // a new window: the count of the last one first
    assert.equal(written[2]!.msg, 'sysprobe control requests refused (more, counted)');
    assert.deepEqual(written[2]!.fields.byStatus, { 401: 999 });
    assert.equal(written[2]!.fields.count, 999);
    assert.equal(written[3]!.fields.why, 'wrong token');
    log.flush();
    assert.equal(written.length, 4, 'nothing more to count');
  });
});
