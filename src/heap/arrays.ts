/**
 * Node-sized and edge-sized typed arrays for the analysis, backed by transparent huge pages
 * when they are big. A fresh array's memory costs a page fault at its first touch, about
 * 3 ms of CPU per MB with 4 KiB pages on a VM: for a 2 GB snapshot's columns and dominator
 * arrays, seconds. native/heap_scan.c's adviseHugePages asks for 2 MiB pages before the
 * first touch (512 times fewer faults). Only a hint: without the addon, or where the kernel
 * declines, these are plain typed arrays.
 */
import * as v8 from 'node:v8';
import * as vm from 'node:vm';
import { loadNative } from '../native.js';

type TypedArrayClass<T> = new (length: number) => T;

/** Smaller arrays gain too little to be worth a call (and may not span a whole huge page). */
export const HUGE_PAGE_MIN_BYTES = 12 * 1024 ** 2;

const addon = loadNative<{
  adviseHugePages?: (a: ArrayBufferView) => boolean;
  mmapLargeAllocations?: (bytes: number) => boolean;
}>('heap_scan').addon;
const advise = addon?.adviseHugePages;

/** Blocks from this size up get an mmap of their own (see {@link dedicateProcessToAnalysis}). */
export const OWN_MAPPING_MIN_BYTES = 1024 ** 2;

let collect: (() => void) | undefined;

/**
 * For a process that exists to analyse snapshots (the CLI, the runner child), two
 * process-wide settings that a service analysing in-process is spared:
 *
 * - The C library gives every block of a MiB or more a mapping of its own, returned to the
 *   system when the array is freed. By default glibc raises that threshold to the size of
 *   each large block freed, so after the first snapshot's arrays go, the next snapshot's
 *   arrays of a few MB come from the heap (or the reading thread's arena), and what they
 *   free stays in the process (glibc only; elsewhere nothing changes).
 * - {@link releaseDeadArrays} may run a full GC. A graph's columns are ArrayBuffers that
 *   only a collection frees, and V8 collects when its small JS heap asks, not when the
 *   process's memory is largest: without it, the middle snapshot's columns are still in
 *   memory under the last one's dominator pass. The collector is reached the way Jest's
 *   leak detector does (the `--expose-gc` flag, then `gc` from a fresh context).
 *
 * Together about 130 MB less at the peak of a 275 MB three-snapshot diff.
 */
export function dedicateProcessToAnalysis(): void {
  addon?.mmapLargeAllocations?.(OWN_MAPPING_MIN_BYTES);
  if (collect) return;
  if (typeof globalThis.gc === 'function') {
    collect = globalThis.gc as () => void;
    return;
  }
  try {
    v8.setFlagsFromString('--expose-gc');
    const gc: unknown = vm.runInNewContext('gc');
    if (typeof gc === 'function') collect = gc as () => void;
  } catch {
    // Without it, the arrays are freed when V8 next collects.
  }
}

/** Between the steps of a diff: frees the arrays of the graphs it is done with, in a process {@link dedicateProcessToAnalysis dedicated} to it (a few ms: the JS heap is small). */
export function releaseDeadArrays(): void {
  collect?.();
}

/** `new Kind(length)`, zeroed like it; asks for huge pages when it is at least {@link HUGE_PAGE_MIN_BYTES}. */
export function bigArray<T extends ArrayBufferView>(Kind: TypedArrayClass<T>, length: number): T {
  const a = new Kind(length);
  if (advise && a.byteLength >= HUGE_PAGE_MIN_BYTES) advise(a);
  return a;
}
