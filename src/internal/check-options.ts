/**
 * The option checkers every feature's options file uses: one leaf module (it imports only the
 * error model), so option files never import back from the module that assembles them.
 */
import { ErrorCode, SysprobeError } from '../errors.js';

export function invalid(message: string): SysprobeError {
  return new SysprobeError(ErrorCode.INVALID_OPTION, message);
}

export function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'string') return `the string ${JSON.stringify(value.slice(0, 40))}`;
  if (typeof value === 'number') return String(value);
  return `a ${typeof value}`;
}

export function checkNumber(name: string, value: unknown, min: number, max: number, integer = false): number {
  if (
    typeof value !== 'number' ||
    !Number.isFinite(value) ||
    value < min ||
    value > max ||
    (integer && !Number.isInteger(value))
  ) {
    throw invalid(
      `Option ${name} must be ${integer ? 'an integer' : 'a number'} from ${min} to ${max}; got ${describe(value)}.`,
    );
  }
  return value;
}

/** An integer option: `fallback` when not given. */
export function checkInteger(name: string, value: unknown, min: number, max: number, fallback: number): number {
  return value === undefined ? fallback : checkNumber(name, value, min, max, true);
}

/** A TCP port (0 picks a free one), or undefined when not given. */
export function checkPort(name: string, value: unknown): number | undefined {
  return value === undefined ? undefined : checkNumber(name, value, 0, 65_535, true);
}

export function checkHost(name: string, value: unknown): string {
  if (typeof value !== 'string' || value.length === 0 || value.length > 255 || /[\s/\0]/.test(value)) {
    throw invalid(`Option ${name} must be a host name or IP address such as '127.0.0.1'; got ${describe(value)}.`);
  }
  return value;
}

export function checkPlainObject(name: string, value: unknown): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw invalid(`Option ${name} must be an object; got ${describe(value)}.`);
  }
  return value as Record<string, unknown>;
}

export function checkKnownKeys(name: string, value: Record<string, unknown>, known: readonly string[]): void {
  for (const key of Object.keys(value)) {
    if (!known.includes(key)) {
      throw invalid(`Unknown option ${name ? `${name}.${key}` : key}; the known ones are: ${known.join(', ')}.`);
    }
  }
}
