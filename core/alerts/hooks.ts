/**
 * Which callbacks an alert calls, and the alert's identity. One home for both: the decider notes
 * in a transition's audit entry how many callbacks it owes (`alerts`), the dispatcher calls them
 * and writes a receipt, and the scheduler calls again those of an alert that has an entry but no
 * receipt (its process died first). They all ask here.
 *
 * @module
 */
import type { ResolvedDag, ResolvedTask } from "../dag.ts";
import { sha256Hex } from "../job_key.ts";
import { parseInstanceId } from "../run/mapping.ts";
import type { Alert, AlertCallback, AlertEvent, AlertHook } from "./alert.ts";

/** The hook an alert event calls. */
export const HOOK_OF: Readonly<Record<AlertEvent, AlertHook>> = {
  task_failure: "onFailure",
  task_retry: "onRetry",
  task_success: "onSuccess",
  run_failure: "onFailure",
  run_success: "onSuccess",
  sla_miss: "onSlaMiss",
};

/**
 * A task of the DAG by id; a mapped instance (`load[3]`) resolves to its mapped task.
 *
 * @example
 * ```ts ignore
 * taskOf(dag, "load[3]")?.id; // "load"
 * ```
 */
export function taskOf(dag: ResolvedDag, id: string): ResolvedTask | undefined {
  const found = dag.tasks.get(id);
  if (found) return found;
  const mapped = parseInstanceId(id);
  return mapped ? dag.tasks.get(mapped.task) : undefined;
}

/**
 * The callbacks an alert about `taskId` (null: the run) calls, in order: the task's, then the
 * DAG's where both apply (retries and SLA misses).
 *
 * @example
 * ```ts ignore
 * callbacksFor(dag, "task_retry", "extract").length; // the task's onRetry and the DAG's
 * ```
 */
export function callbacksFor(
  dag: ResolvedDag,
  event: AlertEvent,
  taskId: string | null,
): readonly AlertCallback[] {
  const task = taskId === null ? undefined : taskOf(dag, taskId);
  const own = task?.alerts.hooks;
  const run = dag.alerts.hooks;
  switch (event) {
    case "task_success":
      return own?.onSuccess ?? [];
    case "task_failure":
      return own?.onFailure ?? [];
    case "task_retry":
      return task ? [...task.alerts.hooks.onRetry, ...run.onRetry] : [];
    case "run_success":
      return run.onSuccess;
    case "run_failure":
      return run.onFailure;
    case "sla_miss":
      return [...(own?.onSlaMiss ?? []), ...run.onSlaMiss];
  }
}

/**
 * An alert's id: the same for the same event of the same attempt, whichever process sends it
 * (so a receiver can tell a second delivery from a new alert). UUID-shaped hex.
 *
 * @example
 * ```ts
 * import { alertId } from "./hooks.ts";
 * alertId("d@2026-01-01T00:00:00Z", "load", "task_failure", 2).length; // 36
 * ```
 */
export function alertId(
  runId: string,
  taskId: string | null,
  event: AlertEvent,
  attempt: number | null,
): string {
  const h = sha256Hex(JSON.stringify([runId, taskId, event, attempt]));
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${
    h.slice(20, 32)
  }`;
}

/**
 * `alert` with its id set from its run, task, event and attempt: the one place an alert gets its
 * id, whether it is sent for the first time or again.
 *
 * @example
 * ```ts ignore
 * const sent = identified(alert);
 * ```
 */
export function identified<A extends Alert>(alert: A): A {
  return { ...alert, id: alertId(alert.runId, alert.taskId, alert.event, alert.attempt) };
}

/**
 * What a transition's audit entry says of the alert it owes: `{ alerts: n }`, the number of
 * callbacks to call, when there are any (nothing otherwise).
 *
 * @example
 * ```ts ignore
 * detail: { attempt, durationMs, ...alertsOwed(dag, "task_failure", "load") }
 * ```
 */
export function alertsOwed(
  dag: ResolvedDag,
  event: AlertEvent,
  taskId: string | null,
): { alerts?: number } {
  const n = callbacksFor(dag, event, taskId).length;
  return n > 0 ? { alerts: n } : {};
}
