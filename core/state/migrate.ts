/**
 * Versioned SQL migrations, applied in order, once each, on PGlite and PostgreSQL alike.
 *
 * @module
 */
import type { SqlClient } from "./sql_client.ts";

const MIGRATIONS_DIR = new URL("./migrations/", import.meta.url);

/** The migration files, ordered by their numeric prefix. */
export async function migrationFiles(): Promise<{ version: number; name: string; sql: string }[]> {
  const files: { version: number; name: string; sql: string }[] = [];
  for await (const entry of Deno.readDir(MIGRATIONS_DIR)) {
    const match = /^(\d+)_([a-z0-9_]+)\.sql$/.exec(entry.name);
    if (!entry.isFile || !match) continue;
    files.push({
      version: Number(match[1]),
      name: entry.name,
      sql: await Deno.readTextFile(new URL(entry.name, MIGRATIONS_DIR)),
    });
  }
  return files.sort((a, b) => a.version - b.version);
}

/**
 * Applies the pending migrations, each in its own transaction, under an advisory lock so that
 * several processes starting at once apply each migration exactly once.
 */
export async function migrate(client: SqlClient): Promise<void> {
  const files = await migrationFiles();
  await client.transaction(async (tx) => {
    await tx.query("SELECT pg_advisory_xact_lock(7368426)");
    await tx.exec(`CREATE TABLE IF NOT EXISTS carrel_migrations (
      version integer PRIMARY KEY,
      name text NOT NULL,
      applied_at timestamptz NOT NULL DEFAULT now()
    )`);
    const applied = new Set(
      (await tx.query<{ version: number }>("SELECT version FROM carrel_migrations")).map((r) =>
        Number(r.version)
      ),
    );
    for (const file of files) {
      if (applied.has(file.version)) continue;
      await tx.exec(file.sql);
      await tx.query("INSERT INTO carrel_migrations (version, name) VALUES ($1, $2)", [
        file.version,
        file.name,
      ]);
    }
  });
}
