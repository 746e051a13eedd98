/**
 * Finds and imports DAG files, validates each, and collects one error per broken file without
 * stopping the others. DAG ids must be unique across files.
 *
 * A DAG file is code, and code can hang: an endless loop or a top-level `await` that never
 * resolves would stop `dags list`, `dags run` and the scheduler (which could then not even hear
 * SIGTERM). So every file is first imported in a Worker (same permissions and import map) with a
 * time limit per file (`CARREL_DAG_IMPORT_TIMEOUT`, default 15s); only a file whose probe
 * finished is imported here. A file that did not finish is a load error naming it and the limit.
 *
 * @module
 */
import { join, relative, resolve } from "node:path";
import { toFileUrl } from "./paths.ts";
import { isDag, resolveDag, type ResolvedDag } from "./dag.ts";
import { errorMessage } from "./errors.ts";
import { combinedVersion, moduleHashes } from "./dag_version.ts";
import { formatDuration, parseDuration } from "./duration.ts";
import type { ProbeEvent, ProbeRequest } from "./loader_probe.ts";
import { registerSandboxedTasks } from "./sandbox/run.ts";

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

/** How the loader imports files. */
export interface LoadOptions {
  /** Imports changed files anew (the scheduler's reload), keyed by their mtime. */
  fresh?: boolean;
  /** Longest import of one file. Default `CARREL_DAG_IMPORT_TIMEOUT` or 15s. */
  timeoutMs?: number;
  /** Stops loading: files not yet imported are reported as not loaded. */
  signal?: AbortSignal;
}

const DEFAULT_IMPORT_TIMEOUT_MS = 15_000;
/** How long the probe Worker may take to load the engine before its first file. */
const READY_MS = 60_000;

/** The import time limit: `CARREL_DAG_IMPORT_TIMEOUT` (a duration such as `30s`), else 15s. */
export function importTimeoutMs(
  env: { get(k: string): string | undefined } = Deno.env,
): number {
  const value = env.get("CARREL_DAG_IMPORT_TIMEOUT");
  const ms = value ? parseDuration(value) : undefined;
  return ms !== undefined && ms > 0 ? ms : DEFAULT_IMPORT_TIMEOUT_MS;
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
  options: LoadOptions = {},
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
  const loaded = await loadFiles(files, options);
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

/** Imports and validates one DAG file (time-limited like every import). */
export async function loadDagFile(
  path: string,
  options: LoadOptions = {},
): Promise<{ dag: ResolvedDag } | { error: LoadError }> {
  const [one] = await loadFiles([path], options);
  return one!;
}

type Loaded = { dag: ResolvedDag } | { error: LoadError };
type Probed = { ok: true } | { ok: false; message: string };

async function fileUrl(path: string, fresh: boolean | undefined): Promise<string> {
  let url = toFileUrl(resolve(path));
  if (fresh) {
    const { mtime } = await Deno.stat(path);
    url += `?v=${mtime?.getTime() ?? Date.now()}`;
  }
  return url;
}

async function loadFiles(paths: string[], options: LoadOptions): Promise<Loaded[]> {
  const timeoutMs = options.timeoutMs ?? importTimeoutMs();
  const urls: (string | Probed)[] = await Promise.all(
    paths.map((p) =>
      fileUrl(p, options.fresh).catch((error) =>
        ({ ok: false, message: errorMessage(error) }) as Probed
      )
    ),
  );
  const pending = urls.flatMap((u, i) => (typeof u === "string" ? [i] : []));
  const probed = await probe(pending.map((i) => urls[i] as string), timeoutMs, options.signal);
  // The files whose probe finished are imported here all at once, as the probe did.
  return await Promise.all(paths.map((path, i) => {
    const file = displayPath(path);
    const url = urls[i]!;
    const verdict = typeof url === "string" ? probed[pending.indexOf(i)]! : url;
    if (!verdict.ok) {
      return { error: { file, message: `Cannot load DAG file ${file}: ${verdict.message}` } };
    }
    return importChecked(path, url as string, timeoutMs);
  }));
}

/**
 * Imports `urls` in a Worker, all at once: files that finish are good or broken. When nothing
 * finishes for `timeoutMs`, the unfinished files are suspects (one endless loop stops the whole
 * Worker), and they are imported again one after another, each in turn given `timeoutMs`, so the
 * file at fault is named and the others load.
 */
async function probe(urls: string[], timeoutMs: number, signal?: AbortSignal): Promise<Probed[]> {
  const results: (Probed | undefined)[] = new Array(urls.length).fill(undefined);
  if (urls.length === 0) return [];
  await probeBatch(urls, [...urls.keys()], false, timeoutMs, results, signal);
  let suspects = [...urls.keys()].filter((i) => results[i] === undefined);
  while (suspects.length > 0 && !signal?.aborted) {
    await probeBatch(urls, suspects, true, timeoutMs, results, signal);
    suspects = suspects.filter((i) => results[i] === undefined);
  }
  return results.map((r) => r ?? { ok: false, message: "not loaded: loading was stopped" });
}

/**
 * One Worker over `indexes`. Sequential: the file that does not finish in time is marked and the
 * Worker stops; the caller goes on with the rest. All at once: stops when nothing finished for
 * `timeoutMs`, leaving the unfinished ones unmarked.
 */
function probeBatch(
  urls: string[],
  indexes: number[],
  sequential: boolean,
  timeoutMs: number,
  results: (Probed | undefined)[],
  signal?: AbortSignal,
): Promise<void> {
  const limit = formatDuration(timeoutMs);
  const worker = new Worker(new URL("./loader_probe.ts", import.meta.url), { type: "module" });
  return new Promise<void>((resolveBatch) => {
    let current = 0;
    let left = indexes.length;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const finish = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", finish);
      worker.terminate();
      resolveBatch();
    };
    const settle = (local: number, verdict: Probed) => {
      const index = indexes[local]!;
      if (results[index] !== undefined) return;
      results[index] = verdict;
      if (--left === 0) finish();
      else arm();
    };
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        if (sequential) {
          settle(current, {
            ok: false,
            message:
              `its import did not finish within ${limit} (an endless loop, or a top-level await that never resolves?); set CARREL_DAG_IMPORT_TIMEOUT to allow longer`,
          });
        }
        finish();
      }, timeoutMs);
    };
    worker.onmessage = (e: MessageEvent<ProbeEvent>) => {
      const m = e.data;
      if (m.event === "ready") arm();
      else if (m.event === "start") {
        current = m.index;
        if (sequential) arm();
      } else if (m.event === "done") settle(m.index, { ok: true });
      else settle(m.index, { ok: false, message: firstLine(m.message) });
    };
    worker.onerror = (e: ErrorEvent) => {
      // An error a file threw outside its import (a rejected promise, a timer): when the files
      // run one after another it is the current file's; otherwise retry them one by one.
      e.preventDefault();
      if (sequential) settle(current, { ok: false, message: firstLine(e.message || "it threw") });
      finish();
    };
    if (signal?.aborted) return finish();
    signal?.addEventListener("abort", finish, { once: true });
    // Until the Worker has loaded the engine: generous, it is Carrel's own code.
    clearTimeout(timer);
    timer = setTimeout(finish, timeoutMs + READY_MS);
    worker.postMessage(
      { urls: indexes.map((i) => urls[i]!), sequential } satisfies ProbeRequest,
    );
  });
}

/** Imports a probed file here and validates its DAG. */
async function importChecked(path: string, url: string, timeoutMs: number): Promise<Loaded> {
  const file = displayPath(path);
  let mod: Record<string, unknown>;
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    // The probe finished; a file that behaves differently the second time is still cut off.
    mod = await Promise.race([
      import(url) as Promise<Record<string, unknown>>,
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`its import did not finish within ${formatDuration(timeoutMs)}`)),
          timeoutMs,
        );
      }),
    ]);
  } catch (error) {
    return {
      error: { file, message: `Cannot load DAG file ${file}: ${firstLine(errorMessage(error))}` },
    };
  } finally {
    clearTimeout(timer);
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
    const dag = resolveDag(mod.default, file);
    // A sandbox Worker imports the file itself to find the task bodies.
    for (const t of dag.tasks.values()) t.module = url;
    // Registered again under the URL a sandbox Worker imports (a fresh load adds `?v=`).
    registerSandboxedTasks([...dag.tasks.values()]);
    const modules = await moduleHashes(path);
    if (Object.keys(modules).length > 0) {
      dag.modules = modules;
      dag.version = combinedVersion(modules);
    }
    return { dag };
  } catch (error) {
    return { error: { file, message: errorMessage(error) } };
  }
}

function firstLine(text: string): string {
  const line = text.split("\n").find((l) => l.trim() !== "") ?? text;
  return line.replace(/^(error: )/i, "").trim();
}
