/**
 * A mark for errors whose messages were written to name fields and counts only, so they may be
 * recorded even when raised in the enclave.
 *
 * @module
 */

const SAFE = Symbol.for("carrel.privacySafe");

/**
 * An error whose message names fields, checks and counts, never values.
 *
 * @example
 * ```ts
 * import { PrivacySafeError } from "./privacy_safe.ts";
 * throw new PrivacySafeError('Checkpoint failed: field "patron_id" holds 3 values that are not tokens');
 * ```
 */
export class PrivacySafeError extends Error {
  override name = "PrivacySafeError";
  readonly [SAFE] = true;
}

/** Marks an existing error as privacy-safe and returns it. */
export function markPrivacySafe<E extends Error>(error: E): E {
  Object.defineProperty(error, SAFE, { value: true });
  return error;
}

/** True for errors vetted as privacy-safe. */
export function isPrivacySafe(error: unknown): boolean {
  return typeof error === "object" && error !== null &&
    (error as Record<symbol, unknown>)[SAFE] === true;
}
