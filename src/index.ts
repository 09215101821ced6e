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
export { SysprobeError, ErrorCode } from './errors.js';
export type { ErrorCodeValue } from './errors.js';
export type { ProbeOptions, ResolvedOptions, SamplerSwitches, Logger } from './options.js';
export type { Sample, ThreadCpu, MainSample, Frame, StallCapture, CpuProfileResult, AllocationProfileResult, RuleCaptures } from './protocol.js';
export type { AllocationSummary, AllocationSite } from './captures/heapprofile.js';
export type { RuleOptions, RuleAction, ResolvedRule } from './rule-options.js';
export type { RuleFiring, RuleValue, RuleCondition } from './worker/rules.js';
export type { LoopWatchKind } from './loop-watch.js';
export type { ProfileSummary, FunctionTime, BusyLoop } from './captures/cpuprofile.js';
export type { GuardOptions, GuardWorkerOptions, JobOverlap } from './agent/guard.js';
export { profileThread } from './captures/thread-profile.js';
export type { ThreadProfileOptions } from './captures/thread-profile.js';
export type { HeapSnapshotResult } from './agent/heap-snapshots.js';
export type { WrittenCapture } from './sink/sink.js';
export type { GcTotal } from './agent/gc.js';
export type { BoundedCache, CacheAlert, CacheOptions, CacheStats, CacheWatcher, WatchableMap, WatchOptions, WatchedCacheStats, SizeOf, Loader } from './agent/caches.js';
export { summarizeHeapSnapshot, diffHeapSnapshots } from './heap/api.js';
export type { HeapAnalysisOptions, HeapAnalysisProgress } from './heap/api.js';
export type { HeapSummary, HeapDiff, ClassTotal, TopRetainer, ConstructorDelta, LeakCandidate } from './heap/analysis.js';
