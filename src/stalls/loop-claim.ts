/**
 * Which sysprobe watches this thread's event loop: a probe started in it (`start()`), or the main
 * thread's probe, asked by `watchThread()`. Never both: two watchdogs on one loop would each write
 * its lag samples into the loop's one ring (its delay histogram would count every turn twice) and
 * report each stall twice. The second to ask is refused with SYSPROBE_ERR_ALREADY_STARTED.
 * Module state, so per thread (each isolate has its own).
 */
import { ErrorCode, SysprobeError } from '../errors.js';

export type LoopClaimant = 'start' | 'watchThread';

let claimedBy: LoopClaimant | undefined;

/** Claims this thread's loop for `by`; throws ALREADY_STARTED when the other holds it. */
export function claimLoop(by: LoopClaimant): void {
  if (claimedBy === undefined || claimedBy === by) {
    claimedBy = by;
    return;
  }
  throw new SysprobeError(
    ErrorCode.ALREADY_STARTED,
    by === 'watchThread'
      ? "watchThread(): this thread runs its own probe (start()), which watches its loop already; its stalls are that probe's 'stall' events. Stop that probe first to have the main thread's probe watch it."
      : "start(): this thread is watched by the main thread's probe (watchThread()); a probe of its own would watch its loop a second time. Call stop() on the watch first.",
  );
}

/** Releases this thread's loop (the probe stopped, or the watch did). */
export function releaseLoop(by: LoopClaimant): void {
  if (claimedBy === by) claimedBy = undefined;
}
