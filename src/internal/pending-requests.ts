/**
 * Requests across a thread boundary that wait for their answer, each bounded by a timeout:
 * the one way both threads (the supervisor asking the worker, the worker asking the main
 * thread) number a request, settle its answer, and fail what is still waiting.
 */

interface Pending {
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

export class PendingRequests {
  readonly #pending = new Map<number, Pending>();
  #nextId = 1;

  /**
   * Numbers a request, hands its id to `send`, and resolves with its answer; rejects with
   * `timedOut()` after `timeoutMs`. `unref` lets the timer not hold the process (the worker's side).
   */
  add(send: (id: number) => void, timeoutMs: number, timedOut: () => Error, unref = false): Promise<unknown> {
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(timedOut());
      }, timeoutMs);
      if (unref) timer.unref();
      this.#pending.set(id, { resolve, reject, timer });
      send(id);
    });
  }

  /** Settles request `id` (ignored when it timed out already). */
  settle(id: number, reply: { ok: true; value: unknown } | { ok: false; error: Error }): void {
    const pending = this.#pending.get(id);
    if (!pending) return;
    this.#pending.delete(id);
    clearTimeout(pending.timer);
    if (reply.ok) pending.resolve(reply.value);
    else pending.reject(reply.error);
  }

  /** Rejects every request still waiting with `err`. */
  failAll(err: Error): void {
    for (const [id, pending] of this.#pending) {
      clearTimeout(pending.timer);
      this.#pending.delete(id);
      pending.reject(err);
    }
  }
}
