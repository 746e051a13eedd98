/**
 * Error types with a meaning for the CLI and the executor.
 *
 * @module
 */

/**
 * A mistake in how Carrel was called: unknown DAG, bad flag, bad date. The CLI exits with 2.
 *
 * @example
 * ```ts
 * import { UsageError } from "./errors.ts";
 * throw new UsageError('Unknown DAG "nightly": see `dags list`');
 * ```
 */
export class UsageError extends Error {
  override name = "UsageError";
}

/**
 * A DAG file that cannot be loaded or validated. The CLI exits with 1.
 *
 * @example
 * ```ts
 * import { DagError } from "./errors.ts";
 * throw new DagError('Cannot load DAG "x" (dags/x.ts): tasks.load.retries: expected a number >= 0');
 * ```
 */
export class DagError extends Error {
  override name = "DagError";
}

/**
 * Thrown by a task to mark itself `skipped` instead of failed. Downstream tasks with the default
 * trigger rule are skipped too.
 *
 * @example
 * ```ts
 * import { SkipTask } from "./errors.ts";
 * const run = (records: unknown[]) => {
 *   if (records.length === 0) throw new SkipTask("No new records");
 *   return records;
 * };
 * ```
 */
export class SkipTask extends Error {
  override name = "SkipTask";
  constructor(reason = "Task skipped itself") {
    super(reason);
  }
}

/**
 * Thrown by a task when retrying cannot help (bad configuration, a privacy violation): the task
 * fails at once, whatever its `retries`.
 *
 * @example
 * ```ts
 * import { FatalTaskError } from "./errors.ts";
 * throw new FatalTaskError("Cannot tokenize: PII_HMAC_KEY is not set");
 * ```
 */
export class FatalTaskError extends Error {
  override name = "FatalTaskError";
}

/** Returns the message of anything thrown, without a stack. */
export function errorMessage(error: unknown): string {
  if (error instanceof Error) return error.message || error.name;
  return String(error);
}
