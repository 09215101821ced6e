/** The `control` option: checked once, on the main thread, at start(). */
import { createHash, timingSafeEqual } from 'node:crypto';
import { inspect } from 'node:util';
import {
  checkHost,
  checkKnownKeys,
  checkNumber,
  checkPlainObject,
  checkPort,
  describe,
  invalid,
} from '../internal/check-options.js';

/** The control endpoint (off unless given); see docs/security.md. */
export interface ControlOptions {
  /** The port (0: ephemeral, see `probe.controlAddress()`). Required. */
  port: number;
  /** The address to bind. Default `127.0.0.1`: think twice before exposing it. */
  host?: string;
  /** The bearer token every request must carry, at least 32 characters. Default: env `SYSPROBE_CONTROL_TOKEN`. */
  token?: string;
  /** Requests allowed per minute, all clients together (1 to 6000); a burst of up to a sixth of it. Default 60. */
  ratePerMinute?: number;
}

export interface ResolvedControlOptions {
  readonly port: number;
  readonly host: string;
  readonly token: ControlToken;
  readonly ratePerMinute: number;
}

const REDACTED = '[redacted]';

/**
 * The control token as sysprobe keeps it: only its SHA-256, in a private field, so neither the
 * token nor its digest shows in JSON.stringify, util.inspect, String() or a look at the options.
 * The worker gets a copy of the digest ({@link ControlToken.digest}) to compare against.
 */
export class ControlToken {
  readonly #digest: Buffer;

  constructor(token: string) {
    this.#digest = sha256(token);
  }

  /** A copy of the SHA-256 of the token (what the worker compares a request's token against). */
  digest(): Uint8Array {
    return new Uint8Array(this.#digest);
  }

  toString(): string {
    return REDACTED;
  }

  toJSON(): string {
    return REDACTED;
  }

  [inspect.custom](): string {
    return `ControlToken ${REDACTED}`;
  }
}

function sha256(text: string): Buffer {
  return createHash('sha256').update(text).digest();
}

/** Constant time: both sides are hashed to 32 bytes first, so neither length nor content leaks through timing. */
export function tokenMatches(given: string, expectedDigest: Uint8Array): boolean {
  return expectedDigest.length === 32 && timingSafeEqual(sha256(given), expectedDigest);
}

export const MIN_TOKEN_LENGTH = 32;

/** Throws SYSPROBE_ERR_INVALID_OPTION; `undefined` when the endpoint is off. */
export function resolveControlOptions(
  input: unknown,
  env: NodeJS.ProcessEnv = process.env,
): ResolvedControlOptions | undefined {
  if (input === undefined || input === false) return undefined;
  const options = checkPlainObject('control', input);
  checkKnownKeys('control', options, ['port', 'host', 'token', 'ratePerMinute']);
  const {
    port,
    host = '127.0.0.1',
    token = env.SYSPROBE_CONTROL_TOKEN,
    ratePerMinute = 60,
  } = options as Partial<ControlOptions>;
  if (port === undefined) throw invalid('Option control.port is required (0 picks an ephemeral port).');
  if (
    typeof token !== 'string' ||
    token.length < MIN_TOKEN_LENGTH ||
    token.length > 1024 ||
    /[^\x21-\x7e]/.test(token)
  ) {
    throw invalid(
      `Option control.token (or env SYSPROBE_CONTROL_TOKEN) must be a string of ${MIN_TOKEN_LENGTH} to 1024 printable characters without spaces; got ${token === undefined ? 'nothing' : typeof token === 'string' ? `${token.length} characters` : describe(token)}.`,
    );
  }
  return Object.freeze({
    port: checkPort('control.port', port)!,
    host: checkHost('control.host', host),
    token: new ControlToken(token),
    ratePerMinute: checkNumber('control.ratePerMinute', ratePerMinute, 1, 6000, true),
  });
}
