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

/** Where Carrel keeps its files. */
export function carrelHome(env: { get(key: string): string | undefined } = Deno.env): string {
  return env.get("CARREL_HOME") || join(Deno.cwd(), ".carrel");
}

/**
 * Opens and migrates the store the environment names.
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
  const store = url
    ? openPostgresStore(url)
    : await openPgliteStore(join(carrelHome(env), "state"));
  try {
    await store.migrate();
  } catch (error) {
    await store.close().catch(() => {});
    throw error;
  }
  return store;
}
