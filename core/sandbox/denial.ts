/**
 * A denied access, named: what the Deno permission model refused inside a sandbox Worker becomes
 * an error naming the task and the capability it lacked (`Task "load" may not read PII_HMAC_KEY:
 * declare it in env, or move the task into the enclave`). Permanent (retrying cannot grant a
 * permission) and privacy-safe (it names a variable, host or path, never data).
 *
 * @module
 */
import { FatalTaskError } from "../errors.ts";
import { markPrivacySafe } from "../privacy/privacy_safe.ts";
import type { Zone } from "../dag.ts";

/** What the permission model refused: `env` and a variable, `net` and a host, ... */
export interface Denial {
  kind: string;
  resource: string;
}

const REQUIRES = /Requires (\w+) access to "([^"]*)"/;

/**
 * The denial in a thrown error (its message, its causes, an aggregate's errors), if any.
 *
 * @example
 * ```ts
 * import { findDenial } from "./denial.ts";
 * findDenial(new Error('Requires env access to "PII_HMAC_KEY", run again with the --allow-env flag'));
 * // { kind: "env", resource: "PII_HMAC_KEY" }
 * ```
 */
export function findDenial(error: unknown, depth = 0): Denial | undefined {
  if (depth > 6 || typeof error !== "object" || error === null) return undefined;
  const e = error as { message?: unknown; cause?: unknown; errors?: unknown };
  if (typeof e.message === "string") {
    const m = REQUIRES.exec(e.message);
    if (m) return { kind: m[1]!, resource: m[2]! };
  }
  const inCause = findDenial(e.cause, depth + 1);
  if (inCause) return inCause;
  if (Array.isArray(e.errors)) {
    for (const inner of e.errors) {
      const found = findDenial(inner, depth + 1);
      if (found) return found;
    }
  }
  return undefined;
}

/**
 * A sandboxed task used a capability it did not declare.
 *
 * @example
 * ```ts
 * import { SandboxDeniedError } from "./denial.ts";
 * new SandboxDeniedError("load", "shared", { kind: "env", resource: "PII_HMAC_KEY" }).message;
 * // 'Task "load" may not read PII_HMAC_KEY: declare it in env, or move the task into the enclave'
 * ```
 */
export class SandboxDeniedError extends FatalTaskError {
  override name = "SandboxDeniedError";
  constructor(readonly taskId: string, zone: Zone, readonly denial: Denial) {
    super(`Task "${taskId}" ${deniedText(denial, zone)}`);
    markPrivacySafe(this);
  }
}

/** A task's capabilities break the zone rule at run time (a param named an enclave connection). */
export class SandboxRefusedError extends FatalTaskError {
  override name = "SandboxRefusedError";
  constructor(taskId: string, problems: readonly string[]) {
    super(`Task "${taskId}" ${problems.join(`; Task "${taskId}" `)}`);
    markPrivacySafe(this);
  }
}

function deniedText({ kind, resource }: Denial, zone: Zone): string {
  const orMove = zone === "shared" ? ", or move the task into the enclave" : "";
  const conn = /^CARREL_CONN_(.+)$/.exec(resource);
  switch (kind) {
    case "env":
      if (conn) {
        return `may not open connection "${
          conn[1]!.toLowerCase()
        }" (${resource}): declare it in connections${orMove}`;
      }
      return `may not read ${resource}: declare it in env${orMove}`;
    case "net":
      return `may not connect to ${resource}: declare a connection to it in connections`;
    case "read":
      return `may not read ${resource}: declare it in reads${orMove}`;
    case "write":
      return `may not write ${resource}: declare it in writes${orMove}`;
    case "run":
      return `may not run a process (${resource}): a sandboxed task never may`;
    case "ffi":
      return `may not load native code (${resource}): a sandboxed task never may`;
    case "sys":
      return `may not read system information (${resource}): a sandboxed task never may`;
    case "import":
      return `may not import ${resource}: a sandboxed task imports only local modules`;
    default:
      return `may not use ${kind} access (${resource})`;
  }
}
