import type { MeterProvider } from '@opentelemetry/api';
import { checkInteger, checkKnownKeys, checkPlainObject, invalid } from '../internal/check-options.js';
import { loadPeer, serviceResource } from './peers.js';

type SdkMetrics = typeof import('@opentelemetry/sdk-metrics');
type OtlpHttp = typeof import('@opentelemetry/exporter-metrics-otlp-http');

/** What {@link exportOtlp} accepts. */
export interface OtlpExportOptions {
  /**
   * The OTLP/HTTP base URL, e.g. `http://otel-collector:4318`; metrics go to `<endpoint>/v1/metrics`.
   * Default: `OTEL_EXPORTER_OTLP_ENDPOINT`, else `http://localhost:4318`.
   */
  endpoint?: string;
  /** How often metrics are pushed, ms (100 to 3600000). Default: `OTEL_METRIC_EXPORT_INTERVAL`, else 60000. */
  intervalMs?: number;
  /** Sets `service.name` on the resource. Default: `OTEL_SERVICE_NAME`, else the SDK's default. */
  serviceName?: string;
}

/** A MeterProvider that pushes its metrics over OTLP/HTTP (JSON). */
export interface OtlpExport {
  /** Pass it to `start({ meterProvider })`. */
  readonly meterProvider: MeterProvider;
  /** Where metrics are posted. */
  readonly url: string;
  /** Pushes what has been recorded now, e.g. before exiting. */
  flush(): Promise<void>;
  /** Pushes a last time and shuts the MeterProvider down. */
  close(): Promise<void>;
}

/**
 * Exports OpenTelemetry metrics over OTLP/HTTP to a Collector (or any OTLP receiver): a
 * MeterProvider with a periodic reader and the OTLP/HTTP exporter. The reader's timer is
 * `unref()`ed by the SDK, so it does not keep the process alive.
 *
 * Needs the optional peers `@opentelemetry/sdk-metrics` and `@opentelemetry/exporter-metrics-otlp-http`
 * (`@opentelemetry/resources` for `serviceName`); throws SYSPROBE_ERR_MISSING_PEER without them.
 */
export function exportOtlp(options: OtlpExportOptions = {}): OtlpExport {
  checkKnownKeys('', checkPlainObject('(the options argument)', options), ['endpoint', 'intervalMs', 'serviceName']);
  const { reader, url } = otlpReader(options);
  const { MeterProvider } = loadPeer<SdkMetrics>('@opentelemetry/sdk-metrics', WHY);
  const resource = serviceResource(options.serviceName ?? process.env.OTEL_SERVICE_NAME, WHY);
  const meterProvider = new MeterProvider({ readers: [reader], ...(resource ? { resource } : {}) });
  let closed: Promise<void> | undefined;
  return {
    meterProvider,
    url,
    flush: () => reader.forceFlush(),
    close() {
      closed ??= meterProvider.shutdown();
      return closed;
    },
  };
}

const WHY = 'Exporting metrics over OTLP/HTTP';

/** @internal The periodic OTLP/HTTP reader, for a MeterProvider built elsewhere (register). */
export function otlpReader(options: OtlpExportOptions): {
  reader: InstanceType<SdkMetrics['PeriodicExportingMetricReader']>;
  url: string;
} {
  const fromEnv = options.intervalMs === undefined && Boolean(process.env.OTEL_METRIC_EXPORT_INTERVAL);
  const intervalMs = fromEnv
    ? checkInteger(
        'intervalMs (from the environment variable OTEL_METRIC_EXPORT_INTERVAL)',
        Number(process.env.OTEL_METRIC_EXPORT_INTERVAL),
        100,
        3600_000,
        60_000,
      )
    : checkInteger('intervalMs', options.intervalMs, 100, 3600_000, 60_000);
  const { endpoint = process.env.OTEL_EXPORTER_OTLP_ENDPOINT || 'http://localhost:4318' } = options;
  if (typeof endpoint !== 'string' || !/^https?:\/\//.test(endpoint))
    throw invalid(`Option endpoint must be an http(s) URL; got ${JSON.stringify(String(endpoint).slice(0, 80))}.`);
  const { PeriodicExportingMetricReader } = loadPeer<SdkMetrics>('@opentelemetry/sdk-metrics', WHY);
  const { OTLPMetricExporter } = loadPeer<OtlpHttp>('@opentelemetry/exporter-metrics-otlp-http', WHY);
  // A push must not outlive the interval, nor hold an exiting process for long.
  const timeoutMillis = Math.min(5000, intervalMs);
  const url = `${endpoint.replace(/\/+$/, '')}/v1/metrics`;
  const reader = new PeriodicExportingMetricReader({
    exporter: new OTLPMetricExporter({ url, timeoutMillis }),
    exportIntervalMillis: intervalMs,
    exportTimeoutMillis: timeoutMillis,
  });
  return { reader, url };
}
