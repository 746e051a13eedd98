/**
 * The embedded default store: PGlite in `CARREL_HOME/state`, created on first use with 0700
 * permissions.
 *
 * @module
 */
import { PgliteClient } from "./sql_client.ts";
import { SqlStateStore } from "./sql_store.ts";

/**
 * Opens a PGlite store in `dataDir` (or in memory when `undefined`). Call `migrate()` before use.
 *
 * @example
 * ```ts ignore
 * import { openPgliteStore } from "./pglite.ts";
 * await using store = await openPgliteStore(undefined);
 * await store.migrate();
 * ```
 */
export async function openPgliteStore(dataDir: string | undefined): Promise<SqlStateStore> {
  if (dataDir !== undefined) {
    await Deno.mkdir(dataDir, { recursive: true, mode: 0o700 });
    await Deno.chmod(dataDir, 0o700);
  }
  const client = await PgliteClient.open(dataDir);
  return new SqlStateStore(client, dataDir ?? "memory://");
}
