/**
 * Connection resolution for SQL operators.
 *
 * A DAG names its connections (`"ils"`, `"warehouse"`) and the URL comes from the environment
 * (`CARREL_CONN_ILS`), so credentials never live in DAG files. Every string meant for humans
 * (logs, errors, the UI) uses {@linkcode maskUrl} so a password never leaves this module.
 *
 * @module
 */
import { resolve } from "node:path";
import { maskUrl } from "../../core/privacy/secrets.ts";
import { connectionVariable } from "../../core/sandbox/capabilities.ts";

// One definition of the variable behind a connection name, shared with the sandbox.
export { connectionVariable };

export { maskUrl };

/** Read access to environment variables; `Deno.env` satisfies it. */
export interface EnvReader {
  /** Returns the value of the variable, or `undefined` when it is not set. */
  get(name: string): string | undefined;
}

/**
 * What a connection points at: a PostgreSQL server, an embedded PGlite data directory, or a
 * MariaDB/MySQL server (Koha's database).
 */
export type ConnectionKind = "postgres" | "pglite" | "mysql";

/** A connection resolved from a name or a URL. */
export interface ResolvedConnection {
  /**
   * `"postgres"` for `postgres://` URLs, `"pglite"` for `pglite:` URLs (an embedded database),
   * `"mysql"` for `mysql://` and `mariadb://` URLs.
   */
  kind: ConnectionKind;
  /** The connection name (`"ils"`), or the masked URL when a URL was given directly. */
  name: string;
  /** The full URL including credentials. Never log it; use {@linkcode ResolvedConnection.display}. */
  url: string;
  /** The URL with its password masked, safe for logs and errors. */
  display: string;
}

/** Raised when a connection cannot be resolved. The message never contains a password. */
export class ConnectionError extends Error {
  /** The environment variable involved, when there is one. */
  readonly variable: string | undefined;

  /**
   * Creates a connection error.
   *
   * @example Usage
   * ```ts
   * import { ConnectionError } from "./connection.ts";
   * const err = new ConnectionError("Cannot resolve connection \"ils\": CARREL_CONN_ILS is not set", "CARREL_CONN_ILS");
   * console.log(err.variable); // "CARREL_CONN_ILS"
   * ```
   */
  constructor(message: string, variable?: string) {
    super(message);
    this.name = "ConnectionError";
    this.variable = variable;
  }
}

const URL_SCHEME = /^postgres(?:ql)?:\/\//i;
const MYSQL_SCHEME = /^(?:mysql|mariadb):\/\//i;
const PGLITE_SCHEME = /^pglite:/i;
const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

/**
 * Returns whether a string looks like a PostgreSQL connection URL.
 *
 * @example Usage
 * ```ts
 * import { isPostgresUrl } from "./connection.ts";
 * console.log(isPostgresUrl("postgres://carrel@db/ils")); // true
 * console.log(isPostgresUrl("ils")); // false
 * ```
 */
export function isPostgresUrl(value: string): boolean {
  return URL_SCHEME.test(value);
}

/**
 * Returns whether a string looks like a MariaDB or MySQL connection URL (`mysql://` or
 * `mariadb://`; both reach either server).
 *
 * @example Usage
 * ```ts
 * import { isMysqlUrl } from "./connection.ts";
 * console.log(isMysqlUrl("mariadb://carrel@db/koha")); // true
 * console.log(isMysqlUrl("postgres://db/ils")); // false
 * ```
 */
export function isMysqlUrl(value: string): boolean {
  return MYSQL_SCHEME.test(value.trim());
}

/**
 * Returns whether a string is a `pglite:` URL: an embedded PGlite data directory
 * (`pglite:///abs/path`, `pglite:./relative/path`, `pglite:relative`, or `pglite:memory` for a
 * throwaway in-memory database).
 *
 * @example Usage
 * ```ts
 * import { isPgliteUrl } from "./connection.ts";
 * console.log(isPgliteUrl("pglite:./.carrel/ils")); // true
 * console.log(isPgliteUrl("postgres://db/ils")); // false
 * ```
 */
export function isPgliteUrl(value: string): boolean {
  return PGLITE_SCHEME.test(value.trim());
}

/**
 * The data directory of a `pglite:` URL, resolved against the working directory, or `undefined`
 * for `pglite:memory` (an in-memory database).
 *
 * @example Usage
 * ```ts
 * import { pglitePath } from "./connection.ts";
 * console.log(pglitePath("pglite:///srv/ils")); // "/srv/ils"
 * console.log(pglitePath("pglite:memory")); // undefined
 * ```
 */
export function pglitePath(url: string): string | undefined {
  const value = url.trim();
  if (!isPgliteUrl(value)) {
    throw new ConnectionError("Cannot open PGlite: expected a pglite: URL");
  }
  let rest = value.slice("pglite:".length);
  if (rest === "memory" || rest === "//memory" || rest === "") return undefined;
  if (rest.startsWith("//")) rest = rest.slice(2); // pglite:///abs -> /abs, pglite://rel -> rel
  try {
    rest = decodeURIComponent(rest);
  } catch { /* keep as is */ }
  return resolve(rest);
}

/**
 * Resolves a connection name or URL.
 *
 * - A `postgres://` or `postgresql://` URL is used as is.
 * - A `mysql://` or `mariadb://` URL names a MariaDB or MySQL server (Koha).
 * - A `pglite:` URL names an embedded PGlite data directory (see {@linkcode pglitePath}).
 * - A name such as `ils` is looked up in the environment variable `CARREL_CONN_ILS`
 *   (see {@linkcode connectionVariable}); a missing variable is an error naming the variable.
 *
 * The returned `display` is masked and safe to log; errors never contain the password.
 *
 * @example Usage
 * ```ts
 * import { resolveConnection } from "./connection.ts";
 * const env = new Map([["CARREL_CONN_ILS", "postgres://carrel:pw@db/evergreen"]]);
 * const conn = resolveConnection("ils", env);
 * console.log(conn.display); // "postgres://carrel:***@db/evergreen"
 * ```
 */
export function resolveConnection(
  nameOrUrl: string,
  env: EnvReader = Deno.env,
): ResolvedConnection {
  const value = nameOrUrl.trim();
  if (isPostgresUrl(value)) {
    const display = maskUrl(value);
    return { kind: "postgres", name: display, url: value, display };
  }
  if (isMysqlUrl(value)) {
    const display = maskUrl(value);
    return { kind: "mysql", name: display, url: value, display };
  }
  if (isPgliteUrl(value)) {
    return { kind: "pglite", name: value, url: value, display: value };
  }
  if (!NAME.test(value)) {
    // Never echo the input: it might be a URL with credentials but a mistyped scheme.
    throw new ConnectionError(
      "Cannot resolve connection: expected a connection name (letters, digits, '_', '-', '.') or a postgres://, mysql://, mariadb:// or pglite: URL",
    );
  }
  const variable = connectionVariable(value);
  const url = env.get(variable)?.trim();
  if (url === undefined || url === "") {
    throw new ConnectionError(
      `Cannot resolve connection "${value}": ${variable} is not set`,
      variable,
    );
  }
  if (isPgliteUrl(url)) return { kind: "pglite", name: value, url, display: url };
  if (isMysqlUrl(url)) return { kind: "mysql", name: value, url, display: maskUrl(url) };
  if (!isPostgresUrl(url)) {
    throw new ConnectionError(
      `Cannot resolve connection "${value}": ${variable} does not hold a postgres://, postgresql://, mysql://, mariadb:// or pglite: URL`,
      variable,
    );
  }
  return { kind: "postgres", name: value, url, display: maskUrl(url) };
}
