'use strict';
/**
 * A slow, lossy TCP proxy for tests and demos: forwards each connection to a
 * target, delays every chunk in both directions by `latencyMs`, and drops a
 * fraction of the connections it accepts, either at once (`drop: 'reset'`, the
 * client sees its connection closed) or by holding them silently (`'hang'`, the
 * client waits until its own timeout). Settings can change at run time with
 * set(); they apply to the next chunk and the next connection.
 *
 * The kernel completes the TCP handshake before the proxy sees a connection,
 * so a plain connect probe does not see the latency: requests (the first byte)
 * do.
 *
 *   const proxy = await new LossyProxy({ target: { port: 8080 }, latencyMs: 50 }).listen();
 *   proxy.set({ latencyMs: 500, dropRatio: 0.2 });
 *   await proxy.close();
 */
const net = require('node:net');

class LossyProxy {
  /**
   * @param {{ target: { host?: string, port: number }, latencyMs?: number, dropRatio?: number,
   *   drop?: 'reset' | 'hang', random?: () => number }} options
   */
  constructor(options) {
    this.target = { host: options.target.host ?? '127.0.0.1', port: options.target.port };
    this.random = options.random ?? Math.random;
    this.latencyMs = 0;
    this.dropRatio = 0;
    this.drop = 'reset';
    this.set(options);
    /** Accepted, forwarded and dropped connections so far. */
    this.stats = { accepted: 0, forwarded: 0, dropped: 0 };
    this.sockets = new Set();
    this.server = net.createServer((client) => this.#accept(client));
  }

  /** Changes the latency, drop ratio or drop mode from now on. */
  set({ latencyMs = this.latencyMs, dropRatio = this.dropRatio, drop = this.drop } = {}) {
    if (!(latencyMs >= 0)) throw new RangeError(`latencyMs must be >= 0; got ${latencyMs}`);
    if (!(dropRatio >= 0 && dropRatio <= 1)) throw new RangeError(`dropRatio must be from 0 to 1; got ${dropRatio}`);
    if (drop !== 'reset' && drop !== 'hang') throw new RangeError(`drop must be 'reset' or 'hang'; got ${drop}`);
    Object.assign(this, { latencyMs, dropRatio, drop });
    return this;
  }

  /** Listens on `host:port` (default: a free loopback port); resolves with the proxy. */
  listen(port = 0, host = '127.0.0.1') {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        resolve(this);
      });
    });
  }

  get port() {
    return this.server.address().port;
  }

  /** Stops listening and destroys every connection it holds. */
  close() {
    for (const socket of this.sockets) socket.destroy();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  #keep(socket) {
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
    socket.on('error', () => socket.destroy());
  }

  #accept(client) {
    this.stats.accepted++;
    this.#keep(client);
    if (this.random() < this.dropRatio) {
      this.stats.dropped++;
      if (this.drop === 'reset') client.resetAndDestroy();
      else client.pause(); // held: never answered, closed by the client or by close()
      return;
    }
    this.stats.forwarded++;
    const upstream = net.connect(this.target);
    this.#keep(upstream);
    this.#forward(client, upstream);
    this.#forward(upstream, client);
  }

  /** Copies `from` to `to`, each chunk (and the end) `latencyMs` later, in order. */
  #forward(from, to) {
    let lastDueAt = 0;
    let pending = 0;
    const later = (fn) => {
      // Straight through only when nothing is queued, so chunks never overtake each other.
      if (this.latencyMs === 0 && pending === 0) return fn();
      const dueAt = Math.max(Date.now() + this.latencyMs, lastDueAt);
      lastDueAt = dueAt;
      pending++;
      setTimeout(() => {
        pending--;
        fn();
      }, dueAt - Date.now()).unref();
    };
    from.on('data', (chunk) =>
      later(() => {
        if (!to.destroyed) to.write(chunk);
      }),
    );
    from.once('end', () => later(() => to.end()));
    from.once('close', () => later(() => to.destroy()));
  }
}

module.exports = { LossyProxy };
