import type { ProbeOptions } from './options.js';
import { invalid } from '../internal/check-options.js';

/** What `sysprobe/register` reads from the environment. */
export interface EnvConfig {
  /** SYSPROBE_DISABLE=1: do nothing at all. */
  readonly disabled: boolean;
  /** Options for start(), only the fields whose variables are set. */
  readonly options: ProbeOptions;
  /** SYSPROBE_LOG_LEVEL, for the logger register creates. */
  readonly logLevel: string | undefined;
  /** SYSPROBE_PROMETHEUS_PORT: serve /metrics on this port (0 picks a free one). */
  readonly prometheusPort: number | undefined;
  /** SYSPROBE_PROMETHEUS_HOST: where that server listens. Default 0.0.0.0, as Prometheus scrapes from outside. */
  readonly prometheusHost: string | undefined;
  /** SYSPROBE_OTLP_ENDPOINT, else OTEL_EXPORTER_OTLP_ENDPOINT: export OTLP/HTTP metrics there. */
  readonly otlpEndpoint: string | undefined;
  /** SYSPROBE_HEALTH_PORT / SYSPROBE_HEALTH_HOST, for the `health` option. */
  readonly health: { port: number; host?: string } | undefined;
}

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

/**
 * Reads the SYSPROBE_* variables once. A variable that is set but unusable throws
 * SYSPROBE_ERR_INVALID_OPTION naming the variable; an empty variable counts as unset.
 * The ranges are start()'s, checked here too so the message names the variable.
 */
export function envConfig(env: NodeJS.ProcessEnv = process.env): EnvConfig {
  const read = (name: string): string | undefined => {
    const value = env[name]?.trim();
    return value ? value : undefined;
  };
  const integer = (name: string, min = 0, max = Number.MAX_SAFE_INTEGER): number | undefined => {
    const raw = read(name);
    if (raw === undefined) return undefined;
    const value = Number(raw);
    if (!/^\d+$/.test(raw) || value < min || value > max) {
      throw invalid(
        `Environment variable ${name} must be an integer from ${min} to ${max}; got ${JSON.stringify(raw.slice(0, 40))}.`,
      );
    }
    return value;
  };
  const url = (name: string): string | undefined => {
    const raw = read(name);
    if (raw === undefined) return undefined;
    let parsed: URL;
    try {
      parsed = new URL(raw);
    } catch {
      throw invalid(`Environment variable ${name} must be an http(s) URL; got ${JSON.stringify(raw.slice(0, 80))}.`);
    }
    if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
      throw invalid(`Environment variable ${name} must be an http(s) URL; got the protocol ${parsed.protocol}.`);
    }
    return raw;
  };

  const host = (name: string): string | undefined => {
    const raw = read(name);
    if (raw !== undefined && (raw.length > 255 || /[\s/\0]/.test(raw))) {
      throw invalid(
        `Environment variable ${name} must be a host name or IP address such as 127.0.0.1; got ${JSON.stringify(raw.slice(0, 80))}.`,
      );
    }
    return raw;
  };

  const disable = read('SYSPROBE_DISABLE');
  const disabled = disable !== undefined && !['0', 'false', 'no'].includes(disable.toLowerCase());
  const logLevel = read('SYSPROBE_LOG_LEVEL');
  if (logLevel !== undefined && !LOG_LEVELS.includes(logLevel)) {
    throw invalid(
      `Environment variable SYSPROBE_LOG_LEVEL must be one of ${LOG_LEVELS.join(', ')}; got ${JSON.stringify(logLevel.slice(0, 40))}.`,
    );
  }

  const options: ProbeOptions = {};
  const serviceName = read('SYSPROBE_SERVICE_NAME') ?? read('OTEL_SERVICE_NAME');
  if (serviceName !== undefined) options.serviceName = serviceName;
  const dumpDir = read('SYSPROBE_DUMP_DIR');
  if (dumpDir !== undefined) options.dumpDir = dumpDir;
  const sampleIntervalMs = integer('SYSPROBE_SAMPLE_INTERVAL_MS', 100, 60_000);
  if (sampleIntervalMs !== undefined) options.sampleIntervalMs = sampleIntervalMs;
  const stallThresholdMs = integer('SYSPROBE_STALL_THRESHOLD_MS', 20, 60_000);
  if (stallThresholdMs !== undefined) options.stallThresholdMs = stallThresholdMs;

  const healthPort = integer('SYSPROBE_HEALTH_PORT', 0, 65535);
  const healthHost = host('SYSPROBE_HEALTH_HOST');
  if (healthHost !== undefined && healthPort === undefined) {
    throw invalid(
      'Environment variable SYSPROBE_HEALTH_HOST is set but SYSPROBE_HEALTH_PORT is not; set the port too.',
    );
  }

  return Object.freeze({
    disabled,
    options,
    logLevel,
    prometheusPort: integer('SYSPROBE_PROMETHEUS_PORT', 0, 65535),
    prometheusHost: host('SYSPROBE_PROMETHEUS_HOST'),
    otlpEndpoint: url('SYSPROBE_OTLP_ENDPOINT') ?? url('OTEL_EXPORTER_OTLP_ENDPOINT'),
    health: healthPort === undefined ? undefined : { port: healthPort, ...(healthHost ? { host: healthHost } : {}) },
  });
}
