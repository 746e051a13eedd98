/**
 * What every SQL driver shares: the safe {@linkcode SqlError}, option parsing, identifier
 * validation, the read-query guard, the load plan (a validated target) and {@linkcode RowBatches},
 * which reads the rows of a load and hands them on in batches.
 *
 * The drivers (`sql_postgres.ts`, `sql_pglite.ts`, `sql_mysql.ts`) implement the same two
 * operations, extract and load, on top of these; `sql.ts` picks one per connection.
 *
 * @module
 */
import { type Duration, DURATION_HINT, parseDuration } from "../../core/duration.ts";
import { markPrivacySafe } from "../../core/privacy/privacy_safe.ts";

/** A row as returned by a driver, or given to a load. */
export type Row = Record<string, unknown>;

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
    // Its messages name connections, identifiers, codes and counts only: safe even in the enclave.
    markPrivacySafe(this);
  }
}

/** Parses a duration option (see `core/duration.ts`), or fails naming the option. */
export function durationOption(name: string, value: Duration): number {
  const ms = parseDuration(value);
  if (ms === undefined) {
    throw new SqlError(`Invalid ${name}: expected ${DURATION_HINT}`, "INVALID_ARGUMENT");
  }
  return ms;
}

/** A positive integer option, or fails naming it. */
export function positiveInteger(value: number, what: string): number {
  if (!Number.isInteger(value) || value < 1) {
    throw new SqlError(`Invalid ${what}: expected a positive integer`, "INVALID_ARGUMENT");
  }
  return value;
}

export const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_$]*$/;

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

/** The parts of a validated `name` or `schema.name` (see {@linkcode quoteIdentifier}). */
export function identifierParts(name: string): string[] {
  quoteIdentifier(name);
  return name.split(".");
}

/**
 * Validates and backtick-quotes an identifier or a dotted `schema.table` name for MariaDB and
 * MySQL, with the same rules as {@linkcode quoteIdentifier}.
 *
 * @example Usage
 * ```ts
 * import { quoteMysqlIdentifier } from "./sql_common.ts";
 * console.log(quoteMysqlIdentifier("koha.issues")); // "`koha`.`issues`"
 * ```
 */
export function quoteMysqlIdentifier(name: string): string {
  return identifierParts(name).map((part) => `\`${part}\``).join(".");
}

const READ_QUERY = /^(select|with|values|table)\b/i;

/** The first keyword of a query, after comments and opening parentheses, uppercased. */
export function leadingKeyword(query: string): string {
  const stripped = query.replace(/^(?:\s+|--[^\n]*\n?|\/\*[\s\S]*?\*\/|\()+/, "");
  return /^[A-Za-z]*/.exec(stripped)?.[0].toUpperCase() ?? "";
}

/** Refuses anything but a read query before a connection is opened. */
export function assertReadQuery(action: string, keyword: string): void {
  if (!READ_QUERY.test(keyword)) {
    throw new SqlError(
      `${action}: only SELECT, WITH, VALUES or TABLE queries can be extracted (found ${
        keyword || "no statement"
      })`,
      "READ_ONLY",
    );
  }
}

/** What a driver extracts: a read query checked by {@linkcode assertReadQuery}, and its limits. */
export interface ExtractPlan {
  /** The query, in the driver's own dialect and placeholder style. */
  query: string;
  /** Its parameters. */
  params: readonly unknown[];
  /** {@linkcode leadingKeyword} of the query, checked after the label is known. */
  keyword: string;
  /** Rows per fetch (server-side cursors) or per stream pause. */
  batchSize: number;
  /** The statement time limit in milliseconds (0: none). */
  timeoutMs: number;
  /** Aborting cancels the running statement. */
  signal: AbortSignal | undefined;
}

/** Target table description for `sqlLoad`. */
export interface SqlLoadTarget {
  /** `table` or `schema.table`. */
  table: string;
  /** Columns to insert; each row must have a value (or `null`) for each. */
  columns: readonly string[];
  /** Natural key columns; a unique constraint on exactly these columns must exist. */
  key: readonly string[];
  /**
   * DDL run when the table does not exist yet: one text for every database, or one per dialect
   * (`{ postgres, mysql }`; PGlite uses `postgres`). A load into a missing table of a dialect
   * without one fails naming the table.
   */
  createSql?: string | { postgres?: string; mysql?: string };
  /**
   * What a row whose key already exists does: `"ignore"` (default: it is skipped, the stored row
   * stays as it is) or `"update"` (the stored row takes the new values when any differs), for
   * tables that mirror a changing source such as hold requests.
   */
  onConflict?: "ignore" | "update";
}

/** Result of `sqlLoad`. */
export interface SqlLoadResult {
  /** Rows inserted. */
  inserted: number;
  /** Rows whose stored values changed (present with `onConflict: "update"` only). */
  updated?: number;
  /**
   * Rows left as they were: their natural key already existed (or repeated within the input)
   * and, with `onConflict: "update"`, their values were the same.
   */
  skipped: number;
}

/** What a driver loads: a validated target, its rows and limits. */
export interface LoadPlan {
  /** The target as given. */
  target: SqlLoadTarget;
  /** The rows. */
  rows: AsyncIterable<Row> | Iterable<Row>;
  /** Rows per statement, already capped by the driver's parameter limit. */
  batchSize: number;
  /** The statement time limit in milliseconds, or `undefined` for the server's setting. */
  timeoutMs: number | undefined;
  /** Aborting cancels the running statement and rolls the load back. */
  signal: AbortSignal | undefined;
  /** `target.onConflict === "update"`. */
  update: boolean;
  /** PostgreSQL and PGlite: COPY text staged before each INSERT (not with `update`). */
  stageBytes: number;
}

/** The DDL for `dialect` from {@linkcode SqlLoadTarget.createSql}, or `undefined`. */
export function createSqlFor(
  target: SqlLoadTarget,
  dialect: "postgres" | "mysql",
): string | undefined {
  const create = target.createSql;
  return typeof create === "string" ? create : create?.[dialect];
}

/**
 * Checks a load target (identifiers, columns, key) before any connection is opened.
 *
 * @example Usage
 * ```ts
 * import { checkLoadTarget } from "./sql_common.ts";
 * checkLoadTarget({ table: "t", columns: ["id", "v"], key: ["id"] }); // fine
 * ```
 */
export function checkLoadTarget(target: SqlLoadTarget): void {
  quoteIdentifier(target.table);
  for (const column of target.columns) quoteIdentifier(column);
  if (target.columns.length === 0) {
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
  const mode = target.onConflict ?? "ignore";
  if (mode !== "ignore" && mode !== "update") {
    throw new SqlError(
      `Cannot load into ${target.table}: onConflict must be "ignore" or "update"`,
      "INVALID_ARGUMENT",
    );
  }
  if (mode === "update" && target.columns.length === target.key.length) {
    throw new SqlError(
      `Cannot load into ${target.table}: onConflict "update" needs a column outside the key`,
      "INVALID_ARGUMENT",
    );
  }
}

/** Wraps an error thrown by the rows a load reads: the producer's own, passed on untouched. */
export class SourceFailure {
  /** Wraps `error`. */
  constructor(readonly error: unknown) {}
}

/** How a driver describes a failure: a code, a value-free text, and whether it is a connection failure. */
export interface Described {
  /** The error code (SQLSTATE, network code, driver code or Carrel code). */
  code: string;
  /** Value-free text. */
  text: string;
  /** Connection failures are reported as `Cannot connect to <label>: ...`. */
  connection: boolean;
}

/** How a driver describes an error (value-free), given its time limit and whether it aborted. */
export type Describe = (err: unknown, timeoutMs: number | undefined, aborted: boolean) => Described;

/**
 * A driver's error wrapper: an error as a value-free {@linkcode SqlError} (an `SqlError` passes
 * through), described by the driver's own `describe`.
 */
export function errorWrapper(describe: Describe) {
  return (
    err: unknown,
    action: string,
    label: string,
    timeoutMs: number | undefined,
    aborted: boolean,
  ): SqlError =>
    err instanceof SqlError
      ? err
      : describedError(describe(err, timeoutMs, aborted), action, label);
}

/** A value-free {@linkcode SqlError} from a description. */
export function describedError(d: Described, action: string, label: string): SqlError {
  const message = d.connection ? `Cannot connect to ${label}: ${d.text}` : `${action}: ${d.text}`;
  return new SqlError(message, d.code);
}

/** A network error code's text, for drivers that surface Node socket errors. */
export const NETWORK_TEXT: Readonly<Record<string, string>> = {
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

/**
 * The next-batch function of a load's input: an array of rows per call (the input's own arrays
 * when it has `batches()`, else one row at a time); errors the input itself throws come out
 * wrapped in {@linkcode SourceFailure}, to be passed on untouched.
 */
export function rowBatchReader(
  rows: AsyncIterable<Row> | Iterable<Row>,
): () => Promise<IteratorResult<readonly Row[]>> {
  const source = (rows as { batches?: () => AsyncIterable<Row[]> }).batches;
  if (typeof source !== "function") {
    const next = rowReader(rows);
    return async () => {
      const read = await next();
      return read.done === true ? read : { done: false, value: [read.value] };
    };
  }
  let iterator: AsyncIterator<Row[]> | undefined;
  return async () => {
    try {
      iterator ??= source.call(rows)[Symbol.asyncIterator]();
      return await iterator.next();
    } catch (err) {
      throw new SourceFailure(err);
    }
  };
}

/**
 * The next-row function of a load's input: errors the input itself throws come out wrapped in
 * {@linkcode SourceFailure}, to be passed on untouched.
 */
export function rowReader(
  rows: AsyncIterable<Row> | Iterable<Row>,
): () => Promise<IteratorResult<Row>> {
  const iterator = Symbol.asyncIterator in rows
    ? rows[Symbol.asyncIterator]()
    : rows[Symbol.iterator]();
  return async () => {
    try {
      return await iterator.next();
    } catch (err) {
      throw new SourceFailure(err);
    }
  };
}

/**
 * Checks that row `position` (1-based) of a load is an object with a value (or `null`) for each
 * of `columns`, or fails naming the row and the column, never a value.
 */
export function checkRow(
  action: string,
  position: number,
  row: unknown,
  columns: readonly string[],
): asserts row is Row {
  if (typeof row !== "object" || row === null) {
    throw new SqlError(`${action}: row ${position} is not an object`, "INVALID_ROW");
  }
  for (const column of columns) {
    if ((row as Row)[column] === undefined) {
      throw new SqlError(
        `${action}: row ${position} has no value for column "${column}" (use null for NULL)`,
        "MISSING_VALUE",
      );
    }
  }
}

/**
 * Reads the rows of a load, checks each has every column, and hands them on in batches; keeps
 * the positions that error messages name (never values).
 */
export class RowBatches {
  inserted = 0;
  updated = 0;
  position = 0;
  batchStart = 1;
  constructor(
    readonly action: string,
    readonly columns: readonly string[],
    readonly batchSize: number,
  ) {}

  /** `write` loads one batch and returns how many rows it inserted and updated. */
  async run(
    rows: AsyncIterable<Row> | Iterable<Row>,
    write: (count: number, values: unknown[]) => Promise<{ inserted: number; updated: number }>,
  ): Promise<void> {
    let values: unknown[] = [];
    let count = 0;
    const flush = async () => {
      if (count === 0) return;
      const written = await write(count, values);
      this.inserted += written.inserted;
      this.updated += written.updated;
      values = [];
      count = 0;
      this.batchStart = this.position + 1;
    };
    const next = rowReader(rows);
    for (;;) {
      const read = await next();
      if (read.done === true) break;
      const row = read.value;
      checkRow(this.action, ++this.position, row, this.columns);
      for (const column of this.columns) values.push(row[column]);
      count++;
      if (count === this.batchSize) await flush();
    }
    await flush();
  }

  /** The result once every row was read; `updated` only when the load updates. */
  result(update: boolean): SqlLoadResult {
    const skipped = this.position - this.inserted - this.updated;
    return update
      ? { inserted: this.inserted, updated: this.updated, skipped }
      : { inserted: this.inserted, skipped };
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
