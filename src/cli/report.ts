/**
 * `sysprobe report INCIDENT_DIR [--out FILE]`: one self-contained HTML page about an
 * incident (src/incidents/recorder.ts wrote the folder): timelines of the event-loop delay,
 * CPU, heap and sockets with the triggers and captures marked, the stall's stack, a flame
 * graph of the CPU profile, the heap diff and the dependencies when the folder has them,
 * and the log events. Inline CSS, SVG and one small script; no network access to view it
 * (a Content-Security-Policy forbids any). Everything taken from the data is escaped, and
 * every part is bounded, so a large incident still makes a page a browser opens at once.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { displayName, weighProfile } from '../captures/cpuprofile.js';
import type { IncidentManifest } from '../incidents/recorder.js';
import type { Frame } from '../captures/cpuprofile.js';
import type { Sample } from '../samples/sample.js';
import { CliError, ExitCode, type Verb } from './cli-common.js';
import { readBoundedFile, writeFileAtomically } from '../internal/files.js';
import { HEAP_DIFF, LOGS, MANIFEST, SAMPLES } from '../incidents/files.js';
import { readOriginalPositions } from '../sourcemaps/profile-positions.js';
import type { GeneratedPosition } from '../captures/cpuprofile.js';

/** Bounds on what is read: a file past its bound is left out of the page with a note (the manifest is refused). */
const MAX_INPUT_BYTES = 64 * 1024 ** 2;
const MAX_MANIFEST_BYTES = 16 * 1024 ** 2;
/** Bounds on what goes into the page. */
const MAX_POINTS = 1200;
const MAX_FLAME_NODES = 3000;
const MAX_STACK_FRAMES = 100;
const MAX_LOG_LINES = 300;
const MAX_TABLE_ROWS = 100;
const MAX_TEXT = 500;

const USAGE = `usage: sysprobe report INCIDENT_DIR [--out FILE]

Writes one self-contained HTML page about the incident (default INCIDENT_DIR/report.html)
and prints its path.`;

export const verb: Verb = {
  async run(args) {
    let dir: string | undefined;
    let out: string | undefined;
    for (let i = 0; i < args.length; i++) {
      const arg = args[i]!;
      if (arg === '--help' || arg === '-h') {
        process.stdout.write(`${USAGE}\n`);
        return ExitCode.OK;
      }
      if (arg === '--out') {
        out = args[++i];
        if (!out) throw new CliError(ExitCode.USAGE, `--out needs a file name\n\n${USAGE}`);
      } else if (arg.startsWith('-')) {
        throw new CliError(ExitCode.USAGE, `unknown flag ${arg}\n\n${USAGE}`);
      } else if (dir === undefined) {
        dir = arg;
      } else {
        throw new CliError(ExitCode.USAGE, `one incident folder only; got ${dir} and ${arg}\n\n${USAGE}`);
      }
    }
    if (!dir) throw new CliError(ExitCode.USAGE, `missing INCIDENT_DIR\n\n${USAGE}`);
    const file = await writeReport(dir, out);
    process.stdout.write(`${file}\n`);
    return ExitCode.OK;
  },
};

/** Writes the report of the incident in `dir` to `out` (default `dir/report.html`); returns its absolute path. */
export async function writeReport(dir: string, out?: string): Promise<string> {
  const html = await renderReport(dir);
  const file = path.resolve(out ?? path.join(dir, 'report.html'));
  try {
    await writeFileAtomically(file, html);
  } catch (err) {
    throw new CliError(ExitCode.BAD_INPUT, `could not write ${file}: ${(err as Error).message}`);
  }
  return file;
}

/** What the folder holds, read and checked. */
interface Incident {
  dir: string;
  manifest: IncidentManifest;
  samples: Sample[];
  stall:
    | {
        startedAt?: number;
        durationMs?: number;
        frames: Frame[];
        capture?: { how?: string; reason?: string; span?: { traceId?: unknown; spanId?: unknown } };
        cause?: string;
        diagnosis?: { why?: string };
        queued?: { count?: number; usual?: number; windowMs?: number };
        requests?: Array<{ method?: string; path?: string; route?: string; runningMs?: number; traceId?: string }>;
      }
    | undefined;
  /** The profile as V8 wrote it, and its nodes' original positions (source maps) from its sidecar. */
  profile: { file: string; data: unknown; originals: Map<number, GeneratedPosition> } | undefined;
  heapDiff: HeapDiff | undefined;
  logs: string[];
  /** When each capture was taken, for the timeline marks. */
  captureTimes: Array<{ kind: string; at: number }>;
  notes: string[];
}

/** What the report reads of heap-diff.json (HeapDiff in src/heap/analysis.ts); every field may be missing in a damaged file. */
interface HeapDiff {
  files?: string[];
  constructors?: Array<{ name: string; countDelta: number; selfSizeDelta: number; retainedSizeDelta: number }>;
  leaks?: Array<{ constructor: string; count: number; selfSize: number; retainedSize: number; retainerPath: string }>;
}

/** What the report reads of manifest.dependencies (Dependency in src/dependencies/map.ts). */
interface Dependency {
  remoteAddress: string;
  remotePort: number;
  hostnames: string[];
  connections: number;
  states: Record<string, number>;
  retransmits?: number;
  latencyMs?: { p50: number; p99: number };
  lastSeenAt: number;
}

async function readIncident(dir: string): Promise<Incident> {
  const stat = await fs.promises.lstat(dir).catch(() => undefined);
  if (stat?.isSymbolicLink())
    throw new CliError(ExitCode.BAD_INPUT, `${dir} is a symbolic link; give the real path of the incident folder.`);
  if (!stat?.isDirectory())
    throw new CliError(
      ExitCode.BAD_INPUT,
      `${dir} is not a directory; give the path of an incident folder (<dumpDir>/incidents/<id>).`,
    );
  const notes: string[] = [];
  const manifestText = await readBounded(path.join(dir, MANIFEST), MAX_MANIFEST_BYTES, notes);
  if (manifestText === undefined)
    throw new CliError(
      ExitCode.BAD_INPUT,
      `${dir} is not an incident folder: it has no manifest.json${notes.length ? ` (${notes.join(' ')})` : ''}.`,
    );
  let parsed: unknown;
  try {
    parsed = JSON.parse(manifestText);
  } catch (err) {
    throw new CliError(ExitCode.BAD_INPUT, `${path.join(dir, MANIFEST)} is not valid JSON: ${(err as Error).message}`);
  }
  const manifest = checkManifest(parsed, path.join(dir, MANIFEST), notes);
  const json = async <T>(name: string): Promise<T | undefined> => {
    const text = await readBounded(path.join(dir, name), MAX_INPUT_BYTES, notes);
    if (text === undefined) return undefined;
    try {
      return JSON.parse(text) as T;
    } catch {
      notes.push(`${name} is not valid JSON; left out.`);
      return undefined;
    }
  };
  const samples = checkSamples(await json<unknown>(SAMPLES), notes);
  const stall = await json<NonNullable<Incident['stall']>>('stall-stack.json');
  const heapDiff = await json<HeapDiff>(HEAP_DIFF);
  const profileName =
    manifest.captures.find((c) => c.kind === 'cpu-profile')?.file ??
    (await fs.promises.readdir(dir)).find((name) => name.endsWith('.cpuprofile'));
  const profile = profileName
    ? {
        file: profileName,
        data: await json<unknown>(path.basename(profileName)),
        originals: readOriginalPositions(
          // The sink names a sidecar after its capture (FileSink's SIDECAR).
          (await json<{ originalPositions?: unknown }>(`${path.basename(profileName)}.json`))?.originalPositions,
        ),
      }
    : undefined;
  const logs = ((await readBounded(path.join(dir, LOGS), MAX_INPUT_BYTES, notes)) ?? '')
    .split('\n')
    .filter((l) => l.trim())
    .slice(-MAX_LOG_LINES);
  const captureTimes: Incident['captureTimes'] = [];
  for (const capture of manifest.captures) {
    if (capture.kind.endsWith('-sidecar')) {
      const sidecar = await json<{ startedAt?: string }>(path.basename(capture.file));
      const at = sidecar?.startedAt ? Date.parse(sidecar.startedAt) : NaN;
      if (Number.isFinite(at)) captureTimes.push({ kind: capture.kind.replace(/-sidecar$/, ''), at });
    }
  }
  if (stall && typeof stall.startedAt === 'number') captureTimes.push({ kind: 'stall-stack', at: stall.startedAt });
  return {
    dir,
    manifest,
    samples,
    stall: stall !== null && typeof stall === 'object' ? stall : undefined,
    profile,
    heapDiff,
    logs,
    captureTimes,
    notes,
  };
}

/**
 * The file's text, or undefined when it is missing or not read: a link (never followed), not a
 * regular file, or past `maxBytes`; those say why in `notes`.
 */
async function readBounded(file: string, maxBytes: number, notes: string[]): Promise<string | undefined> {
  try {
    return await readBoundedFile(file, maxBytes);
  } catch (err) {
    const { code, message } = err as NodeJS.ErrnoException;
    if (code === 'ENOENT') return undefined;
    notes.push(
      code === 'ELOOP'
        ? `${path.basename(file)} is a symbolic link; not read.`
        : `${path.basename(file)} not read: ${message}.`,
    );
    return undefined;
  }
}

const isFiniteTime = (v: unknown): v is number => typeof v === 'number' && Math.abs(v) <= 8.64e15;
const text = (v: unknown): string =>
  typeof v === 'string' ? v : typeof v === 'number' || typeof v === 'boolean' ? String(v) : '';
const strings = (v: unknown): string[] => (Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : []);

/**
 * The manifest with every field the page reads checked: wrong types are dropped (and noted)
 * instead of crashing the report; without a valid openedAt and triggers it is not a manifest.
 */
function checkManifest(raw: unknown, file: string, notes: string[]): IncidentManifest {
  const m = raw as Record<string, unknown> | null;
  if (
    typeof m !== 'object' ||
    m === null ||
    Array.isArray(m) ||
    !Array.isArray(m.triggers) ||
    !isFiniteTime(m.openedAt)
  ) {
    throw new CliError(ExitCode.BAD_INPUT, `${file} is not an incident manifest (no triggers, or no openedAt time).`);
  }
  const dropped: string[] = [];
  const list = <T>(name: string, value: unknown, check: (item: Record<string, unknown>) => T | undefined): T[] => {
    if (value === undefined) return [];
    if (!Array.isArray(value)) {
      dropped.push(name);
      return [];
    }
    const out = value.flatMap((item) =>
      typeof item === 'object' && item !== null
        ? [check(item as Record<string, unknown>)].filter((x): x is T => x !== undefined)
        : [],
    );
    if (out.length < value.length) dropped.push(`${value.length - out.length} of ${name}`);
    return out;
  };
  const triggers = list('triggers', m.triggers, (t) =>
    isFiniteTime(t.at)
      ? {
          at: t.at,
          rule: text(t.rule),
          value: text(t.value),
          observed: typeof t.observed === 'number' ? t.observed : NaN,
          threshold: typeof t.threshold === 'number' ? t.threshold : NaN,
        }
      : undefined,
  );
  const captures = list('captures', m.captures, (c) =>
    typeof c.kind === 'string' && typeof c.file === 'string'
      ? {
          kind: c.kind,
          file: c.file,
          ...(typeof c.bytes === 'number' && Number.isFinite(c.bytes) ? { bytes: c.bytes } : {}),
        }
      : undefined,
  );
  const traces = list('traces', m.traces, (t) => ({
    rule: text(t.rule),
    traceId: text(t.traceId),
    spanId: text(t.spanId),
  }));
  for (const name of ['rules', 'notTaken', 'logTraceIds'] as const) {
    if (m[name] !== undefined && (!Array.isArray(m[name]) || strings(m[name]).length < (m[name] as unknown[]).length))
      dropped.push(name);
  }
  if (m.closedAt !== undefined && !isFiniteTime(m.closedAt)) dropped.push('closedAt');
  const versions = (typeof m.versions === 'object' && m.versions !== null ? m.versions : {}) as Record<string, unknown>;
  if (dropped.length) notes.push(`manifest.json: ${dropped.join(', ')} had the wrong type and are left out.`);
  return {
    ...(m as unknown as IncidentManifest),
    id: text(m.id),
    rules: strings(m.rules),
    triggers: triggers as IncidentManifest['triggers'],
    openedAt: m.openedAt,
    closedAt: isFiniteTime(m.closedAt) ? m.closedAt : undefined,
    closeReason: text(m.closeReason) || undefined,
    service: text(m.service),
    pid: Number(text(m.pid)) || 0,
    hostname: text(m.hostname),
    versions: { node: text(versions.node), v8: text(versions.v8), sysprobe: text(versions.sysprobe) },
    traces,
    captures: captures as IncidentManifest['captures'],
    notTaken: strings(m.notTaken),
    logTraceIds: strings(m.logTraceIds),
    dependencies: Array.isArray(m.dependencies) ? m.dependencies : undefined,
  };
}

/** The samples with a finite time, in order; the rest are dropped with a note. */
function checkSamples(raw: unknown, notes: string[]): Sample[] {
  if (raw === undefined) return [];
  if (!Array.isArray(raw)) {
    notes.push('samples.json is not an array; the timelines are left out.');
    return [];
  }
  const samples = raw.filter(
    (s): s is Sample => typeof s === 'object' && s !== null && isFiniteTime((s as Sample).time),
  );
  if (samples.length < raw.length)
    notes.push(`samples.json: ${raw.length - samples.length} samples without a valid time are left out.`);
  return samples.sort((a, b) => a.time - b.time);
}

/** The whole page. */
export async function renderReport(dir: string): Promise<string> {
  const incident = await readIncident(dir);
  const { manifest } = incident;
  const nonce = randomBytes(16).toString('base64');
  const title = `Incident ${manifest.id ?? path.basename(dir)}`;
  // A part whose data is damaged in a way the checks above did not foresee is left out with a note; the page still renders.
  const part = (name: string, render: () => string): string => {
    try {
      return render();
    } catch (err) {
      return `<section><h2>${esc(name)}</h2><p class="notes">${esc(`Left out: the data could not be rendered (${(err as Error).message}).`)}</p></section>`;
    }
  };
  const sections = [
    part('Summary', () => summarySection(incident)),
    part('Timelines', () => timelineSection(incident)),
    part('Stall', () => stallSection(incident)),
    part('CPU profile', () => flameSection(incident)),
    part('Heap diff', () => heapDiffSection(incident.heapDiff)),
    part('Dependencies', () => dependencySection(manifest.dependencies as Dependency[] | undefined)),
    part('Captures', () => capturesSection(incident)),
    part('Logs', () => logsSection(incident.logs)),
  ];
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'nonce-${nonce}'; img-src data:">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(title)}</title>
<style>${CSS}</style></head>
<body><h1>${esc(title)}</h1>
${sections.join('\n')}
<div id="hover" class="hover" hidden></div>
<script nonce="${nonce}">${SCRIPT}</script>
</body></html>
`;
}

function summarySection({ manifest, notes }: Incident): string {
  const rows: Array<[string, string]> = [
    ['Rules', (manifest.rules ?? []).join(', ')],
    ['Opened', time(manifest.openedAt)],
    [
      'Closed',
      manifest.closedAt
        ? `${time(manifest.closedAt)} (${manifest.closeReason ?? ''}, after ${duration(manifest.closedAt - manifest.openedAt)})`
        : 'still open',
    ],
    ['Service', String(manifest.service ?? '')],
    ['Host / pid', `${manifest.hostname ?? ''} / ${manifest.pid ?? ''}`],
    [
      'Versions',
      manifest.versions
        ? `node ${manifest.versions.node}, V8 ${manifest.versions.v8}, sysprobe ${manifest.versions.sysprobe}`
        : '',
    ],
    [
      'Traces',
      (manifest.traces ?? []).map((t) => `${t.rule}: trace ${t.traceId} span ${t.spanId}`).join('; ') ||
        'no active span at the triggers',
    ],
    ['Traces in the logs', (manifest.logTraceIds ?? []).join(', ') || 'none'],
  ];
  const triggers = manifest.triggers
    .slice(0, MAX_TABLE_ROWS)
    .map((t) => [time(t.at), t.rule, t.value, num(t.observed), num(t.threshold)]);
  return `<section><h2>Summary</h2>${keyValues(rows)}
<h3>Triggers</h3>${table(['At', 'Rule', 'Value', 'Observed', 'Threshold'], triggers, 'triggers')}
${
  (manifest.notTaken ?? []).length
    ? `<h3>Not taken</h3><ul>${manifest.notTaken
        .slice(0, MAX_TABLE_ROWS)
        .map((n) => `<li>${esc(n)}</li>`)
        .join('')}</ul>`
    : ''
}
${notes.length ? `<ul class="notes">${notes.map((n) => `<li>${esc(n)}</li>`).join('')}</ul>` : ''}</section>`;
}

interface Mark {
  at: number;
  label: string;
  kind: 'trigger' | 'capture';
}

function timelineSection(incident: Incident): string {
  const { samples, manifest } = incident;
  if (samples.length === 0) return '<section><h2>Timelines</h2><p>No samples in this incident.</p></section>';
  const t0 = samples[0]!.time;
  const t1 = Math.max(samples.at(-1)!.time, t0 + 1);
  const marks: Mark[] = [
    ...manifest.triggers.slice(0, MAX_TABLE_ROWS).map((t) => ({
      at: t.at,
      label: `trigger: ${t.rule} (${num(t.observed)} > ${num(t.threshold)})`,
      kind: 'trigger' as const,
    })),
    ...incident.captureTimes.map((c) => ({ at: c.at, label: `capture: ${c.kind}`, kind: 'capture' as const })),
  ];
  const series = (pick: (s: Sample) => number | undefined) =>
    samples.flatMap((s) => {
      const v = pick(s);
      return typeof v === 'number' && Number.isFinite(v) ? [[s.time, v] as [number, number]] : [];
    });
  const MB = 1024 ** 2;
  const charts = [
    chart(
      'chart-delay',
      'Event-loop delay (ms)',
      series((s) => s.eventLoop?.lagMaxMs),
      t0,
      t1,
      marks,
      (v) => `${num(v)} ms`,
    ),
    chart(
      'chart-cpu',
      'CPU (cores busy)',
      series((s) => s.cpu?.utilization),
      t0,
      t1,
      marks,
      (v) => num(v),
    ),
    chart(
      'chart-heap',
      'Heap used (MiB)',
      series((s) => (s.memory ? s.memory.heapUsed / MB : undefined)),
      t0,
      t1,
      marks,
      (v) => bytes(v * MB),
    ),
    chart(
      'chart-sockets',
      'Sockets',
      series((s) => (s as Sample & { sockets?: { total: number } }).sockets?.total),
      t0,
      t1,
      marks,
      (v) => num(v),
    ),
  ];
  return `<section><h2>Timelines</h2><p class="legend"><span class="k-trigger">━ trigger</span> <span class="k-capture">┅ capture</span> · ${esc(time(t0))} to ${esc(time(t1))}</p>${charts.join('\n')}</section>`;
}

/** An SVG line chart of `points`, downsampled to the largest value per pixel bucket so spikes stay. */
function chart(
  id: string,
  title: string,
  points: Array<[number, number]>,
  t0: number,
  t1: number,
  marks: Mark[],
  format: (v: number) => string,
): string {
  const W = 960,
    H = 170,
    L = 70,
    R = 10,
    T = 10,
    B = 24;
  if (points.length === 0)
    return `<figure id="${id}" class="chart"><figcaption>${esc(title)}</figcaption><p class="empty">No values in the samples.</p></figure>`;
  const data = downsample(points, MAX_POINTS);
  const max = Math.max(...data.map((p) => p[1]), 0) * 1.1 || 1;
  const x = (t: number) => L + ((t - t0) / (t1 - t0)) * (W - L - R);
  const y = (v: number) => T + (1 - v / max) * (H - T - B);
  const line = data.map(([t, v], i) => `${i ? 'L' : 'M'}${x(t).toFixed(1)},${y(v).toFixed(1)}`).join('');
  const marksSvg = marks
    .filter((m) => m.at >= t0 && m.at <= t1)
    .map(
      (m) =>
        `<line class="mark ${m.kind}" x1="${x(m.at).toFixed(1)}" x2="${x(m.at).toFixed(1)}" y1="${T}" y2="${H - B}"><title>${esc(`${m.label} at ${time(m.at)}`)}</title></line>`,
    )
    .join('');
  const ticks = [0, 0.25, 0.5, 0.75, 1]
    .map((f) => {
      const t = t0 + f * (t1 - t0);
      return `<text x="${x(t).toFixed(1)}" y="${H - 6}" text-anchor="middle">${esc(clock(t))}</text>`;
    })
    .join('');
  const points$ = data.map(
    ([t, v]) =>
      `<circle cx="${x(t).toFixed(1)}" cy="${y(v).toFixed(1)}" r="6" class="pt"><title>${esc(`${clock(t)}: ${format(v)}`)}</title></circle>`,
  );
  return `<figure id="${id}" class="chart"><figcaption>${esc(title)}</figcaption>
<svg viewBox="0 0 ${W} ${H}" width="100%" role="img" aria-label="${esc(title)}">
<line class="axis" x1="${L}" x2="${W - R}" y1="${H - B}" y2="${H - B}"/><line class="axis" x1="${L}" x2="${L}" y1="${T}" y2="${H - B}"/>
<text x="${L - 6}" y="${T + 10}" text-anchor="end">${esc(format(max))}</text><text x="${L - 6}" y="${H - B}" text-anchor="end">0</text>
${ticks}<path class="line" d="${line}"/>${marksSvg}<g class="pts">${points.length <= 300 ? points$.join('') : ''}</g></svg></figure>`;
}

/** At most `max` points: the largest value of each time bucket (a spike must not vanish). */
function downsample(points: Array<[number, number]>, max: number): Array<[number, number]> {
  if (points.length <= max) return points;
  const out: Array<[number, number]> = [];
  const per = points.length / max;
  for (let b = 0; b < max; b++) {
    let best: [number, number] | undefined;
    for (let i = Math.floor(b * per); i < Math.floor((b + 1) * per); i++)
      if (!best || points[i]![1] > best[1]) best = points[i];
    if (best) out.push(best);
  }
  return out;
}

function stallSection({ stall }: Incident): string {
  if (!stall) return '<section><h2>Stall</h2><p>No stall in this incident.</p></section>';
  const frames = (stall.frames ?? []).slice(0, MAX_STACK_FRAMES);
  const head = `Blocked ${num(stall.durationMs ?? 0)} ms from ${time(stall.startedAt ?? 0)}; stack taken by ${stall.capture?.how ?? 'unknown'}${stall.capture?.reason ? ` (${stall.capture.reason})` : ''}.`;
  const list = frames
    .map(
      (f) =>
        `<li><code>${esc(displayName(f))}</code> <span class="loc">${esc(`${f.url}:${f.lineNumber + 1}:${f.columnNumber + 1}`)}</span></li>`,
    )
    .join('');
  const span = stall.capture?.span;
  const inSpan =
    span && typeof span.traceId === 'string' && typeof span.spanId === 'string'
      ? `<p>${esc(`The blocking code ran in OpenTelemetry trace ${span.traceId}, span ${span.spanId}.`)}</p>`
      : '';
  const cause = stall.cause
    ? `<p>Cause: <strong>${esc(stall.cause)}</strong>${stall.diagnosis?.why ? ` (${esc(stall.diagnosis.why)})` : ''}.</p>`
    : '';
  const requests =
    Array.isArray(stall.requests) && stall.requests.length > 0
      ? `<p>Requests in flight:</p><ul>${stall.requests
          .slice(0, MAX_STACK_FRAMES)
          .map(
            (r) =>
              `<li><code>${esc(`${r.method ?? ''} ${r.route ?? r.path ?? ''}`)}</code> ${esc(`${r.route ? `${r.path ?? ''}, ` : ''}running ${num(r.runningMs ?? 0)} ms${r.traceId ? `, trace ${r.traceId}` : ''}`)}</li>`,
          )
          .join('')}</ul>`
      : '';
  const queued =
    stall.queued && typeof stall.queued.count === 'number'
      ? `<p>${esc(`${stall.queued.count} requests started within ${stall.queued.windowMs ?? 0} ms after it (usually ${stall.queued.usual ?? 0}): they waited behind it.`)}</p>`
      : '';
  return `<section id="stall"><h2>Stall</h2><p>${esc(head)}</p>${cause}${inSpan}${requests}${queued}${frames.length ? `<ol class="stack">${list}</ol>` : '<p>No stack was taken.</p>'}</section>`;
}

/** An icicle of the CPU profile (callers above callees), widths by total time, nodes under 0.1 % left out. */
function flameSection({ profile }: Incident): string {
  if (!profile) return '<section><h2>CPU profile</h2><p>No CPU profile in this incident.</p></section>';
  let weighed;
  try {
    weighed = weighProfile(profile.data);
  } catch (err) {
    return `<section><h2>CPU profile</h2><p>${esc(`${profile.file} could not be read: ${(err as Error).message}`)}</p></section>`;
  }
  const { profile: p, parents, preorder, selfMicros } = weighed;
  const n = p.nodes.length;
  const total = Float64Array.from(selfMicros);
  for (let i = n - 1; i >= 0; i--) {
    const node = preorder[i]!;
    const parent = parents[node]!;
    if (parent >= 0) total[parent]! += total[node]!;
  }
  const roots = [...preorder].filter((i) => parents[i]! < 0);
  const all = roots.reduce((s, r) => s + total[r]!, 0);
  if (all <= 0) return `<section><h2>CPU profile</h2><p>${esc(profile.file)} has no samples.</p></section>`;
  const children = new Map<number, number[]>();
  for (const i of preorder) {
    const parent = parents[i]!;
    if (parent >= 0) (children.get(parent) ?? children.set(parent, []).get(parent)!).push(i);
  }
  const W = 960,
    ROW = 18;
  const rects: string[] = [];
  let shown = 0,
    maxDepth = 0,
    hidden = 0;
  // Breadth-first, so a node cap cuts the deepest rows, not one side of the graph.
  let row: Array<{ node: number; x: number; w: number }> = [];
  let x = 0;
  for (const r of roots) {
    row.push({ node: r, x, w: (total[r]! / all) * W });
    x += (total[r]! / all) * W;
  }
  for (let depth = 0; row.length; depth++) {
    const next: typeof row = [];
    for (const { node, x: nx, w } of row) {
      if (w < W / 1000 || shown >= MAX_FLAME_NODES) {
        hidden++;
        continue;
      }
      shown++;
      maxDepth = Math.max(maxDepth, depth);
      const frame = p.nodes[node]!.callFrame;
      const name = displayName(frame);
      const original = profile.originals.get(p.nodes[node]!.id);
      const at = ({ url, lineNumber, columnNumber }: GeneratedPosition): string =>
        url ? `${url}:${lineNumber + 1}:${columnNumber + 1}` : '';
      const where = original ? `${at(original)} (generated ${at(frame)})` : at(frame);
      const tip = `${name} ${where} — total ${num(total[node]! / 1000)} ms (${num((100 * total[node]!) / all)} %), self ${num(selfMicros[node]! / 1000)} ms`;
      rects.push(
        `<g class="fn" transform="translate(${nx.toFixed(2)},${depth * ROW})"><title>${esc(tip)}</title><rect width="${Math.max(w - 0.5, 0.5).toFixed(2)}" height="${ROW - 1}" style="fill:${color(name)}"/>${w > 40 ? `<text x="3" y="13">${esc(clip(name, Math.floor(w / 7)))}</text>` : ''}</g>`,
      );
      let cx = nx;
      for (const child of children.get(node) ?? []) {
        const cw = (total[child]! / total[node]!) * w;
        next.push({ node: child, x: cx, w: cw });
        cx += cw;
      }
    }
    row = next;
  }
  const height = (maxDepth + 1) * ROW;
  return `<section><h2>CPU profile</h2><p>${esc(profile.file)}: ${num(all / 1000)} ms sampled; ${shown} frames shown${hidden ? `, ${hidden} under 0.1 % or past ${MAX_FLAME_NODES} left out` : ''}. Hover a frame for its time.</p>
<svg id="flamegraph" class="flame" viewBox="0 0 ${W} ${height}" width="100%" role="img" aria-label="CPU flame graph">${rects.join('')}</svg></section>`;
}

function heapDiffSection(diff: HeapDiff | undefined): string {
  if (!diff) return '';
  const ctors = (diff.constructors ?? [])
    .slice(0, MAX_TABLE_ROWS)
    .map((c) => [c.name, num(c.countDelta), bytes(c.selfSizeDelta), bytes(c.retainedSizeDelta)]);
  const leaks = (diff.leaks ?? [])
    .slice(0, MAX_TABLE_ROWS)
    .map((l) => [l.constructor, num(l.count), bytes(l.selfSize), bytes(l.retainedSize), l.retainerPath]);
  return `<section id="heap-diff"><h2>Heap diff</h2><p>${esc((diff.files ?? []).join(' → '))}</p>
${table(['Constructor', 'Count Δ', 'Self size Δ', 'Retained size Δ'], ctors, 'heap-diff')}
${leaks.length ? `<h3>Likely leaks</h3>${table(['Constructor', 'Count', 'Self size', 'Retained size', 'Retainer path'], leaks, 'leaks')}` : ''}</section>`;
}

function dependencySection(deps: Dependency[] | undefined): string {
  if (!Array.isArray(deps)) return '';
  const rows = deps.slice(0, MAX_TABLE_ROWS).map((d) => [
    `${d.remoteAddress}:${d.remotePort}`,
    (d.hostnames ?? []).join(', '),
    num(d.connections),
    Object.entries(d.states ?? {})
      .map(([k, v]) => `${k} ${v}`)
      .join(', '),
    d.retransmits === undefined ? '' : num(d.retransmits),
    d.latencyMs ? `${num(d.latencyMs.p50)} / ${num(d.latencyMs.p99)}` : '',
    d.lastSeenAt ? time(d.lastSeenAt) : '',
  ]);
  return `<section id="dependencies"><h2>Dependencies</h2>${table(['Remote', 'Host names', 'Connections', 'States', 'Retransmits', 'Latency p50 / p99 (ms)', 'Last seen'], rows, 'dependencies')}</section>`;
}

function capturesSection({ manifest }: Incident): string {
  const rows = manifest.captures
    .slice(0, MAX_TABLE_ROWS)
    .map((c) => [c.kind, c.file, c.bytes === undefined ? '—' : bytes(c.bytes)]);
  return `<section><h2>Captures</h2>${table(['Kind', 'File (in this folder)', 'Size'], rows, 'captures')}</section>`;
}

function logsSection(lines: string[]): string {
  if (lines.length === 0) return '<section><h2>Log events</h2><p>None in the window.</p></section>';
  const rows = lines.map((line) => {
    let event: Record<string, unknown>;
    try {
      event = JSON.parse(line) as Record<string, unknown>;
    } catch {
      return ['', '', line];
    }
    const { time: t, level, msg, ...rest } = event;
    return [typeof t === 'number' ? clock(t) : '', String(level ?? ''), `${String(msg ?? '')} ${JSON.stringify(rest)}`];
  });
  return `<section><h2>Log events</h2>${table(['Time', 'Level', 'Event'], rows, 'logs')}</section>`;
}

function table(head: string[], rows: string[][], id: string): string {
  if (rows.length === 0) return '<p>None.</p>';
  return `<table id="t-${id}"><thead><tr>${head.map((h) => `<th>${esc(h)}</th>`).join('')}</tr></thead><tbody>${rows
    .map(
      (r) =>
        `<tr>${r.map((c) => `<td${NUMERIC.test(c) ? ' class="n"' : ''}>${esc(clip(c, MAX_TEXT))}</td>`).join('')}</tr>`,
    )
    .join('')}</tbody></table>`;
}

/** Cells that are a number or a size: right-aligned and never broken, so their columns keep their width. */
const NUMERIC = /^[+−-]?[\d,.]+( (B|KiB|MiB|GiB|TiB|ms|s))?$/;

function keyValues(rows: Array<[string, string]>): string {
  return `<dl>${rows.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(clip(v, MAX_TEXT * 4))}</dd>`).join('')}</dl>`;
}

/** Escapes text for HTML content and attribute values alike. */
export function esc(value: unknown): string {
  return String(value).replace(
    /[&<>"']/g,
    (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!,
  );
}

function clip(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, Math.max(1, max - 1))}…`;
}

function num(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  return Math.abs(v) >= 100 ? Math.round(v).toLocaleString('en') : Number(v.toPrecision(3)).toString();
}

/** A size in bytes as a person reads it: B, KiB, MiB or GiB, at most 3 significant digits (1000 KiB and up is shown in MiB). */
export function bytes(b: number): string {
  if (!Number.isFinite(b)) return String(b);
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = Math.abs(b);
  let unit = 0;
  while (value >= 999.5 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  const digits = unit === 0 ? String(Math.round(value)) : String(Number(value.toPrecision(3)));
  return `${b < 0 ? '−' : ''}${digits} ${units[unit]}`;
}

function time(ms: number): string {
  return Number.isFinite(ms) ? new Date(ms).toISOString() : String(ms);
}

function clock(ms: number): string {
  return new Date(ms).toISOString().slice(11, 19);
}

function duration(ms: number): string {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${num(ms / 1000)} s`;
}

/** A warm colour per function name, stable across reports. */
function color(name: string): string {
  let h = 0;
  for (let i = 0; i < name.length; i++) h = (h * 31 + name.charCodeAt(i)) >>> 0;
  return `hsl(${10 + (h % 40)},${70 + (h % 20)}%,${55 + (h % 15)}%)`;
}

const CSS = `
body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem auto;max-width:1000px;padding:0 1rem;color:#222}
h1{font-size:1.4rem;word-break:break-all}h2{font-size:1.15rem;border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
dl{display:grid;grid-template-columns:9rem 1fr;gap:.2rem 1rem}dt{font-weight:600}dd{margin:0;word-break:break-all}
table{border-collapse:collapse;width:100%;font-size:13px}th,td{border:1px solid #e3e3e3;padding:.2rem .4rem;text-align:left;vertical-align:top}
th{background:#f6f6f6;white-space:nowrap}td{overflow-wrap:break-word}td:last-child{overflow-wrap:anywhere}td.n{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}.chart{margin:0 0 1rem}figcaption{font-weight:600}svg text{font-size:11px;fill:#555}
.axis{stroke:#999}.line{fill:none;stroke:#2a6fdb;stroke-width:1.5}.pt{fill:transparent}.pt:hover{fill:#2a6fdb55}
.mark{stroke-width:2}.mark.trigger{stroke:#d22}.mark.capture{stroke:#2a2;stroke-dasharray:4 3}.k-trigger{color:#d22}.k-capture{color:#2a2}
.flame .fn rect{stroke:#fff;stroke-width:.5}.flame .fn:hover rect{stroke:#000}.flame text{font-size:11px;fill:#222;pointer-events:none}
.stack code{font-weight:600}.loc{color:#666;word-break:break-all}.empty{color:#888}
.hover{position:fixed;bottom:0;left:0;right:0;background:#222;color:#fff;padding:.3rem .6rem;font:12px monospace;white-space:pre-wrap}
`;

/** Shows the hovered frame's or point's title in a bar at the bottom (the SVG titles show as tooltips too). */
const SCRIPT = `
(function(){var bar=document.getElementById('hover');
document.addEventListener('mouseover',function(e){var g=e.target&&e.target.closest&&e.target.closest('.fn,.pt,.mark');
if(!g){bar.hidden=true;return;}var t=g.querySelector('title');bar.textContent=t?t.textContent:'';bar.hidden=!t;});})();
`;
