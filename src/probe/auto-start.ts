import { isMainThread } from 'node:worker_threads';
import type { MeterProvider } from '@opentelemetry/api';
import { start, type Probe } from './probe.js';
import { probeInternals } from './internals.js';
import { envConfig } from './env-options.js';
import { defaultLogger } from '../internal/logger.js';
import { loadPeer, serviceResource } from '../metrics/peers.js';
import { prometheusEndpoint } from '../metrics/prometheus.js';
import { otlpReader } from '../metrics/otlp.js';
import { describeError } from '../errors.js';

type SdkMetrics = typeof import('@opentelemetry/sdk-metrics');
type MetricReader = import('@opentelemetry/sdk-metrics').MetricReader;

/** Where the registered probe is kept: one per process, shared by every copy of sysprobe loaded in it. */
const PROBE_KEY = Symbol.for('sysprobe.probe');
const registry = globalThis as { [PROBE_KEY]?: Probe };

/** The probe `sysprobe/register` started, once it runs; undefined before, after it stopped, or when it did not start. */
export function registeredProbe(): Probe | undefined {
  const probe = registry[PROBE_KEY];
  return probe?.running ? probe : undefined;
}

/** One line on stderr: register runs before the app has a logger, and must be heard even when it fails. */
function say(message: string, err?: unknown): void {
  const detail = err === undefined ? '' : `: ${describeError(err).code ?? 'Error'}: ${describeError(err).message}`;
  process.stderr.write(`sysprobe/register: ${message}${detail}\n`);
}

/**
 * What `node --import sysprobe/register` / `node -r sysprobe/register` runs: starts a probe
 * configured by SYSPROBE_* variables, with a Prometheus endpoint and/or OTLP export when asked.
 * Never throws or rejects: any failure is one stderr line and the app runs without sysprobe.
 */
export async function autoStart(env: NodeJS.ProcessEnv = process.env): Promise<Probe | undefined> {
  // Preloads also run in worker threads (inherited execArgv, NODE_OPTIONS), sysprobe's own
  // worker included: one probe, on the main thread, watches the process.
  if (!isMainThread) return undefined;
  const closers: Array<() => Promise<void>> = [];
  const closeAll = () => Promise.allSettled(closers.map((close) => close())).then(() => undefined);
  try {
    const config = envConfig(env);
    if (config.disabled) return undefined;
    const logger = defaultLogger();
    const options = { ...config.options, logger, ...(config.health ? { health: config.health } : {}) };

    const readers: MetricReader[] = [];
    let listen: (() => Promise<number>) | undefined;
    let scrapeUrl: (() => string) | undefined;
    if (config.prometheusPort !== undefined) {
      const endpoint = prometheusEndpoint({ port: config.prometheusPort, host: config.prometheusHost ?? '0.0.0.0' });
      readers.push(endpoint.reader);
      closers.push(endpoint.close);
      listen = endpoint.listen;
      scrapeUrl = endpoint.boundUrl;
    }
    let otlpUrl: string | undefined;
    if (config.otlpEndpoint !== undefined) {
      const { reader, url } = otlpReader({ endpoint: config.otlpEndpoint });
      readers.push(reader);
      otlpUrl = url;
    }
    let meterProvider: MeterProvider | undefined;
    if (readers.length > 0) {
      const why = 'Exporting metrics from sysprobe/register';
      const { MeterProvider } = loadPeer<SdkMetrics>('@opentelemetry/sdk-metrics', why);
      const resource = serviceResource(options.serviceName, why);
      const provider = new MeterProvider({ readers, ...(resource ? { resource } : {}) });
      closers.push(() => provider.shutdown());
      meterProvider = provider;
    }

    if (listen) await listen();
    const probe = await start({ ...options, ...(meterProvider ? { meterProvider } : {}) });
    registry[PROBE_KEY] = probe;
    const health = probe.healthAddress();
    logger.info(
      {
        serviceName: probeInternals(probe).options.serviceName,
        ...(scrapeUrl ? { prometheus: scrapeUrl() } : {}),
        ...(otlpUrl ? { otlp: otlpUrl } : {}),
        ...(health
          ? {
              health: `http://${health.address.includes(':') ? `[${health.address}]` : health.address}:${health.port}/health`,
            }
          : {}),
      },
      'sysprobe registered',
    );

    // Stop when the app is done: beforeExit fires once the loop is empty; stopping (and the last
    // OTLP push, bounded by its timeout) refills it once, and the next beforeExit finds no listener.
    // Signals and process.exit() end the worker with the process.
    process.once('beforeExit', () => {
      void probe.stop().then(closeAll, closeAll);
    });
    return probe;
  } catch (err) {
    say('sysprobe did not start; the app runs without it', err);
    await closeAll();
    return undefined;
  }
}
