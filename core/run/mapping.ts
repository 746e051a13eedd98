/**
 * Dynamic task mapping: the shape of a run whose mapped tasks expanded. A mapped task `load`
 * (`task({ expand, run })`) is one task instance that evaluates its items (the expansion, id
 * `load`, map index -1), and then one instance per item (`load[0]`, `load[1]`, ..., map index
 * 0, 1, ...), each with its own job key, state, retries and audit entries. Tasks downstream of
 * `load` wait for every instance and receive their outputs as one array, in index order.
 *
 * Items are opaque and never stored: an instance gets its item by evaluating the expansion again
 * (kept in memory per process, so a local run evaluates it once), which is why `expand` must give
 * the same items each time. The store and the audit trail hold counts and indexes only.
 *
 * Pure but for that in-memory cache: {@link expandedDag} is the DAG the decider and the drivers
 * work on, derived from the base DAG and the instances that exist.
 *
 * @module
 */
import type { DataInterval, ResolvedDag, ResolvedTask, TaskContext } from "../dag.ts";
import { Dataset } from "../dataset.ts";
import { FatalTaskError, SkipTask } from "../errors.ts";
import { jobKey } from "../job_key.ts";
import { markPrivacySafe } from "../privacy/privacy_safe.ts";
import type { NewTaskInstance, TaskState } from "../state/store.ts";

/**
 * The id of a mapped instance: `load[3]`.
 *
 * @example
 * ```ts
 * import { instanceId } from "./mapping.ts";
 * instanceId("load", 3); // "load[3]"
 * ```
 */
export function instanceId(taskId: string, index: number): string {
  return `${taskId}[${index}]`;
}

/**
 * A mapped instance's task and index, from its id (undefined for a plain task id).
 *
 * @example
 * ```ts
 * import { parseInstanceId } from "./mapping.ts";
 * parseInstanceId("load[3]"); // { task: "load", index: 3 }
 * ```
 */
export function parseInstanceId(id: string): { task: string; index: number } | undefined {
  const m = /^([a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)*)\[(\d+)\]$/.exec(id);
  return m ? { task: m[1]!, index: Number(m[2]) } : undefined;
}

const MAPPED = new WeakMap<ResolvedDag, string[]>();
const SHAPES = new WeakMap<ResolvedDag, Map<string, ResolvedDag>>();

/** The mapped tasks of a DAG, in order. */
export function mappedTasks(dag: ResolvedDag): string[] {
  let ids = MAPPED.get(dag);
  if (!ids) {
    ids = dag.order.filter((id) => dag.tasks.get(id)!.expand !== undefined);
    MAPPED.set(dag, ids);
  }
  return ids;
}

/**
 * How many instances each mapped task has: the instances `m[0]`, `m[1]`, ... that exist in
 * `instances` (by id), counted up to the first missing index.
 */
export function mapCounts(
  dag: ResolvedDag,
  instances: { has(id: string): boolean },
): Map<string, number> {
  // Instances are only ever added: start from the count last found in the same view.
  let known = COUNTED.get(instances);
  if (!known) {
    known = new Map();
    COUNTED.set(instances, known);
  }
  const counts = new Map<string, number>();
  for (const id of mappedTasks(dag)) {
    let n = known.get(id) ?? 0;
    if (n > 0 && !instances.has(instanceId(id, n - 1))) n = 0;
    while (instances.has(instanceId(id, n))) n++;
    known.set(id, n);
    counts.set(id, n);
  }
  return counts;
}

/** The counts last found per view (a driver's view object lives as long as its run). */
const COUNTED = new WeakMap<object, Map<string, number>>();

/**
 * The DAG as it runs, given the instances that exist: each mapped task `m` is its expansion `m`
 * followed by its instances `m[i]` (each after `m` and `m`'s upstream tasks, which it reads its
 * items from); a task downstream of `m` is after its instances (after `m` itself while there are
 * none: skipped with it when it expands to nothing). A DAG without mapped tasks is returned as is.
 *
 * @example
 * ```ts
 * import { defineDag, resolveDag, task } from "../dag.ts";
 * import { expandedDag } from "./mapping.ts";
 * const dag = resolveDag(defineDag({ id: "d", tasks: {
 *   list: task({ run: () => ["a", "b"] }),
 *   load: task({ expand: "list", run: (ctx) => ctx.item }),
 *   done: task({ after: ["load"], run: (ctx) => ctx.inputs.load }),
 * } }));
 * expandedDag(dag, new Set(["load[0]", "load[1]"])).order;
 * // ["list", "load", "load[0]", "load[1]", "done"]
 * ```
 */
export function expandedDag(
  dag: ResolvedDag,
  instances: { has(id: string): boolean },
): ResolvedDag {
  if (mappedTasks(dag).length === 0) return dag;
  const counts = mapCounts(dag, instances);
  const key = [...counts.values()].join(",");
  let shapes = SHAPES.get(dag);
  if (!shapes) {
    shapes = new Map();
    SHAPES.set(dag, shapes);
  }
  let shape = shapes.get(key);
  if (!shape) {
    shape = build(dag, counts);
    if (shapes.size > 64) shapes.delete(shapes.keys().next().value!);
    shapes.set(key, shape);
  }
  return shape;
}

function build(dag: ResolvedDag, counts: ReadonlyMap<string, number>): ResolvedDag {
  const tasks = new Map<string, ResolvedTask>();
  const order: string[] = [];
  const children = (id: string) =>
    Array.from({ length: counts.get(id) ?? 0 }, (_, i) => instanceId(id, i));
  const upstreamOf = (after: readonly string[]) =>
    after.flatMap((u) => (counts.get(u) ?? 0) > 0 ? children(u) : [u]);
  for (const id of dag.order) {
    const t = dag.tasks.get(id)!;
    const after = upstreamOf(t.after);
    if (t.expand === undefined) {
      tasks.set(id, after.join() === t.after.join() ? t : { ...t, after });
      order.push(id);
      continue;
    }
    tasks.set(id, { ...t, after, run: expansionBody(t) });
    order.push(id);
    for (const [i, child] of children(id).entries()) {
      const { expand: _e, mapLimit: _l, ...rest } = t;
      tasks.set(child, {
        ...rest,
        id: child,
        // Its items come from the expansion's inputs: it waits for (and, resumed, recomputes)
        // them too.
        after: [id, ...after],
        triggerRule: "all_success",
        run: instanceBody(t, i),
        mapOf: { task: id, index: i },
      });
      order.push(child);
    }
  }
  const downstream = new Map<string, string[]>(order.map((id) => [id, []]));
  for (const id of order) {
    for (const u of tasks.get(id)!.after) downstream.get(u)!.push(id);
  }
  return { ...dag, tasks, order, downstream };
}

// ---------------------------------------------------------------------------------------------
// Items

/** Items evaluated in this process, by run and task (bounded: a few runs' worth). */
const ITEMS = new Map<string, Promise<unknown[]>>();
const MAX_CACHED = 16;

function cacheKey(runId: string, taskId: string): string {
  return `${runId}\u0000${taskId}`;
}

/** An error that names a task and counts only: safe to show and record. */
function safe(error: Error): Error {
  markPrivacySafe(error);
  return error;
}

/** Evaluates a mapped task's items (at most its `mapLimit`). */
async function evaluate(t: ResolvedTask, ctx: TaskContext): Promise<unknown[]> {
  const limit = t.mapLimit!;
  const value = typeof t.expand === "string" ? ctx.inputs[t.expand] : await t.expand!(ctx);
  const tooMany = () =>
    safe(
      new FatalTaskError(
        `Cannot expand task "${t.id}": more than ${
          limit.toLocaleString("en-US")
        } items (its mapLimit); raise mapLimit or split the work`,
      ),
    );
  if (Array.isArray(value)) {
    if (value.length > limit) throw tooMany();
    return value;
  }
  const iterable = value instanceof Dataset ? value : value;
  if (
    iterable !== null && typeof iterable === "object" &&
    (Symbol.asyncIterator in iterable || Symbol.iterator in iterable)
  ) {
    const items: unknown[] = [];
    for await (const item of iterable as AsyncIterable<unknown>) {
      if (items.length >= limit) throw tooMany();
      items.push(item);
    }
    return items;
  }
  const what = typeof t.expand === "string" ? `the output of "${t.expand}"` : "expand";
  throw safe(
    new FatalTaskError(
      `Cannot expand task "${t.id}": ${what} is ${
        value === null || value === undefined ? "empty" : `a ${typeof value}`
      }, not an array or an iterable`,
    ),
  );
}

function remember(runId: string, taskId: string, items: Promise<unknown[]>): void {
  const key = cacheKey(runId, taskId);
  ITEMS.delete(key);
  ITEMS.set(key, items);
  while (ITEMS.size > MAX_CACHED) ITEMS.delete(ITEMS.keys().next().value!);
  items.catch(() => ITEMS.delete(key));
}

/** The expansion's body: evaluates the items, keeps them in memory, returns their count. */
function expansionBody(t: ResolvedTask): (ctx: TaskContext) => Promise<unknown> {
  return async (ctx) => {
    const items = evaluate(t, ctx);
    remember(ctx.runId, t.id, items);
    const n = (await items).length;
    ctx.count("mapped", n);
    if (n === 0) throw safe(new SkipTask(`Task "${t.id}" expanded to 0 items`));
    return { mapped: n };
  };
}

/**
 * The task as the expanded DAG runs it, when `id` is a mapped task (its expansion) or one of its
 * instances (`load[3]`); undefined for any other task. A sandbox Worker, which imports the DAG
 * file itself, runs these bodies the way the parent process would.
 *
 * @example
 * ```ts
 * import { defineDag, resolveDag, task } from "../dag.ts";
 * import { mappedBody } from "./mapping.ts";
 * const dag = resolveDag(defineDag({ id: "m", tasks: {
 *   load: task({ expand: () => [1, 2], run: (ctx) => ctx.item }),
 * } }));
 * mappedBody(dag, "load[1]")?.id; // "load[1]"
 * ```
 */
export function mappedBody(dag: ResolvedDag, id: string): ResolvedTask | undefined {
  const instance = parseInstanceId(id);
  const t = dag.tasks.get(instance ? instance.task : id);
  if (!t || t.expand === undefined) return undefined;
  if (!instance) return { ...t, run: expansionBody(t) };
  const { expand: _e, mapLimit: _l, ...rest } = t;
  return {
    ...rest,
    id,
    run: instanceBody(t, instance.index),
    mapOf: { task: t.id, index: instance.index },
  };
}

/** A mapped instance's body: its item (evaluated again if this process has none), then `run`. */
function instanceBody(t: ResolvedTask, index: number): (ctx: TaskContext) => Promise<unknown> {
  return async (ctx) => {
    const key = cacheKey(ctx.runId, t.id);
    let items = ITEMS.get(key);
    if (!items) {
      items = evaluate(t, ctx);
      remember(ctx.runId, t.id, items);
    }
    const list = await items;
    if (index >= list.length) {
      throw safe(
        new FatalTaskError(
          `Cannot run task "${
            instanceId(t.id, index)
          }": "${t.id}" now expands to ${list.length} items (expand must give the same items each time)`,
        ),
      );
    }
    return await t.run({ ...ctx, item: list[index], mapIndex: index });
  };
}

// ---------------------------------------------------------------------------------------------
// Instances and inputs

/**
 * The task instances of mapped task `taskId`'s items `0..count-1` (those that exist already are
 * left as they are by the store).
 *
 * @example
 * ```ts ignore
 * await store.ensureTaskInstances(mappedInstances(dag, "load", 3, run));
 * ```
 */
export function mappedInstances(
  dag: ResolvedDag,
  taskId: string,
  count: number,
  run: { runId: string; interval: DataInterval; params: Record<string, unknown> },
): NewTaskInstance[] {
  const t = dag.tasks.get(taskId)!;
  return Array.from({ length: count }, (_, i) => ({
    jobKey: jobKey({
      dag: dag.id,
      task: taskId,
      interval: run.interval,
      params: run.params,
      mapIndex: i,
    }),
    runId: run.runId,
    dagId: dag.id,
    taskId: instanceId(taskId, i),
    mapIndex: i,
    zone: t.zone,
    pool: t.pool ?? null,
    unit: null,
    state: "scheduled" as const,
    maxTries: t.retries + 1,
    priorityWeight: t.priority,
  }));
}

/**
 * A task's inputs, by upstream task id: a mapped upstream's instances' outputs collected into one
 * array, in index order (an instance without output gives null).
 *
 * @example
 * ```ts ignore
 * const inputs = inputsFor(t, (id) => view.get(id)?.state, (id) => outputs.get(id));
 * ```
 */
export function inputsFor(
  t: ResolvedTask,
  stateOf: (id: string) => TaskState | undefined,
  outputOf: (id: string) => unknown,
  has: (id: string) => boolean = () => true,
): Record<string, unknown> {
  const inputs: Record<string, unknown> = {};
  for (const up of t.after) {
    const mapped = parseInstanceId(up);
    if (mapped) {
      const list = (inputs[mapped.task] ??= []) as unknown[];
      list[mapped.index] = stateOf(up) === "success" && has(up) ? outputOf(up) ?? null : null;
      continue;
    }
    if (stateOf(up) === "success" && has(up)) inputs[up] = outputOf(up);
  }
  return inputs;
}

/**
 * The tags of a task's inputs, by upstream task id (a mapped upstream's, once).
 */
export function inputTagsFor(
  dag: ResolvedDag,
  t: ResolvedTask,
): Record<string, readonly string[]> {
  const tags: Record<string, readonly string[]> = {};
  for (const up of t.after) {
    const u = dag.tasks.get(up);
    if (!u) continue;
    tags[u.mapOf?.task ?? up] = u.outputTags;
  }
  return tags;
}

/**
 * Workers claim shared tasks alone: a mapped task in the enclave (whose instances would share its
 * enclave unit) runs locally. Returns the error to show, or undefined.
 */
export function workersRefuse(dag: ResolvedDag): string | undefined {
  const enclave = mappedTasks(dag).filter((id) => dag.tasks.get(id)!.zone === "enclave");
  if (enclave.length === 0) return undefined;
  return `Cannot run DAG "${dag.id}" on workers: mapped task "${
    enclave[0]
  }" is in the enclave (its instances would leave their enclave unit); run it with \`dags run\``;
}
