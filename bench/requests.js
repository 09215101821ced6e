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
    pairs.push({ request, response: new http.ServerResponse(request) });
  }
  return pairs;
}

function run(pairs) {
  const t0 = process.hrtime.bigint();
  for (const message of pairs) {
    // Node checks hasSubscribers before publishing; so do we, so "off" costs what it costs in Node.
    if (start.hasSubscribers) start.publish(message);
    if (finish.hasSubscribers) finish.publish(message);
  }
  return Number(process.hrtime.bigint() - t0) / pairs.length;
}

const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];

/** ns per start/finish pair over `batches` batches of fresh objects (allocated outside the timed part, in small batches so GC noise stays small). */
function measure(batches) {
  let ns = 0;
  for (let b = 0; b < batches; b++) ns += run(makeRequests(BATCH)) * BATCH;
  return ns / (batches * BATCH);
}

const tracker = new RequestTracker();
const on = [];
const off = [];
for (let round = 0; round < ROUNDS + 1; round++) {
  tracker.start();
  const withTable = measure(PAIRS / BATCH);
  tracker.stop();
  const without = measure(PAIRS / BATCH);
  if (round === 0) continue; // warm-up
  on.push(withTable);
  off.push(without);
}
const result = {
  node: process.version,
  pairs: PAIRS,
  rounds: ROUNDS,
  nsPerPairWithTable: median(on),
  nsPerPairWithout: median(off),
  nsPerPairAdded: median(on.map((t, i) => t - off[i])),
};
console.log(JSON.stringify(result, null, 2));
fs.writeFileSync(path.join(__dirname, 'results', 'requests.json'), `${JSON.stringify(result, null, 2)}\n`);
