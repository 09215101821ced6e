/**
 * sysprobe: an in-process diagnostics SDK for Node.js services.
 *
 * ```ts
 * import { start } from 'sysprobe';
 * const probe = await start({ serviceName: 'api' });
 * // ...
 * await probe.stop();
 * ```
 * @packageDocumentation
 */
export { start, Probe } from './probe/probe.js';
export type { RecentOptions, CpuProfileOptions, Health, AllocationProfileOptions } from './probe/probe.js';
export type { StallEvent } from './stalls/stall-event.js';
export type { StallRequest, StallQueue } from './stalls/explain.js';
export type { StallCause, StallDiagnosis, ThreadObservation } from './stalls/cause.js';
export { SysprobeError, ErrorCode } from './errors.js';
export type { ErrorCodeValue } from './errors.js';
export type { ProbeOptions, SamplerSwitches, Logger } from './probe/options.js';
export type { Sample, ThreadCpu, MainSample } from './samples/sample.js';
export type { Frame, GeneratedPosition } from './captures/cpuprofile.js';
export type { StallCapture, StallThread } from './stalls/stall.js';
export type { ActiveSpan } from './stalls/active-span.js';
export type { CpuProfileResult, AllocationProfileResult, RuleCaptures, RuleEvent } from './captures/results.js';
export type { AllocationSummary, AllocationSite } from './captures/heapprofile.js';
export type { RuleOptions, RuleAction } from './rules/options.js';
export type { RuleFiring, RuleValue, RuleCondition } from './rules/firing.js';
export type { LoopWatchKind } from './stalls/loop-watch.js';
export { healthHandler, fastifyHealthHandler } from './health/handler.js';
export type { HealthProvider, FastifyReplyLike } from './health/handler.js';
export type { HealthSource } from './probe/probe.js';
export type { HealthStatus, HealthReason, BlockedInfo, BlockedThreadInfo } from './health/evaluate.js';
export type { HealthOptions, HealthThresholds, HealthLevel, HealthThresholdName } from './health/options.js';
export type { ControlOptions } from './control/options.js';
export type { ProfileSummary, FunctionTime, BusyLoop } from './captures/cpuprofile.js';
export type { GuardOptions, GuardWorkerOptions, JobOverlap } from './jobs/guard.js';
export type { CgroupRuleValue } from './containers/cgroup-rule-values.js';
export type { CgroupValues } from './containers/cgroup-values.js';
export type { EndCause } from './crash/previous-runs.js';
export { watchThread } from './stalls/watch-thread.js';
export type { WatchThreadOptions, ThreadWatch } from './stalls/watch-thread.js';
export { profileThread } from './captures/thread-profile.js';
export type { ThreadProfileOptions } from './captures/thread-profile.js';
export type { HeapSnapshotResult } from './heap/snapshots.js';
export type { WrittenCapture } from './sink/sink.js';
export type { GcTotal } from './memory/gc.js';
export type { SocketPicture, RemoteSockets, ListenerSockets, TcpCounters, SocketsSettings } from './sockets/sampler.js';
export type { SocketsOptions } from './sockets/options.js';
export type { ProbeTargetOptions, ProbeBaselineOptions } from './synthetics/options.js';
export type { ProbeResult, ProbePhases } from './synthetics/runner.js';
export type { ProbeStatus } from './synthetics/book.js';
export type { ProbeRuleValue } from './rules/firing.js';
export type { Dependency } from './dependencies/map.js';
export type {
  BoundedCache,
  CacheAlert,
  CacheOptions,
  CacheStats,
  CacheWatcher,
  WatchableMap,
  WatchOptions,
  WatchedCacheStats,
  SizeOf,
  Loader,
} from './caches/caches.js';
export { incidentLogStream } from './incidents/recorder.js';
export type {
  IncidentEvent,
  IncidentSummary,
  IncidentManifest,
  IncidentTrigger,
  IncidentCapture,
} from './incidents/recorder.js';
export type { PreviousRunEvent } from './crash/startup.js';
export type { IncidentOptions } from './incidents/options.js';
export { registeredProbe } from './probe/auto-start.js';
export { servePrometheus } from './metrics/prometheus.js';
export type { PrometheusServeOptions, PrometheusServer } from './metrics/prometheus.js';
export { exportOtlp } from './metrics/otlp.js';
export type { OtlpExportOptions, OtlpExport } from './metrics/otlp.js';
export { summarizeHeapSnapshot, diffHeapSnapshots } from './heap/api.js';
export type { HeapAnalysisOptions, HeapAnalysisProgress } from './heap/api.js';
export type {
  HeapSummary,
  HeapDiff,
  ClassTotal,
  TopRetainer,
  ConstructorDelta,
  LeakCandidate,
} from './heap/analysis.js';
