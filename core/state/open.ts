/**
 * Opens the configured state store: PostgreSQL when `CARREL_DATABASE_URL` is set, else the
 * embedded PGlite under `CARREL_HOME`.
 *
 * @module
 */
import { join } from "node:path";
import { openPgliteStore } from "./pglite.ts";
import { openPostgresStore } from "./postgres.ts";
import type { StateStore } from "./store.ts";
import { ensurePrivateHome } from "./embedded_files.ts";
import { removeDeadScratch } from "../dataset.ts";
import { carrelHome } from "./home.ts";

export { carrelHome } from "./home.ts";

/**
 * Opens and migrates the store the environment names. `CARREL_HOME` is created 0700, or made
 * private when it exists. The embedded store may be open in other Carrel processes at the same
 * time: the first one serves it to the others.
 *
 * @example
 * ```ts ignore
 * import { openStore } from "./open.ts";
 * await using store = await openStore();
 * console.log(store.location);
 * ```
 */
export async function openStore(
  env: { get(key: string): string | undefined } = Deno.env,
): Promise<StateStore> {
  const url = env.get("CARREL_DATABASE_URL");
  const home = carrelHome(env);
  await ensurePrivateHome(home);
  // Scratch left by killed processes is unreadable (its key died with them): remove it now.
  await removeDeadScratch(home).catch(() => {});
  const store = url ? await openPostgresStore(url) : await openPgliteStore(join(home, "state"));
  try {
    await store.migrate();
  } catch (error) {
    await store.close().catch(() => {});
    throw error;
  }
  return store;
}
