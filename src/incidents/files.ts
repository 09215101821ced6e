/**
 * The layout of an incident folder, `<dumpDir>/incidents/<id>/`: written by the incident
 * recorder (src/incidents/recorder.ts), read by `sysprobe report` (src/cli/report.ts), and
 * rotated whole by the file sink (src/sink/file-sink.ts).
 */
export const INCIDENTS_DIR = 'incidents';
/** Present while the incident is open: the sink's rotation never deletes a folder with a fresh one. */
export const OPEN_MARKER = '.open';
export const MANIFEST = 'manifest.json';
export const SAMPLES = 'samples.json';
export const LOGS = 'logs.jsonl';
/** Present when the incident's heap snapshots were diffed (option `incidents.heapDiff`). */
export const HEAP_DIFF = 'heap-diff.json';
