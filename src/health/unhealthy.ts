/**
 * Rules with `markUnhealthy` that fired, each until its cooldown ends. The worker, where the
 * rules fire, decides (`mark`); the reason it decided travels on the 'rule' message, and the
 * main thread keeps what it was told (`keep`) for `probe.health()`, which cannot wait for an
 * answer. One expiry, here.
 */
import { ruleReason, type HealthReason } from './evaluate.js';
import type { RuleFiring } from '../rules/firing.js';

export class UnhealthyRules {
  readonly #reasons = new Map<string, HealthReason>();

  /** The firing's reason when its rule marks the process unhealthy (kept here too), else undefined. */
  mark(
    firing: RuleFiring,
    rule: { markUnhealthy: boolean; condition: { cooldownMs: number } } | undefined,
  ): HealthReason | undefined {
    if (!rule?.markUnhealthy) return undefined;
    const reason = ruleReason(firing, firing.firedAt + rule.condition.cooldownMs);
    this.keep(reason);
    return reason;
  }

  /** A reason decided elsewhere (the worker's, on the main thread). */
  keep(reason: HealthReason): void {
    if (reason.rule !== undefined) this.#reasons.set(reason.rule, reason);
  }

  /** The reasons still within their cooldown at `now`; the expired ones are dropped. */
  reasons(now: number): HealthReason[] {
    for (const [rule, reason] of this.#reasons) if ((reason.until ?? 0) <= now) this.#reasons.delete(rule);
    return [...this.#reasons.values()];
  }
}
