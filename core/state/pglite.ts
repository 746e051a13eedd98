/**
 * The embedded default store: PGlite in `CARREL_HOME/state` (0700, files 0600), shared safely by
 * any number of Carrel processes: the first to open it owns it and serves it to the others (see
 * `embedded_client.ts`).
 *
 * @module
 */
import { PgliteClient } from "./sql_client.ts";
import { SqlStateStore } from "./sql_store.ts";
import { EmbeddedClient, type EmbeddedOptions } from "./embedded_client.ts";

/**
 * Opens a PGlite store in `dataDir` (or in memory, private to this process, when `undefined`).
 * The folder holding `dataDir` gets the lock and socket files and is made private (0700). Call
 * `migrate()` before use.
 *
 * @example
 * ```ts ignore
 * import { openPgliteStore } from "./pglite.ts";
 * await using store = await openPgliteStore(undefined);
 * await store.migrate();
 * ```
 */
export async function openPgliteStore(
  dataDir: string | undefined,
  options: EmbeddedOptions = {},
): Promise<SqlStateStore> {
  if (dataDir === undefined) {
    return new SqlStateStore(await PgliteClient.open(undefined), "memory://");
  }
  return new SqlStateStore(await EmbeddedClient.open(dataDir, options), dataDir);
}
