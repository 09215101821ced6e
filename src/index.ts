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
export { start, Probe } from './agent/probe.js';
export type { StallEvent, RecentOptions, CpuProfileOptions, RuleEvent, Health, AllocationProfileOptions } from './agent/probe.js';
export type { StallRequest, StallQueue } from './stalls/explain.js';
export type { StallCause, StallDiagnosis, ThreadObservation } from './stalls/cause.js';
export { SysprobeError, ErrorCode } from './errors.js';
export type { ErrorCodeValue } from './errors.js';
export type { ProbeOptions, ResolvedOptions, SamplerSwitches, Logger } from './options.js';
export type { Sample, ThreadCpu, MainSample, Frame, StallCapture, CpuProfileResult, AllocationProfileResult, RuleCaptures } from './protocol.js';
export type { AllocationSummary, AllocationSite } from './captures/heapprofile.js';
export type { RuleOptions, RuleAction, ResolvedRule } from './rule-options.js';
export type { RuleFiring, RuleValue, RuleCondition } from './worker/rules.js';
export type { LoopWatchKind } from './loop-watch.js';
export { healthHandler, fastifyHealthHandler } from './health/handler.js';
export type { HealthProvider, FastifyReplyLike } from './health/handler.js';
export type { HealthSource } from './agent/probe.js';
export type { HealthStatus, HealthReason, HealthOptions, HealthThresholds, HealthLevel, BlockedInfo, ResolvedHealthOptions, ResolvedThresholds, HealthThresholdName } from './health/evaluate.js';
export type { ControlOptions, ResolvedControlOptions } from './control/options.js';
export type { ProfileSummary, FunctionTime, BusyLoop, GeneratedPosition } from './captures/cpuprofile.js';
export type { CgroupRuleValue } from './containers/cgroup-rule-values.js';
export type { CgroupValues } from './containers/cgroup-values.js';
export type { EndCause } from './crash/previous-runs.js';
export type { GuardOptions, GuardWorkerOptions, JobOverlap } from './agent/guard.js';
export { profileThread } from './captures/thread-profile.js';
export type { ThreadProfileOptions } from './captures/thread-profile.js';
export type { HeapSnapshotResult } from './agent/heap-snapshots.js';
export type { WrittenCapture } from './sink/sink.js';
export type { GcTotal } from './agent/gc.js';
export type { SocketPicture, RemoteSockets, ListenerSockets, TcpCounters, SocketsSettings } from './samplers/sockets.js';
export type { SocketsOptions } from './samplers/sockets-options.js';
export type { ProbeTargetOptions, ProbeBaselineOptions, ResolvedProbe } from './net/probe-options.js';
export type { ProbeResult, ProbePhases } from './net/probes.js';
export type { ProbeStatus } from './net/probe-book.js';
export type { ProbeRuleValue } from './net/baseline.js';
export type { Dependency } from './agent/dependencies.js';
export type { BoundedCache, CacheAlert, CacheOptions, CacheStats, CacheWatcher, WatchableMap, WatchOptions, WatchedCacheStats, SizeOf, Loader } from './agent/caches.js';
export { incidentLogStream } from './agent/incidents.js';
export type { IncidentEvent, IncidentSummary, IncidentManifest, IncidentTrigger, IncidentCapture } from './agent/incidents.js';
export type { PreviousRunEvent } from './crash/startup.js';
export type { IncidentOptions, ResolvedIncidentOptions } from './incident-options.js';
export { registeredProbe } from './agent/auto-start.js';
export { servePrometheus } from './exporters/prometheus.js';
export type { PrometheusServeOptions, PrometheusServer } from './exporters/prometheus.js';
export { exportOtlp } from './exporters/otlp.js';
export type { OtlpExportOptions, OtlpExport } from './exporters/otlp.js';
export { summarizeHeapSnapshot, diffHeapSnapshots } from './heap/api.js';
export type { HeapAnalysisOptions, HeapAnalysisProgress } from './heap/api.js';
export type { HeapSummary, HeapDiff, ClassTotal, TopRetainer, ConstructorDelta, LeakCandidate } from './heap/analysis.js';
