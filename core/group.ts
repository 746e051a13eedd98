/**
 * Task groups, as Airflow's `TaskGroup`: `group("extract", { patrons, items })` namespaces the
 * tasks' ids (`extract.patrons`) and resolves `after` ids within the group first. A task (or
 * group) that names the group in its `after` depends on every task of the group, and a group's
 * own `after` becomes the upstream of its first tasks (those with no upstream inside the group).
 * Groups nest: `group("a", { ...group("b", {...}) })` makes `a.b.x`. A group is spread into a DAG's
 * `tasks`; the graph draws each group as a cluster.
 *
 * @module
 */
import { DagError } from "./errors.ts";
import type { TaskSpec } from "./dag.ts";

/** What a group takes besides its tasks. */
export interface GroupOptions {
  /** Ids of the tasks or groups every first task of the group runs after. */
  after?: readonly string[];
}

const NAME = /^[a-z][a-z0-9_]*$/;

/**
 * Declares a task group: the tasks under `id.` (spread the result into `tasks`).
 *
 * @example
 * ```ts
 * import { defineDag, group, task } from "./mod.ts";
 * export default defineDag({
 *   id: "nightly",
 *   tasks: {
 *     ...group("extract", {
 *       patrons: task({ run: () => 1 }),
 *       items: task({ after: ["patrons"], run: () => 2 }), // extract.patrons
 *     }),
 *     load: task({ after: ["extract"], run: () => 3 }), // every task of the group
 *   },
 * });
 * ```
 */
export function group<P = Record<string, unknown>>(
  id: string,
  tasks: Record<string, TaskSpec<P>>,
  options: GroupOptions = {},
): Record<string, TaskSpec<P>> {
  if (!NAME.test(id)) {
    throw new DagError(`Invalid group id "${id}": expected a name matching /^[a-z][a-z0-9_]*$/`);
  }
  const keys = Object.keys(tasks);
  if (keys.length === 0) throw new DagError(`Group "${id}" has no tasks`);
  /** An id inside the group: a task key, or a nested group's name (a prefix of keys). */
  const inside = (ref: string) => keys.some((k) => k === ref || k.startsWith(`${ref}.`));
  const out: Record<string, TaskSpec<P>> = {};
  for (const key of keys) {
    const spec = tasks[key]!;
    const after = (spec.after ?? []).map((ref) => inside(ref) ? `${id}.${ref}` : ref);
    const internal = (spec.after ?? []).some(inside);
    const extra = internal ? [] : (options.after ?? []);
    out[`${id}.${key}`] = { ...spec, after: [...extra, ...after] };
  }
  return out;
}

/** The group of a task id (`extract` for `extract.patrons`), or undefined at the top level. */
export function groupOf(taskId: string): string | undefined {
  const at = taskId.lastIndexOf(".");
  return at < 0 ? undefined : taskId.slice(0, at);
}
