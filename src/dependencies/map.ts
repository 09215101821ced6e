/**
 * The dependency map: the remote endpoints this process talks to, seen from
 * Node's diagnostics channels on the main thread. Nothing is patched: a new
 * outgoing connection costs a WeakMap entry and two `once` listeners, a
 * connect a Map update; an http request on a kept-alive socket a property
 * check, an https one a `once('socket')` and a WeakMap lookup
 * (bench/probe-overhead.js measures them). The map holds at most MAX_DEPENDENCIES remotes, the least recently
 * seen go first.
 *
 * Channels: `net.client.socket` (net.connect: http, fetch/undici and raw TCP
 * clients), `http.client.request.start` (adds https, whose TLS sockets do not
 * pass net.connect), `undici:client:connected` (fetch's host names). Host
 * names come from the socket's `lookup` event (the result of dns.lookup) or
 * from the request; probe targets join from the probe worker's results.
 */
import * as dc from 'node:diagnostics_channel';
import type { ClientRequest } from 'node:http';
import type { Socket } from 'node:net';
import type { ProbeStatus } from '../synthetics/book.js';
import type { ProbeResult } from '../synthetics/runner.js';
import type { RemoteSockets } from '../sockets/sampler.js';

/** The most remotes kept; the least recently seen is dropped first. */
export const MAX_DEPENDENCIES = 1000;
/** The most host names kept per remote (one address can serve many names). */
const MAX_HOSTNAMES = 8;

/** One remote endpoint this process talks to (the shape the incidents' manifest carries). */
export interface Dependency {
  remoteAddress: string;
  remotePort: number;
  /** Host names it was reached by (from DNS lookups, requests and probe targets). */
  hostnames: string[];
  /** Outgoing connections the app opened to it since start (the probes' own are not counted). */
  connections: number;
  /** Its open sockets by TCP state, from the socket sampler's latest sweep (option `sockets`); empty without it. */
  states: Record<string, number>;
  /** Bytes sent to it and not yet acknowledged, over its open sockets (option `sockets`). */
  sendQueueBytes?: number;
  /** Segments retransmitted to it over its open sockets' lives, and their smoothed RTT (option `sockets` with `ss`). */
  retransmits?: number;
  rttMsMean?: number;
  /** From the synthetic probes that target it, over their recent runs, ms. */
  latencyMs?: { p50: number; p99: number };
  /** The probes that target it, by name. */
  probes?: string[];
  /** When a connection to it was last opened (or a probe last ran against it), ms since the epoch. */
  lastSeenAt: number;
}

interface Entry {
  remoteAddress: string;
  remotePort: number;
  hostnames: Set<string>;
  connections: number;
  probes: Set<string>;
  lastSeenAt: number;
}

/** A socket seen before it connected. */
const PENDING = 0;

const CHANNELS = ['net.client.socket', 'http.client.request.start', 'undici:client:connected'] as const;

export class DependencyMap {
  readonly #entries = new Map<string, Entry>();
  /** Each socket seen, and its remote's entry once connected. */
  readonly #sockets = new WeakMap<Socket, Entry | typeof PENDING>();
  readonly #max: number;
  readonly #now: () => number;
  readonly #handlers: Record<(typeof CHANNELS)[number], (message: unknown) => void> = {
    'net.client.socket': (message) => this.#track((message as { socket: Socket }).socket, undefined),
    'http.client.request.start': (message) => {
      const { request } = message as { request: ClientRequest & { protocol?: string } };
      // Plain http sockets come through net.client.socket; only TLS sockets need the request.
      if (request.protocol !== 'https:') return;
      // Without an agent the socket already exists; with one it comes from the pool (or a new connection) soon.
      if (request.socket) this.#track(request.socket, request.host);
      else request.once('socket', (socket: Socket) => this.#track(socket, request.host));
    },
    'undici:client:connected': (message) => {
      const { socket, connectParams } = message as { socket: Socket; connectParams?: { hostname?: string } };
      this.#track(socket, connectParams?.hostname);
    },
  };
  #subscribed = false;

  constructor(options: { max?: number; now?: () => number } = {}) {
    this.#max = options.max ?? MAX_DEPENDENCIES;
    this.#now = options.now ?? Date.now;
  }

  start(): void {
    if (this.#subscribed) return;
    this.#subscribed = true;
    for (const name of CHANNELS) dc.subscribe(name, this.#handlers[name]);
  }

  stop(): void {
    if (!this.#subscribed) return;
    this.#subscribed = false;
    for (const name of CHANNELS) dc.unsubscribe(name, this.#handlers[name]);
  }

  /** A probe run: its target joins the map (with the probe's name), its connection is not counted as the app's. */
  noteProbe(result: ProbeResult): void {
    if (result.remoteAddress === undefined || result.remotePort === undefined) return;
    const entry = this.#touch(result.remoteAddress, result.remotePort);
    entry.probes.add(result.name);
    if (result.hostname) addHostname(entry, result.hostname);
  }

  /**
   * The map, most recently seen first, with the probes' latencies and, when the socket sampler
   * runs, each remote's open sockets (`sockets`: its sweep's remotes) joined in.
   */
  entries(probes: readonly ProbeStatus[] = [], sockets: readonly RemoteSockets[] = []): Dependency[] {
    const latency = new Map(probes.filter((p) => p.latencyMs).map((p) => [p.name, p.latencyMs!]));
    const open = new Map(sockets.map((r) => [endpointKey(r.address, r.port), r]));
    return [...this.#entries.values()].reverse().map((e) => {
      const probeLatency = [...e.probes].map((name) => latency.get(name)).find((l) => l !== undefined);
      const live = open.get(endpointKey(e.remoteAddress, e.remotePort));
      return {
        remoteAddress: e.remoteAddress,
        remotePort: e.remotePort,
        hostnames: [...e.hostnames],
        connections: e.connections,
        states: live ? { ...live.states } : {},
        ...(live ? { sendQueueBytes: live.sendQueueBytes } : {}),
        ...(live?.retransmits !== undefined ? { retransmits: live.retransmits } : {}),
        ...(live?.rttMsMean !== undefined ? { rttMsMean: live.rttMsMean } : {}),
        ...(probeLatency ? { latencyMs: { ...probeLatency } } : {}),
        ...(e.probes.size > 0 ? { probes: [...e.probes] } : {}),
        lastSeenAt: e.lastSeenAt,
      };
    });
  }

  /** A socket from one of the channels: counted once, when it connects; later sightings (kept-alive requests) may add a host name. */
  #track(socket: Socket | undefined, hostname: string | undefined): void {
    if (!socket || typeof socket.once !== 'function') return;
    const known = this.#sockets.get(socket);
    if (known !== undefined) {
      // The per-request path: no Map reordering, no strings built.
      if (known === PENDING) return;
      if (hostname && !known.hostnames.has(hostname)) addHostname(known, hostname);
      return;
    }
    if (socket.remoteAddress && socket.remotePort) return this.#connected(socket, hostname);
    this.#sockets.set(socket, PENDING);
    // The lookup event carries the name dns.lookup resolved (none for IP literals).
    socket.once('lookup', (err: Error | null, _address: string, _family: number, host: string) => {
      if (!err && host) hostname ??= host;
    });
    socket.once('connect', () => this.#connected(socket, hostname));
  }

  #connected(socket: Socket, hostname: string | undefined): void {
    const { remoteAddress, remotePort } = socket;
    if (!remoteAddress || !remotePort) return;
    const entry = this.#touch(remoteAddress, remotePort);
    this.#sockets.set(socket, entry);
    entry.connections++;
    if (hostname) addHostname(entry, hostname);
  }

  /** The entry for a remote, moved to the newest end (Map order is the LRU order), created when new. */
  #touch(remoteAddress: string, remotePort: number): Entry {
    const key = endpointKey(remoteAddress, remotePort);
    let entry = this.#entries.get(key);
    if (entry) this.#entries.delete(key);
    else entry = { remoteAddress, remotePort, hostnames: new Set(), connections: 0, probes: new Set(), lastSeenAt: 0 };
    entry.lastSeenAt = this.#now();
    this.#entries.set(key, entry);
    if (this.#entries.size > this.#max) this.#entries.delete(this.#entries.keys().next().value!);
    return entry;
  }
}

function addHostname(entry: Entry, hostname: string): void {
  if (entry.hostnames.size < MAX_HOSTNAMES && hostname !== entry.remoteAddress) entry.hostnames.add(hostname);
}

/** One key for an endpoint however it was written: /proc shows IPv4 peers of dual-stack sockets as `::ffff:a.b.c.d`. */
function endpointKey(address: string, port: number): string {
  return `${address.startsWith('::ffff:') ? address.slice(7) : address}|${port}`;
}
