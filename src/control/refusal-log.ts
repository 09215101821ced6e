/**
 * Refused requests, logged without letting a flood drown the log. The first refusal of
 * each kind (status and reason) in a window is logged on its own line (an operator sees
 * who and why); repeats are counted and told in one line when the window ends. An unauthenticated client can then
 * add at most a handful of lines a minute to the log ring, and cannot push an incident's
 * evidence (its stall, its rule firings) out of it.
 */
export type RefusalWriter = (msg: string, fields: Record<string, unknown>) => void;

export interface RefusedRequest {
  method: string;
  path: string;
  remote: string;
}

/** Kinds of refusal logged on their own line per window, at most. */
export const REFUSAL_KINDS_PER_WINDOW = 20;
export const REFUSAL_WINDOW_MS = 60_000;

export class RefusalLog {
  readonly #write: RefusalWriter;
  readonly #windowMs: number;
  readonly #now: () => number;
  #windowStart = -Infinity;
  #logged = new Set<string>();
  #suppressed = new Map<number, number>();
  #remotes = new Set<string>();
  #timer: NodeJS.Timeout | undefined;

  constructor(write: RefusalWriter, windowMs = REFUSAL_WINDOW_MS, now: () => number = () => performance.now()) {
    this.#write = write;
    this.#windowMs = windowMs;
    this.#now = now;
  }

  refused(status: number, why: string, request: RefusedRequest): void {
    const now = this.#now();
    if (now - this.#windowStart >= this.#windowMs) {
      this.flush();
      this.#windowStart = now;
      this.#logged.clear();
    }
    const kind = `${status} ${why}`;
    if (!this.#logged.has(kind) && this.#logged.size < REFUSAL_KINDS_PER_WINDOW) {
      this.#logged.add(kind);
      this.#write('sysprobe control request refused', { status, why, ...request });
      return;
    }
    this.#suppressed.set(status, (this.#suppressed.get(status) ?? 0) + 1);
    if (this.#remotes.size < 10) this.#remotes.add(request.remote);
    // One line at the window's end, even when the flood stops and no refusal comes to trigger it.
    this.#timer ??= setTimeout(
      () => {
        this.#timer = undefined;
        this.flush();
      },
      Math.max(0, this.#windowStart + this.#windowMs - now),
    ).unref();
  }

  /** Logs the refusals counted since the last line, if any. */
  flush(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#suppressed.size === 0) return;
    const byStatus = Object.fromEntries(this.#suppressed);
    const count = [...this.#suppressed.values()].reduce((a, b) => a + b, 0);
    this.#write('sysprobe control requests refused (more, counted)', {
      count,
      byStatus,
      remotes: [...this.#remotes],
      windowMs: this.#windowMs,
    });
    this.#suppressed = new Map();
    this.#remotes = new Set();
  }
}
