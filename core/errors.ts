/**
 * Error types with a meaning for the CLI and the executor, and the one classifier that says
 * whether retrying an error can help.
 *
 * @module
 */
import { EMSCRIPTEN_ERRNO, knownError } from "./privacy/privacy_safe.ts";

/** System error codes people recognise, in words. */
const SYSTEM_TEXT: Readonly<Record<string, string>> = {
  ENOSPC: "no space left on device",
  EDQUOT: "disk quota exceeded",
  EFBIG: "file too large",
  EROFS: "read-only file system",
  EIO: "input/output error",
  EACCES: "permission denied",
  EPERM: "operation not permitted",
  ENOENT: "no such file or folder",
  ENOTDIR: "not a folder",
  EMFILE: "too many open files",
  ENFILE: "too many open files in the system",
  ENOMEM: "out of memory",
};

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
 * Thrown by a sensor in `reschedule` mode whose condition is not met yet: the attempt ends
 * without counting as a try, the task instance frees its slot (state `up_for_reschedule`) and is
 * offered again after `delayMs`. The decider fails it (or, with `softFail`, skips it) once
 * `timeoutMs` from its first poke has passed.
 *
 * @example
 * ```ts
 * import { RescheduleTask } from "./errors.ts";
 * throw new RescheduleTask({ delayMs: 60_000, timeoutMs: 3_600_000, softFail: true });
 * ```
 */
export class RescheduleTask extends Error {
  override name = "RescheduleTask";
  readonly delayMs: number;
  readonly timeoutMs: number;
  readonly softFail: boolean;
  constructor(options: { delayMs: number; timeoutMs: number; softFail?: boolean }) {
    super("Not yet: rescheduled");
    this.delayMs = options.delayMs;
    this.timeoutMs = options.timeoutMs;
    this.softFail = options.softFail ?? false;
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

/**
 * The message of a file system error that carries a system error code (Deno's `Deno.errors` have
 * one), without the paths it names; `undefined` for anything else.
 *
 * @example
 * ```ts
 * import { fileSystemMessage } from "./errors.ts";
 * fileSystemMessage(Object.assign(new Error("No space left"), { code: "ENOSPC" }));
 * // "File system error: no space left on device (ENOSPC)"
 * ```
 */
export function fileSystemMessage(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" && code in SYSTEM_TEXT ? fileSystemText(code) : undefined;
}

function fileSystemText(code: string): string {
  return `File system error: ${SYSTEM_TEXT[code] ?? code} (${code})`;
}

/**
 * Returns the message of anything thrown, without a stack. Objects that are not `Error`s (PGlite's
 * file system throws `ErrnoError` objects with only a number) are named, never `[object Object]`.
 *
 * @example
 * ```ts
 * import { errorMessage } from "./errors.ts";
 * errorMessage(new Error("boom")); // "boom"
 * errorMessage({ name: "ErrnoError", errno: 51 }); // "File system error: no space left on device (ENOSPC)"
 * ```
 */
export function errorMessage(error: unknown): string {
  if (error instanceof Error) return error.message || error.name;
  if (typeof error === "object" && error !== null) {
    const e = error as Record<string, unknown>;
    if (typeof e.errno === "number" && e.name === "ErrnoError") {
      const code = EMSCRIPTEN_ERRNO[e.errno];
      return code ? fileSystemText(code) : `File system error (errno ${e.errno})`;
    }
    if (typeof e.message === "string" && e.message !== "") return e.message;
    if (typeof e.code === "string") return `${SYSTEM_TEXT[e.code] ?? "system error"} (${e.code})`;
    const name = typeof e.name === "string" ? e.name : (error.constructor?.name ?? "object");
    return `Unexpected ${name} thrown`;
  }
  return String(error);
}

/**
 * True when retrying cannot help: a `FatalTaskError`, or an error Carrel knows to be permanent:
 * a configuration mistake (unknown connection, wrong password, unknown database, table or
 * column), a refused connection, a host name that does not resolve, a missing file or folder, a
 * permission refused, a full disk. The one place that decides; the executor and the workers ask
 * it before scheduling a retry.
 *
 * @example
 * ```ts
 * import { FatalTaskError, isPermanentError } from "./errors.ts";
 * isPermanentError(new FatalTaskError("bad config")); // true
 * isPermanentError(new Error("connection reset")); // false
 * ```
 */
export function isPermanentError(error: unknown): boolean {
  return error instanceof FatalTaskError || knownError(error)?.permanent === true;
}
