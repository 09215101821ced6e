/**
 * Runs the socket sampler in the probe worker on its own interval (re-armed after each
 * sweep, so sweeps never overlap) and keeps the latest picture for `probe.sockets()`
 * and the samples' `sockets` summary.
 */
import type { Sample } from '../samples/sample.js';
import { SocketSampler, type SocketPicture, type SocketsSettings } from './sampler.js';

type Log = ConstructorParameters<typeof SocketSampler>[1];

export class SocketWatch {
  readonly #sampler: SocketSampler;
  readonly #intervalMs: number;
  readonly #onError: (err: unknown) => void;
  #latest: SocketPicture | undefined;
  #sweeping: Promise<SocketPicture> | undefined;
  #timer: NodeJS.Timeout | undefined;
  #stopped = false;

  constructor(settings: SocketsSettings, log: Log, onError: (err: unknown) => void) {
    this.#sampler = new SocketSampler(settings, log);
    this.#intervalMs = settings.intervalMs;
    this.#onError = onError;
    void this.#sweep();
  }

  async #sweep(): Promise<void> {
    this.#sweeping = this.#sampler.sweep();
    try {
      this.#latest = await this.#sweeping;
    } catch (err) {
      this.#onError(err); // the sampler does not throw; this is a bug, and the next sweep tries again
    } finally {
      this.#sweeping = undefined;
      if (!this.#stopped) {
        this.#timer = setTimeout(() => void this.#sweep(), this.#intervalMs);
        this.#timer.unref();
      }
    }
  }

  /** The latest picture; the first sweep's, when it has not finished yet. */
  async latest(): Promise<SocketPicture> {
    if (this.#latest) return this.#latest;
    return this.#sweeping ?? this.#sampler.sweep();
  }

  /** A picture as of now (a rule fired): the sweep in progress, or one of its own; the interval's timer is left alone. */
  async fresh(): Promise<SocketPicture> {
    if (this.#sweeping) return this.#sweeping;
    this.#sweeping = this.#sampler.sweep();
    try {
      this.#latest = await this.#sweeping;
      return this.#latest;
    } finally {
      this.#sweeping = undefined;
    }
  }

  /** What goes in each sample (incident reports chart it); undefined until the first sweep, or when sockets cannot be read here. */
  summary(): Sample['sockets'] {
    const picture = this.#latest;
    if (!picture?.supported) return undefined;
    const { tcp } = picture;
    return {
      total: picture.total,
      byState: picture.byState,
      sendQueueBytes: picture.sendQueueBytes,
      recvQueueBytes: picture.recvQueueBytes,
      ...(tcp?.rates ? { retransmitsPerSec: tcp.rates.retransSegsPerSec } : {}),
      acceptQueue: picture.listeners.reduce((n, l) => n + l.acceptQueue, 0),
      ...(tcp
        ? {
            tcp: {
              outSegs: tcp.outSegs,
              retransSegs: tcp.retransSegs,
              timeouts: tcp.timeouts,
              listenOverflows: tcp.listenOverflows,
              listenDrops: tcp.listenDrops,
            },
          }
        : {}),
      ...(picture.retransmitsTotal !== undefined ? { socketRetransmits: picture.retransmitsTotal } : {}),
    };
  }

  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#timer);
  }
}
