/**
 * Run by sockets-netns.test.ts inside a fresh network namespace (`unshare -n`, root): takes
 * loopback down under a connection with data in flight, so the kernel retransmits, and prints
 * what the socket sampler saw before and after as one JSON line. Not a test file itself.
 */
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import * as net from 'node:net';
import { start, type SocketPicture } from '../src/index.js';
import { memoryLogger, waitFor } from './helpers.js';

async function main(): Promise<void> {
  execFileSync('ip', ['link', 'set', 'lo', 'up']);
  const probe = await start({ sockets: { intervalMs: 200 }, logger: memoryLogger().logger, defaultRules: false });
  const accepted: net.Socket[] = [];
  const server = net.createServer((s) => accepted.push(s.resume())).listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as net.AddressInfo).port;
  const client = net.connect(port, '127.0.0.1');
  await once(client, 'connect');
  const ours = (p: SocketPicture) => p.byRemote.find((r) => r.port === port);
  const before = await waitFor('a sweep with the connection', async () => {
    const p = await probe.sockets();
    return ours(p) && p.tcp?.rates ? p : undefined;
  });
  const downAt = Date.now();
  // Nothing can be delivered now: every segment of this write waits for a retransmission timer.
  execFileSync('ip', ['link', 'set', 'lo', 'down']);
  client.write(Buffer.alloc(64 * 1024));
  const after = await waitFor(
    'retransmissions in the counters and on the socket',
    async () => {
      const p = await probe.sockets();
      const rates = p.tcp?.rates;
      const socket = ours(p);
      const perSocket = p.ss !== 'ok' || (socket?.retransmits ?? 0) > 0;
      const timedOut = (p.tcp?.timeouts ?? 0) > before.tcp!.timeouts;
      return p.tcp &&
        p.tcp.retransSegs > before.tcp!.retransSegs &&
        rates &&
        rates.retransSegsPerSec > 0 &&
        timedOut &&
        perSocket
        ? p
        : undefined;
    },
    8000,
    100,
  );
  const seenAfterMs = Date.now() - downAt;
  client.destroy();
  for (const socket of accepted) socket.destroy();
  server.close();
  await probe.stop();
  process.stdout.write(`${JSON.stringify({ before, after, seenAfterMs })}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`${String((err as Error)?.stack ?? err)}\n`);
  process.exitCode = 1;
});
