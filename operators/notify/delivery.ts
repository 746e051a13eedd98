/**
 * How notifiers deliver: each attempt time-limited, failed attempts retried with exponential
 * backoff while retrying can help, everything stopped by the callback's signal (its time limit).
 * The failure names the notifier, the last problem and the attempts made, never a secret.
 *
 * @module
 */
import { type Duration, parseDuration } from "../../core/duration.ts";
import { sleep } from "../../core/sleep.ts";
import { NotifierError } from "./secret_ref.ts";

/** A notifier's attempt limit and retries. */
export interface DeliveryPolicy {
  /** Per attempt. */
  timeoutMs: number;
  /** Attempts after the first. */
  retries: number;
  /** The first retry's delay, doubled for each next one. */
  retryDelayMs: number;
}

/** What one attempt came to. */
export type AttemptResult =
  | { ok: true }
  | { ok: false; problem: string; retry: boolean };

/**
 * Checks a notifier's `timeout`, `retries` and `retryDelay` options (at DAG load time).
 *
 * @example
 * ```ts
 * import { deliveryPolicy } from "./delivery.ts";
 * deliveryPolicy("webhook(x)", { timeout: "5s" }, { timeoutMs: 10_000, retries: 3, retryDelayMs: 1_000 });
 * // { timeoutMs: 5000, retries: 3, retryDelayMs: 1000 }
 * ```
 */
export function deliveryPolicy(
  name: string,
  options: { timeout?: Duration; retries?: number; retryDelay?: Duration },
  defaults: DeliveryPolicy,
): DeliveryPolicy {
  const duration = (option: string, value: Duration | undefined, fallback: number) => {
    if (value === undefined) return fallback;
    const ms = parseDuration(value);
    if (ms === undefined || ms <= 0) {
      throw new TypeError(`${name}: ${option} must be a duration such as "10s"`);
    }
    return ms;
  };
  const retries = options.retries ?? defaults.retries;
  if (!Number.isInteger(retries) || retries < 0) {
    throw new TypeError(`${name}: retries must be a whole number >= 0`);
  }
  return {
    timeoutMs: duration("timeout", options.timeout, defaults.timeoutMs),
    retries,
    retryDelayMs: duration("retryDelay", options.retryDelay, defaults.retryDelayMs),
  };
}

/**
 * Makes attempts until one succeeds, one fails for good, the retries run out or `signal` aborts;
 * throws a {@link NotifierError} unless one succeeded.
 *
 * @example
 * ```ts ignore
 * await deliver("webhook(x)", policy, signal, async () => ({ ok: true }));
 * ```
 */
export async function deliver(
  name: string,
  policy: DeliveryPolicy,
  signal: AbortSignal,
  attempt: () => Promise<AttemptResult>,
): Promise<void> {
  let problem = "";
  let made = 0;
  for (let n = 0; n <= policy.retries; n++) {
    if (n > 0) await sleep(policy.retryDelayMs * 2 ** (n - 1), signal);
    if (signal.aborted) break;
    made++;
    const result = await attempt();
    if (result.ok) return;
    problem = result.problem;
    if (!result.retry || signal.aborted) break;
  }
  if (problem === "") throw new NotifierError(`${name}: stopped at the callback's time limit`);
  throw new NotifierError(`${name}: ${problem} (${made} of ${policy.retries + 1} attempts made)`);
}
