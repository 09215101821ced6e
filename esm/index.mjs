// The ES module door: the same single build, so ESM and CommonJS users share one probe.
import cjs from '../dist/src/index.js';

export const { start, Probe, SysprobeError, ErrorCode, profileThread, watchThread } = cjs;
export const { registeredProbe, servePrometheus, exportOtlp } = cjs;
export const { healthHandler, fastifyHealthHandler } = cjs;
export const { incidentLogStream } = cjs;
export const { summarizeHeapSnapshot, diffHeapSnapshots } = cjs;
export default cjs;
