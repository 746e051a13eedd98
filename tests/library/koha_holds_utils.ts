/**
 * Helpers the Koha and holds DAG tests share: SQL on a `pglite:` or `postgres:` URL, the files
 * under a folder, and task states or fields of a `--json` run.
 *
 * @module
 */
import { openPgliteDatabase } from "../../core/state/pglite_database.ts";
import { join } from "node:path";
import postgres from "postgres";

/** Runs SQL on a `pglite:` or `postgres:` URL. */
export async function query<T>(url: string, text: string): Promise<T[]> {
  if (url.startsWith("pglite:")) {
    const db = await openPgliteDatabase(url.slice("pglite:".length));
    try {
      return (await db.query<T>(text)).rows;
    } finally {
      await db.close();
    }
  }
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    return (await sql.unsafe(text)) as unknown as T[];
  } finally {
    await sql.end();
  }
}

/** Every file under `dir`. */
export async function* files(dir: string): AsyncIterable<string> {
  for await (const entry of Deno.readDir(dir)) {
    const path = join(dir, entry.name);
    if (entry.isDirectory) yield* files(path);
    else if (entry.isFile) yield path;
  }
}

/** One field of every task of a `--json` run or `runs show`, by task id. */
export function byTask<K extends string>(stdout: string, field: K): Record<string, unknown> {
  const result = JSON.parse(stdout) as { tasks: ({ taskId: string } & Record<K, unknown>)[] };
  return Object.fromEntries(result.tasks.map((t) => [t.taskId, t[field]]));
}
