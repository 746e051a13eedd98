/**
 * The small SQL interface the state store is written against, with one adapter for the embedded
 * PGlite and one for PostgreSQL through postgres.js.
 *
 * @module
 */
import type { PGlite } from "@electric-sql/pglite";
// A type only: postgres.js is imported when a connection is made, so a process (or sandbox Worker)
// that never connects does not load it.
import type postgres from "postgres";
import { openPgliteDatabase } from "./pglite_database.ts";

/** A connection that runs parameterised SQL (`$1`, `$2`, ...). */
export interface SqlClient {
  readonly kind: "pglite" | "postgres";
  query<T = Record<string, unknown>>(text: string, params?: readonly unknown[]): Promise<T[]>;
  /** Runs a script of several statements without parameters. */
  exec(script: string): Promise<void>;
  /** Runs `fn` in one transaction: committed when it returns, rolled back when it throws. */
  transaction<T>(fn: (tx: SqlClient) => Promise<T>): Promise<T>;
  /** LISTENs on a channel; returns a function that stops listening. */
  listen(channel: string, onNotify: (payload: string) => void): Promise<() => Promise<void>>;
  close(): Promise<void>;
}

/** A promise-chain mutex: PGlite has one backend, so the store's operations take turns. */
class Mutex {
  #tail: Promise<unknown> = Promise.resolve();
  run<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.#tail.then(fn, fn);
    this.#tail = next.catch(() => undefined);
    return next;
  }
}

interface PgliteQueryable {
  query<T>(text: string, params?: unknown[]): Promise<{ rows: T[] }>;
  exec(script: string): Promise<{ rows: unknown[] }[]>;
}

/**
 * Parameterised statements prepared once per PGlite session and run as `EXECUTE name(...)`
 * through the simple protocol: PGlite's own parameterised path parses, describes and plans every
 * call (about three times the cost of a prepared one). Values are written as SQL literals
 * (strings quoted with `'` doubled, standard_conforming_strings being on); a statement PGlite
 * cannot prepare runs the plain way.
 */
class PgliteStatements {
  readonly #names = new Map<string, string | null>();
  #next = 0;

  async query<T>(db: PgliteQueryable, text: string, params: readonly unknown[]): Promise<T[]> {
    if (params.length === 0) return (await db.query<T>(text)).rows;
    let name = this.#names.get(text);
    if (name === undefined) {
      name = `carrel_s${this.#next++}`;
      try {
        await db.exec(`PREPARE ${name} AS ${text}`);
      } catch {
        name = null;
      }
      this.#names.set(text, name);
    }
    if (name === null) return (await db.query<T>(text, [...params])).rows;
    const call = `EXECUTE ${name}(${params.map(literal).join(", ")})`;
    try {
      const results = await db.exec(call);
      return (results[results.length - 1]?.rows ?? []) as T[];
    } catch (error) {
      // Prepared in a session that has since lost it (a failed transaction): prepare again.
      if (!/prepared statement .* does not exist/.test(String(error))) throw error;
      this.#names.delete(text);
      return await this.query(db, text, params);
    }
  }
}

/** A value as an SQL literal (its type comes from the prepared statement's parameter). */
function literal(value: unknown): string {
  if (value === null || value === undefined) return "NULL";
  if (typeof value === "number" || typeof value === "bigint") {
    if (typeof value === "number" && !Number.isFinite(value)) {
      throw new Error(`Cannot send the number ${value} to the state store`);
    }
    return String(value);
  }
  if (typeof value === "boolean") return value ? "true" : "false";
  if (value instanceof Date) return quote(value.toISOString());
  if (Array.isArray(value)) return quote(`{${value.map(arrayElement).join(",")}}`);
  if (typeof value === "object") return quote(JSON.stringify(value));
  return quote(String(value));
}

function quote(text: string): string {
  return `'${text.replaceAll("'", "''")}'`;
}

function arrayElement(value: unknown): string {
  if (value === null || value === undefined) return "NULL";
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  const text = value instanceof Date ? value.toISOString() : String(value);
  return `"${text.replaceAll("\\", "\\\\").replaceAll('"', '\\"')}"`;
}

class PgliteTx implements SqlClient {
  readonly kind = "pglite" as const;
  constructor(readonly tx: PgliteQueryable, readonly statements: PgliteStatements) {}
  query<T>(text: string, params: readonly unknown[] = []): Promise<T[]> {
    return this.statements.query<T>(this.tx, text, params);
  }
  async exec(script: string): Promise<void> {
    await this.tx.exec(script);
  }
  transaction<T>(fn: (tx: SqlClient) => Promise<T>): Promise<T> {
    return fn(this);
  }
  listen(_channel: string, _onNotify: (payload: string) => void): Promise<() => Promise<void>> {
    return Promise.reject(new Error("Cannot LISTEN inside a transaction"));
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** The embedded PGlite adapter. */
export class PgliteClient implements SqlClient {
  readonly kind = "pglite" as const;
  readonly #mutex = new Mutex();
  readonly #statements = new PgliteStatements();
  private constructor(readonly db: PGlite) {}

  /** Opens (creating when new) a PGlite data directory; `undefined` means in memory. */
  static async open(dataDir: string | undefined): Promise<PgliteClient> {
    return new PgliteClient(await openPgliteDatabase(dataDir));
  }

  query<T>(text: string, params: readonly unknown[] = []): Promise<T[]> {
    return this.#mutex.run(() => this.#statements.query<T>(this.db, text, params));
  }
  exec(script: string): Promise<void> {
    return this.#mutex.run(async () => {
      await this.db.exec(script);
    });
  }
  transaction<T>(fn: (tx: SqlClient) => Promise<T>): Promise<T> {
    return this.#mutex.run(() =>
      this.db.transaction((tx) => fn(new PgliteTx(tx, this.#statements)))
    );
  }
  async listen(channel: string, onNotify: (payload: string) => void): Promise<() => Promise<void>> {
    const stop = await this.db.listen(channel, onNotify);
    return async () => await stop();
  }
  close(): Promise<void> {
    return this.#mutex.run(() => this.db.close());
  }
}

type PgSql = postgres.Sql | postgres.TransactionSql;

class PostgresTx implements SqlClient {
  readonly kind = "postgres" as const;
  constructor(readonly sql: PgSql) {}
  async query<T>(text: string, params: readonly unknown[] = []): Promise<T[]> {
    // Named prepared statements (postgres.js prepares `unsafe` text only when asked): parsed and
    // planned once per connection instead of on every call.
    return await this.sql.unsafe(text, params as postgres.ParameterOrJSON<never>[], {
      prepare: params.length > 0,
    }) as T[];
  }
  async exec(script: string): Promise<void> {
    await this.sql.unsafe(script);
  }
  transaction<T>(fn: (tx: SqlClient) => Promise<T>): Promise<T> {
    return fn(this);
  }
  listen(_channel: string, _onNotify: (payload: string) => void): Promise<() => Promise<void>> {
    return Promise.reject(new Error("Cannot LISTEN inside a transaction"));
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** The PostgreSQL adapter (postgres.js). */
export class PostgresClient extends PostgresTx {
  private constructor(readonly root: postgres.Sql) {
    super(root);
  }

  /** Connects to a PostgreSQL server. Notices are silenced; errors never carry the URL. */
  static async connect(url: string, options: { max?: number } = {}): Promise<PostgresClient> {
    const { default: connectPostgres } = await import("postgres");
    const sql = connectPostgres(url, {
      max: options.max ?? 4,
      onnotice: () => {},
      idle_timeout: 20,
      connect_timeout: 10,
      transform: { undefined: null },
      connection: { application_name: "carrel" },
    });
    return new PostgresClient(sql);
  }

  override transaction<T>(fn: (tx: SqlClient) => Promise<T>): Promise<T> {
    return this.root.begin((tx) => fn(new PostgresTx(tx))) as Promise<T>;
  }
  override async listen(
    channel: string,
    onNotify: (payload: string) => void,
  ): Promise<() => Promise<void>> {
    const { unlisten } = await this.root.listen(channel, onNotify);
    return async () => await unlisten();
  }
  /** A dedicated connection, for session-level advisory locks. */
  reserve(): Promise<postgres.ReservedSql> {
    return this.root.reserve();
  }
  override close(): Promise<void> {
    return this.root.end({ timeout: 5 });
  }
}
