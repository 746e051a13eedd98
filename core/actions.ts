/**
 * What people do to runs and DAGs, from the CLI or the console: trigger a run, clear task
 * instances (with their downstream), pause and unpause a DAG. One implementation for both, each
 * action audited with who did it (`detail.by`).
 *
 * @module
 */
import type { DataInterval, ResolvedDag } from "./dag.ts";
import { resolveParams } from "./dag.ts";
import {
  recordedVersion,
  resumeVerdict,
  type VersionChange,
  versionDetail,
} from "./dag_version.ts";
import { DagError, UsageError } from "./errors.ts";
import { descendants } from "./graph.ts";
import { ownerIsDead } from "./owner.ts";
import { assertNoSecretsInParams } from "./privacy/secrets.ts";
import { parseInstanceId } from "./run/mapping.ts";
import { jobKeysFor, planRun, runCreateAudit } from "./run/plan.ts";
import { startRun } from "./run/worker.ts";
import { intervalAt, latestCompleteInterval } from "./schedule.ts";
import { historyOf } from "./state/history.ts";
import type { RunState, StateStore } from "./state/store.ts";

/** Who did something: `cli:<user>@<host>`, `ui:<user>`. Recorded as `detail.by`. */
export type Actor = string;

/** The actor of a CLI command: the operating-system user and host. */
export function cliActor(): Actor {
  const user = Deno.env.get("USER") ?? Deno.env.get("LOGNAME") ?? "unknown";
  return `cli:${user}@${Deno.hostname()}`;
}

/** The interval a run processes: `date` aligned to the schedule, else the latest complete one. */
export function chooseInterval(dag: ResolvedDag, date: Date | undefined): DataInterval {
  if (date) return intervalAt(dag, date);
  if (!dag.schedule) {
    const now = new Date();
    now.setUTCMilliseconds(0);
    return { start: now, end: now };
  }
  const latest = latestCompleteInterval(dag, new Date());
  if (!latest) {
    throw new UsageError(
      `Cannot choose a date for DAG "${dag.id}": no interval has ended since its start; pass --date`,
    );
  }
  return latest;
}

/**
 * Refuses a logical date after `now`, as Airflow does ("is in the future"): such a run would
 * process an interval that has not happened yet. `allow` (`--allow-future`) lets it through.
 *
 * @example
 * ```ts
 * import { refuseFutureDate } from "./actions.ts";
 * refuseFutureDate("d", new Date("2026-01-01T00:00:00Z"), false, new Date("2026-02-01T00:00:00Z"));
 * ```
 */
export function refuseFutureDate(
  dagId: string,
  logicalDate: Date,
  allow: boolean,
  now: Date = new Date(),
): void {
  if (allow || logicalDate.getTime() <= now.getTime()) return;
  throw new UsageError(
    `Cannot run DAG "${dagId}": the logical date ${logicalDate.toISOString()} is in the future; pass --allow-future to run it anyway`,
  );
}

/**
 * Before resuming an existing run: refuses when its DAG's code changed (unless `allowChanged`),
 * and always when a task changed under a succeeded job key (see `resumeVerdict`). When a changed
 * DAG is allowed, records a `run:dag_changed` audit entry with the new versions and returns the
 * change so the caller can say so; returns undefined when the run does not exist or is unchanged.
 */
export async function guardResume(
  store: StateStore,
  dag: ResolvedDag,
  runId: string,
  options: { allowChanged?: boolean | undefined; by: Actor },
): Promise<VersionChange | undefined> {
  const run = await store.getRun(runId);
  if (!run) return undefined;
  const recorded = recordedVersion(await historyOf(store).runAudit(runId));
  const states = new Map(
    (await store.listTaskInstances(runId)).map((t) => [t.taskId, t.state as string]),
  );
  const { change, error } = resumeVerdict(
    runId,
    recorded,
    dag,
    states,
    options.allowChanged ?? false,
  );
  if (error) throw new UsageError(error);
  if (!change.changed) return undefined;
  await store.appendAudit([{
    correlationId: runId,
    dagId: dag.id,
    operation: "run:dag_changed",
    status: run.state,
    detail: {
      by: options.by,
      from: change.from,
      changedTasks: change.tasks,
      changedModules: change.modules,
      ...versionDetail(dag),
    },
  }]);
  return change;
}

/** Resolves param overrides against the DAG, as a usage error when they do not fit. */
export function paramsFor(
  dag: ResolvedDag,
  overrides: Record<string, string> | undefined,
): Record<string, unknown> {
  try {
    const params = resolveParams(dag, overrides ?? {});
    assertNoSecretsInParams(dag.id, params);
    return params;
  } catch (error) {
    if (error instanceof DagError) throw new UsageError(error.message);
    throw error;
  }
}

/** Who executes a triggered run: the scheduler in one process, or workers. */
export type TriggerMode = "local" | "workers";

/** What `triggerRun` did. */
export interface Triggered {
  runId: string;
  dagId: string;
  logicalDate: string;
  state: RunState;
  created: boolean;
  executor: TriggerMode;
}

/**
 * Queues a run for the scheduler (or hands it to workers) instead of running it here. An
 * existing run of that logical date is left as it is.
 *
 * @example
 * ```ts ignore
 * import { triggerRun } from "./actions.ts";
 * const t = await triggerRun(store, dag, { by: "ui:alice" });
 * console.log(t.runId, t.created);
 * ```
 */
export async function triggerRun(
  store: StateStore,
  dag: ResolvedDag,
  options: {
    by: Actor;
    date?: Date | undefined;
    params?: Record<string, string> | undefined;
    mode?: TriggerMode;
    /** Queue a logical date that lies in the future (refused otherwise, as Airflow does). */
    allowFuture?: boolean;
  },
): Promise<Triggered> {
  if (options.date) refuseFutureDate(dag.id, options.date, options.allowFuture === true);
  const interval = chooseInterval(dag, options.date);
  const params = paramsFor(dag, options.params);
  const mode = options.mode ?? "local";
  const plan = planRun(dag, interval, params, { runType: "triggered", executor: mode });
  const runId = plan.runId;
  let created: boolean;
  if (mode === "workers") {
    const before = await store.getRun(runId);
    await startRun(store, dag, interval, params, "triggered");
    created = !before;
  } else {
    ({ created } = await store.createRun(
      plan.run,
      runCreateAudit(dag, runId, "triggered", { executor: mode }),
    ));
  }
  const run = (await store.getRun(runId))!;
  await store.appendAudit([{
    correlationId: runId,
    dagId: dag.id,
    operation: "run:trigger",
    status: created ? "queued" : "exists",
    detail: { by: options.by, executor: mode },
  }]);
  return {
    runId,
    dagId: dag.id,
    logicalDate: interval.start.toISOString(),
    state: run.state,
    created,
    executor: mode,
  };
}

/**
 * Marks a task instance (and, with `downstream`, every task after it) for re-execution and
 * re-queues the run. Refused while a live process runs it. Returns the cleared task ids.
 *
 * @example
 * ```ts ignore
 * import { clearTask } from "./actions.ts";
 * await clearTask(store, dag, runId, "load", { downstream: true, by: "cli:ops@host" });
 * ```
 */
export async function clearTask(
  store: StateStore,
  dag: ResolvedDag,
  runId: string,
  taskId: string,
  options: { downstream?: boolean | undefined; by: Actor },
): Promise<string[]> {
  // A mapped instance (`load[3]`) is cleared alone; its task (`load`) with all its instances.
  const base = parseInstanceId(taskId)?.task ?? taskId;
  if (!dag.tasks.has(base) || (base !== taskId && dag.tasks.get(base)!.expand === undefined)) {
    throw new UsageError(
      `Unknown task "${taskId}" in DAG "${dag.id}": tasks are ${dag.order.join(", ")}`,
    );
  }
  const run = await store.getRun(runId);
  if (!run || run.dagId !== dag.id) {
    throw new UsageError(
      `Unknown run "${runId}" of DAG "${dag.id}": see \`runs list --dag ${dag.id}\``,
    );
  }
  if (
    run.state === "running" && run.owner && !ownerIsDead(run.owner) &&
    (run.leaseUntil?.getTime() ?? 0) > Date.now()
  ) {
    throw new DagError(
      `Cannot clear tasks of "${run.runId}": it is running now; wait for it to end`,
    );
  }
  const ids = [taskId, ...(options.downstream ? [...descendants(dag.downstream, [base])] : [])];
  return await clearTasks(store, dag, run.runId, ids, options.by);
}

/** Resets task instances to `scheduled` and re-queues the run. Returns the cleared task ids. */
export async function clearTasks(
  store: StateStore,
  dag: ResolvedDag,
  runId: string,
  ids: string[],
  by: Actor = cliActor(),
): Promise<string[]> {
  const run = (await store.getRun(runId))!;
  const keys = jobKeysFor(dag, { start: run.intervalStart, end: run.intervalEnd }, run.params);
  // Mapped instances (`load[3]`): named alone, or with their task.
  const instances = (await store.listTaskInstances(runId)).filter((r) =>
    r.mapIndex >= 0 && (ids.includes(r.taskId) || ids.includes(parseInstanceId(r.taskId)!.task))
  ).sort((a, b) => a.mapIndex - b.mapIndex);
  for (const r of instances) keys.set(r.taskId, r.jobKey);
  const cleared: string[] = [];
  const order = dag.order.flatMap((id) => [
    id,
    ...instances.filter((r) => parseInstanceId(r.taskId)!.task === id).map((r) => r.taskId),
  ]);
  for (const id of order.filter((x) => ids.includes(x) || keys.has(x) && !dag.tasks.has(x))) {
    const ok = await store.updateTaskInstance(keys.get(id)!, {
      state: "scheduled",
      nextAttemptAt: null,
      owner: null,
      leaseUntil: null,
      error: null,
      output: null,
      outputKind: null,
      endedAt: null,
    }, {
      audit: [{
        correlationId: runId,
        dagId: dag.id,
        taskId: id,
        operation: "task:clear",
        status: "scheduled",
        detail: { by },
      }],
    });
    if (ok) cleared.push(id);
  }
  if (cleared.length > 0) {
    await store.updateRun(runId, { state: "queued", endedAt: null }, {
      expect: { states: ["success", "failed", "queued"] },
      audit: [{
        correlationId: runId,
        dagId: dag.id,
        operation: "run:clear",
        status: "queued",
        recordCount: cleared.length,
        detail: { by },
      }],
    });
  }
  return cleared;
}

/**
 * Stops (or resumes) scheduling a DAG.
 *
 * @example
 * ```ts ignore
 * import { setDagPaused } from "./actions.ts";
 * await setDagPaused(store, "catalog_sync", true, "ui:alice");
 * ```
 */
export async function setDagPaused(
  store: StateStore,
  dagId: string,
  paused: boolean,
  by: Actor,
): Promise<void> {
  await store.setPaused(dagId, paused, {
    correlationId: `dag:${dagId}`,
    dagId,
    operation: paused ? "dag:pause" : "dag:unpause",
    status: "success",
    detail: { by },
  });
}
