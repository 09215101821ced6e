// A service for test/idle-readings.test.ts: sysprobe with the defaults except a short sample interval
// (so the test is short), an HTTP server, and nothing else that wakes the main thread. /state reports
// the heartbeat's period, the age of its newest reading and when each reading was taken, without taking one;
// /recent calls recent().
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { start } from '../src/index.js';
import { probeInternals } from '../src/probe/internals.js';

async function main(): Promise<void> {
  const probe = await start({ serviceName: 'idle-test', sampleIntervalMs: Number(process.argv[2] ?? 250) });
  const { heartbeat } = probeInternals(probe);
  // When each of the heartbeat's readings was taken (its timed ones and refresh()'s), kept here so /state can
  // say afterwards how many fell in a window without any request during it.
  const readingTimes: number[] = [];
  const publish = heartbeat.publish.bind(heartbeat);
  heartbeat.publish = () => {
    readingTimes.push(Date.now());
    publish();
  };
  const server = http.createServer((req, res) => {
    const reply = (body: unknown): void => {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify(body));
    };
    if (req.url === '/state') {
      reply({
        loopWatch: probe.loopWatch,
        periodMs: heartbeat.periodMs,
        latestAgeMs: Date.now() - heartbeat.latest!.time,
        readingTimes,
      });
    } else if (req.url === '/recent') {
      probe.recent().then(
        (samples) => reply({ newestAgeMs: Date.now() - samples.at(-1)!.time }),
        (err: unknown) => reply({ error: String(err) }),
      );
    } else reply({ ok: true });
  });
  server.listen(0, '127.0.0.1', () => {
    console.log(`listening ${(server.address() as AddressInfo).port} ${process.pid}`);
  });
  process.once('SIGTERM', () => {
    server.close();
    void probe.stop();
  });
}

void main();
