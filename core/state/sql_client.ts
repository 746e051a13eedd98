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
import { noDelay } from "./postgres_socket.ts";

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

/** What of PGlite's module the prepared path uses (imported with the engine, when first opened). */
type PgliteModule = Pick<typeof import("@electric-sql/pglite"), "protocol" | "parse">;

/**
 * Parameterised statements prepared once per PGlite session and run through PGlite's extended
 * protocol (Bind, Describe, Execute, Sync for the named statement), so that a call is neither
 * parsed nor planned again. PGlite's own parameterised path parses, describes and plans every
 * call, and `EXECUTE name(literals)` parses its whole text (a batch's JSON included): each costs
 * several times the prepared call. Values are sent as text, typed by the prepared statement's
 * parameters, and rows are read with the database's own type parsers. A statement PGlite cannot
 * prepare runs the plain way.
 */
class PgliteStatements {
  readonly #names = new Map<string, string | null>();
  #next = 0;
  constructor(readonly db: PGlite, readonly pglite: PgliteModule) {}

  async query<T>(
    via: PgliteQueryable,
    text: string,
    params: readonly unknown[],
    inTransaction: boolean,
  ): Promise<T[]> {
    if (params.length === 0) return (await via.query<T>(text)).rows;
    let name = this.#names.get(text);
    if (name === undefined) {
      name = `carrel_s${this.#next++}`;
      try {
        await via.exec(`PREPARE ${name} AS ${text}`);
      } catch {
        name = null;
      }
      this.#names.set(text, name);
    }
    if (name === null) return (await via.query<T>(text, [...params])).rows;
    const { serialize } = this.pglite.protocol;
    const parts = [
      serialize.bind({ statement: name, values: params.map(textValue) }),
      serialize.describe({ type: "P" }),
      serialize.execute({}),
      serialize.sync(),
    ];
    const message = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const part of parts) {
      message.set(part, at);
      at += part.length;
    }
    try {
      // Inside a transaction PGlite writes its files at the commit, as its own queries do.
      const { messages } = await this.db.execProtocol(message, { syncToFs: !inTransaction });
      const results = this.pglite.parse.parseResults(messages, this.db.parsers);
      return (results[results.length - 1]?.rows ?? []) as T[];
    } catch (error) {
      // Prepared in a session that has since lost it (a failed transaction): prepare again.
      if (!/prepared statement .* does not exist/.test(String(error))) throw error;
      this.#names.delete(text);
      return await this.query(via, text, params, inTransaction);
    }
  }
}

/** A parameter as text (its type comes from the prepared statement's parameter); null as null. */
function textValue(value: unknown): string | null {
  if (value === null || value === undefined) return null;
  if (typeof value === "number" || typeof value === "bigint") {
    if (typeof value === "number" && !Number.isFinite(value)) {
      throw new Error(`Cannot send the number ${value} to the state store`);
    }
    return String(value);
  }
  if (typeof value === "boolean") return value ? "true" : "false";
  if (value instanceof Date) return value.toISOString();
  if (Array.isArray(value)) return `{${value.map(arrayElement).join(",")}}`;
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
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
    return this.statements.query<T>(this.tx, text, params, true);
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
  readonly #statements: PgliteStatements;
  private constructor(readonly db: PGlite, pglite: PgliteModule) {
    this.#statements = new PgliteStatements(db, pglite);
  }

  /** Opens (creating when new) a PGlite data directory; `undefined` means in memory. */
  static async open(dataDir: string | undefined): Promise<PgliteClient> {
    const db = await openPgliteDatabase(dataDir);
    // Loaded already by opening the database: the module cache answers.
    const { protocol, parse } = await import("@electric-sql/pglite");
    return new PgliteClient(db, { protocol, parse });
  }

  query<T>(text: string, params: readonly unknown[] = []): Promise<T[]> {
    return this.#mutex.run(() => this.#statements.query<T>(this.db, text, params, false));
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
    // In turn with the statements: PGlite runs LISTEN as a query of its own, and a query that
    // ran between a prepared call's execution and its reading would take that call's results.
    const stop = await this.#mutex.run(() => this.db.listen(channel, onNotify));
    return () => this.#mutex.run(() => stop());
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
      ...noDelay(),
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
