/**
 * Node-sized and edge-sized typed arrays for the analysis, backed by transparent huge pages
 * when they are big. A fresh array's memory costs a page fault at its first touch, about
 * 3 ms of CPU per MB with 4 KiB pages on a VM: for a 2 GB snapshot's columns and dominator
 * arrays, seconds. native/heap_scan.c's adviseHugePages asks for 2 MiB pages before the
 * first touch (512 times fewer faults). Only a hint: without the addon, or where the kernel
 * declines, these are plain typed arrays.
 */
import { loadNative } from '../native.js';

type TypedArrayClass<T> = new (length: number) => T;

/** Smaller arrays gain too little to be worth a call (and may not span a whole huge page). */
export const HUGE_PAGE_MIN_BYTES = 12 * 1024 ** 2;

const advise = loadNative<{ adviseHugePages?: (a: ArrayBufferView) => boolean }>('heap_scan').addon?.adviseHugePages;

/** `new Kind(length)`, zeroed like it; asks for huge pages when it is at least {@link HUGE_PAGE_MIN_BYTES}. */
export function bigArray<T extends ArrayBufferView>(Kind: TypedArrayClass<T>, length: number): T {
  const a = new Kind(length);
  if (advise && a.byteLength >= HUGE_PAGE_MIN_BYTES) advise(a);
  return a;
}
