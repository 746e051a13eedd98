/**
 * The small SQL interface the state store is written against, with one adapter for the embedded
 * PGlite and one for PostgreSQL through postgres.js.
 *
 * @module
 */
import { PGlite } from "@electric-sql/pglite";
import postgres from "postgres";

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
  exec(script: string): Promise<unknown>;
}

class PgliteTx implements SqlClient {
  readonly kind = "pglite" as const;
  constructor(readonly tx: PgliteQueryable) {}
  async query<T>(text: string, params: readonly unknown[] = []): Promise<T[]> {
    return (await this.tx.query<T>(text, [...params])).rows;
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
  private constructor(readonly db: PGlite) {}

  /** Opens (creating when new) a PGlite data directory; `undefined` means in memory. */
  static async open(dataDir: string | undefined): Promise<PgliteClient> {
    const db = dataDir === undefined ? await PGlite.create() : await PGlite.create(dataDir);
    return new PgliteClient(db);
  }

  query<T>(text: string, params: readonly unknown[] = []): Promise<T[]> {
    return this.#mutex.run(async () => (await this.db.query<T>(text, [...params])).rows);
  }
  exec(script: string): Promise<void> {
    return this.#mutex.run(async () => {
      await this.db.exec(script);
    });
  }
  transaction<T>(fn: (tx: SqlClient) => Promise<T>): Promise<T> {
    return this.#mutex.run(() => this.db.transaction((tx) => fn(new PgliteTx(tx))));
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
    return await this.sql.unsafe(text, params as postgres.ParameterOrJSON<never>[]) as T[];
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
  static connect(url: string, options: { max?: number } = {}): PostgresClient {
    const sql = postgres(url, {
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

/**
 * Masks the password of a connection URL for display: `postgres://carrel:***@db/carrel`.
 *
 * @example
 * ```ts
 * import { maskDatabaseUrl } from "./sql_client.ts";
 * maskDatabaseUrl("postgres://u:secret@h/db"); // "postgres://u:***@h/db"
 * ```
 */
export function maskDatabaseUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    for (const key of [...u.searchParams.keys()]) {
      if (/pass|secret|key|token/i.test(key)) u.searchParams.set(key, "***");
    }
    return u.toString();
  } catch {
    return url.replace(/\/\/([^:/@]*):[^@]*@/, "//$1:***@");
  }
}
