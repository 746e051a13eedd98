/**
 * The PostgreSQL driver of `sqlExtract` and `sqlLoad`, on postgres.js: `COPY (query) TO STDOUT`
 * in a read-only transaction for extracts; `COPY ... FROM STDIN` into a temporary staging table
 * and idempotent `INSERT ... SELECT ... ON CONFLICT` statements in one transaction for loads (see
 * `sql_copy.ts`). PGlite (`sql_pglite.ts`) speaks the same dialect and shares
 * {@linkcode describePostgresError}, the staged load and its error positions.
 *
 * postgres.js errors are never attached as `cause`: they carry the query parameters.
 *
 * @module
 */
// A type only: postgres.js is imported when a connection is opened, so a sandbox Worker whose
// task never connects does not load it.
import type postgres from "postgres";
import { formatDuration } from "../../core/duration.ts";
import { noDelay } from "../../core/state/postgres_socket.ts";
import type { Readable, Writable } from "node:stream";
import { finished } from "node:stream/promises";
import {
  assertReadQuery,
  createSqlFor,
  type Described,
  errorWrapper,
  type ExtractPlan,
  type LoadPlan,
  NETWORK_TEXT,
  quoteIdentifier,
  SourceFailure,
  SqlError,
  type SqlLoadResult,
} from "./sql_common.ts";
import {
  bindAsSettings,
  CopyChunks,
  copyErrorPosition,
  CopyTextReader,
  copyTextValue,
  stagedLoadStatements,
} from "./sql_copy.ts";

/** A postgres.js client of any custom type configuration. */
// deno-lint-ignore no-explicit-any
export type Sql = postgres.Sql<any>;

/** Most parameters one PostgreSQL statement takes. */
export const POSTGRES_MAX_PARAMETERS = 65_534;

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

const POSTGRES_JS_TEXT: Readonly<Record<string, string>> = {
  UNDEFINED_VALUE: "undefined values are not allowed",
  MAX_PARAMETERS_EXCEEDED: "too many parameters in one statement",
  MESSAGE_NOT_SUPPORTED: "unsupported protocol message",
};

/** Describes a postgres.js or PGlite error without values (SQLSTATE, identifiers, codes). */
export function describePostgresError(
  err: unknown,
  timeoutMs: number | undefined,
  aborted: boolean,
): Described {
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

/** A postgres.js client to use, with its label for messages and whether we close it. */
export interface PostgresConnection {
  sql: Sql;
  /** Quoted name for messages: `"ils"` or the masked URL. */
  label: string;
  /** Opened here (closed at the end) or passed in (left open). */
  owned: boolean;
}

/**
 * Opens a postgres.js client for a resolved URL. URL parse errors embed the input, so only the
 * class of error is reported.
 */
export async function openPostgres(
  url: string,
  label: string,
  max: number,
): Promise<PostgresConnection> {
  const { default: connectPostgres } = await import("postgres");
  try {
    const sql = connectPostgres(url, {
      max,
      onnotice: () => {},
      connect_timeout: 30,
      connection: { application_name: "carrel" },
      ...noDelay(),
    });
    return { sql, label, owned: true };
  } catch (err) {
    const d = describePostgresError(err, undefined, false);
    const detail = d.code === "UNKNOWN" ? "" : ` (${d.code})`;
    throw new SqlError(
      `Cannot connect to ${label}: invalid connection URL${detail}`,
      "INVALID_URL",
    );
  }
}

const wrap = errorWrapper(describePostgresError);

/** Rows queued between the COPY stream and the consumer before the stream is paused. */
const EXTRACT_QUEUE_ROWS = 2_000;
/** COPY bytes gathered before they are cut into rows while the consumer is busy. */
const COPY_TAKE_BYTES = 64 << 10;

/** Longest wait, after an early stop, for a cancelled COPY to finish on the server. */
const COPY_DRAIN_MS = 10_000;

/** Longest wait for the server to take a cancel request before the connection is reused. */
const CANCEL_SETTLE_MS = 5_000;

/**
 * Streams a query's rows from PostgreSQL: `BEGIN READ ONLY ISOLATION LEVEL READ COMMITTED`,
 * `SET LOCAL statement_timeout`, then `COPY (<query>) TO STDOUT` (text format), parsed with the
 * client's own type parsers, so rows come out as a cursor's would. Parameters are bound as
 * transaction-local settings ({@linkcode bindAsSettings}): COPY takes no bind parameters, and
 * values never appear in statement text. Rolled back on any error, early stop or abort; the
 * client closed when it was opened here.
 */
export async function* postgresExtract<T>(
  open: () => Promise<PostgresConnection>,
  plan: ExtractPlan,
): AsyncGenerator<T, void, undefined> {
  for await (const batch of postgresExtractBatches<T>(open, plan)) yield* batch;
}

/** {@linkcode postgresExtract}, the rows in arrays as they arrive (one await per array). */
export async function* postgresExtractBatches<T>(
  open: () => Promise<PostgresConnection>,
  plan: ExtractPlan,
): AsyncGenerator<T[], void, undefined> {
  const { query, params, keyword, timeoutMs, signal } = plan;
  const db = await open();
  const action = `Cannot extract from ${db.label}`;
  let reserved: postgres.ReservedSql | undefined;
  let current: { cancel(): void } | undefined;
  let committed = false;
  let stream: Readable | undefined;
  let copying: CopyOut | undefined;
  let rows: AsyncGenerator<Record<string, unknown>[], void, undefined> | undefined;
  // Cancel requests in flight: a cancel names the backend, not the statement, so one still on its
  // way when the connection is reused would cancel whatever runs next on it.
  const cancels: Promise<void>[] = [];
  const cancel = (q: { cancel(): unknown }) => {
    // A COPY the server has finished must not be cancelled: nothing of it is left to stop.
    if (copying !== undefined && q === copying.query && copying.settled) return;
    cancels.push(cancelQuery(q));
  };
  const onAbort = () => {
    if (current !== undefined) cancel(current);
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
    if (signal?.aborted) throw abortError();
    // Described before the time limit is set, and never cancelled: an error in answer to
    // postgres.js' describe makes it send one Sync too many, and the extra ReadyForQuery would
    // settle the next statement (the COPY) with an empty result (seen under load with a 100 ms
    // limit). Describing only parses, so neither a limit nor a cancel has anything to stop.
    const describing = reserved.unsafe(query, params as postgres.ParameterOrJSON<never>[]);
    const statement = await describing.describe() as unknown as DescribedStatement;
    const text = await bindParameters(run, db.sql, query, params, statement.types);
    await run(`SET LOCAL statement_timeout = ${timeoutMs}`);
    if (signal?.aborted) throw abortError();
    const columns = statement.columns ?? [];
    const transform = db.sql.options.transform;
    const copy = reserved.unsafe(`COPY (${text}) TO STDOUT`);
    copying = watchCopyOut(copy);
    current = copy;
    stream = await copy.readable() as unknown as Readable;
    if (typeof (stream as { on?: unknown }).on !== "function") {
      // The connection answered out of turn; nothing read from it can be trusted.
      stream = undefined;
      throw new SqlError(
        `${action}: the server ended the COPY without its output`,
        "COPY_NO_OUTPUT",
      );
    }
    // The server's error reaches `copying.error` and, while rows are read, `copyRows`; this keeps
    // a stream destroyed with it before or after reading from throwing it as uncaught.
    stream.on("error", () => {});
    rows = copyRows(stream, columns, transform);
    for (;;) {
      if (signal?.aborted) throw abortError();
      const next = await rows.next();
      if (next.done === true) break;
      yield next.value as T[];
    }
    // The stream ended with the server's CopyDone; the statement's outcome follows it.
    await copying.done;
    current = undefined;
    if (copying.error !== undefined) throw copying.error;
    await run("COMMIT");
    committed = true;
  } catch (err) {
    throw wrap(err, action, db.label, timeoutMs, signal?.aborted ?? false);
  } finally {
    signal?.removeEventListener("abort", onAbort);
    await rows?.return();
    if (copying !== undefined && !copying.settled) {
      // Stopped early (consumer, abort, unreadable row): the COPY still runs on the server. Cancel
      // it and drain the rest of its output until the server reports the statement's end. A COPY
      // that failed or finished on the server is never cancelled: its error is already thrown.
      cancel(copying.query);
      if (stream !== undefined) {
        stream.resume();
        kickSocket(stream);
      }
      await within(copying.done, COPY_DRAIN_MS);
    }
    // The last CopyData of a stream nobody reads any more may have paused the socket after the
    // kick above (or after the stream's end): resume it, or the ROLLBACK below is never answered.
    if (stream !== undefined) kickSocket(stream);
    if (cancels.length > 0) await within(Promise.all(cancels), CANCEL_SETTLE_MS);
    if (reserved !== undefined) {
      if (!committed) await reserved.unsafe("ROLLBACK").catch(() => {});
      reserved.release();
    }
    if (db.owned) await db.sql.end({ timeout: 5 }).catch(() => {});
  }
}

/**
 * A running `COPY ... TO STDOUT` as the connection sees it. postgres.js resolves the query with
 * the stream at CopyOutResponse and reports the statement's end (ReadyForQuery, or the server's
 * error) to the same, already settled, query, so its `resolve` and `reject` are watched.
 */
interface CopyOut {
  query: { cancel(): unknown };
  /** The server has ended the statement: later cancel requests would hit the next one. */
  settled: boolean;
  /** The server's error, when the statement failed. */
  error: unknown;
  /** Resolves (never rejects) once settled. */
  done: Promise<void>;
}

/** Watches a COPY TO query for the end of its statement on the server. */
function watchCopyOut(q: { cancel(): unknown }): CopyOut {
  const hooked = q as unknown as { resolve(value: unknown): void; reject(err: unknown): void };
  const resolve = hooked.resolve;
  const reject = hooked.reject;
  let finish!: () => void;
  const state: CopyOut = {
    query: q,
    settled: false,
    error: undefined,
    done: new Promise<void>((r) => finish = r),
  };
  let streaming = false;
  hooked.resolve = (value) => {
    const isStream = typeof (value as { pipe?: unknown } | null)?.pipe === "function";
    if (!streaming && isStream) streaming = true;
    else {
      state.settled = true;
      finish();
    }
    resolve(value);
  };
  hooked.reject = (err) => {
    if (!state.settled) state.error = err;
    state.settled = true;
    finish();
    reject(err);
  };
  return state;
}

/** Waits for `promise` (which must not reject) at most `ms` milliseconds. */
async function within(promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([promise, new Promise<void>((r) => timer = setTimeout(r, ms))]);
  } finally {
    clearTimeout(timer);
  }
}

/** What postgres.js' `describe()` resolves to: parameter type oids and result columns. */
interface DescribedStatement {
  types: number[];
  columns: DescribedColumn[] | null;
}

/** A result column as postgres.js describes it, with the parser it would use. */
interface DescribedColumn {
  name: string;
  type: number;
  parser?: ((value: string) => unknown) & { array?: boolean };
}

/**
 * Sets each non-null parameter as a transaction-local setting (bound, serialized as the client
 * would) and returns the query with its placeholders reading them.
 */
async function bindParameters(
  run: (text: string, args?: readonly unknown[]) => Promise<postgres.RowList<postgres.Row[]>>,
  sql: Sql,
  query: string,
  params: readonly unknown[],
  types: readonly number[],
): Promise<string> {
  if (params.length === 0 && types.length === 0) return query;
  const [names] = await run(
    "SELECT array_agg(format_type(t, NULL) ORDER BY n) AS names FROM unnest($1::oid[]) WITH ORDINALITY AS u(t, n)",
    [types.map(Number)],
  );
  const typeNames = (names?.names ?? []) as string[];
  const isNull = types.map((_, i) => params[i] === null || params[i] === undefined);
  const settings: string[] = [];
  const values: unknown[] = [];
  const serializers = sql.options.serializers;
  types.forEach((type, i) => {
    if (isNull[i]) return;
    const value = params[i];
    const serialize = serializers[type];
    values.push(serialize ? String(serialize(value)) : String(value));
    settings.push(`set_config('carrel.bind_${i + 1}', $${values.length}::text, true)`);
  });
  if (settings.length > 0) await run(`SELECT ${settings.join(", ")}`, values);
  return bindAsSettings(query, typeNames, isNull);
}

/**
 * Resumes the client's socket after a COPY stream ended. postgres.js pauses its socket when the
 * stream's buffer is full and resumes it only when the stream is read again; if the end of the
 * COPY arrived while paused, nothing reads again and the connection would wait forever (seen with
 * postgres.js 3.4 on a slow consumer). `_read` is the stream's own "more, please" hook.
 */
function kickSocket(stream: Readable): void {
  const read = (stream as unknown as { _read?: unknown })._read;
  if (typeof read === "function") read.call(stream, 0);
}

/**
 * Cancels a running statement, a COPY included. postgres.js marks a COPY query inactive once it
 * hands out the stream, and then its `cancel()` only flags it; marking it active again makes
 * `cancel()` send the server's cancel request, as for any running statement. Resolves (never
 * rejects) once the server has taken the request and closed its connection: `cancel()` itself
 * drops that promise, so the query's canceller is called directly when it has one.
 *
 * A query not yet handed to its connection (no `state`: `readable()` and `writable()` send it a
 * tick after they are called) is left alone: postgres.js 3.4 drops such a query without freeing
 * a reserved or transaction connection, and every later statement on it waits forever (seen as
 * a hung ROLLBACK). The caller checks its signal once the statement returns; a COPY then running
 * is cancelled by the early-stop path.
 */
function cancelQuery(q: { cancel(): unknown }): Promise<void> {
  const query = q as {
    state?: unknown;
    active?: boolean;
    canceller?: ((query: unknown) => unknown) | null;
    cancel(): unknown;
  };
  if (!query.state) return Promise.resolve();
  query.active = true;
  const canceller = query.canceller;
  let sent: unknown;
  try {
    if (typeof canceller === "function") {
      query.canceller = null; // once, as `cancel()` does
      sent = canceller(query);
    } else sent = query.cancel();
  } catch {
    return Promise.resolve();
  }
  return Promise.resolve(sent).then(() => {}, () => {});
}

/**
 * The rows of a COPY text stream, parsed per column, with backpressure on the stream, in arrays
 * (what arrived since the last one was taken).
 */
async function* copyRows(
  stream: Readable,
  columns: readonly DescribedColumn[],
  transform: Sql["options"]["transform"],
): AsyncGenerator<Record<string, unknown>[], void, undefined> {
  const reader = new CopyTextReader();
  let queue: Record<string, unknown>[] = [];
  let ended = false;
  let failure: unknown;
  let wake: (() => void) | undefined;
  const width = columns.length;
  const valueFrom = transform.value.from;
  const rowFrom = transform.row.from;
  // Rows arrive a message each: their bytes are gathered and cut into rows COPY_TAKE_BYTES at a
  // time, or at once when the consumer waits for rows.
  const parse = () => {
    try {
      for (const fields of reader.take()) {
        const row: Record<string, unknown> = {};
        for (let i = 0; i < width; i++) {
          const column = columns[i]!;
          const raw = copyTextValue(fields[i] ?? "\\N");
          const parser = column.parser;
          let value: unknown = raw === null || parser === undefined
            ? raw
            : parser.array === true
            ? parser(raw.slice(1))
            : parser(raw);
          if (valueFrom) value = valueFrom(value, column as never);
          row[column.name] = value;
        }
        queue.push(rowFrom ? rowFrom(row as never) as Record<string, unknown> : row);
      }
    } catch (err) {
      failure ??= err;
      stream.destroy();
    }
  };
  const onData = (chunk: Uint8Array) => {
    reader.append(chunk);
    if (reader.buffered < COPY_TAKE_BYTES && wake === undefined) return;
    parse();
    if (queue.length >= EXTRACT_QUEUE_ROWS) stream.pause();
    wake?.();
  };
  stream.on("data", onData);
  stream.once("end", () => {
    ended = true;
    kickSocket(stream);
    wake?.();
  });
  stream.once("error", (err) => {
    failure ??= err;
    wake?.();
  });
  try {
    for (;;) {
      if (queue.length === 0 && failure === undefined && reader.buffered > 0) parse();
      if (queue.length > 0) {
        const batch = queue;
        queue = [];
        if (stream.isPaused() && !ended && failure === undefined) stream.resume();
        yield batch;
        continue;
      }
      if (failure !== undefined) throw failure;
      if (ended) {
        reader.end();
        return;
      }
      if (stream.isPaused()) stream.resume();
      await new Promise<void>((resolve) => wake = resolve);
      wake = undefined;
    }
  } finally {
    stream.off("data", onData);
  }
}

/** The DDL to run when the target table is missing, or a clear error when there is none. */
export function postgresCreateSql(plan: LoadPlan, action: string): string {
  const create = createSqlFor(plan.target, "postgres");
  if (create === undefined) {
    throw new SqlError(
      `${action}: the table does not exist and the target has no PostgreSQL CREATE statement`,
      "42P01",
    );
  }
  return create;
}

/**
 * Runs one `COPY ... FROM STDIN` with `text` as its data. postgres.js reports a COPY that fails
 * after the data's end to the query (already resolved with the stream) and never finishes the
 * stream, so the query's rejection is caught here too, and whichever comes first settles it.
 */
async function copyIn(
  tx: postgres.TransactionSql,
  statement: string,
  text: string,
  running: (q: { cancel(): unknown } | undefined) => void,
): Promise<void> {
  const q = tx.unsafe(statement);
  const hooked = q as unknown as { reject(err: unknown): void };
  const original = hooked.reject;
  let fail!: (err: unknown) => void;
  const failed = new Promise<never>((_, reject) => fail = reject);
  failed.catch(() => {});
  hooked.reject = (err) => {
    fail(err);
    original(err);
  };
  running(q);
  try {
    const writable = await q.writable() as unknown as Writable;
    writable.end(text);
    await Promise.race([finished(writable), failed]);
  } finally {
    running(undefined);
  }
}

/**
 * Loads rows into PostgreSQL in one transaction: creates the table first when it is missing and
 * the target has DDL for it, copies the rows (`COPY ... FROM STDIN`, text format, in chunks of
 * about 1 MB) into a temporary staging table shaped like the target, and moves them with an
 * idempotent `INSERT ... SELECT ... ON CONFLICT` each time `plan.stageBytes` of COPY text are
 * staged, and at the end (with `update`, once at the end; see {@linkcode stagedLoadStatements}).
 */
export async function postgresLoad(
  open: () => Promise<PostgresConnection>,
  plan: LoadPlan,
): Promise<SqlLoadResult> {
  const { target, rows, timeoutMs, signal } = plan;
  const db = await open();
  const action = `Cannot load into ${target.table} on ${db.label}`;
  const table = quoteIdentifier(target.table);
  const staged = stagedLoadStatements(target, plan.update);
  let current: { cancel(): unknown } | undefined;
  const running = (q: { cancel(): unknown } | undefined) => current = q;
  const onAbort = () => {
    if (current !== undefined) cancelQuery(current);
  };
  const chunks = new CopyChunks(action, target.columns);
  let copying: { first: number; count: number } | undefined;
  const hasCreate = target.createSql !== undefined;
  const moved = { inserted: 0, updated: 0 };
  try {
    if (signal?.aborted) throw new SqlError(`${action}: aborted`, "ABORTED");
    signal?.addEventListener("abort", onAbort, { once: true });
    await db.sql.begin(async (tx) => {
      const exec = async (text: string, args?: unknown[]) => {
        if (signal?.aborted) throw new SqlError(`${action}: aborted`, "ABORTED");
        const q = tx.unsafe(text, args as postgres.ParameterOrJSON<never>[] | undefined);
        current = q;
        try {
          return await q;
        } finally {
          current = undefined;
        }
      };
      if (timeoutMs !== undefined) await exec(`SET LOCAL statement_timeout = ${timeoutMs}`);
      if (hasCreate) {
        const [found] = await exec(`SELECT to_regclass($1) IS NOT NULL AS present`, [table]);
        if (found?.present !== true) {
          if (signal?.aborted) throw new SqlError(`${action}: aborted`, "ABORTED");
          const q = tx.unsafe(postgresCreateSql(plan, action)).simple();
          current = q;
          try {
            await q;
          } finally {
            current = undefined;
          }
        }
      }
      await exec(staged.create);
      const copy = staged.copy("STDIN");
      // The rows staged since the last INSERT: an INSERT's error names their span.
      let staging: { first: number; count: number; bytes: number } | undefined;
      const move = async (more: boolean) => {
        if (staging === undefined) return;
        copying = staging;
        const result = await exec(staged.insert);
        if (plan.update) {
          moved.inserted = Number(result[0]?.inserted ?? 0);
          moved.updated = Number(result[0]?.updated ?? 0);
        } else moved.inserted += result.count;
        copying = staging = undefined;
        if (more) await exec(staged.clear);
      };
      await chunks.run(rows, async (text, first, count) => {
        if (signal?.aborted) throw new SqlError(`${action}: aborted`, "ABORTED");
        copying = { first, count };
        await copyIn(tx, copy, text, running);
        copying = undefined;
        staging ??= { first, count: 0, bytes: 0 };
        staging.count += count;
        staging.bytes += text.length;
        if (!plan.update && staging.bytes >= plan.stageBytes) await move(true);
      });
      await move(false);
    });
  } catch (err) {
    // Errors from the input iterable are the producer's own; pass them through untouched.
    if (err instanceof SourceFailure) throw err.error;
    if (err instanceof SqlError) throw err;
    throw wrap(
      err,
      `${action}${copyPart(err, copying)}`,
      db.label,
      timeoutMs,
      signal?.aborted ?? false,
    );
  } finally {
    signal?.removeEventListener("abort", onAbort);
    if (db.owned) await db.sql.end({ timeout: 5 }).catch(() => {});
  }
  return loadResult(chunks.position, moved, plan.update);
}

/**
 * `", row 13, column \"n\""`: where a failed COPY chunk broke, as a position in the load's input
 * (never a value); `""` when the error is not a COPY line's.
 */
export function copyPart(
  err: unknown,
  chunk: { first: number; count: number } | undefined,
): string {
  const at = copyErrorPosition(err);
  if (chunk === undefined) return "";
  if (at === undefined || at.line < 1 || at.line > chunk.count) {
    return chunk.count > 1
      ? `, rows ${chunk.first}-${chunk.first + chunk.count - 1}`
      : `, row ${chunk.first}`;
  }
  const column = at.column === undefined ? "" : `, column "${at.column}"`;
  return `, row ${chunk.first + at.line - 1}${column}`;
}

/** The result of a staged load that read `read` rows. */
export function loadResult(
  read: number,
  moved: { inserted: number; updated: number },
  update: boolean,
): SqlLoadResult {
  const skipped = read - moved.inserted - moved.updated;
  return update
    ? { inserted: moved.inserted, updated: moved.updated, skipped }
    : { inserted: moved.inserted, skipped };
}
