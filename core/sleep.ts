/**
 * Abortable waiting, the one home for it: every pause in Carrel (retry delays, scheduler ticks,
 * worker polls) ends early when its signal aborts, so SIGTERM never waits out a timer.
 *
 * @module
 */

/**
 * Resolves after `ms` milliseconds, or as soon as `signal` aborts (it never rejects: callers
 * check `signal.aborted` afterwards).
 *
 * @example
 * ```ts
 * import { sleep } from "./sleep.ts";
 * const stop = new AbortController();
 * stop.abort();
 * await sleep(60_000, stop.signal); // returns at once
 * ```
 */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, Math.max(0, ms));
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}

/**
 * Resolves at the time `at` (epoch milliseconds), or as soon as `signal` aborts.
 *
 * @example
 * ```ts
 * import { sleepUntil } from "./sleep.ts";
 * await sleepUntil(Date.now() + 10);
 * ```
 */
export function sleepUntil(at: number, signal?: AbortSignal): Promise<void> {
  return sleep(at - Date.now(), signal);
}
