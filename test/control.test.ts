import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { ErrorCode, start, type Probe } from '../src/index.js';
import { inspect } from 'node:util';
import { TokenBucket } from '../src/control/server.js';
import { probeInternals } from '../src/probe/internals.js';
import { memoryLogger, tempDir } from './helpers.js';

const TOKEN = 'a'.repeat(20) + 'B0c1D2e3F4g5H6i7J8k9';

interface RawAnswer {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
}

/** Sends bytes exactly as given (no client-side normalisation of the path) and reads one answer. */
function raw(port: number, request: string | Buffer): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', reject);
    socket.on('end', () => {
      const all = Buffer.concat(chunks);
      const split = all.indexOf('\r\n\r\n');
      const head = all.subarray(0, split).toString('latin1').split('\r\n');
      const headers: Record<string, string> = {};
      for (const line of head.slice(1)) {
        const i = line.indexOf(':');
        headers[line.slice(0, i).toLowerCase()] = line.slice(i + 1).trim();
      }
      let body: Buffer = Buffer.from(all.subarray(split + 4));
      if (headers['transfer-encoding'] === 'chunked') body = dechunk(body);
      resolve({ status: Number(head[0]!.split(' ')[1]), headers, body });
    });
    socket.write(request); // no half-close: the server closes after answering (Connection: close)
  });
}

function dechunk(body: Buffer): Buffer {
  const parts: Buffer[] = [];
  let at = 0;
  for (;;) {
    const eol = body.indexOf('\r\n', at);
    const size = parseInt(body.subarray(at, eol).toString(), 16);
    if (!size) return Buffer.concat(parts);
    parts.push(body.subarray(eol + 2, eol + 2 + size));
    at = eol + 2 + size + 2;
  }
}

function req(method: string, target: string, { token = TOKEN as string | null, headers = '', body = '' } = {}): string {
  const auth = token === null ? '' : `Authorization: Bearer ${token}\r\n`;
  const length = body ? `Content-Length: ${Buffer.byteLength(body)}\r\n` : '';
  return `${method} ${target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n${auth}${length}${headers}\r\n${body}`;
}

describe('control endpoint', () => {
  describe('options', () => {
    const logger = memoryLogger().logger;
    it('is off by default', async () => {
      const probe = await start({ logger });
      try {
        assert.equal(probe.controlAddress(), undefined);
      } finally {
        await probe.stop();
      }
    });

    it('refuses to start without a token, or with one under 32 characters', async () => {
      const saved = process.env.SYSPROBE_CONTROL_TOKEN;
      delete process.env.SYSPROBE_CONTROL_TOKEN;
      try {
        for (const control of [
          { port: 0 },
          { port: 0, token: 'short' },
          { port: 0, token: 'x'.repeat(31) },
          { port: 0, token: `${'x'.repeat(31)} y` },
          { token: TOKEN },
        ]) {
          await assert.rejects(
            start({ logger, control: control as { port: number } }),
            (err: { code?: string; message: string }) =>
              err.code === ErrorCode.INVALID_OPTION && /control\./.test(err.message) && !err.message.includes(TOKEN),
          );
        }
        process.env.SYSPROBE_CONTROL_TOKEN = TOKEN;
        const probe = await start({ logger, control: { port: 0 } });
        try {
          assert.equal(probe.controlAddress()!.address, '127.0.0.1', 'loopback unless told otherwise');
        } finally {
          await probe.stop();
        }
      } finally {
        if (saved === undefined) delete process.env.SYSPROBE_CONTROL_TOKEN;
        else process.env.SYSPROBE_CONTROL_TOKEN = saved;
      }
    });
  });

  it('the token is not readable from the probe: no string reachable from it holds the token, and it never prints', async () => {
    const probe = await start({ logger: memoryLogger().logger, control: { port: 0, token: TOKEN } });
    try {
      const parts = probeInternals(probe);
      // Everything reachable through properties, Map and Set entries (no getters run), strings and buffers checked.
      const found: string[] = [];
      const seen = new Set<unknown>();
      const todo: Array<[unknown, string]> = [
        [probe, 'probe'],
        [parts, 'parts'],
      ];
      const needle = Buffer.from(TOKEN);
      while (todo.length > 0 && seen.size < 300_000) {
        const [value, where] = todo.pop()!;
        if (typeof value === 'string') {
          if (value.includes(TOKEN)) found.push(where);
          continue;
        }
        if ((typeof value !== 'object' && typeof value !== 'function') || value === null || seen.has(value)) continue;
        seen.add(value);
        if (ArrayBuffer.isView(value)) {
          if (Buffer.from(value.buffer, value.byteOffset, value.byteLength).includes(needle)) found.push(where);
          continue;
        }
        if (value instanceof Map)
          for (const [k, v] of value) todo.push([k, `${where}.key`], [v, `${where}.get(${String(k).slice(0, 20)})`]);
        if (value instanceof Set) for (const v of value) todo.push([v, `${where}.entry`]);
        for (const key of Reflect.ownKeys(value)) {
          const d = Object.getOwnPropertyDescriptor(value, key);
          if (d && 'value' in d) todo.push([d.value, `${where}.${String(key)}`]);
        }
      }
      assert.deepEqual(found, [], 'no reachable copy of the token');
      const { options } = parts;
      for (const printed of [
        JSON.stringify(options),
        inspect(options, { depth: Infinity, showHidden: true }),
        inspect(probe, { depth: 4 }),
        String(options.control!.token),
        `${options.control!.token}`,
      ])
        assert.ok(!printed.includes(TOKEN), printed.slice(0, 300));
      assert.match(JSON.stringify(options.control), /"token":"\[redacted\]"/);
      assert.match(inspect(options.control), /ControlToken \[redacted\]/);
    } finally {
      await probe.stop();
    }
  });

  it('warns when told to listen beyond loopback', async () => {
    const { logger, lines } = memoryLogger();
    const probe = await start({ logger, control: { port: 0, host: '0.0.0.0', token: TOKEN } });
    try {
      assert.equal(probe.controlAddress()!.address, '0.0.0.0');
      const warning = lines.find(
        (l) => l.msg === 'sysprobe control endpoint listens beyond loopback; see docs/security.md',
      );
      assert.equal(warning?.level, 40);
    } finally {
      await probe.stop();
    }
  });

  describe('as an attacker sees it', () => {
    let probe: Probe;
    let port: number;
    let root: string;
    let dumpDir: string;
    const { logger, lines } = memoryLogger();
    before(async () => {
      root = tempDir('sysprobe-control-');
      dumpDir = path.join(root, 'dumps');
      fs.mkdirSync(dumpDir);
      fs.writeFileSync(path.join(root, 'secret.txt'), 'do not serve');
      // A link named like a capture, pointing out of the directory: must never be followed.
      fs.symlinkSync(
        path.join(root, 'secret.txt'),
        path.join(dumpDir, 'cpu-profile-2026-01-01T000000.000Z-1.cpuprofile'),
      );
      probe = await start({ logger, dumpDir, control: { port: 0, token: TOKEN, ratePerMinute: 6000 } });
      port = probe.controlAddress()!.port;
    });
    after(async () => {
      await probe.stop();
      fs.rmSync(root, { recursive: true, force: true });
    });

    it('401 without a token, with a wrong one, one of another length, or one in the query string', async () => {
      const cases = [
        req('GET', '/captures', { token: null }),
        req('GET', '/captures', { token: TOKEN.slice(0, -1) + 'X' }),
        req('GET', '/captures', { token: TOKEN + 'extra' }),
        req('GET', '/captures', { token: 'x' }),
        req('GET', `/captures?token=${TOKEN}&access_token=${TOKEN}`, { token: null }),
        req('GET', '/captures', {
          token: null,
          headers: `Authorization: Basic ${Buffer.from(`u:${TOKEN}`).toString('base64')}\r\n`,
        }),
        req('GET', '/no-such-route', { token: null }),
      ];
      for (const request of cases) {
        const answer = await raw(port, request);
        assert.equal(answer.status, 401, request.split('\r\n')[0]);
        assert.equal(answer.headers['www-authenticate'], 'Bearer realm="sysprobe"');
      }
      // Each kind of refusal is logged once a minute; repeats are counted into one line (see the flood test in security-flood).
      const refusals = lines.filter((l) => l.msg === 'sysprobe control request refused');
      for (const why of ['missing bearer token', 'wrong token'])
        assert.ok(
          refusals.some((l) => l.why === why),
          `${why} is logged`,
        );
      assert.ok(refusals.every((l) => l.level === 40));
      assert.ok(!JSON.stringify(lines).includes(TOKEN), 'the token is never logged');
    });

    it('413, 414, 431 for oversized bodies, URLs and headers; 400 for malformed requests and JSON', async () => {
      assert.equal((await raw(port, req('POST', '/captures/stack', { body: 'x'.repeat(5000) }))).status, 413);
      assert.equal(
        (
          await raw(
            port,
            `POST /captures/stack HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TOKEN}\r\nTransfer-Encoding: chunked\r\n\r\n${(5000).toString(16)}\r\n${'x'.repeat(5000)}\r\n0\r\n\r\n`,
          )
        ).status,
        413,
        'chunked',
      );
      assert.equal((await raw(port, req('GET', `/captures?${'q'.repeat(3000)}`))).status, 414);
      assert.equal(
        (await raw(port, req('GET', '/captures', { headers: `X-Big: ${'h'.repeat(9000)}\r\n` }))).status,
        431,
      );
      assert.equal((await raw(port, req('POST', '/captures/cpu-profile', { body: '{"durationMs":' }))).status, 400);
      assert.equal((await raw(port, req('POST', '/captures/cpu-profile', { body: '[1]' }))).status, 400);
      assert.equal((await raw(port, req('POST', '/captures/cpu-profile?durationMs=abc'))).status, 400);
      assert.equal((await raw(port, req('POST', '/captures/cpu-profile?durationMs=999999'))).status, 400);
      assert.equal((await raw(port, req('GET', '/samples?last=0'))).status, 400);
      assert.equal((await raw(port, 'GARBAGE\r\n\r\n')).status, 400);
      const refused = lines.filter((l) => l.msg === 'sysprobe control request refused').map((l) => l.status);
      for (const status of [413, 414, 431, 400]) assert.ok(refused.includes(status), `a ${status} is logged`);
    });

    it('404 for unknown routes, 405 for wrong methods', async () => {
      assert.equal((await raw(port, req('GET', '/nope'))).status, 404);
      const wrong = await raw(port, req('GET', '/captures/stack'));
      assert.equal(wrong.status, 405);
      assert.equal(wrong.headers.allow, 'POST');
      assert.equal((await raw(port, req('DELETE', '/captures'))).status, 405);
      assert.equal((await raw(port, req('POST', '/samples'))).status, 405);
    });

    it('404 for path tricks, and a link named like a capture is not followed', async () => {
      const tricks = [
        '/captures/..%2F..%2Fetc%2Fpasswd',
        '/captures/..%252F..%252Fetc%252Fpasswd',
        '/captures/%2Fetc%2Fpasswd',
        '/captures/..%5C..%5Csecret.txt',
        '/captures/..\\secret.txt',
        '/captures/../secret.txt',
        '/captures//etc/passwd',
        '/captures/%2e%2e%2fsecret.txt',
        '/captures/..',
        '/captures/.',
        '/captures/%00',
        '/captures/%E0%A4%A',
        '/captures/cpu-profile-2026-01-01T000000.000Z-1.cpuprofile',
        `/captures/${path.join(root, 'secret.txt')}`,
        '/etc/passwd',
        'http://127.0.0.1/captures/../../secret.txt',
      ];
      for (const trick of tricks) {
        const answer = await raw(port, req('GET', trick));
        assert.equal(answer.status, 404, trick);
        assert.ok(!answer.body.toString().includes('do not serve'), trick);
      }
      const listing = JSON.parse((await raw(port, req('GET', '/captures'))).body.toString()) as {
        captures: Array<{ name: string }>;
      };
      assert.ok(!listing.captures.some((c) => c.name.startsWith('cpu-profile-2026-01-01')), 'the link is not listed');
    });

    it('a CPU profile asked for lands in dumpDir, is listed, and downloads byte-identical', async () => {
      const taken = await raw(port, req('POST', '/captures/cpu-profile?durationMs=100'));
      assert.equal(taken.status, 200, taken.body.toString());
      const result = JSON.parse(taken.body.toString()) as { file: string };
      assert.equal(path.dirname(result.file), dumpDir);
      const name = path.basename(result.file);
      const listing = JSON.parse((await raw(port, req('GET', '/captures'))).body.toString()) as {
        captures: Array<{ name: string; bytes: number }>;
      };
      assert.equal(listing.captures.find((c) => c.name === name)?.bytes, fs.statSync(result.file).size);
      const download = await raw(port, req('GET', `/captures/${name}`));
      assert.equal(download.status, 200);
      assert.equal(download.headers['content-type'], 'application/octet-stream');
      assert.ok(download.body.equals(fs.readFileSync(result.file)), 'byte-identical');
    });

    it('two CPU profiles asked for at once: both 200, the same capture (the second shared)', async () => {
      const [a, b] = await Promise.all([
        raw(port, req('POST', '/captures/cpu-profile?durationMs=800')),
        raw(port, req('POST', '/captures/cpu-profile', { body: '{"durationMs":800}' })),
      ]);
      assert.equal(a.status, 200, a.body.toString());
      assert.equal(b.status, 200, b.body.toString());
      const [ra, rb] = [a, b].map(
        (r) => JSON.parse(r.body.toString()) as { file: string; summary: unknown; shared?: boolean },
      );
      assert.equal(rb!.file, ra!.file);
      assert.deepEqual(rb!.summary, ra!.summary);
      // Which request reached the worker first is the network's choice: exactly one of them is the joiner.
      assert.deepEqual([ra!.shared, rb!.shared].sort(), [true, undefined]);
    });

    it('a heap snapshot and a stack asked for, and the recent samples', async function () {
      this.timeout(60_000);
      const snapshot = await raw(port, req('POST', '/captures/heap-snapshot'));
      assert.equal(snapshot.status, 200, snapshot.body.toString());
      const { file } = JSON.parse(snapshot.body.toString()) as { file: string };
      assert.equal(path.dirname(file), dumpDir);
      const download = await raw(port, req('GET', `/captures/${path.basename(file)}`));
      assert.ok(download.body.equals(fs.readFileSync(file)), 'byte-identical');
      const stack = await raw(port, req('POST', '/captures/stack', { body: '{}' }));
      assert.equal(stack.status, 200, stack.body.toString());
      assert.ok((JSON.parse(stack.body.toString()) as { frames: unknown[] }).frames.length > 0);
      const allocation = await raw(port, req('POST', '/captures/allocation-profile', { body: '{"durationMs":100}' }));
      assert.equal(allocation.status, 200, allocation.body.toString());
      assert.ok(fs.existsSync((JSON.parse(allocation.body.toString()) as { file: string }).file));
      const samples = JSON.parse((await raw(port, req('GET', '/samples?last=2'))).body.toString()) as {
        samples: Array<{ time: number }>;
      };
      assert.ok(samples.samples.length >= 1 && samples.samples.length <= 2);
    });
  });

  describe('flood', () => {
    it('429 with Retry-After once the bucket is empty, for good and bad tokens alike', async () => {
      const probe = await start({
        logger: memoryLogger().logger,
        control: { port: 0, token: TOKEN, ratePerMinute: 12 },
      });
      try {
        const port = probe.controlAddress()!.port;
        const statuses: number[] = [];
        let last: RawAnswer | undefined;
        for (let i = 0; i < 6; i++) {
          last = await raw(port, req('GET', '/samples?last=1', { token: i % 2 ? 'wrong' : TOKEN }));
          statuses.push(last.status);
        }
        // A burst of 12 / 6 = 2, then one every 5 s.
        assert.deepEqual(statuses, [200, 401, 429, 429, 429, 429]);
        assert.ok(Number(last!.headers['retry-after']) >= 1 && Number(last!.headers['retry-after']) <= 5);
      } finally {
        await probe.stop();
      }
    });

    it('the bucket refills at its rate', () => {
      let now = 0;
      const bucket = new TokenBucket(60, 2, () => now);
      assert.ok(bucket.take().ok && bucket.take().ok);
      const refused = bucket.take();
      assert.ok(!refused.ok && Math.abs(refused.retryAfterMs - 1000) < 1e-6);
      now = 1000;
      assert.ok(bucket.take().ok);
    });
  });
});
