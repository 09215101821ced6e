/**
 * An incident's samples.json, written by the worker so that the main thread never
 * serializes thousands of samples. The incident recorder asks for it at the open (the
 * recorder's samples since the window's start) and at the close (what the file already
 * holds, since the recorder may have let those go, plus its newer samples), keeping the
 * newest `max`. The worker keeps no state per incident: a restarted worker continues the file.
 */
import { NOT_A_PLAIN_FILE, readBoundedFile, writeFileAtomically } from '../internal/files.js';
import type { Sample } from '../samples/sample.js';
import type { FlightRecorder } from '../samples/recorder.js';

/** A samples.json past this is not read back (it is not one sysprobe wrote): the file starts over. */
const MAX_READ_BYTES = 256 << 20;

export async function writeIncidentSamples(
  recorder: FlightRecorder<Sample>,
  file: string,
  sinceTime: number,
  max: number,
): Promise<SamplesWritten> {
  const kept = await readSamples(file);
  const last = kept.at(-1)?.time ?? -Infinity;
  const all = kept.concat(recorder.since(sinceTime).filter((s) => s.time > last));
  if (all.length > max) all.splice(0, all.length - max);
  await writeFileAtomically(file, JSON.stringify(all));
  return { count: all.length, from: all[0]?.time, to: all.at(-1)?.time };
}

/** The samples an earlier call wrote, or none when there is no such file or it is not an array of samples. */
async function readSamples(file: string): Promise<Sample[]> {
  let text: string;
  try {
    text = await readBoundedFile(file, MAX_READ_BYTES);
  } catch (err) {
    // Missing, or not a file sysprobe wrote (a link, a FIFO, too big): the file starts over.
    const { code } = err as NodeJS.ErrnoException;
    if (code === 'ENOENT' || NOT_A_PLAIN_FILE.has(code ?? '')) return [];
    throw err;
  }
  try {
    const parsed: unknown = JSON.parse(text);
    return Array.isArray(parsed) && parsed.every((s) => typeof (s as Sample | null)?.time === 'number')
      ? (parsed as Sample[])
      : [];
  } catch {
    return [];
  }
}

/** What a `writeSamples` request wrote: how many samples, from and to when. */
export interface SamplesWritten {
  count: number;
  from: number | undefined;
  to: number | undefined;
}
