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
 * await using store = await openPostgresStore("postgres://carrel@127.0.0.1/carrel");
 * await store.migrate();
 * ```
 */
export async function openPostgresStore(
  url: string,
  options: { max?: number } = {},
): Promise<SqlStateStore> {
  return new SqlStateStore(await PostgresClient.connect(url, options), maskUrl(url));
}
