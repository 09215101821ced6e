import * as http from 'node:http';
import type { MeterProvider } from '@opentelemetry/api';
import { checkHost, checkInteger, checkPlainObject, checkKnownKeys } from '../internal/check-options.js';
import { describeError, ErrorCode, SysprobeError } from '../errors.js';
import { loadPeer, serviceResource } from './peers.js';

type SdkMetrics = typeof import('@opentelemetry/sdk-metrics');
type PrometheusModule = typeof import('@opentelemetry/exporter-prometheus');

/** What {@link servePrometheus} accepts. */
export interface PrometheusServeOptions {
  /** The port of the /metrics server; 0 picks a free one. Default 9464, Prometheus' usual port for OpenTelemetry. */
  port?: number;
  /** The address it listens on. Default `0.0.0.0`, so Prometheus can scrape from another host or pod. */
  host?: string;
  /** Sets `service.name` on the resource (Prometheus shows it in `target_info`). Default: `OTEL_SERVICE_NAME`, else the SDK's default. */
  serviceName?: string;
}

/** A MeterProvider whose metrics are served in the Prometheus text format. */
export interface PrometheusServer {
  /** Pass it to `start({ meterProvider })`; your own instruments can use it too. */
  readonly meterProvider: MeterProvider;
  /** The port actually bound (useful with port 0). */
  readonly port: number;
  /** The address to scrape, e.g. `http://127.0.0.1:9464/metrics`. */
  readonly url: string;
  /** Closes the server and shuts the MeterProvider down. */
  close(): Promise<void>;
}

/**
 * Serves OpenTelemetry metrics for Prometheus to scrape: a MeterProvider with the Prometheus
 * exporter as its reader, and a small HTTP server answering GET /metrics. The server is
 * `unref()`ed: it never keeps the process alive on its own.
 *
 * Needs the optional peers `@opentelemetry/sdk-metrics` and `@opentelemetry/exporter-prometheus`
 * (`@opentelemetry/resources` for `serviceName`); rejects with SYSPROBE_ERR_MISSING_PEER without them,
 * with SYSPROBE_ERR_INVALID_OPTION on a bad port or host, and with SYSPROBE_ERR_LISTEN_FAILED when the
 * host and port cannot be bound (in use, not permitted, a name that does not resolve).
 */
export async function servePrometheus(options: PrometheusServeOptions = {}): Promise<PrometheusServer> {
  checkKnownKeys('', checkPlainObject('(the options argument)', options), ['port', 'host', 'serviceName']);
  const endpoint = prometheusEndpoint(options);
  const { MeterProvider } = loadPeer<SdkMetrics>('@opentelemetry/sdk-metrics', WHY);
  const resource = serviceResource(options.serviceName ?? process.env.OTEL_SERVICE_NAME, WHY);
  const meterProvider = new MeterProvider({ readers: [endpoint.reader], ...(resource ? { resource } : {}) });
  let port: number;
  try {
    port = await endpoint.listen();
  } catch (err) {
    await meterProvider.shutdown();
    throw err;
  }
  let closed: Promise<void> | undefined;
  return {
    meterProvider,
    port,
    url: endpoint.url(),
    close() {
      closed ??= endpoint.close().then(() => meterProvider.shutdown());
      return closed;
    },
  };
}

const WHY = 'Serving metrics to Prometheus';

/** @internal The Prometheus reader and its /metrics server, for a MeterProvider built elsewhere (register). */
export function prometheusEndpoint(options: PrometheusServeOptions): {
  reader: InstanceType<PrometheusModule['PrometheusExporter']>;
  listen(): Promise<number>;
  url(): string;
  /** The URL on the address actually bound (`http://0.0.0.0:9464/metrics` when on all interfaces), for log lines. */
  boundUrl(): string;
  close(): Promise<void>;
} {
  const port = checkInteger('port', options.port, 0, 65535, 9464);
  const host = checkHost('host', options.host ?? '0.0.0.0');
  const { PrometheusExporter } = loadPeer<PrometheusModule>('@opentelemetry/exporter-prometheus', WHY);
  // The exporter's own server treats port 0 as "the default port", so we serve its handler ourselves.
  const reader = new PrometheusExporter({ preventServerStart: true });
  const server = http.createServer((req, res) => {
    if (req.method === 'GET' && req.url?.split('?')[0] === '/metrics') reader.getMetricsRequestHandler(req, res);
    else res.writeHead(404, { 'content-type': 'text/plain' }).end('sysprobe: metrics are at /metrics\n');
  });
  server.requestTimeout = 10_000;
  server.headersTimeout = 5_000;
  const inUrl = (address: string) => (address.includes(':') ? `[${address}]` : address);
  const shown = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : inUrl(host);
  const bound = () => server.address() as { address: string; port: number } | null;
  return {
    reader,
    listen: () =>
      new Promise<number>((resolve, reject) => {
        server.once('error', (err) => {
          // A name that does not resolve fails here too (ENOTFOUND): all of it is "could not listen".
          const { code, message } = describeError(err);
          reject(
            new SysprobeError(
              ErrorCode.LISTEN_FAILED,
              `sysprobe could not serve Prometheus metrics on ${inUrl(host)}:${port} (${code ?? 'Error'}: ${message}); choose another host or port, or 0 for an ephemeral one.`,
              { cause: err },
            ),
          );
        });
        server.listen(port, host, () => {
          server.unref();
          resolve(bound()!.port);
        });
      }),
    url: () => `http://${shown}:${bound()?.port ?? port}/metrics`,
    boundUrl: () => `http://${inUrl(bound()?.address ?? host)}:${bound()?.port ?? port}/metrics`,
    close: () =>
      new Promise<void>((resolve) => {
        if (!server.listening) return resolve();
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
