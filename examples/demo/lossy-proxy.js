'use strict';
// A slow, lossy TCP proxy for the demo's network case: every chunk from the upstream is held
// back `latencyMs`, and a share `dropRate` of new connections is reset at once. Both can be
// changed while it runs, so the demo can turn a healthy dependency into a sick one.
//
// INTEGRATION: branch net-probes adds examples/lib/lossy-proxy.js (class LossyProxy) for its tests;
// index.js uses that one when it is there, and this file can then go.

const net = require('node:net');

/**
 * @param {{ upstreamPort: number, upstreamHost?: string, latencyMs?: number, dropRate?: number }} options
 * @returns {Promise<{ port: number, set(settings: { latencyMs?: number, dropRate?: number }): void, close(): Promise<void> }>}
 */
async function createLossyProxy({ upstreamPort, upstreamHost = '127.0.0.1', latencyMs = 0, dropRate = 0 }) {
  const settings = { latencyMs, dropRate };
  const open = new Set();
  const server = net.createServer((client) => {
    open.add(client);
    client.on('close', () => open.delete(client));
    client.on('error', () => {});
    if (Math.random() < settings.dropRate) {
      client.resetAndDestroy();
      return;
    }
    const upstream = net.connect(upstreamPort, upstreamHost);
    open.add(upstream);
    // A clean close is passed on after the held-back data (the 'end' handler below); a failure at once.
    upstream.on('close', (hadError) => { open.delete(upstream); if (hadError) client.destroy(); });
    upstream.on('error', () => client.destroy());
    client.on('close', () => upstream.destroy());
    client.on('data', (chunk) => upstream.write(chunk));
    // The delay is on the way back: the caller sees a slow first byte, as from a congested link.
    upstream.on('data', (chunk) => {
      const delay = settings.latencyMs;
      if (delay > 0) setTimeout(() => { if (!client.destroyed) client.write(chunk); }, delay);
      else client.write(chunk);
    });
    upstream.on('end', () => setTimeout(() => client.end(), settings.latencyMs));
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  server.unref();
  return {
    port: server.address().port,
    set(next) { Object.assign(settings, next); },
    close() {
      for (const socket of open) socket.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

module.exports = { createLossyProxy };
