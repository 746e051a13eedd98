/**
 * Finds and imports DAG files, validates each, and collects one error per broken file without
 * stopping the others. DAG ids must be unique across files.
 *
 * @module
 */
import { join, relative, resolve } from "node:path";
import { toFileUrl } from "./paths.ts";
import { isDag, resolveDag, type ResolvedDag } from "./dag.ts";
import { errorMessage } from "./errors.ts";

/** A file that could not be loaded. */
export interface LoadError {
  file: string;
  message: string;
}

/** The DAGs of a folder. */
export interface LoadedDags {
  dir: string;
  dags: Map<string, ResolvedDag>;
  errors: LoadError[];
}

/** The DAGs folder: `--dags`, else `CARREL_DAGS_DIR`, else `./dags`. */
export function dagsDir(
  flag?: string,
  env: { get(k: string): string | undefined } = Deno.env,
): string {
  return resolve(flag || env.get("CARREL_DAGS_DIR") || "dags");
}

async function listFiles(dir: string): Promise<string[]> {
  const files: string[] = [];
  const walk = async (d: string) => {
    for await (const entry of Deno.readDir(d)) {
      const path = join(d, entry.name);
      if (entry.name.startsWith(".") || entry.name.startsWith("_")) continue;
      if (entry.isDirectory) await walk(path);
      else if (
        entry.isFile && /\.(ts|mts|js|mjs)$/.test(entry.name) &&
        !/[._]test\.[mc]?[jt]s$/.test(entry.name)
      ) {
        files.push(path);
      }
    }
  };
  await walk(dir);
  return files.sort();
}

/** How a file is named in messages: relative to the working directory. */
export function displayPath(path: string): string {
  const rel = relative(Deno.cwd(), path);
  return rel.startsWith("..") ? path : rel;
}

/**
 * Loads every DAG file under `dir`.
 *
 * @example
 * ```ts ignore
 * import { loadDags } from "./loader.ts";
 * const { dags, errors } = await loadDags("dags");
 * for (const e of errors) console.error(`${e.file}: ${e.message}`);
 * ```
 */
export async function loadDags(
  dir: string,
  options: { fresh?: boolean } = {},
): Promise<LoadedDags> {
  const result: LoadedDags = { dir, dags: new Map(), errors: [] };
  let files: string[];
  try {
    files = await listFiles(dir);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      result.errors.push({
        file: displayPath(dir),
        message: `Cannot read the DAGs folder: it does not exist`,
      });
      return result;
    }
    throw error;
  }
  const loaded = await Promise.all(files.map((file) => loadDagFile(file, options)));
  const owners = new Map<string, string>();
  for (const item of loaded) {
    if ("error" in item) {
      result.errors.push(item.error);
      continue;
    }
    const other = owners.get(item.dag.id);
    if (other) {
      result.errors.push({
        file: item.dag.file ?? "",
        message:
          `Cannot load DAG "${item.dag.id}" (${item.dag.file}): the id is already used by ${other}`,
      });
      continue;
    }
    owners.set(item.dag.id, item.dag.file ?? "");
    result.dags.set(item.dag.id, item.dag);
  }
  return result;
}

/** Imports and validates one DAG file. */
export async function loadDagFile(
  path: string,
  options: { fresh?: boolean } = {},
): Promise<{ dag: ResolvedDag } | { error: LoadError }> {
  const file = displayPath(path);
  let mod: Record<string, unknown>;
  try {
    let url = toFileUrl(resolve(path));
    if (options.fresh) {
      const { mtime } = await Deno.stat(path);
      url += `?v=${mtime?.getTime() ?? Date.now()}`;
    }
    mod = await import(url);
  } catch (error) {
    return {
      error: { file, message: `Cannot load DAG file ${file}: ${firstLine(errorMessage(error))}` },
    };
  }
  if (!isDag(mod.default)) {
    return {
      error: {
        file,
        message:
          `Cannot load DAG file ${file}: its default export is not a DAG made with defineDag`,
      },
    };
  }
  try {
    return { dag: resolveDag(mod.default, file) };
  } catch (error) {
    return { error: { file, message: errorMessage(error) } };
  }
}

function firstLine(text: string): string {
  const line = text.split("\n").find((l) => l.trim() !== "") ?? text;
  return line.replace(/^(error: )/i, "").trim();
}
