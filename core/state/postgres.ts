/**
 * The PostgreSQL store, through postgres.js, for `CARREL_DATABASE_URL`.
 *
 * @module
 */
import { maskUrl } from "../privacy/secrets.ts";
import { PostgresClient } from "./sql_client.ts";
import { SqlStateStore } from "./sql_store.ts";

/**
 * Opens a PostgreSQL store. The URL's password is never shown: `location` masks it.
 *
 * @example
 * ```ts ignore
 * import { openPostgresStore } from "./postgres.ts";
 * await using store = openPostgresStore("postgres://carrel@127.0.0.1/carrel");
 * await store.migrate();
 * ```
 */
export function openPostgresStore(url: string, options: { max?: number } = {}): SqlStateStore {
  return new SqlStateStore(PostgresClient.connect(url, options), maskUrl(url));
}
