/**
 * Which error messages may be recorded even when raised in the enclave: errors marked as written
 * to name fields and counts only, and errors Carrel recognises as carrying no patron data at all
 * (configuration, connection refused, missing file or folder, DNS failure, disk full). The one
 * place that decides; the executor and the workers ask {@linkcode isPrivacySafe}.
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
 * const error = new PrivacySafeError('Checkpoint failed: field "patron_id" holds 3 values that are not tokens');
 * console.log(error.message); // recorded as is, even from the enclave
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

/** What a recognised error is about. */
export type KnownErrorKind =
  | "configuration"
  | "connection"
  | "dns"
  | "missing-file"
  | "permission"
  | "disk";

/** A recognised error: what it is about, and whether retrying within minutes could help. */
export interface KnownError {
  kind: KnownErrorKind;
  /** True when a retry cannot help (a wrong name, a refused connection, a full disk). */
  permanent: boolean;
}

type Fields = Record<string, unknown>;

/** Deno's I/O messages: `No such file or directory (os error 2): open '/x'`. */
const DENO_OS_MESSAGE =
  /^[A-Z][A-Za-z ,'-]*\(os error \d+\)(: [a-z_]+ '[^'\n]*'( -> '[^'\n]*')?)?$/;
/** Node-style system errors (postgres.js): `connect ECONNREFUSED 127.0.0.1:5432`. */
const NODE_SYSTEM_MESSAGE = /^[a-z]+ E[A-Z]+( [^\s]+)?$/;
/** Deno's resolver: `failed to lookup address information: Name or service not known`. */
const DNS_MESSAGE = /^failed to lookup address information: [A-Za-z ,'-]+$/;

/** System error codes: what they are about, and whether they are permanent. */
const SYSTEM_CODES: Readonly<Record<string, KnownError>> = {
  ENOENT: { kind: "missing-file", permanent: true },
  ENOTDIR: { kind: "missing-file", permanent: true },
  EISDIR: { kind: "configuration", permanent: true },
  EACCES: { kind: "permission", permanent: true },
  EPERM: { kind: "permission", permanent: true },
  EROFS: { kind: "disk", permanent: true },
  ENOSPC: { kind: "disk", permanent: true },
  EDQUOT: { kind: "disk", permanent: true },
  EFBIG: { kind: "disk", permanent: true },
  EIO: { kind: "disk", permanent: false },
  ECONNREFUSED: { kind: "connection", permanent: true },
  ENOTFOUND: { kind: "dns", permanent: true },
  EAI_AGAIN: { kind: "dns", permanent: false },
  EHOSTUNREACH: { kind: "connection", permanent: false },
  ENETUNREACH: { kind: "connection", permanent: false },
  ECONNRESET: { kind: "connection", permanent: false },
  ETIMEDOUT: { kind: "connection", permanent: false },
  CONNECT_TIMEOUT: { kind: "connection", permanent: false },
};

/**
 * Emscripten's errno numbers (PGlite's file system throws `ErrnoError` objects that carry only
 * this number): the ones worth naming.
 */
export const EMSCRIPTEN_ERRNO: Readonly<Record<number, string>> = {
  2: "EACCES",
  19: "EDQUOT",
  22: "EFBIG",
  29: "EIO",
  33: "EMFILE",
  41: "ENFILE",
  44: "ENOENT",
  48: "ENOMEM",
  51: "ENOSPC",
  54: "ENOTDIR",
  63: "EPERM",
  69: "EROFS",
};

/**
 * Carrel's own SQL error codes (operators/ils `SqlError`) that mean a configuration mistake:
 * its messages are written free of values and passwords.
 */
const SQL_CONFIGURATION_CODES = new Set(["INVALID_URL", "INVALID_ARGUMENT", "READ_ONLY"]);

/** SQLSTATE classes of configuration (auth, unknown database, unknown table or column). */
function sqlStateKind(code: string): KnownError | undefined {
  const cls = code.slice(0, 2);
  if (cls === "28" || cls === "3D") return { kind: "configuration", permanent: true };
  if (["42P01", "42703", "42883", "42501", "3F000"].includes(code)) {
    return { kind: "configuration", permanent: true };
  }
  if (cls === "08") return { kind: "connection", permanent: false };
  return undefined;
}

/**
 * Recognises errors that carry no patron data by construction, or `undefined`. Only shapes whose
 * whole message is known are recognised: an error a task made up with such a name but a message
 * of its own is not.
 *
 * @example
 * ```ts
 * import { knownError } from "./privacy_safe.ts";
 * knownError(new Deno.errors.NotFound("No such file or directory (os error 2): open '/in.mrc'"));
 * // { kind: "missing-file", permanent: true }
 * knownError(new Error("patron P123 not found")); // undefined
 * ```
 */
export function knownError(error: unknown): KnownError | undefined {
  if (typeof error !== "object" || error === null) return undefined;
  const e = error as Fields;
  const name = typeof e.name === "string" ? e.name : "";
  const message = typeof e.message === "string" ? e.message : "";
  const code = typeof e.code === "string" ? e.code : undefined;
  // PGlite's file system: a bare errno, no message at all.
  if (name === "ErrnoError" && typeof e.errno === "number") {
    const sys = EMSCRIPTEN_ERRNO[e.errno];
    return (sys ? SYSTEM_CODES[sys] : undefined) ?? { kind: "disk", permanent: false };
  }
  // Carrel's connection resolution (operators/ils/connection.ts): names and variables only.
  if (name === "ConnectionError" && /^Cannot (resolve|open|use) /.test(message)) {
    return { kind: "configuration", permanent: true };
  }
  // Carrel's SQL errors (operators/ils/sql.ts): value-free by construction; classified by code.
  if (name === "SqlError" && code !== undefined) {
    if (SQL_CONFIGURATION_CODES.has(code)) return { kind: "configuration", permanent: true };
    return SYSTEM_CODES[code] ?? (/^[0-9A-Z]{5}$/.test(code) ? sqlStateKind(code) : undefined);
  }
  if (DENO_OS_MESSAGE.test(message) && code && SYSTEM_CODES[code]) return SYSTEM_CODES[code];
  if (code && NODE_SYSTEM_MESSAGE.test(message) && message.split(" ")[1] === code) {
    return SYSTEM_CODES[code];
  }
  if (DNS_MESSAGE.test(message)) return { kind: "dns", permanent: true };
  return undefined;
}

/**
 * True for errors whose message may be recorded and shown even from the enclave: marked as
 * privacy-safe, or recognised by {@linkcode knownError}.
 *
 * @example
 * ```ts
 * import { isPrivacySafe, PrivacySafeError } from "./privacy_safe.ts";
 * isPrivacySafe(new PrivacySafeError("3 records failed the gate")); // true
 * isPrivacySafe(new Error("patron P123 has no e-mail")); // false
 * ```
 */
export function isPrivacySafe(error: unknown): boolean {
  if (typeof error !== "object" || error === null) return false;
  if ((error as Record<symbol, unknown>)[SAFE] === true) return true;
  return knownError(error) !== undefined;
}
