/**
 * What a run consists of, before anything runs: its id, its job keys, its task instances as
 * rows, and its claim units. Pure: the same DAG, interval and params give the same plan on every
 * machine.
 *
 * @module
 */
import type { AuditInput } from "../audit.ts";
import type { DataInterval, ResolvedDag } from "../dag.ts";
import { canonicalJson, jobKey, runIdFor, sha256Hex } from "../job_key.ts";
import { versionDetail } from "../dag_version.ts";
import type { NewRun, NewTaskInstance, RunType, TaskInstanceRecord } from "../state/store.ts";

/** Who executes a run: this process, or claiming workers. */
export type Executor = "local" | "workers";

/**
 * The job keys of a run's tasks.
 *
 * @example
 * ```ts
 * import { defineDag, resolveDag, task } from "../dag.ts";
 * import { jobKeysFor } from "./plan.ts";
 * const dag = resolveDag(defineDag({ id: "d", tasks: { a: task({ run: () => 1 }) } }));
 * const interval = { start: new Date("2026-01-01T00:00:00Z"), end: new Date("2026-01-02T00:00:00Z") };
 * jobKeysFor(dag, interval, {}).get("a")!.length; // 64
 * ```
 */
export function jobKeysFor(
  dag: ResolvedDag,
  interval: DataInterval,
  params: Record<string, unknown>,
): Map<string, string> {
  const keys = new Map<string, string>();
  for (const id of dag.order) {
    keys.set(id, jobKey({ dag: dag.id, task: id, interval, params, mapIndex: -1 }));
  }
  return keys;
}

/**
 * The hash of a run's params (stored instead of comparing values).
 *
 * @example
 * ```ts
 * import { paramsHash } from "./plan.ts";
 * paramsHash({ a: 1, b: 2 }) === paramsHash({ b: 2, a: 1 }); // true
 * ```
 */
export function paramsHash(params: Record<string, unknown>): string {
  return sha256Hex(canonicalJson(params));
}

/**
 * The claim units of a DAG: each enclave task maps to the id of its connected enclave component
 * (the first of its tasks in topological order); shared tasks are claimed alone (null). Enclave
 * data never passes through the state store, so a unit runs whole in one process.
 *
 * @example
 * ```ts
 * import { defineDag, resolveDag, task } from "../dag.ts";
 * import { claimUnits } from "./plan.ts";
 * const dag = resolveDag(defineDag({ id: "d", tasks: {
 *   a: task({ zone: "enclave", run: () => [] }),
 *   b: task({ zone: "enclave", after: ["a"], run: () => [] }),
 * } }));
 * claimUnits(dag).get("b"); // "a"
 * ```
 */
export function claimUnits(dag: ResolvedDag): Map<string, string | null> {
  const units = new Map<string, string | null>();
  const parent = new Map<string, string>();
  const find = (x: string): string => {
    let r = x;
    while (parent.get(r) !== r) r = parent.get(r)!;
    return r;
  };
  for (const id of dag.order) if (dag.tasks.get(id)!.zone === "enclave") parent.set(id, id);
  for (const id of dag.order) {
    const t = dag.tasks.get(id)!;
    if (t.zone !== "enclave") continue;
    for (const up of t.after) {
      if (dag.tasks.get(up)!.zone !== "enclave") continue;
      const a = find(up), b = find(id);
      if (a !== b) parent.set(b, a);
    }
  }
  const firstOf = new Map<string, string>();
  for (const id of dag.order) {
    if (!parent.has(id)) {
      units.set(id, null);
      continue;
    }
    const root = find(id);
    if (!firstOf.has(root)) firstOf.set(root, id);
    units.set(id, firstOf.get(root)!);
  }
  return units;
}

/** A run as rows to create. */
export interface RunPlan {
  runId: string;
  run: NewRun;
  tasks: NewTaskInstance[];
  /** Job keys by task id. */
  keys: Map<string, string>;
}

/**
 * The rows of a run of `dag` for `interval`. Each enclave task carries its claim unit (used when
 * workers run it), and a unit's first member carries the pool of the unit (the first pool among
 * its members), since the unit runs in one slot.
 *
 * @example
 * ```ts
 * import { defineDag, resolveDag, task } from "../dag.ts";
 * import { planRun } from "./plan.ts";
 * const dag = resolveDag(defineDag({ id: "d", tasks: { a: task({ run: () => 1 }) } }));
 * const at = new Date("2026-01-01T00:00:00Z");
 * planRun(dag, { start: at, end: at }, {}, { runType: "manual", executor: "local" }).runId;
 * // "d@2026-01-01T00:00:00Z"
 * ```
 */
export function planRun(
  dag: ResolvedDag,
  interval: DataInterval,
  params: Record<string, unknown>,
  options: { runType: RunType; executor: Executor },
): RunPlan {
  const runId = runIdFor(dag.id, interval.start);
  const keys = jobKeysFor(dag, interval, params);
  // Units are recorded for every run: a local run may be resumed by workers, and back.
  const units = claimUnits(dag);
  const unitPool = new Map<string, string>();
  // A unit is claimed by its first task: it carries the unit's highest priority.
  const unitPriority = new Map<string, number>();
  for (const id of dag.order) {
    const unit = units.get(id);
    const pool = dag.tasks.get(id)!.pool;
    if (unit && pool && !unitPool.has(unit)) unitPool.set(unit, pool);
    const p = dag.tasks.get(id)!.priority;
    if (unit) unitPriority.set(unit, Math.max(unitPriority.get(unit) ?? p, p));
  }
  return {
    runId,
    keys,
    run: {
      runId,
      dagId: dag.id,
      logicalDate: interval.start,
      intervalStart: interval.start,
      intervalEnd: interval.end,
      params,
      paramsHash: paramsHash(params),
      runType: options.runType,
      state: "queued",
      executor: options.executor,
    },
    tasks: dag.order.map((id) => {
      const t = dag.tasks.get(id)!;
      const unit = units.get(id) ?? null;
      return {
        jobKey: keys.get(id)!,
        runId,
        dagId: dag.id,
        taskId: id,
        mapIndex: -1,
        zone: t.zone,
        pool: unit === id ? unitPool.get(unit) ?? null : unit ? null : t.pool ?? null,
        unit,
        state: "scheduled" as const,
        maxTries: t.retries + 1,
        priorityWeight: unit === id ? unitPriority.get(unit)! : t.priority,
      };
    }),
  };
}

/**
 * A new task instance as a record, before anything happened to it (a run in memory keeps these;
 * the store makes the same ones).
 *
 * @example
 * ```ts
 * import { defineDag, resolveDag, task } from "../dag.ts";
 * import { instanceRecord, planRun } from "./plan.ts";
 * const dag = resolveDag(defineDag({ id: "d", tasks: { a: task({ run: () => 1 }) } }));
 * const at = new Date("2026-01-01T00:00:00Z");
 * const plan = planRun(dag, { start: at, end: at }, {}, { runType: "manual", executor: "local" });
 * instanceRecord(plan.tasks[0]!).state; // "scheduled"
 * ```
 */
export function instanceRecord(t: NewTaskInstance): TaskInstanceRecord {
  return {
    jobKey: t.jobKey,
    runId: t.runId,
    dagId: t.dagId,
    taskId: t.taskId,
    mapIndex: t.mapIndex,
    zone: t.zone,
    pool: t.pool,
    unit: t.unit ?? null,
    state: t.state,
    tryNumber: 0,
    maxTries: t.maxTries,
    nextAttemptAt: null,
    owner: null,
    leaseUntil: null,
    startedAt: null,
    endedAt: null,
    outputKind: null,
    output: null,
    error: null,
    queuedAt: null,
    updatedAt: new Date(0),
    leaseToken: null,
    readyAt: null,
    version: 0,
  };
}

/**
 * The audit entry of a run's creation, wherever a run is created (a local run, workers, the
 * scheduler, a trigger): its type, how it is executed, and the version of the DAG file it was
 * made from.
 *
 * @example
 * ```ts
 * import { defineDag, resolveDag, task } from "../dag.ts";
 * import { runCreateAudit } from "./plan.ts";
 * const dag = resolveDag(defineDag({ id: "d", tasks: { t: task({ run: () => 1 }) } }));
 * runCreateAudit(dag, "d@2026-01-01T00:00:00Z", "manual").operation; // "run:create"
 * ```
 */
export function runCreateAudit(
  dag: ResolvedDag,
  runId: string,
  runType: RunType,
  extra: { executor?: Executor; keyVersion?: string | null } = {},
): AuditInput {
  return {
    correlationId: runId,
    dagId: dag.id,
    ...(extra.keyVersion ? { keyVersion: extra.keyVersion } : {}),
    operation: "run:create",
    status: "queued",
    detail: {
      runType,
      ...(extra.executor === "workers" ? { executor: "workers" } : {}),
      ...versionDetail(dag),
    },
  };
}
