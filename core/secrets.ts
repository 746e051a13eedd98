/**
 * Secrets must not travel in params: params are stored with the run. This finds credentials in
 * param values (URLs with a password, or password-like query parameters) so Carrel can refuse
 * them, naming the param and never the value.
 *
 * @module
 */
import { DagError } from "./errors.ts";

const CREDENTIAL_IN_URL = /^[a-z][a-z0-9+.-]*:\/\/[^/?#@\s]*:[^/?#@\s]*@/i;
const SECRET_QUERY = /[?&](password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key)=/i;

/** The paths of param values that carry credentials. */
export function paramsWithSecrets(params: Record<string, unknown>, prefix = ""): string[] {
  const found: string[] = [];
  for (const [key, value] of Object.entries(params)) {
    const path = prefix ? `${prefix}.${key}` : key;
    if (typeof value === "string") {
      if (CREDENTIAL_IN_URL.test(value) || SECRET_QUERY.test(value)) found.push(path);
    } else if (value && typeof value === "object" && !Array.isArray(value)) {
      found.push(...paramsWithSecrets(value as Record<string, unknown>, path));
    }
  }
  return found;
}

/**
 * Throws when a param carries credentials.
 *
 * @example
 * ```ts
 * import { assertNoSecretsInParams } from "./secrets.ts";
 * assertNoSecretsInParams("sync", { source: "ils" }); // fine: a connection name
 * ```
 */
export function assertNoSecretsInParams(dagId: string, params: Record<string, unknown>): void {
  const paths = paramsWithSecrets(params);
  if (paths.length > 0) {
    throw new DagError(
      `Cannot run DAG "${dagId}": param ${
        paths.map((p) => `"${p}"`).join(", ")
      } holds credentials, and params are stored with the run; put the URL in CARREL_CONN_<NAME> and pass the name instead`,
    );
  }
}
