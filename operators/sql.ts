/**
 * SQL extract and load for PostgreSQL, built on postgres.js, and for embedded PGlite databases
 * (`pglite:` URLs or a PGlite instance), so pipelines and tests run without a server.
 *
 * - {@linkcode sqlExtract} streams rows out of a read-only transaction through a server-side
 *   cursor (flat memory for any row count).
 * - {@linkcode sqlLoad} inserts rows in batches with `ON CONFLICT (<natural key>) DO NOTHING`,
 *   so reruns never duplicate.
 *
 * Privacy: errors raised here are {@linkcode SqlError}s whose messages name connections (with the
 * password masked), tables, columns, SQLSTATE codes, row positions and counts, never a parameter
 * value, a row value or a password. postgres.js errors are never attached as `cause` because
 * they carry the query parameters.
 *
 * @module
 */
import postgres from "postgres";
import { PGlite } from "@electric-sql/pglite";
import { join } from "node:path";
import { type EnvReader, maskUrl, pglitePath, resolveConnection } from "./connection.ts";

/** A postgres.js client of any custom type configuration. */
// deno-lint-ignore no-explicit-any
export type Sql = postgres.Sql<any>;

/** A row as returned by postgres.js. */
export type Row = Record<string, unknown>;

/**
 * The subset of a PGlite instance (or any object with the same methods) the SQL operators use.
 * `PGlite` from `@electric-sql/pglite` satisfies it.
 */
export interface PgliteDatabase {
  /** Runs one statement with parameters. */
  query<T>(query: string, params?: unknown[]): Promise<{ rows: T[]; affectedRows?: number }>;
  /** Runs one or more statements without parameters. */
  exec(query: string): Promise<unknown>;
  /** Closes the database. */
  close(): Promise<void>;
}

/**
 * Where to run: a connection name (`"ils"` resolves through `CARREL_CONN_ILS`), a
 * `postgres://` URL, a `pglite:` URL (an embedded PGlite data directory, opened for the call and
 * closed afterwards), a postgres.js client, a PGlite instance, or a client with a display name for
 * messages. Clients you pass in are never closed by these functions.
 */
export type SqlSource =
  | string
  | Sql
  | PgliteDatabase
  | { sql: Sql | PgliteDatabase; name: string };

/** Raised by SQL operators; the message is safe to log (no values, no passwords). */
export class SqlError extends Error {
  /**
   * What went wrong: a SQLSTATE (`"25006"`, `"22P02"`), a network code (`"ECONNREFUSED"`), a
   * postgres.js code (`"CONNECT_TIMEOUT"`), or a Carrel code: `"STATEMENT_TIMEOUT"`, `"ABORTED"`,
   * `"READ_ONLY"` (not a read query), `"INVALID_ARGUMENT"`, `"INVALID_URL"`, `"INVALID_ROW"`,
   * `"MISSING_VALUE"`.
   */
  readonly code: string;

  /**
   * Creates an SQL error. The message must already be free of values and passwords.
   *
   * @example Usage
   * ```ts
   * import { SqlError } from "./sql.ts";
   * const err = new SqlError('Cannot extract from "ils": aborted', "ABORTED");
   * console.log(err.code); // "ABORTED"
   * ```
   */
  constructor(message: string, code: string) {
    super(message);
    this.name = "SqlError";
    this.code = code;
  }
}

/**
 * Parses a duration such as `"30s"`, `"500ms"`, `"5min"`, `"1h"` or a number of milliseconds.
 *
 * @example Usage
 * ```ts
 * import { parseDuration } from "./sql.ts";
 * console.log(parseDuration("30s")); // 30000
 * console.log(parseDuration(250)); // 250
 * ```
 */
export function parseDuration(value: string | number): number {
  if (typeof value === "number") {
    if (!Number.isFinite(value) || value < 0) {
      throw new SqlError(
        `Invalid duration: expected a non-negative number of milliseconds`,
        "INVALID_ARGUMENT",
      );
    }
    return Math.round(value);
  }
  const match = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|sec|m|min|h)?\s*$/i.exec(value);
  if (match === null) {
    throw new SqlError(
      `Invalid duration: expected e.g. "500ms", "30s", "5min" or "1h"`,
      "INVALID_ARGUMENT",
    );
  }
  const amount = Number(match[1]);
  const unit = (match[2] ?? "ms").toLowerCase();
  const factor = unit === "ms"
    ? 1
    : unit === "s" || unit === "sec"
    ? 1_000
    : unit === "h"
    ? 3_600_000
    : 60_000;
  return Math.round(amount * factor);
}

/**
 * Formats milliseconds for messages: `30000` -> `"30s"`, `1500` -> `"1500ms"`.
 *
 * @example Usage
 * ```ts
 * import { formatDuration } from "./sql.ts";
 * console.log(formatDuration(120_000)); // "2min"
 * ```
 */
export function formatDuration(ms: number): string {
  if (ms > 0 && ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms > 0 && ms % 60_000 === 0) return `${ms / 60_000}min`;
  if (ms > 0 && ms % 1_000 === 0) return `${ms / 1_000}s`;
  return `${ms}ms`;
}

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_$]*$/;

/**
 * Validates and double-quotes an identifier or a dotted `schema.table` name.
 * Only `[A-Za-z_][A-Za-z0-9_$]*` parts are accepted, so the result is always safe to splice
 * into SQL.
 *
 * @example Usage
 * ```ts
 * import { quoteIdentifier } from "./sql.ts";
 * console.log(quoteIdentifier("warehouse.loan_events")); // "\"warehouse\".\"loan_events\""
 * ```
 */
export function quoteIdentifier(name: string): string {
  const parts = name.split(".");
  if (parts.length > 2 || parts.some((part) => !IDENTIFIER.test(part))) {
    throw new SqlError(
      `Invalid identifier "${name}": expected letters, digits, "_" or "$" (optionally "schema.name")`,
      "INVALID_ARGUMENT",
    );
  }
  return parts.map((part) => `"${part}"`).join(".");
}

const SQLSTATE_TEXT: Readonly<Record<string, string>> = {
  "0A000": "feature not supported",
  "08000": "connection exception",
  "08001": "cannot establish connection",
  "08006": "connection failure",
  "22001": "value too long for the column type",
  "22003": "numeric value out of range",
  "22007": "invalid date/time format",
  "22008": "date/time field out of range",
  "22012": "division by zero",
  "22021": "invalid byte sequence for the encoding",
  "22P02": "invalid input syntax for the column type",
  "22P05": "untranslatable character",
  "23502": "null value violates a not-null constraint",
  "23503": "foreign key violation",
  "23505": "unique violation",
  "23514": "check constraint violation",
  "25006": "cannot write in a read-only transaction",
  "28000": "invalid authorization",
  "28P01": "password authentication failed",
  "3D000": "database does not exist",
  "40001": "serialization failure",
  "40P01": "deadlock detected",
  "42501": "insufficient privilege",
  "42601": "syntax error",
  "42703": "undefined column",
  "42P01": "undefined table",
  "42P10": "no unique constraint matches the ON CONFLICT key",
  "53300": "too many connections",
  "57014": "statement canceled",
  "57P01": "server shutting down",
  "P0001": "raised exception",
};

const SQLSTATE_CLASS_TEXT: Readonly<Record<string, string>> = {
  "08": "connection exception",
  "22": "data exception",
  "23": "integrity constraint violation",
  "25": "invalid transaction state",
  "28": "invalid authorization",
  "3D": "invalid catalog name",
  "40": "transaction rollback",
  "42": "syntax error or access rule violation",
  "53": "insufficient resources",
  "54": "program limit exceeded",
  "55": "object not in prerequisite state",
  "57": "operator intervention",
  "58": "system error",
  "P0": "PL/pgSQL error",
  "XX": "internal error",
};

/**
 * Server message classes whose text names only identifiers and settings, never data values.
 * Classes 22 (data), 23 (integrity, whose detail holds key values) and P0 (user RAISE) are
 * described from the SQLSTATE instead.
 */
const SAFE_MESSAGE_CLASSES = new Set(["08", "0A", "25", "28", "3D", "40", "42", "53", "57"]);

const NETWORK_TEXT: Readonly<Record<string, string>> = {
  ECONNREFUSED: "connection refused",
  ENOTFOUND: "host not found",
  EAI_AGAIN: "host name lookup failed",
  ETIMEDOUT: "connection timed out",
  ECONNRESET: "connection reset",
  EHOSTUNREACH: "host unreachable",
  ENETUNREACH: "network unreachable",
  EPIPE: "connection closed",
  CONNECT_TIMEOUT: "connection timed out",
  CONNECTION_CLOSED: "connection closed",
  CONNECTION_ENDED: "connection ended",
  CONNECTION_DESTROYED: "connection destroyed",
  SASL_SIGNATURE_MISMATCH: "server signature mismatch",
  AUTH_TYPE_NOT_IMPLEMENTED: "authentication method not supported",
  ERR_INVALID_URL: "invalid URL",
};

const POSTGRES_JS_TEXT: Readonly<Record<string, string>> = {
  UNDEFINED_VALUE: "undefined values are not allowed",
  MAX_PARAMETERS_EXCEEDED: "too many parameters in one statement",
  MESSAGE_NOT_SUPPORTED: "unsupported protocol message",
};

interface Described {
  code: string;
  text: string;
  connection: boolean;
}

function describe(err: unknown, timeoutMs: number | undefined, aborted: boolean): Described {
  if (err instanceof SqlError) return { code: err.code, text: err.message, connection: false };
  const e = (typeof err === "object" && err !== null ? err : {}) as Record<string, unknown>;
  const code = typeof e.code === "string" ? e.code : undefined;
  const isPostgres = e.name === "PostgresError" ||
    (typeof e.severity === "string" && code !== undefined);
  if (isPostgres && code !== undefined) {
    if (code === "57014") {
      const message = String(e.message ?? "");
      if (message.includes("statement timeout")) {
        const after = timeoutMs === undefined ? "" : ` after ${formatDuration(timeoutMs)}`;
        return {
          code: "STATEMENT_TIMEOUT",
          text: `statement timed out${after}`,
          connection: false,
        };
      }
      if (aborted) return { code: "ABORTED", text: "aborted", connection: false };
    }
    const cls = code.slice(0, 2);
    // postgres.js names them `table_name`..., PGlite (pg-protocol) `table`...
    const table = e.table_name ?? e.table;
    const column = e.column_name ?? e.column;
    const constraint = e.constraint_name ?? e.constraint;
    const identifiers = [
      typeof table === "string" ? `table "${table}"` : "",
      typeof column === "string" ? `column "${column}"` : "",
      typeof constraint === "string" ? `constraint "${constraint}"` : "",
    ].filter((part) => part !== "");
    const base = SAFE_MESSAGE_CLASSES.has(cls) && typeof e.message === "string"
      ? e.message
      : SQLSTATE_TEXT[code] ?? SQLSTATE_CLASS_TEXT[cls] ?? "database error";
    const where = identifiers.length > 0 ? ` (${identifiers.join(", ")})` : "";
    return {
      code,
      text: `${base}${where} [SQLSTATE ${code}]`,
      connection: cls === "08" || cls === "28" || cls === "3D" || code === "53300" ||
        code === "57P01",
    };
  }
  if (code !== undefined && code in NETWORK_TEXT) {
    return { code, text: `${NETWORK_TEXT[code]} (${code})`, connection: true };
  }
  if (code !== undefined && code in POSTGRES_JS_TEXT) {
    return { code, text: `${POSTGRES_JS_TEXT[code]} (${code})`, connection: false };
  }
  if (aborted) return { code: "ABORTED", text: "aborted", connection: false };
  const name = typeof e.name === "string" ? e.name : typeof err;
  // Only the error's class name: its message may hold a URL or a value.
  return {
    code: code ?? "UNKNOWN",
    text: `unexpected ${name}${code === undefined ? "" : ` (${code})`}`,
    connection: false,
  };
}

interface Opened {
  sql: Sql;
  /** Quoted name for messages: `"ils"` or the masked URL. */
  label: string;
  owned: boolean;
}

/** An embedded database to use: a PGlite instance passed in, or a `pglite:` URL opened here. */
interface Embedded {
  label: string;
  owned: boolean;
  open(create: boolean): Promise<PgliteDatabase>;
}

function isPgliteDatabase(value: unknown): value is PgliteDatabase {
  return typeof value === "object" && value !== null &&
    typeof (value as PgliteDatabase).query === "function" &&
    typeof (value as PgliteDatabase).exec === "function";
}

/**
 * Opens a PGlite data directory. With `create: false` the directory must already hold a
 * database (an extract from a mistyped path must fail, not extract from a fresh empty one).
 */
export async function openPglite(path: string | undefined, create = true): Promise<PGlite> {
  if (path !== undefined) {
    let exists = false;
    try {
      await Deno.stat(join(path, "PG_VERSION"));
      exists = true;
    } catch { /* new */ }
    if (!exists && !create) {
      throw new SqlError(
        `Cannot open PGlite database at ${path}: no database there`,
        "3D000",
      );
    }
    if (!exists) await Deno.mkdir(path, { recursive: true });
  }
  return path === undefined ? await PGlite.create() : await PGlite.create(path);
}

let openEmbedded = 0;

/**
 * How many PGlite databases opened from `pglite:` URLs by {@linkcode sqlExtract} and
 * {@linkcode sqlLoad} are open right now (0 whenever none of them is running): a check that every
 * data directory they open is closed again.
 *
 * @example Usage
 * ```ts
 * import { openEmbeddedDatabases } from "./sql.ts";
 * console.log(openEmbeddedDatabases()); // 0
 * ```
 */
export function openEmbeddedDatabases(): number {
  return openEmbedded;
}

async function openCounted(path: string | undefined, create: boolean): Promise<PgliteDatabase> {
  const db = await openPglite(path, create);
  openEmbedded++;
  let closed = false;
  return {
    query: (q, p) => db.query(q, p),
    exec: (q) => db.exec(q),
    close: async () => {
      if (closed) return;
      closed = true;
      openEmbedded--;
      await db.close();
    },
  };
}

/** The embedded database behind a source, or `undefined` for a PostgreSQL server. */
function embeddedOf(source: SqlSource, env: EnvReader | undefined): Embedded | undefined {
  if (typeof source === "function") return undefined;
  if (typeof source === "object") {
    if (isPgliteDatabase(source)) {
      return { label: "the embedded database", owned: false, open: () => Promise.resolve(source) };
    }
    const inner = source.sql;
    if (isPgliteDatabase(inner)) {
      return { label: `"${source.name}"`, owned: false, open: () => Promise.resolve(inner) };
    }
    return undefined;
  }
  const resolved = resolveConnection(source, env ?? Deno.env);
  if (resolved.kind !== "pglite") return undefined;
  const label = resolved.name === resolved.display
    ? `"${resolved.display}"`
    : `"${resolved.name}" (${resolved.display})`;
  return {
    label,
    owned: true,
    open: (create) => openCounted(pglitePath(resolved.url), create),
  };
}

function open(source: SqlSource, env: EnvReader | undefined, max: number): Opened {
  if (typeof source === "function") return { sql: source, label: "the database", owned: false };
  if (typeof source === "object") {
    const named = source as { sql: Sql; name: string };
    return { sql: named.sql, label: `"${named.name}"`, owned: false };
  }
  const resolved = resolveConnection(source, env ?? Deno.env);
  const label = resolved.name === resolved.display
    ? `"${resolved.display}"`
    : `"${resolved.name}" (${resolved.display})`;
  try {
    const sql = postgres(resolved.url, {
      max,
      onnotice: () => {},
      connect_timeout: 30,
      connection: { application_name: "carrel" },
    });
    return { sql, label, owned: true };
  } catch (err) {
    // URL parse errors embed the input; report the class only.
    const d = describe(err, undefined, false);
    const detail = d.code === "UNKNOWN" ? "" : ` (${d.code})`;
    throw new SqlError(
      `Cannot connect to ${label}: invalid connection URL${detail}`,
      "INVALID_URL",
    );
  }
}

function wrap(
  err: unknown,
  action: string,
  label: string,
  timeoutMs: number | undefined,
  aborted: boolean,
): SqlError {
  if (err instanceof SqlError) return err;
  const d = describe(err, timeoutMs, aborted);
  const message = d.connection ? `Cannot connect to ${label}: ${d.text}` : `${action}: ${d.text}`;
  return new SqlError(message, d.code);
}

function positiveInteger(value: number, what: string): number {
  if (!Number.isInteger(value) || value < 1) {
    throw new SqlError(`Invalid ${what}: expected a positive integer`, "INVALID_ARGUMENT");
  }
  return value;
}

/** Options for {@linkcode sqlExtract}. */
export interface SqlExtractOptions {
  /** Rows fetched from the server-side cursor per round trip (default 1000). */
  batchSize?: number;
  /** `SET LOCAL statement_timeout` for each statement, e.g. `"30s"` or milliseconds (default `"30min"`).
   * It applies to each cursor fetch, so a slow consumer does not trip it. `0` disables it. */
  statementTimeout?: string | number;
  /** Aborting cancels the running fetch, rolls back and ends the iteration with an `ABORTED` error. */
  signal?: AbortSignal;
  /** Where connection names are looked up (default `Deno.env`). */
  env?: EnvReader;
}

const READ_QUERY = /^(select|with|values|table)\b/i;

function leadingKeyword(query: string): string {
  const stripped = query.replace(/^(?:\s+|--[^\n]*\n?|\/\*[\s\S]*?\*\/|\()+/, "");
  return /^[A-Za-z]*/.exec(stripped)?.[0].toUpperCase() ?? "";
}

/**
 * Streams the rows of a query.
 *
 * Runs inside `BEGIN READ ONLY ISOLATION LEVEL READ COMMITTED` with `SET LOCAL statement_timeout`,
 * through a server-side cursor (`DECLARE ... NO SCROLL CURSOR` + `FETCH FORWARD batchSize`), so
 * memory stays flat for millions of rows. The transaction is rolled back on any error, when the
 * consumer stops early (`break`) or when the signal aborts; a connection opened from a name or URL
 * is closed at the end. Writes fail (`cannot execute ... in a read-only transaction`), and only
 * `SELECT`, `WITH`, `VALUES` and `TABLE` queries are accepted.
 *
 * postgres.js type parsing applies: `int8` and `numeric` come back as strings, timestamps as `Date`.
 * On PGlite (a `pglite:` URL or instance) `int8` comes back as a number and `numeric` as a string;
 * cast in the query (`id::text`) when the type must not depend on the source. PGlite cannot cancel
 * a running statement, so an abort takes effect between fetches.
 *
 * @example Usage
 * ```ts ignore
 * import { sqlExtract } from "./sql.ts";
 * for await (const row of sqlExtract("ils", "SELECT id, usr FROM action.circulation WHERE xact_start >= $1", [since], {
 *   statementTimeout: "30s",
 * })) {
 *   console.log(row.id);
 * }
 * ```
 */
export async function* sqlExtract<T extends Row = Row>(
  source: SqlSource,
  query: string,
  params: readonly unknown[] = [],
  options: SqlExtractOptions = {},
): AsyncGenerator<T, void, undefined> {
  const batchSize = positiveInteger(options.batchSize ?? 1000, "batchSize");
  const timeoutMs = parseDuration(options.statementTimeout ?? "30min");
  const { signal } = options;
  const keyword = leadingKeyword(query);
  const embedded = embeddedOf(source, options.env);
  if (embedded !== undefined) {
    yield* pgliteExtract<T>(embedded, query, params, keyword, batchSize, timeoutMs, signal);
    return;
  }
  const db = open(source, options.env, 1);
  const action = `Cannot extract from ${db.label}`;
  let reserved: postgres.ReservedSql | undefined;
  let current: { cancel(): void } | undefined;
  let committed = false;
  const onAbort = () => {
    current?.cancel();
  };
  const run = async (text: string, args?: readonly unknown[]) => {
    if (reserved === undefined) throw new SqlError(`${action}: no connection`, "CONNECTION_CLOSED");
    const q = reserved.unsafe(text, args as postgres.ParameterOrJSON<never>[] | undefined);
    current = q;
    try {
      return await q;
    } finally {
      current = undefined;
    }
  };
  const abortError = () => new SqlError(`${action}: aborted`, "ABORTED");
  try {
    assertReadQuery(action, keyword);
    if (signal?.aborted) throw abortError();
    signal?.addEventListener("abort", onAbort, { once: true });
    reserved = await db.sql.reserve();
    await run("BEGIN READ ONLY ISOLATION LEVEL READ COMMITTED");
    await run(`SET LOCAL statement_timeout = ${timeoutMs}`);
    await run(`DECLARE carrel_extract NO SCROLL CURSOR FOR ${query}`, params);
    const fetch = `FETCH FORWARD ${batchSize} FROM carrel_extract`;
    for (;;) {
      if (signal?.aborted) throw abortError();
      const rows = await run(fetch);
      for (const row of rows) {
        yield row as unknown as T;
        if (signal?.aborted) throw abortError();
      }
      if (rows.length < batchSize) break;
    }
    await run("COMMIT");
    committed = true;
  } catch (err) {
    throw wrap(err, action, db.label, timeoutMs, signal?.aborted ?? false);
  } finally {
    signal?.removeEventListener("abort", onAbort);
    if (reserved !== undefined) {
      if (!committed) await reserved.unsafe("ROLLBACK").catch(() => {});
      reserved.release();
    }
    if (db.owned) await db.sql.end({ timeout: 5 }).catch(() => {});
  }
}

/** Target table description for {@linkcode sqlLoad}. */
export interface SqlLoadTarget {
  /** `table` or `schema.table`. */
  table: string;
  /** Columns to insert; each row must have a value (or `null`) for each. */
  columns: readonly string[];
  /** Natural key columns; a unique constraint on exactly these columns must exist. */
  key: readonly string[];
  /** DDL run (in the load transaction) when the table does not exist yet. */
  createSql?: string;
}

/** Options for {@linkcode sqlLoad}. */
export interface SqlLoadOptions {
  /** Rows per INSERT statement (default 1000; lowered automatically to stay under 65534 parameters). */
  batchSize?: number;
  /** `SET LOCAL statement_timeout` for each statement (default: the server's setting). */
  statementTimeout?: string | number;
  /** Aborting cancels the running statement and rolls the whole load back. */
  signal?: AbortSignal;
  /** Where connection names are looked up (default `Deno.env`). */
  env?: EnvReader;
}

/** Result of {@linkcode sqlLoad}. */
export interface SqlLoadResult {
  /** Rows inserted. */
  inserted: number;
  /** Rows skipped because their natural key already existed (or repeated within the input). */
  skipped: number;
}

const MAX_PARAMETERS = 65_534;

class SourceFailure {
  constructor(readonly error: unknown) {}
}

/**
 * Inserts rows idempotently: batched multi-row `INSERT ... ON CONFLICT (<key>) DO NOTHING`, all in
 * one transaction (an error or an abort loads nothing). Reruns with the same rows insert 0.
 *
 * Identifiers are validated and quoted. A row lacking one of `columns` is an error naming the
 * column and the row position (1-based); pass `null` for SQL NULL.
 *
 * @example Usage
 * ```ts ignore
 * import { sqlLoad } from "./sql.ts";
 * const { inserted, skipped } = await sqlLoad("warehouse", {
 *   table: "warehouse.loan_events",
 *   columns: ["circ_id", "copy_id", "checkout_date"],
 *   key: ["circ_id"],
 * }, rows);
 * ```
 */
export async function sqlLoad(
  source: SqlSource,
  target: SqlLoadTarget,
  rows: AsyncIterable<Row> | Iterable<Row>,
  options: SqlLoadOptions = {},
): Promise<SqlLoadResult> {
  const table = quoteIdentifier(target.table);
  const columns = target.columns.map((column) => quoteIdentifier(column));
  if (columns.length === 0) {
    throw new SqlError(`Cannot load into ${target.table}: no columns given`, "INVALID_ARGUMENT");
  }
  if (new Set(target.columns).size !== target.columns.length) {
    throw new SqlError(
      `Cannot load into ${target.table}: duplicate column names`,
      "INVALID_ARGUMENT",
    );
  }
  if (target.key.length === 0) {
    throw new SqlError(
      `Cannot load into ${target.table}: a natural key is required`,
      "INVALID_ARGUMENT",
    );
  }
  for (const key of target.key) {
    if (!target.columns.includes(key)) {
      throw new SqlError(
        `Cannot load into ${target.table}: key column "${key}" is not among the columns`,
        "INVALID_ARGUMENT",
      );
    }
  }
  const key = target.key.map((column) => quoteIdentifier(column));
  const batchSize = Math.min(
    positiveInteger(options.batchSize ?? 1000, "batchSize"),
    Math.floor(MAX_PARAMETERS / columns.length),
  );
  const timeoutMs = options.statementTimeout === undefined
    ? undefined
    : parseDuration(options.statementTimeout);
  const { signal } = options;
  const embedded = embeddedOf(source, options.env);
  if (embedded !== undefined) {
    return await pgliteLoad(
      embedded,
      target,
      rows,
      table,
      columns,
      key,
      batchSize,
      timeoutMs,
      signal,
    );
  }
  const db = open(source, options.env, 1);
  const action = `Cannot load into ${target.table} on ${db.label}`;
  const statementFor = insertStatements(table, columns, key);
  let current: { cancel(): void } | undefined;
  const onAbort = () => {
    current?.cancel();
  };
  const batches = new RowBatches(action, target.columns, batchSize);
  try {
    if (signal?.aborted) throw new SqlError(`${action}: aborted`, "ABORTED");
    signal?.addEventListener("abort", onAbort, { once: true });
    await db.sql.begin(async (tx) => {
      const exec = async (text: string, args?: unknown[], prepare = false) => {
        if (signal?.aborted) throw new SqlError(`${action}: aborted`, "ABORTED");
        const q = tx.unsafe(text, args as postgres.ParameterOrJSON<never>[] | undefined, {
          prepare,
        });
        current = q;
        try {
          return await q;
        } finally {
          current = undefined;
        }
      };
      if (timeoutMs !== undefined) await exec(`SET LOCAL statement_timeout = ${timeoutMs}`);
      if (target.createSql !== undefined) {
        const [found] = await exec(`SELECT to_regclass($1) IS NOT NULL AS present`, [table]);
        if (found?.present !== true) {
          if (signal?.aborted) throw new SqlError(`${action}: aborted`, "ABORTED");
          const q = tx.unsafe(target.createSql).simple();
          current = q;
          try {
            await q;
          } finally {
            current = undefined;
          }
        }
      }
      await batches.run(rows, async (count, values) => {
        const result = await exec(statementFor(count), values, true);
        return result.count;
      });
    });
  } catch (err) {
    // Errors from the input iterable are the producer's own; pass them through untouched.
    if (err instanceof SourceFailure) throw err.error;
    const rowsPart = batches.rowsPart();
    if (err instanceof SqlError) throw err;
    throw wrap(
      err,
      `${action}${rowsPart ? `,${rowsPart}` : ""}`,
      db.label,
      timeoutMs,
      signal?.aborted ?? false,
    );
  } finally {
    signal?.removeEventListener("abort", onAbort);
    if (db.owned) await db.sql.end({ timeout: 5 }).catch(() => {});
  }
  return { inserted: batches.inserted, skipped: batches.position - batches.inserted };
}

/**
 * Returns a human label for a source, with any password masked. Useful for logs.
 *
 * @example Usage
 * ```ts
 * import { sourceLabel } from "./sql.ts";
 * console.log(sourceLabel("postgres://carrel:pw@db/ils")); // "postgres://carrel:***@db/ils"
 * ```
 */
export function sourceLabel(source: SqlSource): string {
  if (typeof source === "function") return "the database";
  if (isPgliteDatabase(source)) return "the embedded database";
  if (typeof source === "object") return (source as { name: string }).name;
  return maskUrl(source);
}

// ---------------------------------------------------------------------------------------------
// PGlite

async function* pgliteExtract<T>(
  embedded: Embedded,
  query: string,
  params: readonly unknown[],
  keyword: string,
  batchSize: number,
  timeoutMs: number,
  signal: AbortSignal | undefined,
): AsyncGenerator<T, void, undefined> {
  const action = `Cannot extract from ${embedded.label}`;
  const abortError = () => new SqlError(`${action}: aborted`, "ABORTED");
  let db: PgliteDatabase | undefined;
  let began = false;
  let committed = false;
  try {
    assertReadQuery(action, keyword);
    if (signal?.aborted) throw abortError();
    try {
      db = await embedded.open(false);
    } catch (err) {
      if (err instanceof SqlError) throw err;
      throw new SqlError(`Cannot connect to ${embedded.label}: cannot open the database`, "08001");
    }
    await db.exec("BEGIN READ ONLY ISOLATION LEVEL READ COMMITTED");
    began = true;
    await db.exec(`SET LOCAL statement_timeout = ${timeoutMs}`);
    await db.query(`DECLARE carrel_extract NO SCROLL CURSOR FOR ${query}`, [...params]);
    const fetch = `FETCH FORWARD ${batchSize} FROM carrel_extract`;
    for (;;) {
      if (signal?.aborted) throw abortError();
      const { rows } = await db.query<T>(fetch);
      for (const row of rows) {
        yield row;
        if (signal?.aborted) throw abortError();
      }
      if (rows.length < batchSize) break;
    }
    await db.exec("COMMIT");
    committed = true;
  } catch (err) {
    throw wrap(err, action, embedded.label, timeoutMs, signal?.aborted ?? false);
  } finally {
    if (db !== undefined) {
      if (began && !committed) await db.exec("ROLLBACK").catch(() => {});
      if (embedded.owned) await db.close().catch(() => {});
    }
  }
}

/** Refuses anything but a read query before a connection is opened. */
function assertReadQuery(action: string, keyword: string): void {
  if (!READ_QUERY.test(keyword)) {
    throw new SqlError(
      `${action}: only SELECT, WITH, VALUES or TABLE queries can be extracted (found ${
        keyword || "no statement"
      })`,
      "READ_ONLY",
    );
  }
}

/** Statement texts for a multi-row idempotent insert, cached per row count. */
function insertStatements(
  table: string,
  columns: string[],
  key: string[],
): (count: number) => string {
  const statements = new Map<number, string>();
  return (count) => {
    let text = statements.get(count);
    if (text === undefined) {
      const tuples: string[] = [];
      for (let r = 0; r < count; r++) {
        const slots: string[] = [];
        for (let c = 0; c < columns.length; c++) slots.push(`$${r * columns.length + c + 1}`);
        tuples.push(`(${slots.join(",")})`);
      }
      text = `INSERT INTO ${table} (${columns.join(",")}) VALUES ${tuples.join(",")} ON CONFLICT (${
        key.join(",")
      }) DO NOTHING`;
      statements.set(count, text);
    }
    return text;
  };
}

/**
 * Reads the rows of a load, checks each has every column, and hands them on in batches; keeps
 * the positions that error messages name (never values).
 */
class RowBatches {
  inserted = 0;
  position = 0;
  batchStart = 1;
  constructor(
    readonly action: string,
    readonly columns: readonly string[],
    readonly batchSize: number,
  ) {}

  /** `write` inserts one batch and returns how many rows it inserted. */
  async run(
    rows: AsyncIterable<Row> | Iterable<Row>,
    write: (count: number, values: unknown[]) => Promise<number>,
  ): Promise<void> {
    let values: unknown[] = [];
    let count = 0;
    const flush = async () => {
      if (count === 0) return;
      this.inserted += await write(count, values);
      values = [];
      count = 0;
      this.batchStart = this.position + 1;
    };
    const iterator = Symbol.asyncIterator in rows
      ? rows[Symbol.asyncIterator]()
      : rows[Symbol.iterator]();
    for (;;) {
      let next: IteratorResult<Row>;
      try {
        next = await iterator.next();
      } catch (err) {
        throw new SourceFailure(err);
      }
      if (next.done === true) break;
      const row = next.value;
      this.position++;
      if (typeof row !== "object" || row === null) {
        throw new SqlError(`${this.action}: row ${this.position} is not an object`, "INVALID_ROW");
      }
      for (const column of this.columns) {
        const value = row[column];
        if (value === undefined) {
          throw new SqlError(
            `${this.action}: row ${this.position} has no value for column "${column}" (use null for NULL)`,
            "MISSING_VALUE",
          );
        }
        values.push(value);
      }
      count++;
      if (count === this.batchSize) await flush();
    }
    await flush();
  }

  /** `" rows 3-7"`, `" row 3"` or `""`: where a failed batch was. */
  rowsPart(): string {
    return this.position > this.batchStart
      ? ` rows ${this.batchStart}-${this.position}`
      : this.position === this.batchStart
      ? ` row ${this.position}`
      : "";
  }
}

async function pgliteLoad(
  embedded: Embedded,
  target: SqlLoadTarget,
  rows: AsyncIterable<Row> | Iterable<Row>,
  table: string,
  columns: string[],
  key: string[],
  batchSize: number,
  timeoutMs: number | undefined,
  signal: AbortSignal | undefined,
): Promise<SqlLoadResult> {
  const action = `Cannot load into ${target.table} on ${embedded.label}`;
  const statementFor = insertStatements(table, columns, key);
  const batches = new RowBatches(action, target.columns, batchSize);
  let db: PgliteDatabase | undefined;
  let began = false;
  let committed = false;
  try {
    if (signal?.aborted) throw new SqlError(`${action}: aborted`, "ABORTED");
    try {
      db = await embedded.open(true);
    } catch (err) {
      if (err instanceof SqlError) throw err;
      throw new SqlError(`Cannot connect to ${embedded.label}: cannot open the database`, "08001");
    }
    const tx = db;
    await tx.exec("BEGIN");
    began = true;
    if (timeoutMs !== undefined) await tx.exec(`SET LOCAL statement_timeout = ${timeoutMs}`);
    if (target.createSql !== undefined) {
      const { rows: found } = await tx.query<{ present: boolean }>(
        `SELECT to_regclass($1) IS NOT NULL AS present`,
        [table],
      );
      if (found[0]?.present !== true) await tx.exec(target.createSql);
    }
    await batches.run(rows, async (count, values) => {
      if (signal?.aborted) throw new SqlError(`${action}: aborted`, "ABORTED");
      const result = await tx.query(statementFor(count), values);
      return result.affectedRows ?? 0;
    });
    await tx.exec("COMMIT");
    committed = true;
  } catch (err) {
    if (err instanceof SourceFailure) throw err.error;
    if (err instanceof SqlError) throw err;
    const rowsPart = batches.rowsPart();
    throw wrap(
      err,
      `${action}${rowsPart ? `,${rowsPart}` : ""}`,
      embedded.label,
      timeoutMs,
      signal?.aborted ?? false,
    );
  } finally {
    if (db !== undefined) {
      if (began && !committed) await db.exec("ROLLBACK").catch(() => {});
      if (embedded.owned) await db.close().catch(() => {});
    }
  }
  return { inserted: batches.inserted, skipped: batches.position - batches.inserted };
}
