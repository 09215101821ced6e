// The ES module door: the same single build, so ESM and CommonJS users share one probe.
import cjs from '../dist/src/index.js';

export const { start, Probe, SysprobeError, ErrorCode, profileThread } = cjs;
export default cjs;
export const { summarizeHeapSnapshot, diffHeapSnapshots } = cjs;
