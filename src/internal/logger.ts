import pino from 'pino';
import type { Logger } from '../probe/options.js';

/** sysprobe's own logger, used when the app passes none: JSON lines on stdout, level from SYSPROBE_LOG_LEVEL. */
export function defaultLogger(): Logger {
  return pino({ name: 'sysprobe', level: process.env.SYSPROBE_LOG_LEVEL ?? 'info' });
}
