/**
 * How Carrel opens every embedded PGlite database (the state store, `pglite:` ILS sources and
 * warehouses): with a small buffer cache, and, for a new data folder, by copying a template
 * folder made once instead of running initdb.
 *
 * Memory, measured on one process opening one database: PostgreSQL's default `shared_buffers`
 * (128 MB) is WebAssembly memory a process never gives back, so opening costs about 300 MB; with
 * 16 MB, about 175 MB. initdb costs about 600 MB (PGlite runs it in a second instance and copies
 * that instance's heap), while copying a template folder costs nothing beyond the open. The
 * template holds an empty cluster only (no data, no schema of Carrel's), lives in the user's
 * cache folder, and is keyed by the PGlite build so an upgrade makes a new one.
 *
 * @module
 */
// A type only: PGlite is imported when a database is opened, so a process (or sandbox Worker)
// that never opens one does not load it.
import type { PGlite } from "@electric-sql/pglite";
import { basename, dirname, join } from "node:path";
import { sha256Hex } from "../job_key.ts";
import { fileSystemMessage } from "../errors.ts";

/** PostgreSQL's buffer cache in every embedded database Carrel opens. */
export const PGLITE_SHARED_BUFFERS = "16MB";

/** PGlite's class, loaded on first use. */
async function pglite(): Promise<typeof PGlite> {
  return (await import("@electric-sql/pglite")).PGlite;
}

/** PGlite's start parameters with the smaller buffer cache. */
function startParams(engine: typeof PGlite): string[] {
  return [...engine.defaultStartParams, "-c", `shared_buffers=${PGLITE_SHARED_BUFFERS}`];
}

/**
 * Opens the PGlite database in `dataDir` (in memory, private to this process, when `undefined`)
 * with Carrel's memory settings. A folder without a database gets a copy of the template cluster
 * first (`options.templateDir`, by default {@linkcode pgliteTemplateDir}); the folder is created
 * when missing.
 *
 * @example
 * ```ts ignore
 * import { openPgliteDatabase } from "./pglite_database.ts";
 * const db = await openPgliteDatabase("/tmp/warehouse");
 * await db.close();
 * ```
 */
export async function openPgliteDatabase(
  dataDir: string | undefined,
  options: { templateDir?: string } = {},
): Promise<PGlite> {
  const engine = await pglite();
  const start = { startParams: startParams(engine) };
  if (dataDir === undefined) return await engine.create(start);
  if (!(await holdsDatabase(dataDir))) {
    await createFromTemplate(dataDir, options.templateDir ?? pgliteTemplateDir());
  }
  return await engine.create(dataDir, start);
}

/** True when `dataDir` holds a PostgreSQL cluster (its `PG_VERSION` file). */
export async function holdsDatabase(dataDir: string): Promise<boolean> {
  try {
    return (await Deno.stat(join(dataDir, "PG_VERSION"))).isFile;
  } catch {
    return false;
  }
}

/** The template folder a sandbox Worker was given (it may not read the environment). */
let givenTemplateDir: string | undefined;

/**
 * Uses `dir` as the template cluster's folder in this process: a sandbox Worker cannot read
 * `HOME` or `XDG_CACHE_HOME`, so the process that starts it passes the folder (and read access
 * to it); without it, a task that creates an embedded database would run initdb (seconds of CPU,
 * about 600 MB) in its sandbox.
 *
 * @example
 * ```ts ignore
 * import { givePgliteTemplateDir } from "./pglite_database.ts";
 * givePgliteTemplateDir(job.pgliteTemplate);
 * ```
 */
export function givePgliteTemplateDir(dir: string): void {
  givenTemplateDir = dir;
}

/**
 * The template cluster's folder: `$XDG_CACHE_HOME/carrel` (else `~/.cache/carrel`), named after
 * the PGlite build in use (or the folder given by {@linkcode givePgliteTemplateDir});
 * `undefined` when there is no home folder to cache it in.
 */
export function pgliteTemplateDir(): string | undefined {
  if (givenTemplateDir !== undefined) return givenTemplateDir;
  let cache: string | undefined;
  try {
    const home = Deno.env.get("HOME");
    cache = Deno.env.get("XDG_CACHE_HOME") || (home ? join(home, ".cache") : undefined);
  } catch {
    return undefined; // no permission to read the environment (a sandboxed task)
  }
  if (!cache) return undefined;
  build ??= sha256Hex(`${import.meta.resolve("@electric-sql/pglite")}|${PGLITE_SHARED_BUFFERS}`)
    .slice(0, 16);
  return join(cache, "carrel", `pglite-template-${build}`);
}

/** The PGlite build's short name in template folder names (worked out once). */
let build: string | undefined;

/**
 * Puts an empty cluster in `dataDir`: a copy of the template, made first when missing. When the
 * template cannot be made or read (no cache folder, no permission), PGlite's own initdb runs in
 * `dataDir` instead.
 */
async function createFromTemplate(dataDir: string, template: string | undefined): Promise<void> {
  if (
    template === undefined || !(await ensurePgliteTemplate(template).then(() => true, () => false))
  ) {
    await Deno.mkdir(dataDir, { recursive: true, mode: 0o700 });
    await (await initdb(dataDir)).close();
    return;
  }
  try {
    // PG_VERSION last: a copy cut short is not taken for a database, and is copied over next time.
    await copyTree(template, dataDir, "PG_VERSION");
    await Deno.copyFile(join(template, "PG_VERSION"), join(dataDir, "PG_VERSION"));
    await Deno.chmod(join(dataDir, "PG_VERSION"), 0o600);
  } catch (error) {
    // A full disk says so, as PGlite's own file system errors do (not the template's paths).
    const message = fileSystemMessage(error);
    throw message ? new Error(message, { cause: error }) : error;
  }
}

/**
 * Makes the template cluster when missing: initdb in a private staging folder, renamed into
 * place. A process that opens embedded databases may call it first in a process of its own, so
 * that initdb's memory is never added to that of databases open at the same time.
 *
 * @example
 * ```ts ignore
 * import { ensurePgliteTemplate, pgliteTemplateDir } from "./pglite_database.ts";
 * await ensurePgliteTemplate(pgliteTemplateDir()!);
 * ```
 */
export async function ensurePgliteTemplate(template: string): Promise<void> {
  if (await holdsDatabase(template)) return;
  await Deno.mkdir(dirname(template), { recursive: true, mode: 0o700 });
  const staging = await Deno.makeTempDir({ dir: dirname(template), prefix: ".staging-" });
  try {
    const data = join(staging, "data");
    await (await initdb(data)).close();
    try {
      await Deno.rename(data, template);
    } catch (error) {
      // Another process made it meanwhile: theirs is as good as this one.
      if (!(await holdsDatabase(template))) throw error;
    }
  } finally {
    await Deno.remove(staging, { recursive: true }).catch(() => {});
  }
  await pruneTemplates(template);
}

/** How old a staging folder must be to count as left behind by a process that died in initdb. */
const STALE_STAGING_MS = 3_600_000;

/**
 * Once a new template is made (a first run after a PGlite upgrade), removes the templates of
 * other builds beside it (`pglite-template-*`, about 40 MB each) and staging folders left by an
 * initdb that died more than an hour ago. A process of an older Carrel that still wants its
 * template makes it again. Nothing else in the folder is touched; failures are ignored.
 */
async function pruneTemplates(template: string): Promise<void> {
  const folder = dirname(template);
  const own = basename(template);
  const prefix = "pglite-template-";
  // Only in Carrel's own cache folder (a template named as `pgliteTemplateDir` names it).
  if (!own.startsWith(prefix)) return;
  try {
    for await (const entry of Deno.readDir(folder)) {
      if (!entry.isDirectory || entry.name === own) continue;
      const path = join(folder, entry.name);
      if (entry.name.startsWith(prefix)) {
        await Deno.remove(path, { recursive: true }).catch(() => {});
      } else if (entry.name.startsWith(".staging-")) {
        const modified = (await Deno.stat(path).catch(() => undefined))?.mtime?.getTime();
        if (modified !== undefined && Date.now() - modified > STALE_STAGING_MS) {
          await Deno.remove(path, { recursive: true }).catch(() => {});
        }
      }
    }
  } catch { /* an unreadable cache folder: nothing to tidy */ }
}

/** Runs PGlite's initdb in `dataDir` with the small buffer cache written to its configuration. */
async function initdb(dataDir: string): Promise<PGlite> {
  const engine = await pglite();
  return await engine.create(dataDir, {
    startParams: startParams(engine),
    initDbStartParams: ["-c", `shared_buffers=${PGLITE_SHARED_BUFFERS}`],
  });
}

/** Copies the folder `from` into `to` (folders 0700, files 0600), leaving out the file `skip`. */
async function copyTree(from: string, to: string, skip?: string): Promise<void> {
  await Deno.mkdir(to, { recursive: true, mode: 0o700 });
  await Deno.chmod(to, 0o700);
  for await (const entry of Deno.readDir(from)) {
    if (entry.name === skip) continue;
    const source = join(from, entry.name);
    const target = join(to, entry.name);
    if (entry.isDirectory) await copyTree(source, target);
    else if (entry.isFile) {
      await Deno.copyFile(source, target);
      await Deno.chmod(target, 0o600);
    }
  }
}
