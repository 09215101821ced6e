import * as path from 'node:path';
import type { MeterProvider } from '@opentelemetry/api';
import { checkInteger, checkKnownKeys, checkPlainObject, describe, invalid } from '../internal/check-options.js';
import type { Logger } from '../internal/logger.js';
import type { WrittenCapture } from '../sink/sink.js';
import { resolveRules, type ResolvedRule, type RuleOptions } from '../rules/options.js';
import { resolveIncidents, type IncidentOptions, type ResolvedIncidentOptions } from '../incidents/options.js';
import { resolveSockets, type SocketsOptions } from '../sockets/options.js';
import type { SocketsSettings } from '../sockets/sampler.js';
import { resolveProbes, type ProbeTargetOptions, type ResolvedProbe } from '../synthetics/options.js';
import { resolveHealthOptions, type HealthOptions, type ResolvedHealthOptions } from '../health/options.js';
import { resolveControlOptions, type ControlOptions, type ResolvedControlOptions } from '../control/options.js';

/** The samplers that can be switched off one by one. All are on by default. */
export interface SamplerSwitches {
  /** Event-loop delay, utilization and the worker's live lag. */
  eventLoop?: boolean;
  /** Process CPU time and utilization, and load average. */
  cpu?: boolean;
  /** CPU per thread from /proc/self/task (Linux only). */
  threads?: boolean;
  /** Heap (total and per space), RSS, external and array buffers. */
  memory?: boolean;
  /** GC count and duration by kind. */
  gc?: boolean;
  /** Active handles and requests by type. */
  handles?: boolean;
  /** The HTTP server requests in flight, so a stall names the requests it blocked (Node's diagnostics channels). */
  requests?: boolean;
}

/** What `start()` accepts. Every field is optional. */
export interface ProbeOptions {
  /** Names the service in logs and metrics. Default: `OTEL_SERVICE_NAME`, else `unknown_service:node`. */
  serviceName?: string;
  /** How often the worker records a sample, in ms (100 to 60000). Default 1000. */
  sampleIntervalMs?: number;
  /** The event loop counts as stalled when blocked longer than this, in ms (20 to 60000). Default 200. */
  stallThresholdMs?: number;
  /**
   * How stalls are seen. `native` hooks the loop from a small addon built at install and
   * never wakes the main thread; `heartbeat` is a JS timer on the main thread at
   * `min(stallThresholdMs, sampleIntervalMs)`, which costs more CPU at idle. Default `auto`:
   * native when the addon loads, else the heartbeat. `native` fails start() when it cannot load.
   */
  loopWatch?: 'auto' | 'native' | 'heartbeat';
  /** Automatic captures (the stack of each stall) allowed per minute, 0 to 600; 0 turns them off. Default 6. */
  capturesPerMinute?: number;
  /** How far back heap growth is fitted, ms (10000 to 3600000). Default 10 minutes. */
  growthWindowMs?: number;
  /**
   * The most bytes of captures kept in `dumpDir` (oldest go first), and the most one capture may
   * take: a heap snapshot is about twice the heap used, so this bounds the heaps that can be
   * snapshotted. 1 MiB to 1 TiB. Default 4 GiB.
   */
  dumpMaxBytes?: number;
  /**
   * What writes heap snapshots: Node's own `v8.writeHeapSnapshot` (`v8`, the default), or the
   * `heapdump` package (an optional peer dependency; main thread only, as it is unsafe in worker
   * threads). start() fails with SYSPROBE_ERR_UNSUPPORTED when `heapdump` cannot be used.
   */
  heapSnapshotWriter?: 'v8' | 'heapdump';
  /** Heap snapshots allowed in any 24 hours (on demand and from rules), 0 to 100. Default 3. */
  heapSnapshotsPerDay?: number;
  /** Triggers over the sampled values and what they do; see {@link RuleOptions}. Added to the defaults. */
  rules?: RuleOptions[];
  /** The default rules (a CPU profile when the loop stays saturated, or the CPU stays busy). Default true. */
  defaultRules?: boolean;
  /** How much history the flight recorder keeps, in ms (at least one sample). Default 15 minutes. */
  recorderWindowMs?: number;
  /** Where instruments are created. Default: the global OpenTelemetry MeterProvider. */
  meterProvider?: MeterProvider;
  /** A pino logger. Default: sysprobe's own pino logger writing JSON to stdout at `info`. */
  logger?: Logger;
  /** Directory for captures (used by captures and incidents). Default `./sysprobe-dumps`. */
  dumpDir?: string;
  /** Switch samplers off, e.g. `{ threads: false }`. */
  samplers?: SamplerSwitches;
  /**
   * Called on the main thread with each capture once its data file and JSON sidecar are complete
   * in `dumpDir` (heap snapshots, CPU and allocation profiles): the place to ship them elsewhere.
   * The capture does not wait for it; a throw or rejection is logged. The probe also emits `'capture'`.
   */
  onCapture?: (capture: WrittenCapture) => void | Promise<void>;
  /**
   * When a rule fires or the loop stalls, gather the captures, samples and log events of that
   * moment into `<dumpDir>/incidents/<id>/` (see docs/incidents.md). On by default; `false` turns it off.
   */
  incidents?: boolean | IncidentOptions;
  /**
   * This process's TCP sockets and the namespace's TCP counters (Linux), swept by the probe
   * worker on its own interval: `true`, or `{ intervalMs, ss, maxRemotes }`. Off by default.
   * See docs/network.md.
   */
  sockets?: boolean | SocketsOptions;
  /** Synthetic transactions run from the probe worker; see {@link ProbeTargetOptions} and docs/network.md. Default none. */
  probes?: ProbeTargetOptions[];
  /** Keep a map of the remote endpoints this process talks to (`probe.dependencies()`), from Node's diagnostics channels. Default true. */
  dependencies?: boolean;
  /** Health thresholds, and `port` to serve `GET /health` from the probe worker; see docs/health.md. */
  health?: HealthOptions;
  /** The control endpoint (off by default; needs a token); see docs/security.md. */
  control?: ControlOptions;
}

export type { Logger };

/** Options after checking: every field present, frozen. */
export interface ResolvedOptions {
  readonly serviceName: string;
  readonly sampleIntervalMs: number;
  readonly stallThresholdMs: number;
  readonly loopWatch: 'auto' | 'native' | 'heartbeat';
  readonly capturesPerMinute: number;
  readonly rules: readonly ResolvedRule[];
  readonly heapSnapshotsPerDay: number;
  readonly heapSnapshotWriter: 'v8' | 'heapdump';
  readonly dumpMaxBytes: number;
  readonly growthWindowMs: number;
  readonly recorderWindowMs: number;
  readonly meterProvider: MeterProvider | undefined;
  readonly logger: Logger | undefined;
  readonly dumpDir: string;
  readonly samplers: Readonly<Required<SamplerSwitches>>;
  readonly onCapture: ((capture: WrittenCapture) => void | Promise<void>) | undefined;
  readonly incidents: ResolvedIncidentOptions;
  /** The socket sampler's settings; undefined when it is off. */
  readonly sockets: Readonly<SocketsSettings> | undefined;
  readonly probes: readonly ResolvedProbe[];
  readonly dependencies: boolean;
  readonly health: ResolvedHealthOptions;
  readonly control: ResolvedControlOptions | undefined;
}

const LOOP_WATCH_KINDS: readonly unknown[] = ['auto', 'native', 'heartbeat'];
const SAMPLER_NAMES = ['eventLoop', 'cpu', 'threads', 'memory', 'gc', 'handles', 'requests'] as const;
const OPTION_NAMES = [
  'serviceName',
  'sampleIntervalMs',
  'stallThresholdMs',
  'loopWatch',
  'capturesPerMinute',
  'heapSnapshotWriter',
  'heapSnapshotsPerDay',
  'dumpMaxBytes',
  'growthWindowMs',
  'rules',
  'defaultRules',
  'recorderWindowMs',
  'meterProvider',
  'logger',
  'dumpDir',
  'samplers',
  'onCapture',
  'incidents',
  'sockets',
  'probes',
  'dependencies',
  'health',
  'control',
] as const;

function hasFunctions(value: unknown, names: readonly string[]): boolean {
  return (
    typeof value === 'object' &&
    value !== null &&
    names.every((n) => typeof (value as Record<string, unknown>)[n] === 'function')
  );
}

/** Checks the options once, fills defaults, and freezes the result. Throws SYSPROBE_ERR_INVALID_OPTION. */
export function resolveOptions(input: unknown): ResolvedOptions {
  const options = input === undefined ? {} : checkPlainObject('(the options argument)', input);
  checkKnownKeys('', options, OPTION_NAMES);
  const {
    serviceName = process.env.OTEL_SERVICE_NAME || 'unknown_service:node',
    sampleIntervalMs: rawInterval,
    stallThresholdMs: rawThreshold,
    loopWatch = 'auto',
    capturesPerMinute: rawCaptures,
    heapSnapshotsPerDay: rawSnapshots,
    dumpMaxBytes: rawDumpMax,
    growthWindowMs: rawGrowthWindow,
    rules: rawRules,
    defaultRules = true,
    heapSnapshotWriter = 'v8',
    recorderWindowMs: rawWindow,
    meterProvider,
    logger,
    dumpDir = './sysprobe-dumps',
    samplers: rawSamplers = {},
    onCapture,
    incidents: rawIncidents,
    probes: rawProbes,
    dependencies = true,
  } = options as ProbeOptions;
  const sockets = resolveSockets((options as ProbeOptions).sockets);
  const health = resolveHealthOptions((options as ProbeOptions).health);
  const control = resolveControlOptions((options as ProbeOptions).control);

  if (typeof serviceName !== 'string' || serviceName.length === 0 || serviceName.length > 256) {
    throw invalid(
      `Option serviceName must be a non-empty string of at most 256 characters; got ${describe(serviceName)}.`,
    );
  }
  const sampleIntervalMs = checkInteger('sampleIntervalMs', rawInterval, 100, 60_000, 1000);
  const stallThresholdMs = checkInteger('stallThresholdMs', rawThreshold, 20, 60_000, 200);
  if (!LOOP_WATCH_KINDS.includes(loopWatch)) {
    throw invalid(`Option loopWatch must be one of ${LOOP_WATCH_KINDS.join(', ')}; got ${describe(loopWatch)}.`);
  }
  const capturesPerMinute = checkInteger('capturesPerMinute', rawCaptures, 0, 600, 6);
  if (typeof defaultRules !== 'boolean')
    throw invalid(`Option defaultRules must be true or false; got ${describe(defaultRules)}.`);
  const rules = resolveRules(rawRules, defaultRules);
  if (heapSnapshotWriter !== 'v8' && heapSnapshotWriter !== 'heapdump') {
    throw invalid(`Option heapSnapshotWriter must be 'v8' or 'heapdump'; got ${describe(heapSnapshotWriter)}.`);
  }
  const heapSnapshotsPerDay = checkInteger('heapSnapshotsPerDay', rawSnapshots, 0, 100, 3);
  const dumpMaxBytes = checkInteger('dumpMaxBytes', rawDumpMax, 2 ** 20, 2 ** 40, 4 * 2 ** 30);
  const growthWindowMs = checkInteger('growthWindowMs', rawGrowthWindow, 10_000, 3600_000, 10 * 60_000);
  const recorderWindowMs = checkInteger('recorderWindowMs', rawWindow, 1000, 24 * 3600_000, 15 * 60_000);
  if (recorderWindowMs < sampleIntervalMs) {
    throw invalid(
      `Option recorderWindowMs (${recorderWindowMs}) must be at least sampleIntervalMs (${sampleIntervalMs}) so the recorder holds one sample.`,
    );
  }
  if (meterProvider !== undefined && !hasFunctions(meterProvider, ['getMeter'])) {
    throw invalid('Option meterProvider must be an OpenTelemetry MeterProvider (an object with getMeter()).');
  }
  if (logger !== undefined && !hasFunctions(logger, ['debug', 'info', 'warn', 'error', 'child'])) {
    throw invalid('Option logger must be a pino logger (an object with debug, info, warn, error and child methods).');
  }
  if (typeof dumpDir !== 'string' || dumpDir.length === 0 || dumpDir.includes('\0')) {
    throw invalid(`Option dumpDir must be a non-empty path string; got ${describe(dumpDir)}.`);
  }
  if (onCapture !== undefined && typeof onCapture !== 'function')
    throw invalid(`Option onCapture must be a function; got ${describe(onCapture)}.`);
  const samplerInput = checkPlainObject('samplers', rawSamplers);
  checkKnownKeys('samplers', samplerInput, SAMPLER_NAMES);
  const samplers = {} as Required<SamplerSwitches>;
  for (const name of SAMPLER_NAMES) {
    const value = samplerInput[name] ?? true;
    if (typeof value !== 'boolean')
      throw invalid(`Option samplers.${name} must be true or false; got ${describe(value)}.`);
    samplers[name] = value;
  }
  const incidents = resolveIncidents(rawIncidents, recorderWindowMs);
  const probes = resolveProbes(rawProbes);
  if (typeof dependencies !== 'boolean')
    throw invalid(`Option dependencies must be true or false; got ${describe(dependencies)}.`);

  return Object.freeze({
    serviceName,
    sampleIntervalMs,
    stallThresholdMs,
    loopWatch,
    capturesPerMinute,
    rules: Object.freeze(rules),
    heapSnapshotsPerDay,
    heapSnapshotWriter,
    dumpMaxBytes,
    growthWindowMs,
    recorderWindowMs,
    meterProvider,
    logger,
    dumpDir: path.resolve(dumpDir),
    samplers: Object.freeze(samplers),
    onCapture,
    incidents,
    sockets,
    probes: Object.freeze(probes),
    dependencies,
    health,
    control,
  });
}
