/**
 * The PGlite driver of `sqlExtract` and `sqlLoad`: embedded PostgreSQL databases (`pglite:` URLs
 * or a PGlite instance), so pipelines and tests run without a server. Same dialect, statements
 * and error descriptions as `sql_postgres.ts`; PGlite cannot cancel a running statement, so an
 * abort takes effect between fetches and batches.
 *
 * @module
 */
import type { PGlite } from "@electric-sql/pglite";
import { join } from "node:path";
import { openPgliteDatabase } from "../../core/state/pglite_database.ts";
import {
  assertReadQuery,
  errorWrapper,
  type ExtractPlan,
  type LoadPlan,
  quoteIdentifier,
  SourceFailure,
  SqlError,
  type SqlLoadResult,
} from "./sql_common.ts";
import { copyPart, describePostgresError, loadResult, postgresCreateSql } from "./sql_postgres.ts";
import { CopyChunks, stagedLoadStatements } from "./sql_copy.ts";

/**
 * The subset of a PGlite instance (or any object with the same methods) the SQL operators use.
 * `PGlite` from `@electric-sql/pglite` satisfies it.
 */
export interface PgliteDatabase {
  /**
   * Runs one statement with parameters; `options.blob` is what `COPY ... FROM '/dev/blob'`
   * reads.
   */
  query<T>(
    query: string,
    params?: unknown[],
    options?: { blob?: Blob },
  ): Promise<{ rows: T[]; affectedRows?: number }>;
  /** Runs one or more statements without parameters. */
  exec(query: string): Promise<unknown>;
  /** Closes the database. */
  close(): Promise<void>;
}

/** An embedded database to use: a PGlite instance passed in, or a `pglite:` URL opened here. */
export interface Embedded {
  /** Quoted name for messages. */
  label: string;
  /** Opened here (closed at the end) or passed in (left open). */
  owned: boolean;
  /** Opens (or hands over) the database; `create: false` refuses a missing data directory. */
  open(create: boolean): Promise<PgliteDatabase>;
}

/** True for a PGlite instance or any object with its `query` and `exec` methods. */
export function isPgliteDatabase(value: unknown): value is PgliteDatabase {
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
  return await openPgliteDatabase(path);
}

let openEmbedded = 0;

/**
 * How many PGlite databases opened from `pglite:` URLs by `sqlExtract` and
 * `sqlLoad` are open right now (0 whenever none of them is running): a check that every
 * data directory they open is closed again.
 *
 * @example Usage
 * ```ts
 * import { openEmbeddedDatabases } from "./sql_pglite.ts";
 * console.log(openEmbeddedDatabases()); // 0
 * ```
 */
export function openEmbeddedDatabases(): number {
  return openEmbedded;
}

/** Opens a `pglite:` data directory, counted by {@linkcode openEmbeddedDatabases}. */
export async function openCounted(
  path: string | undefined,
  create: boolean,
): Promise<PgliteDatabase> {
  const db = await openPglite(path, create);
  openEmbedded++;
  let closed = false;
  return {
    query: (q, p, o) => db.query(q, p, o),
    exec: (q) => db.exec(q),
    close: async () => {
      if (closed) return;
      closed = true;
      openEmbedded--;
      await db.close();
    },
  };
}

const wrap = errorWrapper(describePostgresError);

/** Streams a query's rows from PGlite: read-only transaction, cursor, rollback on every exit. */
export async function* pgliteExtract<T>(
  embedded: Embedded,
  plan: ExtractPlan,
): AsyncGenerator<T, void, undefined> {
  const { query, params, keyword, batchSize, timeoutMs, signal } = plan;
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

/**
 * Loads rows into PGlite in one transaction, as `postgresLoad` does on a server: each chunk of
 * about 1 MB of COPY text goes in with `COPY ... FROM '/dev/blob'` into the temporary staging
 * table, and an idempotent `INSERT ... SELECT ... ON CONFLICT` moves the rows each time
 * `plan.stageBytes` of COPY text are staged, and at the end (with `update`, once at the end).
 */
export async function pgliteLoad(embedded: Embedded, plan: LoadPlan): Promise<SqlLoadResult> {
  const { target, rows, timeoutMs, signal } = plan;
  const action = `Cannot load into ${target.table} on ${embedded.label}`;
  const table = quoteIdentifier(target.table);
  const staged = stagedLoadStatements(target, plan.update);
  const chunks = new CopyChunks(action, target.columns);
  let copying: { first: number; count: number } | undefined;
  const moved = { inserted: 0, updated: 0 };
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
      if (found[0]?.present !== true) await tx.exec(postgresCreateSql(plan, action));
    }
    await tx.exec(staged.create);
    const copy = staged.copy("'/dev/blob'");
    // The rows staged since the last INSERT: an INSERT's error names their span.
    let staging: { first: number; count: number; bytes: number } | undefined;
    const move = async (more: boolean) => {
      if (staging === undefined) return;
      copying = staging;
      const result = await tx.query<{ inserted?: unknown; updated?: unknown }>(staged.insert);
      if (plan.update) {
        moved.inserted = Number(result.rows[0]?.inserted ?? 0);
        moved.updated = Number(result.rows[0]?.updated ?? 0);
      } else moved.inserted += result.affectedRows ?? 0;
      copying = staging = undefined;
      if (more) await tx.exec(staged.clear);
    };
    await chunks.run(rows, async (text, first, count) => {
      if (signal?.aborted) throw new SqlError(`${action}: aborted`, "ABORTED");
      copying = { first, count };
      await tx.query(copy, [], { blob: new Blob([text]) });
      copying = undefined;
      staging ??= { first, count: 0, bytes: 0 };
      staging.count += count;
      staging.bytes += text.length;
      if (!plan.update && staging.bytes >= plan.stageBytes) await move(true);
    });
    if (signal?.aborted) throw new SqlError(`${action}: aborted`, "ABORTED");
    await move(false);
    await tx.exec("COMMIT");
    committed = true;
  } catch (err) {
    if (err instanceof SourceFailure) throw err.error;
    if (err instanceof SqlError) throw err;
    throw wrap(
      err,
      `${action}${copyPart(err, copying)}`,
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
  return loadResult(chunks.position, moved, plan.update);
}
