/**
 * The MariaDB and MySQL driver of `sqlExtract` and `sqlLoad` (Koha keeps its data in MariaDB),
 * on MariaDB's own connector (`mariadb` on npm).
 *
 * - Extracts run in a scoped session: `SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED,
 *   READ ONLY`, a statement time limit (`max_statement_time` on MariaDB, `max_execution_time` on
 *   MySQL), `START TRANSACTION READ ONLY`, then the rows stream with backpressure. Any error, an
 *   early stop or an abort destroys the connection (the server kills the statement and rolls the
 *   transaction back); a finished extract commits and closes.
 * - Loads run in one transaction of batched multi-row `INSERT ... ON DUPLICATE KEY UPDATE`, after
 *   checking that a unique index matches the natural key exactly (as PostgreSQL's `ON CONFLICT`
 *   demands), in a strict `sql_mode` so a bad value fails instead of being truncated.
 *
 * Sessions use UTC (`time_zone = '+00:00'`) and return date and time columns as the server's text
 * (`2026-03-01 10:00:00`): `DATETIME` has no time zone, so only the caller knows which one it is
 * in (Koha's: its `timezone` setting). `BIGINT` comes back as text and `DECIMAL` as text, as
 * postgres.js returns `int8` and `numeric`.
 *
 * Privacy: the connector interpolates parameters into the statement text, so neither its
 * messages nor the server's are ever shown; errors are described from the error number, the
 * SQLSTATE and identifiers only.
 *
 * @module
 */
import type { Connection, ConnectionConfig, UpsertResult } from "mariadb";
import {
  assertReadQuery,
  createSqlFor,
  type Described,
  errorWrapper,
  type ExtractPlan,
  identifierParts,
  type LoadPlan,
  NETWORK_TEXT,
  quoteMysqlIdentifier,
  type Row,
  RowBatches,
  SourceFailure,
  SqlError,
  type SqlLoadResult,
} from "./sql_common.ts";
import { formatDuration } from "../../core/duration.ts";

/** Most placeholders one statement takes (the prepared-statement limit, kept for text too). */
export const MYSQL_MAX_PARAMETERS = 65_535;

/** A MariaDB or MySQL server to connect to: its URL (never shown) and its label for messages. */
export interface MysqlServer {
  /** `mysql://` or `mariadb://` URL with credentials. */
  url: string;
  /** Quoted name for messages: `"koha"` or the masked URL. */
  label: string;
}

const QUERY_OPTIONS = new Set(["ssl", "socket", "connectTimeout"]);

/**
 * Connection options from a `mysql://` or `mariadb://` URL: user, password, host, port,
 * database, and the query options `ssl` (`true`, `false` or `verify-off`), `socket` (a Unix
 * socket path) and `connectTimeout` (milliseconds). Errors never echo the URL.
 *
 * @example Usage
 * ```ts
 * import { mysqlOptions } from "./sql_mysql.ts";
 * const opts = mysqlOptions("mariadb://koha:pw@db:3306/koha_library", '"koha"');
 * console.log(opts.database); // "koha_library"
 * ```
 */
export function mysqlOptions(url: string, label: string): ConnectionConfig {
  let parsed: URL;
  try {
    // The scheme is not a special one for URL: parse it as http to get host and port.
    parsed = new URL(url.trim().replace(/^(?:mysql|mariadb):\/\//i, "http://"));
  } catch {
    throw new SqlError(`Cannot connect to ${label}: invalid connection URL`, "INVALID_URL");
  }
  const decode = (text: string) => {
    try {
      return decodeURIComponent(text);
    } catch {
      throw new SqlError(`Cannot connect to ${label}: invalid connection URL`, "INVALID_URL");
    }
  };
  const options: ConnectionConfig = {
    host: parsed.hostname.replace(/^\[|\]$/g, "") || "localhost",
    port: parsed.port ? Number(parsed.port) : 3306,
    connectTimeout: 30_000,
  };
  if (parsed.username) options.user = decode(parsed.username);
  if (parsed.password) options.password = decode(parsed.password);
  const database = decode(parsed.pathname.replace(/^\//, ""));
  if (database) options.database = database;
  for (const [key, value] of parsed.searchParams) {
    if (!QUERY_OPTIONS.has(key)) {
      throw new SqlError(
        `Cannot connect to ${label}: unknown connection option "${key}" (expected ${
          [...QUERY_OPTIONS].join(", ")
        })`,
        "INVALID_URL",
      );
    }
    if (key === "socket") options.socketPath = value;
    else if (key === "connectTimeout") {
      const ms = Number(value);
      if (!Number.isInteger(ms) || ms < 1) {
        throw new SqlError(
          `Cannot connect to ${label}: connectTimeout must be a positive integer`,
          "INVALID_URL",
        );
      }
      options.connectTimeout = ms;
    } else if (key === "ssl") {
      if (value === "true" || value === "1") options.ssl = true;
      else if (value === "verify-off") options.ssl = { rejectUnauthorized: false };
      else if (value !== "false" && value !== "0") {
        throw new SqlError(
          `Cannot connect to ${label}: ssl must be true, false or verify-off`,
          "INVALID_URL",
        );
      }
    }
  }
  return {
    ...options,
    dateStrings: true,
    timezone: "Z",
    bigIntAsNumber: false,
    decimalAsNumber: false,
    insertIdAsNumber: true,
    foundRows: false,
    logParam: false,
    multipleStatements: false,
    permitLocalInfile: false,
    connectAttributes: { program_name: "carrel" },
  };
}

/** MariaDB and MySQL error numbers whose meaning we name (never the server's text). */
const ERRNO_TEXT: Readonly<Record<number, string>> = {
  1044: "access denied to the database",
  1045: "access denied (wrong user or password)",
  1049: "unknown database",
  1054: "unknown column",
  1062: "duplicate key",
  1064: "syntax error",
  1142: "command denied",
  1146: "table does not exist",
  1205: "lock wait timeout",
  1213: "deadlock",
  1264: "numeric value out of range",
  1292: "invalid date/time value",
  1364: "a column without a default was not given",
  1366: "invalid value for the column type",
  1406: "value too long for the column",
  1451: "foreign key violation",
  1452: "foreign key violation",
  1792: "cannot write in a read-only transaction",
  1836: "the server is read-only",
  1969: "statement timed out",
  3024: "statement timed out",
  1040: "too many connections",
  1053: "server shutting down",
  1317: "query interrupted",
  4031: "disconnected by the server (idle too long)",
};

/** Error numbers whose message names identifiers we can quote back (never values). */
const IDENTIFIER_IN_MESSAGE: Readonly<Record<number, RegExp>> = {
  1049: /Unknown database '([^']{1,128})'/,
  1054: /Unknown column '([^']{1,200})'/,
  1146: /Table '([^']{1,200})' doesn't exist/,
};

const SQLSTATE_CLASS_TEXT: Readonly<Record<string, string>> = {
  "08": "connection exception",
  "22": "data exception",
  "23": "integrity constraint violation",
  "25": "invalid transaction state",
  "28": "invalid authorization",
  "40": "transaction rollback",
  "42": "syntax error or access rule violation",
  "70": "statement interrupted",
  HY: "database error",
};

const CONNECTION_ERRNOS = new Set([1040, 1044, 1045, 1049, 1053, 4031]);
const TIMEOUT_ERRNOS = new Set([1969, 3024]);

/**
 * Describes a MariaDB connector error without values: the error number's meaning, identifiers
 * the message names (unknown table or column), the SQLSTATE and the connector's error code.
 */
export function describeMysqlError(
  err: unknown,
  timeoutMs: number | undefined,
  aborted: boolean,
): Described {
  if (err instanceof SqlError) return { code: err.code, text: err.message, connection: false };
  const e = (typeof err === "object" && err !== null ? err : {}) as Record<string, unknown>;
  const code = typeof e.code === "string" ? e.code : undefined;
  const errno = typeof e.errno === "number" ? e.errno : undefined;
  const sqlState = typeof e.sqlState === "string" ? e.sqlState : undefined;
  if (errno !== undefined && TIMEOUT_ERRNOS.has(errno)) {
    const after = timeoutMs === undefined || timeoutMs === 0
      ? ""
      : ` after ${formatDuration(timeoutMs)}`;
    return { code: "STATEMENT_TIMEOUT", text: `statement timed out${after}`, connection: false };
  }
  if (aborted) return { code: "ABORTED", text: "aborted", connection: false };
  if (code !== undefined && code in NETWORK_TEXT) {
    return { code, text: `${NETWORK_TEXT[code]} (${code})`, connection: true };
  }
  if (errno !== undefined && errno >= 1000 && errno < 5000) {
    const known = ERRNO_TEXT[errno];
    const pattern = IDENTIFIER_IN_MESSAGE[errno];
    const message = typeof e.text === "string" ? e.text : "";
    const name = pattern?.exec(message)?.[1];
    const base = known ??
      (sqlState ? SQLSTATE_CLASS_TEXT[sqlState.slice(0, 2)] : undefined) ?? "database error";
    const what = name === undefined ? "" : ` "${name}"`;
    const tags = [code, `errno ${errno}`, sqlState ? `SQLSTATE ${sqlState}` : ""].filter(Boolean);
    return {
      code: sqlState && sqlState !== "HY000" ? sqlState : code ?? `ER_${errno}`,
      text: `${base}${what} [${tags.join(", ")}]`,
      connection: CONNECTION_ERRNOS.has(errno),
    };
  }
  if (errno !== undefined && errno >= 45000) {
    // The connector's own errors (45001 and up): connection closed, timeouts, socket errors.
    const text = code ? code.replace(/^ER_/, "").toLowerCase().replaceAll("_", " ") : "error";
    return {
      code: code ?? `ER_${errno}`,
      text: `${text} (${code ?? errno})`,
      connection: /CONN|SOCKET|HANDSHAKE|AUTH|TIMEOUT|CLOSED/.test(code ?? ""),
    };
  }
  const name = typeof e.name === "string" ? e.name : typeof err;
  return {
    code: code ?? "UNKNOWN",
    text: `unexpected ${name}${code === undefined ? "" : ` (${code})`}`,
    connection: false,
  };
}

const wrap = errorWrapper(describeMysqlError);

/** `BIGINT` values as text, as postgres.js returns `int8`. */
function plainRow(row: Row): Row {
  for (const key in row) {
    const value = row[key];
    if (typeof value === "bigint") row[key] = value.toString();
  }
  return row;
}

async function connect(server: MysqlServer): Promise<Connection> {
  const options = mysqlOptions(server.url, server.label);
  try {
    // Loaded on first use: the driver reads system memory at import, which a sandboxed task
    // (no `sys` access) that never speaks to MariaDB must not need.
    const { default: mariadb } = await import("mariadb");
    return await mariadb.createConnection(options);
  } catch (err) {
    const d = describeMysqlError(err, undefined, false);
    throw new SqlError(`Cannot connect to ${server.label}: ${d.text}`, d.code);
  }
}

/** Sets the session's statement time limit; `0` removes it. MySQL limits only SELECTs. */
async function setStatementTimeout(conn: Connection, timeoutMs: number): Promise<void> {
  if (conn.info?.isMariaDB() ?? true) {
    await conn.query(`SET SESSION max_statement_time = ${(timeoutMs / 1000).toFixed(3)}`);
  } else {
    await conn.query(`SET SESSION max_execution_time = ${Math.round(timeoutMs)}`);
  }
}

/**
 * Streams a query's rows from MariaDB or MySQL in a read-only, read-committed transaction with a
 * statement time limit (see the module doc). Placeholders are `?`.
 */
export async function* mysqlExtract<T>(
  server: MysqlServer,
  plan: ExtractPlan,
): AsyncGenerator<T, void, undefined> {
  const { query, params, keyword, timeoutMs, signal } = plan;
  const action = `Cannot extract from ${server.label}`;
  let conn: Connection | undefined;
  let done = false;
  let aborted = false;
  const onAbort = () => {
    aborted = true;
    conn?.destroy();
  };
  try {
    assertReadQuery(action, keyword);
    if (signal?.aborted) throw new SqlError(`${action}: aborted`, "ABORTED");
    signal?.addEventListener("abort", onAbort, { once: true });
    conn = await connect(server);
    if (signal?.aborted) throw new SqlError(`${action}: aborted`, "ABORTED");
    await conn.query("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED, READ ONLY");
    await setStatementTimeout(conn, timeoutMs);
    await conn.query("START TRANSACTION READ ONLY");
    const stream = conn.queryStream({ sql: query }, [...params]);
    for await (const row of stream) {
      yield plainRow(row as Row) as T;
      if (signal?.aborted) throw new SqlError(`${action}: aborted`, "ABORTED");
    }
    await conn.query("COMMIT");
    done = true;
  } catch (err) {
    throw wrap(err, action, server.label, timeoutMs, aborted || (signal?.aborted ?? false));
  } finally {
    signal?.removeEventListener("abort", onAbort);
    if (conn !== undefined) {
      // An unfinished statement is killed with the connection; the server rolls back.
      if (done) await conn.end().catch(() => conn?.destroy());
      else conn.destroy();
    }
  }
}

interface ColumnInfo {
  name: string;
  type: string;
}

/** Columns of the target table, or `undefined` when it does not exist. */
async function tableColumns(
  conn: Connection,
  table: string,
): Promise<ColumnInfo[] | undefined> {
  const parts = identifierParts(table);
  const [schema, name] = parts.length === 2 ? parts : [null, parts[0]!];
  const rows = await conn.query<{ name: string; type: string }[]>(
    `SELECT COLUMN_NAME AS name, DATA_TYPE AS type FROM information_schema.COLUMNS
      WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ?`,
    [schema, name],
  );
  return rows.length === 0 ? undefined : rows.map((r) => ({ name: r.name, type: r.type }));
}

/** True when a unique index (or the primary key) covers exactly the key columns. */
async function hasUniqueKey(
  conn: Connection,
  table: string,
  key: readonly string[],
): Promise<boolean> {
  const parts = identifierParts(table);
  const [schema, name] = parts.length === 2 ? parts : [null, parts[0]!];
  const rows = await conn.query<{ idx: string; col: string }[]>(
    `SELECT INDEX_NAME AS idx, COLUMN_NAME AS col FROM information_schema.STATISTICS
      WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ? AND NON_UNIQUE = 0`,
    [schema, name],
  );
  const indexes = new Map<string, Set<string>>();
  for (const row of rows) {
    const cols = indexes.get(row.idx) ?? new Set<string>();
    cols.add(row.col.toLowerCase());
    indexes.set(row.idx, cols);
  }
  const wanted = new Set(key.map((k) => k.toLowerCase()));
  return [...indexes.values()].some((cols) =>
    cols.size === wanted.size && [...wanted].every((k) => cols.has(k))
  );
}

const ISO_UTC = /^(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d(?:\.\d{1,6})?)(?:Z|\+00:?00)$/;
const TEMPORAL = new Set(["datetime", "timestamp"]);

/**
 * Loads rows into MariaDB or MySQL in one transaction (see the module doc). ISO 8601 UTC
 * timestamps (`2026-03-01T10:00:00.000Z`) bound for `DATETIME` or `TIMESTAMP` columns are sent as
 * `2026-03-01 10:00:00.000`, in UTC.
 */
export async function mysqlLoad(server: MysqlServer, plan: LoadPlan): Promise<SqlLoadResult> {
  const { target, rows, batchSize, timeoutMs, signal, update } = plan;
  const action = `Cannot load into ${target.table} on ${server.label}`;
  const table = quoteMysqlIdentifier(target.table);
  const columns = target.columns.map((c) => quoteMysqlIdentifier(c));
  const key = target.key.map((c) => quoteMysqlIdentifier(c));
  const others = target.columns.filter((c) => !target.key.includes(c)).map((c) =>
    quoteMysqlIdentifier(c)
  );
  // Every duplicate key runs the ON DUPLICATE KEY UPDATE list once: counting them tells updated
  // rows (2 affected rows each) from unchanged ones (0) and inserted ones (1).
  const onDuplicate = update
    ? `${others.map((c) => `${c} = VALUES(${c})`).join(", ")}, ${
      key[0]
    } = IF((@carrel_dups := @carrel_dups + 1) > 0, ${key[0]}, ${key[0]})`
    : `${key[0]} = ${key[0]}`;
  const statements = new Map<number, string>();
  const tuple = `(${columns.map(() => "?").join(",")})`;
  const statementFor = (count: number) => {
    let text = statements.get(count);
    if (text === undefined) {
      text = `INSERT INTO ${table} (${columns.join(",")}) VALUES ${
        Array.from({ length: count }, () => tuple).join(",")
      } ON DUPLICATE KEY UPDATE ${onDuplicate}`;
      statements.set(count, text);
    }
    return text;
  };
  const batches = new RowBatches(action, target.columns, batchSize);
  let conn: Connection | undefined;
  let committed = false;
  let aborted = false;
  const onAbort = () => {
    aborted = true;
    conn?.destroy();
  };
  const abortError = () => new SqlError(`${action}: aborted`, "ABORTED");
  try {
    if (signal?.aborted) throw abortError();
    signal?.addEventListener("abort", onAbort, { once: true });
    conn = await connect(server);
    if (signal?.aborted) throw abortError();
    const c = conn;
    await c.query(
      "SET SESSION sql_mode = CONCAT_WS(',', NULLIF(@@sql_mode, ''), 'STRICT_ALL_TABLES')",
    );
    if (timeoutMs !== undefined) await setStatementTimeout(c, timeoutMs);
    let found = await tableColumns(c, target.table);
    if (found === undefined) {
      const create = createSqlFor(target, "mysql");
      if (create === undefined) {
        throw new SqlError(
          `${action}: the table does not exist and the target has no MySQL CREATE statement`,
          "42S02",
        );
      }
      // DDL commits implicitly: it runs before the load's transaction.
      for (const statement of create.split(/;\s*(?:\n|$)/).map((s) => s.trim()).filter(Boolean)) {
        await c.query(statement);
      }
      found = await tableColumns(c, target.table) ?? [];
    }
    const types = new Map(found.map((col) => [col.name.toLowerCase(), col.type.toLowerCase()]));
    for (const column of target.columns) {
      if (!types.has(column.toLowerCase())) {
        throw new SqlError(`${action}: unknown column "${column}"`, "42S22");
      }
    }
    if (!await hasUniqueKey(c, target.table, target.key)) {
      throw new SqlError(
        `${action}: no unique index matches the natural key (${target.key.join(", ")})`,
        "42P10",
      );
    }
    const temporal = target.columns.map((col) => TEMPORAL.has(types.get(col.toLowerCase())!));
    const width = target.columns.length;
    await c.query("START TRANSACTION");
    if (update) await c.query("SET @carrel_dups = 0");
    let dupsBefore = 0;
    await batches.run(rows, async (count, values) => {
      if (signal?.aborted) throw abortError();
      for (let i = 0; i < values.length; i++) {
        const value = values[i];
        if (temporal[i % width] && typeof value === "string") {
          const m = ISO_UTC.exec(value);
          if (m) values[i] = `${m[1]} ${m[2]}`;
        }
      }
      const result = await c.query<UpsertResult>(statementFor(count), values);
      const affected = Number(result.affectedRows);
      if (!update) return { inserted: affected, updated: 0 };
      const [counter] = await c.query<{ dups: number | bigint | string }[]>(
        "SELECT @carrel_dups AS dups",
      );
      const total = Number(counter?.dups ?? 0);
      const duplicates = total - dupsBefore;
      dupsBefore = total;
      const inserted = count - duplicates;
      return { inserted, updated: Math.max(0, (affected - inserted) / 2) };
    });
    await c.query("COMMIT");
    committed = true;
  } catch (err) {
    if (err instanceof SourceFailure) throw err.error;
    if (err instanceof SqlError && !aborted) throw err;
    const rowsPart = batches.rowsPart();
    throw wrap(
      err,
      `${action}${rowsPart ? `,${rowsPart}` : ""}`,
      server.label,
      timeoutMs,
      aborted || (signal?.aborted ?? false),
    );
  } finally {
    signal?.removeEventListener("abort", onAbort);
    if (conn !== undefined) {
      if (committed) await conn.end().catch(() => conn?.destroy());
      else {
        // Rolling back on a live connection keeps the server's log tidy; a dead one rolls back
        // by itself.
        if (!aborted && conn.isValid()) await conn.query("ROLLBACK").catch(() => {});
        conn.destroy();
      }
    }
  }
  return batches.result(plan.update);
}
