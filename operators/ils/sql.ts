/**
 * SQL extract and load: one interface, one driver per kind of database.
 *
 * - {@linkcode sqlExtract} streams the rows of a read query out of a read-only session with a
 *   statement time limit (flat memory for any row count).
 * - {@linkcode sqlLoad} loads rows in one transaction, idempotently on a natural key
 *   (`ON CONFLICT ... DO NOTHING`, or an update of changed rows with `onConflict: "update"`), so
 *   reruns never duplicate.
 *
 * | connection | driver |
 * | --- | --- |
 * | `postgres://`, a postgres.js client | `sql_postgres.ts` (`COPY` both ways, see `sql_copy.ts`) |
 * | `pglite:`, a PGlite instance | `sql_pglite.ts` (embedded, same dialect; cursor out, `COPY` in) |
 * | `mysql://`, `mariadb://` | `sql_mysql.ts` (MariaDB/MySQL, for Koha; `?` placeholders) |
 *
 * Queries are written in the source's own dialect and placeholder style (`$1` for PostgreSQL and
 * PGlite, `?` for MariaDB and MySQL).
 *
 * Privacy: errors raised here are {@linkcode SqlError}s whose messages name connections (with the
 * password masked), tables, columns, error codes, row positions and counts, never a parameter
 * value, a row value or a password. Driver errors are never attached as `cause` because they
 * carry the query parameters.
 *
 * @module
 */
import { type EnvReader, maskUrl, pglitePath, resolveConnection } from "./connection.ts";
import {
  checkLoadTarget,
  durationOption,
  leadingKeyword,
  positiveInteger,
  type Row,
  type SqlLoadResult,
  type SqlLoadTarget,
} from "./sql_common.ts";
import {
  openPostgres,
  POSTGRES_MAX_PARAMETERS,
  postgresExtract,
  postgresExtractBatches,
  postgresLoad,
  type Sql,
} from "./sql_postgres.ts";
import {
  type Embedded,
  isPgliteDatabase,
  openCounted,
  type PgliteDatabase,
  pgliteExtract,
  pgliteLoad,
} from "./sql_pglite.ts";
import { MYSQL_MAX_PARAMETERS, mysqlExtract, mysqlLoad, type MysqlServer } from "./sql_mysql.ts";
import { STAGE_BYTES } from "./sql_copy.ts";

export {
  quoteIdentifier,
  quoteMysqlIdentifier,
  type Row,
  SqlError,
  type SqlLoadResult,
  type SqlLoadTarget,
} from "./sql_common.ts";
export type { Sql } from "./sql_postgres.ts";
export { openEmbeddedDatabases, openPglite, type PgliteDatabase } from "./sql_pglite.ts";

/**
 * Where to run: a connection name (`"ils"` resolves through `CARREL_CONN_ILS`), a
 * `postgres://`, `mysql://` or `mariadb://` URL, a `pglite:` URL (an embedded PGlite data
 * directory, opened for the call and closed afterwards), a postgres.js client, a PGlite instance,
 * or a client with a display name for messages. Clients you pass in are never closed by these
 * functions.
 */
export type SqlSource =
  | string
  | Sql
  | PgliteDatabase
  | { sql: Sql | PgliteDatabase; name: string };

/** Options for {@linkcode sqlExtract}. */
export interface SqlExtractOptions {
  /**
   * Rows fetched from PGlite's cursor per call (default 1000). PostgreSQL streams `COPY` output,
   * MariaDB and MySQL stream the result, with backpressure.
   */
  batchSize?: number;
  /**
   * The statement time limit, e.g. `"30s"` or milliseconds (default `"30min"`; `0` disables it).
   * PostgreSQL applies it to the whole `COPY`: a consumer that keeps the server waiting on a full
   * connection longer than that trips it. PGlite applies it to each cursor fetch; MariaDB
   * (`max_statement_time`) and MySQL (`max_execution_time`) to the whole streamed query.
   */
  statementTimeout?: string | number;
  /** Aborting cancels the running statement, rolls back and ends the iteration with `ABORTED`. */
  signal?: AbortSignal;
  /** Where connection names are looked up (default `Deno.env`). */
  env?: EnvReader;
}

/** Options for {@linkcode sqlLoad}. */
export interface SqlLoadOptions {
  /**
   * Rows per INSERT statement on MariaDB and MySQL (default 1000; lowered automatically to stay
   * under the driver's parameter limit). PostgreSQL and PGlite copy in chunks of about 1 MB.
   */
  batchSize?: number;
  /**
   * The statement time limit (default: the server's setting). MySQL limits only SELECTs, so it
   * does not apply to loads there.
   */
  statementTimeout?: string | number;
  /** Aborting cancels the running statement and rolls the whole load back. */
  signal?: AbortSignal;
  /** Where connection names are looked up (default `Deno.env`). */
  env?: EnvReader;
  /**
   * PostgreSQL and PGlite: bytes of COPY text staged before the rows move into the target
   * (default 16 MB), so the staging table stays small whatever the load's size. An
   * `onConflict: "update"` load moves its rows once, at the end.
   */
  stageBytes?: number;
}

/** Which driver serves a source, with what it needs to open it. */
type Route =
  | { kind: "postgres"; open: () => ReturnType<typeof openPostgres> }
  | { kind: "pglite"; embedded: Embedded }
  | { kind: "mysql"; server: MysqlServer };

function route(source: SqlSource, env: EnvReader | undefined): Route {
  if (typeof source === "function") {
    return {
      kind: "postgres",
      open: () => Promise.resolve({ sql: source, label: "the database", owned: false }),
    };
  }
  if (typeof source === "object") {
    if (isPgliteDatabase(source)) {
      return {
        kind: "pglite",
        embedded: {
          label: "the embedded database",
          owned: false,
          open: () => Promise.resolve(source),
        },
      };
    }
    const inner = source.sql;
    const label = `"${source.name}"`;
    if (isPgliteDatabase(inner)) {
      return {
        kind: "pglite",
        embedded: { label, owned: false, open: () => Promise.resolve(inner) },
      };
    }
    return { kind: "postgres", open: () => Promise.resolve({ sql: inner, label, owned: false }) };
  }
  const resolved = resolveConnection(source, env ?? Deno.env);
  const label = resolved.name === resolved.display
    ? `"${resolved.display}"`
    : `"${resolved.name}" (${resolved.display})`;
  switch (resolved.kind) {
    case "pglite":
      return {
        kind: "pglite",
        embedded: {
          label,
          owned: true,
          open: (create) => openCounted(pglitePath(resolved.url), create),
        },
      };
    case "mysql":
      return { kind: "mysql", server: { url: resolved.url, label } };
    case "postgres":
      return { kind: "postgres", open: () => openPostgres(resolved.url, label, 1) };
  }
}

/** What an extract runs, from its arguments (options checked). */
function extractPlan(query: string, params: readonly unknown[], options: SqlExtractOptions) {
  return {
    query,
    params,
    keyword: leadingKeyword(query),
    batchSize: positiveInteger(options.batchSize ?? 1000, "batchSize"),
    timeoutMs: durationOption("statementTimeout", options.statementTimeout ?? "30m"),
    signal: options.signal,
  };
}

/**
 * Streams the rows of a read query.
 *
 * On PostgreSQL and PGlite it runs inside `BEGIN READ ONLY ISOLATION LEVEL READ COMMITTED` with
 * `SET LOCAL statement_timeout`. PostgreSQL reads `COPY (query) TO STDOUT` (measured 1.3-1.7x a
 * cursor on a 1M-row circulation extract) and parses it with the client's own type parsers, so
 * rows are typed as a cursor's would be; parameters are bound as transaction-local settings that
 * the query reads (COPY takes no bind parameters, and values must not enter the statement text,
 * which `pg_stat_activity` and statement logs show). PGlite reads through a cursor
 * (`DECLARE ... NO SCROLL CURSOR` + `FETCH FORWARD batchSize`): its COPY output is one in-memory
 * blob. On MariaDB and MySQL it runs in a session set to `READ COMMITTED,
 * READ ONLY` with a statement time limit, inside `START TRANSACTION READ ONLY`, and the rows
 * stream with backpressure. Memory stays flat for millions of rows either way. The transaction is
 * rolled back on any error, when the consumer stops early (`break`) or when the signal aborts; a
 * connection opened from a name or URL is closed at the end. Writes fail (a read-only
 * transaction), and only `SELECT`, `WITH`, `VALUES` and `TABLE` queries are accepted.
 *
 * Types follow the driver: postgres.js returns `int8` and `numeric` as strings and timestamps as
 * `Date`; PGlite returns `int8` as a number; MariaDB and MySQL return `BIGINT` and `DECIMAL` as
 * strings and dates and times as the server's text (see `sql_mysql.ts`). Cast in the query
 * (`id::text`, `CAST(id AS CHAR)`) when the type must not depend on the source. PGlite cannot
 * cancel a running statement, so an abort takes effect between fetches.
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
  const plan = extractPlan(query, params, options);
  const to = route(source, options.env);
  switch (to.kind) {
    case "pglite":
      yield* pgliteExtract<T>(to.embedded, plan);
      return;
    case "mysql":
      yield* mysqlExtract<T>(to.server, plan);
      return;
    case "postgres":
      yield* postgresExtract<T>(to.open, plan);
  }
}

/**
 * {@linkcode sqlExtract}, the rows in arrays: as they arrive from PostgreSQL's COPY, or grouped
 * `batchSize` at a time from PGlite and MariaDB/MySQL. Same transaction, limits and types; a
 * consumer that writes arrays (`DatasetWriter.writeBatch`) awaits once per array, not per row.
 *
 * @example Usage
 * ```ts ignore
 * import { sqlExtractBatches } from "./sql.ts";
 * for await (const rows of sqlExtractBatches("ils", "SELECT id FROM action.circulation")) {
 *   console.log(rows.length);
 * }
 * ```
 */
export async function* sqlExtractBatches<T extends Row = Row>(
  source: SqlSource,
  query: string,
  params: readonly unknown[] = [],
  options: SqlExtractOptions = {},
): AsyncGenerator<T[], void, undefined> {
  const plan = extractPlan(query, params, options);
  const to = route(source, options.env);
  if (to.kind === "postgres") {
    yield* postgresExtractBatches<T>(to.open, plan);
    return;
  }
  let batch: T[] = [];
  for await (const row of sqlExtract<T>(source, query, params, options)) {
    batch.push(row);
    if (batch.length >= plan.batchSize) {
      yield batch;
      batch = [];
    }
  }
  if (batch.length > 0) yield batch;
}

/**
 * Loads rows idempotently in one transaction (an error or an abort loads nothing). On PostgreSQL
 * and PGlite the rows go as COPY text (`COPY ... FROM STDIN`, PGlite `FROM '/dev/blob'`, in
 * chunks of about 1 MB) into a temporary staging table with the target's column types, then one
 * `INSERT ... SELECT ... ON CONFLICT (<key>) DO NOTHING` moves them (a key repeated in the input
 * keeps its first row). MariaDB and MySQL take batched `INSERT ... ON DUPLICATE KEY UPDATE
 * <key> = <key>` (where a unique index must match the key exactly). Reruns with the same rows
 * insert 0. With `onConflict: "update"`, a stored row whose values differ takes the new ones
 * (`updated`; a key repeated in the input keeps its last row), and a rerun changes nothing. A
 * missing table is created from `createSql` (per dialect) when given.
 *
 * Values: strings, numbers, bigints, booleans, `Date`s (stored as ISO instants), `Uint8Array`
 * (bytea), other objects and arrays as JSON (json/jsonb columns; give an array column its
 * PostgreSQL literal as a string), `null` for NULL. A COPY error names the row position and the
 * column, never the value.
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
  checkLoadTarget(target);
  const requested = positiveInteger(options.batchSize ?? 1000, "batchSize");
  const timeoutMs = options.statementTimeout === undefined
    ? undefined
    : durationOption("statementTimeout", options.statementTimeout);
  const to = route(source, options.env);
  const limit = to.kind === "mysql" ? MYSQL_MAX_PARAMETERS : POSTGRES_MAX_PARAMETERS;
  const plan = {
    target,
    rows,
    batchSize: Math.min(requested, Math.floor(limit / target.columns.length)),
    timeoutMs,
    signal: options.signal,
    update: target.onConflict === "update",
    stageBytes: positiveInteger(options.stageBytes ?? STAGE_BYTES, "stageBytes"),
  };
  switch (to.kind) {
    case "pglite":
      return await pgliteLoad(to.embedded, plan);
    case "mysql":
      return await mysqlLoad(to.server, plan);
    case "postgres":
      return await postgresLoad(to.open, plan);
  }
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
