import pino from 'pino';

/** The part of a pino logger that sysprobe uses. Any pino logger fits. */
export interface Logger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
  child(bindings: Record<string, unknown>): Logger;
}

/** sysprobe's own logger, used when the app passes none: JSON lines on stdout, level from SYSPROBE_LOG_LEVEL. */
export function defaultLogger(): Logger {
  return pino({ name: 'sysprobe', level: process.env.SYSPROBE_LOG_LEVEL ?? 'info' });
}
