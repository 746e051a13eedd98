/**
 * Credentials, the one home for them: whether a string carries one (a URL with a password, a
 * secret-named query parameter), how to show a URL without it, and the refusal of params that
 * carry one (params are stored with the run and shown by `runs show`).
 *
 * Every check and every mask in Carrel goes through here, so a value one place calls safe is safe
 * everywhere: `postgres://carrel@db/ils?token=abc` carries a credential for all of them.
 *
 * @module
 */
import { DagError } from "../errors.ts";

const MASK = "***";
const SCHEME = /^[A-Za-z][A-Za-z0-9+.-]*:\/\//;
/** Query parameter names that hold secrets. */
const SECRET_PARAM = /pass|pwd|secret|token|api[_-]?key|access[_-]?key|auth|credential|signature/i;

function splitUrl(value: string): { prefix: string; authority: string; rest: string } {
  const scheme = SCHEME.exec(value);
  const prefix = scheme ? scheme[0] : "";
  const body = value.slice(prefix.length);
  // The authority ends at the first "/", "?" or "#" after the last "@" (a password may hold any
  // of them), or at the first of them when there is no "@".
  const at = body.lastIndexOf("@");
  const from = at >= 0 ? at : 0;
  const end = body.slice(from).search(/[/?#]/);
  const cut = end < 0 ? body.length : from + end;
  return { prefix, authority: body.slice(0, cut), rest: body.slice(cut) };
}

function secretQueryParams(rest: string): boolean {
  for (const m of rest.matchAll(/[?&;]([^=&#;]+)=([^&#;]*)/g)) {
    if (SECRET_PARAM.test(decodeSafe(m[1]!)) && m[2] !== "") return true;
  }
  return false;
}

function decodeSafe(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

/**
 * True when `value` carries a credential: a password in a URL's user info (`user:pw@host`, with
 * or without a scheme) or a query parameter named like a secret (`password=`, `token=`,
 * `api_key=`, ...).
 *
 * @example
 * ```ts
 * import { hasCredentials } from "./secrets.ts";
 * hasCredentials("ils"); // false
 * hasCredentials("postgres://carrel@db/ils"); // false
 * hasCredentials("postgres://carrel:pw@db/ils"); // true
 * hasCredentials("postgres://carrel@db/ils?token=abc123"); // true
 * ```
 */
export function hasCredentials(value: string): boolean {
  const v = value.trim();
  const { authority, rest } = splitUrl(v);
  const at = authority.lastIndexOf("@");
  if (at >= 0 && authority.slice(0, at).includes(":")) return true;
  return secretQueryParams(rest);
}

/**
 * The opposite of {@linkcode hasCredentials}: for param schemas (`z.string().refine(...)`).
 *
 * @example
 * ```ts
 * import { isCredentialFree } from "./secrets.ts";
 * isCredentialFree("warehouse"); // true
 * ```
 */
export function isCredentialFree(value: string): boolean {
  return !hasCredentials(value);
}

/**
 * A URL for display, with the password and every secret-named query parameter replaced by
 * `***`. Works on malformed URLs too: when the user info is ambiguous it masks more rather than
 * less (a password holding `@`, `/` or `?` is still hidden).
 *
 * @example
 * ```ts
 * import { maskUrl } from "./secrets.ts";
 * maskUrl("postgres://carrel:s3cret@db.example.org:5432/ils"); // "postgres://carrel:***@db.example.org:5432/ils"
 * maskUrl("postgres://carrel@db/ils?token=abc"); // "postgres://carrel@db/ils?token=***"
 * ```
 */
export function maskUrl(url: string): string {
  const { prefix, authority, rest } = splitUrl(url.trim());
  let auth = authority;
  const at = auth.lastIndexOf("@");
  if (at >= 0) {
    const colon = auth.indexOf(":");
    if (colon >= 0 && colon < at) auth = `${auth.slice(0, colon + 1)}${MASK}${auth.slice(at)}`;
  }
  const query = rest.replace(
    /([?&;])([^=&#;]+)=([^&#;]*)/g,
    (whole, sep: string, key: string) =>
      SECRET_PARAM.test(decodeSafe(key)) ? `${sep}${key}=${MASK}` : whole,
  );
  return prefix + auth + query;
}

/** The paths of param values that carry credentials (objects and arrays are searched). */
export function paramsWithSecrets(params: unknown, prefix = ""): string[] {
  const found: string[] = [];
  const visit = (value: unknown, path: string) => {
    if (typeof value === "string") {
      if (hasCredentials(value)) found.push(path || "params");
    } else if (Array.isArray(value)) {
      value.forEach((v, i) => visit(v, `${path}[${i}]`));
    } else if (value && typeof value === "object") {
      for (const [k, v] of Object.entries(value)) visit(v, path ? `${path}.${k}` : k);
    }
  };
  visit(params, prefix);
  return found;
}

/**
 * Throws when a param carries credentials, naming the param and saying why, never the value.
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
      } holds a credential (a password in a URL, or a secret-named query parameter), and params are stored with the run; put the URL in CARREL_CONN_<NAME> and pass the name instead`,
    );
  }
}
