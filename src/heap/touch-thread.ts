/**
 * Allocates arrays on another core and touches every page of them, then hands them over by
 * transfer. A fresh page costs its first toucher a fault and the kernel's zeroing, measured at
 * 1 to 3 ms per MB on a VM: about a second for a 2 GB snapshot's dominator arrays. A diff asks
 * for the first file's while that file is read, when the second core has nothing else to do.
 */
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { bigArray } from './arrays.js';

/** The arrays wanted, by name: each element's kind and how many. */
export type ArrayShapes = Record<string, [kind: 'u32' | 'f64', length: number]>;
type Arrays<S extends ArrayShapes> = { [K in keyof S]: S[K][0] extends 'f64' ? Float64Array : Uint32Array };

interface Request {
  sysprobeHeapTouch: true;
  shapes: ArrayShapes;
}

/** The arrays, zeroed and in memory; undefined when the thread failed (the caller allocates them itself). */
export function touchedArraysInThread<S extends ArrayShapes>(shapes: S): Promise<Arrays<S> | undefined> {
  return new Promise((resolve) => {
    const worker = new Worker(__filename, { workerData: { sysprobeHeapTouch: true, shapes } satisfies Request });
    let settled = false;
    const finish = (arrays: Arrays<S> | undefined): void => {
      if (settled) return;
      settled = true;
      void worker.terminate();
      resolve(arrays);
    };
    worker.on('message', (m: Arrays<S>) => finish(m));
    worker.on('error', () => finish(undefined));
    worker.on('exit', () => finish(undefined));
  });
}

function serve(req: Request): void {
  const arrays: Record<string, Uint32Array | Float64Array> = {};
  for (const [name, [kind, length]] of Object.entries(req.shapes)) {
    const a = kind === 'f64' ? bigArray(Float64Array, length) : bigArray(Uint32Array, length);
    a.fill(0); // a write to every page, so this thread takes the faults
    arrays[name] = a;
  }
  parentPort!.postMessage(
    arrays,
    Object.values(arrays).map((a) => a.buffer as ArrayBuffer),
  );
}

if (!isMainThread && (workerData as Request | undefined)?.sysprobeHeapTouch) serve(workerData as Request);
