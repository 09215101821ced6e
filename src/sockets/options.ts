/** The `sockets` option: what users write and how it is checked at start(). */
import { checkInteger, checkKnownKeys, checkPlainObject, describe, invalid } from '../internal/check-options.js';
import type { SocketsSettings } from './sampler.js';

/** Tuning for the socket sampler; `sockets: true` takes all the defaults. */
export interface SocketsOptions {
  /** How often the worker sweeps this process's sockets, ms (100 to 3600000). Default 10000. */
  intervalMs?: number;
  /** Add per-socket RTT, RTO, cwnd and retransmissions from `ss` (iproute2) when it is installed. Default true. */
  ss?: boolean;
  /** The most remote endpoints listed in `probe.sockets()`, those with the most connections (1 to 10000). Default 20. */
  maxRemotes?: number;
}

const SOCKETS_KEYS = ['intervalMs', 'ss', 'maxRemotes'] as const;

/** Checks the `sockets` option; undefined when the sampler is off. Throws SYSPROBE_ERR_INVALID_OPTION. */
export function resolveSockets(input: unknown): Readonly<SocketsSettings> | undefined {
  if (input === undefined || input === false) return undefined;
  if (input !== true && (typeof input !== 'object' || input === null || Array.isArray(input))) {
    throw invalid(`Option sockets must be true, false or an object; got ${describe(input)}.`);
  }
  const options = input === true ? {} : checkPlainObject('sockets', input);
  checkKnownKeys('sockets', options, SOCKETS_KEYS);
  const { ss = true } = options as SocketsOptions;
  if (typeof ss !== 'boolean') throw invalid(`Option sockets.ss must be true or false; got ${describe(ss)}.`);
  return Object.freeze({
    intervalMs: checkInteger('sockets.intervalMs', options.intervalMs, 100, 3600_000, 10_000),
    ss,
    maxRemotes: checkInteger('sockets.maxRemotes', options.maxRemotes, 1, 10_000, 20),
  });
}
