/**
 * The process's table of watched threads: how an app's worker thread (`watchThread()`) reaches
 * the main thread's probe without a message, a port or a global the two threads could share.
 *
 * The main thread's first `start()` creates one SharedArrayBuffer and hands it to every worker
 * created afterwards through `worker_threads.setEnvironmentData()` (nested workers inherit it).
 * A worker claims a slot in it and writes what the probe worker needs to watch it: its native
 * loop watch id, its thread stack host id, its kernel thread id, its threadId and name. The
 * probe worker waits on the table's generation word (`Atomics.waitAsync`, no timer) and rescans
 * when it moves. The table outlives probes: a registration made while one probe ran is watched
 * by the next one, and by a restarted probe worker. A leaf module.
 *
 * A slot's state word is the registration's serial while it is live, WRITING while its owner
 * fills it in, FREE otherwise; so freeing is one compare-and-swap on the serial, and nobody can
 * free a newer registration that reused the slot.
 */
import { getEnvironmentData, isMainThread, setEnvironmentData } from 'node:worker_threads';

/** The environment data key the table travels under. */
const KEY = 'sysprobe.threads.v1';

/** Threads watched at once. */
export const MAX_WATCHED_THREADS = 32;
/** A name is kept up to this many bytes of UTF-8. */
export const MAX_NAME_BYTES = 64;

const Header = {
  /** 1 while a probe runs on the main thread. */
  OPEN: 0,
  /** Bumped on every change; the probe worker waits on it. */
  GENERATION: 1,
  /** The last serial handed out. */
  SERIAL: 2,
  SIZE: 4,
} as const;

const Slot = {
  STATE: 0,
  LOOP_ID: 1,
  STACK_HOST: 2,
  TID: 3,
  THREAD_ID: 4,
  THRESHOLD_MS: 5,
  NAME_BYTES: 6,
  NAME: 7,
  SIZE: 7 + MAX_NAME_BYTES / 4,
} as const;

const FREE = 0;
const WRITING = -1;

/** One registration, as the probe worker reads it. */
export interface ThreadEntry {
  serial: number;
  /** native/loop_watch.c's id of the thread's loop. */
  loopId: number;
  /** native/thread_stack.cc's id of the thread (0: no stacks, the addon is missing). */
  stackHost: number;
  /** Its kernel thread id (/proc/self/task/<tid>); 0 when unknown. */
  tid: number;
  threadId: number;
  /** Its own stall threshold, ms; 0: the probe's. */
  thresholdMs: number;
  name: string;
}

export class ThreadTable {
  readonly buffer: SharedArrayBuffer;
  readonly #words: Int32Array;

  constructor(buffer: SharedArrayBuffer) {
    this.buffer = buffer;
    this.#words = new Int32Array(buffer);
  }

  static create(): ThreadTable {
    return new ThreadTable(new SharedArrayBuffer((Header.SIZE + MAX_WATCHED_THREADS * Slot.SIZE) * 4));
  }

  get open(): boolean {
    return Atomics.load(this.#words, Header.OPEN) === 1;
  }

  /** The main thread's probe started (true) or stopped (false). */
  setOpen(open: boolean): void {
    Atomics.store(this.#words, Header.OPEN, open ? 1 : 0);
    this.#changed();
  }

  get generation(): number {
    return Atomics.load(this.#words, Header.GENERATION);
  }

  /** Resolves when the generation moves past `seen` (or the wait times out). */
  async changed(seen: number, timeoutMs: number): Promise<void> {
    const wait = Atomics.waitAsync(this.#words, Header.GENERATION, seen, timeoutMs);
    if (wait.async) await wait.value;
  }

  /** Wakes the probe worker's wait (a change, or its own stop). */
  poke(): void {
    this.#changed();
  }

  /** Claims a slot and publishes the entry; its serial (to release it), or 0 when the table is full. */
  claim(entry: Omit<ThreadEntry, 'serial'>): number {
    const name = Buffer.from(entry.name, 'utf8').subarray(0, MAX_NAME_BYTES);
    for (let i = 0; i < MAX_WATCHED_THREADS; i++) {
      const at = Header.SIZE + i * Slot.SIZE;
      if (Atomics.compareExchange(this.#words, at + Slot.STATE, FREE, WRITING) !== FREE) continue;
      let serial = Atomics.add(this.#words, Header.SERIAL, 1) + 1;
      if (serial <= 0) {
        // After 2^31 registrations: start again at 1 (FREE and WRITING are never serials).
        Atomics.store(this.#words, Header.SERIAL, 1);
        serial = 1;
      }
      this.#words[at + Slot.LOOP_ID] = entry.loopId;
      this.#words[at + Slot.STACK_HOST] = entry.stackHost;
      this.#words[at + Slot.TID] = entry.tid;
      this.#words[at + Slot.THREAD_ID] = entry.threadId;
      this.#words[at + Slot.THRESHOLD_MS] = entry.thresholdMs;
      this.#words[at + Slot.NAME_BYTES] = name.length;
      new Uint8Array(this.buffer, (at + Slot.NAME) * 4, MAX_NAME_BYTES).set(name);
      // The store of the serial publishes the fields above (Atomics are sequentially consistent).
      Atomics.store(this.#words, at + Slot.STATE, serial);
      this.#changed();
      return serial;
    }
    return 0;
  }

  /** Frees the registration `serial` if it is still live (by its owner, or by the probe worker once its thread is gone). */
  release(serial: number): boolean {
    for (let i = 0; i < MAX_WATCHED_THREADS; i++) {
      const at = Header.SIZE + i * Slot.SIZE + Slot.STATE;
      if (Atomics.compareExchange(this.#words, at, serial, FREE) === serial) {
        this.#changed();
        return true;
      }
    }
    return false;
  }

  /** The live registrations now. */
  entries(): ThreadEntry[] {
    const found: ThreadEntry[] = [];
    for (let i = 0; i < MAX_WATCHED_THREADS; i++) {
      const at = Header.SIZE + i * Slot.SIZE;
      const serial = Atomics.load(this.#words, at + Slot.STATE);
      if (serial <= 0) continue;
      const bytes = Math.min(MAX_NAME_BYTES, Math.max(0, this.#words[at + Slot.NAME_BYTES]!));
      const entry: ThreadEntry = {
        serial,
        loopId: this.#words[at + Slot.LOOP_ID]!,
        stackHost: this.#words[at + Slot.STACK_HOST]!,
        tid: this.#words[at + Slot.TID]!,
        threadId: this.#words[at + Slot.THREAD_ID]!,
        thresholdMs: this.#words[at + Slot.THRESHOLD_MS]!,
        name: Buffer.from(new Uint8Array(this.buffer, (at + Slot.NAME) * 4, bytes)).toString('utf8'),
      };
      // Read again: a slot released and claimed anew meanwhile is read at the next scan.
      if (Atomics.load(this.#words, at + Slot.STATE) === serial) found.push(entry);
    }
    return found;
  }

  #changed(): void {
    Atomics.add(this.#words, Header.GENERATION, 1);
    Atomics.notify(this.#words, Header.GENERATION);
  }
}

let processTable: ThreadTable | undefined;

/** On the main thread: the process's table, created at the first call and handed to every worker created from then on. */
export function processThreadTable(): ThreadTable {
  if (!isMainThread) throw new Error('the thread table belongs to the main thread');
  if (!processTable) {
    processTable = ThreadTable.create();
    setEnvironmentData(KEY, processTable.buffer);
  }
  return processTable;
}

/** In a worker: the table its process's main thread handed down, if there is one. */
export function inheritedThreadTable(): ThreadTable | undefined {
  const buffer = getEnvironmentData(KEY);
  return buffer instanceof SharedArrayBuffer ? new ThreadTable(buffer) : undefined;
}
