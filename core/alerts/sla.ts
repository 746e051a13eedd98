/**
 * SLAs: a DAG's or a task's `sla` (`"3h"`) is how long after the end of its data interval a
 * scheduled run (or the task in it) must have succeeded. Misses are found in two places, both
 * recording through the store's insert-once table, so each is recorded, audited and notified
 * exactly once whoever finds it first: the process that ends a task or run past its deadline
 * (`dispatch.ts`), and the scheduler's periodic {@link checkSlas}, which finds runs and tasks
 * still queued, running or failed past their deadline (and late successes whose process died
 * before it could tell). As in Airflow, manual, triggered and backfill runs have no SLA.
 *
 * @module
 */
import type { ResolvedDag } from "../dag.ts";
import type { RunRecord, StateStore, TaskState } from "../state/store.ts";
import { type AlertDispatcher, alertRunOf } from "./dispatch.ts";

/** How many of a DAG's newest scheduled runs each check looks at. */
const LOOKBACK_RUNS = 20;

/** True when a DAG or any of its tasks has an SLA. */
export function hasSla(dag: ResolvedDag): boolean {
  return dag.alerts.slaMs !== undefined ||
    [...dag.tasks.values()].some((t) => t.alerts.slaMs !== undefined);
}

/**
 * The deadline of a run's (or a task's) SLA: the end of the data interval plus the SLA.
 *
 * @example
 * ```ts
 * import { slaDeadline } from "./sla.ts";
 * slaDeadline(new Date("2026-01-02T00:00:00Z"), 3 * 3_600_000).toISOString();
 * // "2026-01-02T03:00:00.000Z"
 * ```
 */
export function slaDeadline(intervalEnd: Date, slaMs: number): Date {
  return new Date(intervalEnd.getTime() + slaMs);
}

/** True when something in `state`, ended at `endedAt`, missed a deadline that passed. */
function missed(state: TaskState | RunRecord["state"], endedAt: Date | null, deadline: Date) {
  if (state === "success" || state === "skipped") {
    return endedAt !== null && endedAt.getTime() > deadline.getTime();
  }
  return true;
}

/**
 * Checks the newest scheduled runs of the given DAGs for SLAs whose deadline has passed without
 * success, and records each miss once (audited, sent to `onSlaMiss`). Returns how many misses
 * this call recorded. Safe to run in several schedulers at once.
 *
 * @example
 * ```ts ignore
 * const alerts = new AlertDispatcher({ store });
 * await checkSlas(loaded.dags.values(), store, alerts, new Date());
 * await alerts.settled();
 * ```
 */
export async function checkSlas(
  dags: Iterable<ResolvedDag>,
  store: StateStore,
  alerts: AlertDispatcher,
  now: Date,
): Promise<number> {
  let recorded = 0;
  for (const dag of dags) {
    if (!hasSla(dag)) continue;
    const taskSlas = [...dag.tasks.values()].filter((t) => t.alerts.slaMs !== undefined);
    const earliest = Math.min(
      dag.alerts.slaMs ?? Infinity,
      ...taskSlas.map((t) => t.alerts.slaMs!),
    );
    const runs = (await store.listRuns({
      dagId: dag.id,
      runType: "scheduled",
      limit: LOOKBACK_RUNS,
    })).filter((r) => now.getTime() > slaDeadline(r.intervalEnd, earliest).getTime());
    if (runs.length === 0) continue;
    const known = new Set(
      (await store.listSlaMisses(runs.map((r) => r.runId))).map((m) =>
        `${m.runId}\u0000${m.taskId ?? ""}`
      ),
    );
    for (const run of runs) {
      const alertRun = alertRunOf(run);
      if (dag.alerts.slaMs !== undefined && !known.has(`${run.runId}\u0000`)) {
        const deadline = slaDeadline(run.intervalEnd, dag.alerts.slaMs);
        if (now > deadline && missed(run.state, run.endedAt, deadline)) {
          if (await alerts.slaMiss(dag, alertRun, null, run.state, "scheduler")) recorded++;
        }
      }
      const due = taskSlas.filter((t) =>
        !known.has(`${run.runId}\u0000${t.id}`) &&
        now > slaDeadline(run.intervalEnd, t.alerts.slaMs!)
      );
      if (due.length === 0) continue;
      const instances = new Map(
        (await store.listTaskInstances(run.runId)).map((ti) => [ti.taskId, ti]),
      );
      for (const t of due) {
        const ti = instances.get(t.id);
        const state: TaskState = ti?.state ?? "scheduled";
        const deadline = slaDeadline(run.intervalEnd, t.alerts.slaMs!);
        if (!missed(state, ti?.endedAt ?? null, deadline)) continue;
        if (await alerts.slaMiss(dag, alertRun, t.id, state, "scheduler")) recorded++;
      }
    }
  }
  return recorded;
}
