/**
 * DAG versions: what code a run executed. A DAG's version is the SHA-256 (first 12 hex) over its
 * file and the local modules it imports (relative imports, followed transitively; Carrel's own
 * `core/` and `operators/` are covered by the Carrel version instead). Each task also has a
 * definition hash: its options and the source text of its functions. A run records all three in
 * its `run:create` audit entry (and a `run:dag_changed` entry when it is resumed under changed
 * code); resuming compares them with the DAG as loaded now.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { dirname, relative, resolve } from "node:path";
import { fileURLToPath as fromFileUrl } from "node:url";
import type { AuditEntry } from "./audit.ts";
import type { ResolvedDag, ResolvedTask } from "./dag.ts";
import { canonicalJson } from "./job_key.ts";
import { CARREL_VERSION } from "./version.ts";

/** What a run records of the code it executes. */
export interface DagVersionRecord {
  /** File and local modules together (12 hex). */
  dagVersion: string | null;
  /** Each module's hash (12 hex) by path relative to the DAG file's folder; the file first. */
  modules: Record<string, string>;
  carrelVersion: string | null;
  /** Each task's definition hash (12 hex) by task id. */
  tasks: Record<string, string>;
}

const hex12 = (data: Uint8Array | string) =>
  createHash("sha256").update(data).digest("hex").slice(0, 12);

/** Carrel's own rooms: imports into them are Carrel, versioned by {@link CARREL_VERSION}. */
const CARREL_ROOMS = [
  fromFileUrl(new URL("./", import.meta.url)),
  fromFileUrl(new URL("../operators/", import.meta.url)),
];

const IMPORT =
  /(?:^|[\s;])(?:import|export)\b[^'"`;]*?\bfrom\s*["']([^"']+)["']|(?:^|[\s;])import\s*["']([^"']+)["']|\bimport\s*\(\s*["']([^"']+)["']\s*\)/g;

/**
 * The hashes of a DAG file and of the local modules it imports (transitively), by path relative
 * to the file's folder, the file first; unreadable modules are left out.
 *
 * @example
 * ```ts ignore
 * import { moduleHashes } from "./dag_version.ts";
 * await moduleHashes("dags/nightly.ts"); // { "nightly.ts": "3f1c...", "_lib/ils.ts": "9a0b..." }
 * ```
 */
export async function moduleHashes(path: string): Promise<Record<string, string>> {
  const root = dirname(resolve(path));
  const out: Record<string, string> = {};
  const seen = new Set<string>();
  const queue = [resolve(path)];
  while (queue.length > 0) {
    const file = queue.shift()!;
    if (seen.has(file)) continue;
    seen.add(file);
    let bytes: Uint8Array;
    try {
      bytes = await Deno.readFile(file);
    } catch {
      continue;
    }
    out[relative(root, file)] = hex12(bytes);
    const source = new TextDecoder().decode(bytes);
    for (const m of source.matchAll(IMPORT)) {
      const spec = m[1] ?? m[2] ?? m[3]!;
      let target: string;
      if (spec.startsWith("./") || spec.startsWith("../")) {
        target = resolve(dirname(file), spec.split(/[?#]/)[0]!);
      } else if (spec.startsWith("file:")) {
        target = fromFileUrl(spec.split(/[?#]/)[0]!);
      } else continue;
      if (CARREL_ROOMS.some((room) => target.startsWith(room))) continue;
      queue.push(target);
    }
  }
  return out;
}

/**
 * The DAG version over module hashes (as {@link moduleHashes} returns them): the first 12 hex of
 * the SHA-256 of their canonical JSON; the file's own hash when it imports no local module.
 */
export function combinedVersion(modules: Record<string, string>): string {
  const entries = Object.entries(modules);
  if (entries.length === 1) return entries[0]![1];
  return hex12(canonicalJson(modules));
}

/** A value as definition text: functions by their source, other objects by their fields. */
function definitionValue(value: unknown, depth = 0): unknown {
  if (typeof value === "function") return `fn:${value.toString()}`;
  if (value === null || typeof value !== "object" || depth > 6) {
    return typeof value === "bigint" ? String(value) : value ?? null;
  }
  if (value instanceof Date) return value.toISOString();
  if (Array.isArray(value)) return value.map((v) => definitionValue(v, depth + 1));
  const out: Record<string, unknown> = {};
  const proto = Object.getPrototypeOf(value);
  if (proto !== Object.prototype && proto !== null) out["@class"] = proto?.constructor?.name;
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    if (k.startsWith("_") && depth > 0) continue;
    out[k] = definitionValue(v, depth + 1);
  }
  return out;
}

/**
 * A task's definition hash: its resolved options and its spec (the operator's options, the
 * source text of its functions). A change of a constant the function reads from elsewhere in the
 * file changes the DAG version, not this hash.
 *
 * @example
 * ```ts
 * import { resolveDag, defineDag, task } from "./mod.ts";
 * import { taskDefinitionHash } from "./dag_version.ts";
 * const dag = resolveDag(defineDag({ id: "a", tasks: { t: task({ run: () => 1 }) } }));
 * taskDefinitionHash(dag.tasks.get("t")!).length; // 12
 * ```
 */
export function taskDefinitionHash(t: ResolvedTask): string {
  // `module` is the URL the file was imported under (it changes with the file's mtime).
  const { spec, run: _run, priority: _priority, module: _module, ...options } = t;
  let text: string;
  try {
    text = canonicalJson({ options: definitionValue(options), spec: definitionValue(spec) });
  } catch {
    text = `${t.operator}:${String(spec.run)}`;
  }
  return hex12(text);
}

/**
 * What a run of `dag` records of its code.
 *
 * @example
 * ```ts
 * import { resolveDag, defineDag, task } from "./mod.ts";
 * import { versionRecord } from "./dag_version.ts";
 * const dag = resolveDag(defineDag({ id: "a", tasks: { t: task({ run: () => 1 }) } }));
 * Object.keys(versionRecord(dag).tasks); // ["t"]
 * ```
 */
export function versionRecord(dag: ResolvedDag): DagVersionRecord {
  return {
    dagVersion: dag.version ?? null,
    modules: { ...(dag.modules ?? {}) },
    carrelVersion: CARREL_VERSION,
    tasks: { ...taskHashes(dag) },
  };
}

/**
 * Each task's definition hash, computed once per loaded DAG: a resolved DAG's tasks do not change
 * once it is loaded (a changed file is loaded again, as a new object), and every run of it records
 * them (a 1,000-task DAG took about 40 ms per run to hash them again).
 */
const TASK_HASHES = new WeakMap<ResolvedDag, Readonly<Record<string, string>>>();

function taskHashes(dag: ResolvedDag): Readonly<Record<string, string>> {
  let hashes = TASK_HASHES.get(dag);
  if (!hashes) {
    hashes = Object.freeze(
      Object.fromEntries(dag.order.map((id) => [id, taskDefinitionHash(dag.tasks.get(id)!)])),
    );
    TASK_HASHES.set(dag, hashes);
  }
  return hashes;
}

/** The audit detail fields a version record adds to `run:create` (and `run:dag_changed`). */
export function versionDetail(dag: ResolvedDag): Record<string, unknown> {
  const v = versionRecord(dag);
  return {
    ...(v.dagVersion ? { dagVersion: v.dagVersion } : {}),
    ...(Object.keys(v.modules).length > 0 ? { modules: v.modules } : {}),
    carrelVersion: v.carrelVersion,
    taskVersions: v.tasks,
  };
}

/**
 * The version a run last recorded (its `run:create` entry, or the latest `run:dag_changed`), from
 * its audit entries in order; null fields when it recorded none (a run of an older Carrel).
 */
export function recordedVersion(entries: readonly AuditEntry[]): DagVersionRecord & {
  /** When the run was resumed under changed code, the versions it ran before. */
  history: string[];
} {
  const out = {
    dagVersion: null as string | null,
    modules: {} as Record<string, string>,
    carrelVersion: null as string | null,
    tasks: {} as Record<string, string>,
    history: [] as string[],
  };
  for (const e of entries) {
    if (e.operation !== "run:create" && e.operation !== "run:dag_changed") continue;
    const d = e.detail ?? {};
    if (e.operation === "run:dag_changed" && out.dagVersion) out.history.push(out.dagVersion);
    out.dagVersion = typeof d.dagVersion === "string" ? d.dagVersion : null;
    out.modules = (d.modules as Record<string, string> | undefined) ?? {};
    out.carrelVersion = typeof d.carrelVersion === "string" ? d.carrelVersion : null;
    out.tasks = (d.taskVersions as Record<string, string> | undefined) ?? {};
  }
  return out;
}

/** How a run's recorded code differs from a DAG as loaded now. */
export interface VersionChange {
  changed: boolean;
  from: string | null;
  to: string | null;
  carrelFrom: string | null;
  /** Tasks whose definition changed (or that were added or removed), in the DAG's order. */
  tasks: string[];
  /** Modules whose hash changed, were added or removed. */
  modules: string[];
}

/**
 * Compares what a run recorded with the DAG as loaded now.
 *
 * @example
 * ```ts ignore
 * const change = compareVersions(recordedVersion(entries), dag);
 * if (change.changed) console.log(`changed: ${change.tasks.join(", ")}`);
 * ```
 */
export function compareVersions(
  recorded: DagVersionRecord,
  dag: ResolvedDag,
): VersionChange {
  const now = versionRecord(dag);
  const tasks = [
    ...dag.order.filter((id) => recorded.tasks[id] !== now.tasks[id]),
    ...Object.keys(recorded.tasks).filter((id) => !(id in now.tasks)),
  ];
  const names = new Set([...Object.keys(recorded.modules), ...Object.keys(now.modules)]);
  const modules = [...names].filter((m) => recorded.modules[m] !== now.modules[m]).sort();
  const known = Object.keys(recorded.tasks).length > 0;
  const changed = (recorded.dagVersion !== null && now.dagVersion !== null &&
    recorded.dagVersion !== now.dagVersion) || (known && tasks.length > 0);
  return {
    changed,
    from: recorded.dagVersion,
    to: now.dagVersion,
    carrelFrom: recorded.carrelVersion,
    tasks: known ? tasks : [],
    modules,
  };
}

/**
 * Whether a run may be resumed with `dag` as loaded now: unchanged code resumes; changed code
 * needs `allowChanged`; a task whose definition changed while its instance succeeded refuses even
 * then (its output was made by other code under the same job key). Returns the change and, when
 * refused, the message (naming the run, the versions and the tasks).
 *
 * @example
 * ```ts ignore
 * const { error } = resumeVerdict("nightly@...", recorded, dag, states, false);
 * if (error) throw new UsageError(error);
 * ```
 */
export function resumeVerdict(
  runId: string,
  recorded: DagVersionRecord,
  dag: ResolvedDag,
  states: ReadonlyMap<string, string>,
  allowChanged: boolean,
): { change: VersionChange; error?: string } {
  const change = compareVersions(recorded, dag);
  if (!change.changed) return { change };
  const what = `the DAG "${dag.id}" changed since run "${runId}" ${
    change.from ? `recorded version ${change.from}` : "was created"
  } (now ${change.to ?? "unknown"}${
    change.tasks.length > 0 ? `; changed tasks: ${change.tasks.join(", ")}` : ""
  })`;
  const stale = change.tasks.filter((id) => states.get(id) === "success" && dag.tasks.has(id));
  if (stale.length > 0) {
    const named = stale.map((id) => `"${id}"`).join(", ");
    return {
      change,
      error: `Cannot resume run "${runId}": ${what}, and task${
        stale.length > 1 ? "s" : ""
      } ${named} changed under a succeeded job key; clear ${
        stale.length > 1 ? "them" : "it"
      } first (tasks clear ${dag.id} ${stale[0]} --run ${runId}) or run another interval`,
    };
  }
  if (!allowChanged) {
    return {
      change,
      error:
        `Cannot resume run "${runId}": ${what}; pass --allow-changed to resume it with the current code`,
    };
  }
  return { change };
}
