'use strict';
// The in-flight request table's cost per request: `npm run bench:requests`.
//
// Publishes real IncomingMessage/ServerResponse pairs on Node's http.server.request.start and
// http.server.response.finish channels, as Node's HTTP server does, with the RequestTracker
// subscribed and without (the channels' own cost with nobody listening), in alternating rounds.
// The difference per start/finish pair is what the table adds to each request on the main thread.
// The whole-server view (CPU per request under load) is bench:overhead's
// `--only sysprobe,sysprobe-norequests`.

const dc = require('node:diagnostics_channel');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const path = require('node:path');
const { RequestTracker } = require('../dist/src/stalls/requests.js');

const PAIRS = 100_000;
const BATCH = 500;
const ROUNDS = 7;
const start = dc.channel('http.server.request.start');
const finish = dc.channel('http.server.response.finish');
// Fastify 5's handler start (its own message, built only while someone listens): the route, read from it.
const fastifyStart = dc.channel('tracing:fastify.request.handler:start');

/** Requests as Node's parser leaves them: method, url, raw headers (a typical browser-ish set, one with traceparent). */
function makeRequests(count) {
  const socket = new net.Socket();
  const pairs = [];
  for (let i = 0; i < count; i++) {
    const request = new http.IncomingMessage(socket);
    request.method = i % 5 === 0 ? 'POST' : 'GET';
    request.url = `/api/orders/${i}?page=2&sort=desc`;
    request.rawHeaders = [
      'Host',
      'api.example.com',
      'User-Agent',
      'bench/1.0',
      'Accept',
      '*/*',
      'Accept-Encoding',
      'gzip, deflate',
      'Connection',
      'keep-alive',
      ...(i % 2 === 0 ? ['traceparent', '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01'] : []),
    ];
    const response = new http.ServerResponse(request);
    pairs.push({
      request,
      response,
      fastify: {
        request: { raw: request },
        reply: { raw: response },
        async: false,
        route: { url: '/api/orders/:id', method: request.method },
      },
    });
  }
  return pairs;
}

function run(pairs, withFastify) {
  const t0 = process.hrtime.bigint();
  for (const message of pairs) {
    // Node checks hasSubscribers before publishing; so do we, so "off" costs what it costs in Node.
    if (start.hasSubscribers) start.publish(message);
    if (withFastify && fastifyStart.hasSubscribers) fastifyStart.publish(message.fastify);
    if (finish.hasSubscribers) finish.publish(message);
  }
  return Number(process.hrtime.bigint() - t0) / pairs.length;
}

const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];

/** ns per start/finish pair over `batches` batches of fresh objects (allocated outside the timed part, in small batches so GC noise stays small). */
function measure(batches, withFastify = false) {
  let ns = 0;
  for (let b = 0; b < batches; b++) ns += run(makeRequests(BATCH), withFastify) * BATCH;
  return ns / (batches * BATCH);
}

const tracker = new RequestTracker();
const on = [];
const off = [];
const onFastify = [];
const offFastify = [];
for (let round = 0; round < ROUNDS + 1; round++) {
  tracker.start();
  const withTable = measure(PAIRS / BATCH);
  const withRoute = measure(PAIRS / BATCH, true);
  tracker.stop();
  const without = measure(PAIRS / BATCH);
  const withoutRoute = measure(PAIRS / BATCH, true);
  if (round === 0) continue; // warm-up
  on.push(withTable);
  off.push(without);
  onFastify.push(withRoute);
  offFastify.push(withoutRoute);
}
const result = {
  node: process.version,
  pairs: PAIRS,
  rounds: ROUNDS,
  nsPerPairWithTable: median(on),
  nsPerPairWithout: median(off),
  nsPerPairAdded: median(on.map((t, i) => t - off[i])),
  // With Fastify's handler-start message too: what taking the route adds (Fastify builds the message itself once anyone listens).
  nsPerFastifyPairWithTable: median(onFastify),
  nsPerFastifyRouteAdded: median(onFastify.map((t, i) => t - on[i])),
};
console.log(JSON.stringify(result, null, 2));
fs.writeFileSync(path.join(__dirname, 'results', 'requests.json'), `${JSON.stringify(result, null, 2)}\n`);
