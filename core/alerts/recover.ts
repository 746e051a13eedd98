/**
 * Alerts that a process died before sending. A transition that owes an alert records how many
 * callbacks it owes in its own audit entry (`detail.alerts`, written with the transition), and the
 * process that sends the alert appends a receipt (`alert:sent`) once every callback ended. An
 * entry without a receipt past its DAG's callback time limit (plus a margin) was cut short: the
 * scheduler calls that alert's callbacks again, with the same alert id (receivers deduplicate on
 * it). Each such try is noted first (`alert:resend`); after {@link MAX_RESENDS} an alert is left
 * alone (a callback that kills its process would otherwise be called forever). Alerts older than
 * a day are never sent again: a page about last week's failure helps nobody.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { AuditEntry } from "../audit.ts";
import type { ResolvedDag } from "../dag.ts";
import { errorMessage } from "../errors.ts";
import type { StateStore } from "../state/store.ts";
import type { Alert, AlertEvent } from "./alert.ts";
import { type AlertDispatcher, alertRunOf } from "./dispatch.ts";
import { callbacksFor, HOOK_OF, identified } from "./hooks.ts";

const log = getLogger(["carrel", "alerts"]);

/** Tries to send one alert again before it is left alone. */
export const MAX_RESENDS = 3;
/** How far back alerts are sent again. */
export const RESEND_WITHIN_MS = 24 * 3_600_000;
/** Time past a DAG's callback time limit before an alert counts as cut short. */
export const RESEND_MARGIN_MS = 30_000;
/** Owing entries read at a time (the oldest first). */
const PAGE = 500;

/** The alert event an audit entry owes, from its operation and status. */
function eventOf(entry: AuditEntry): AlertEvent | undefined {
  switch (entry.operation) {
    case "task:success":
    case "task:recomputed":
      return "task_success";
    case "task:retry":
      return "task_retry";
    case "task:failed":
      return "task_failure";
    case "run:end":
    case "run:cancelled":
      return entry.status === "success" ? "run_success" : "run_failure";
    case "sla:miss":
      return "sla_miss";
    default:
      return undefined;
  }
}

function attemptOf(detail: Record<string, unknown> | null): number | null {
  const a = detail?.attempt;
  return typeof a === "number" ? a : null;
}

function numberOr(value: unknown): number | null {
  return typeof value === "number" && Number.isFinite(value) ? value : null;
}

/**
 * Sends again the alerts whose process died before their receipt, within the last day; returns
 * how many. Runs in the scheduler's pass: it reads the entries that owe an alert (a few per run,
 * through their own index) and the receipts of their runs.
 *
 * @example
 * ```ts ignore
 * const resent = await resendCutShortAlerts(store, loaded.dags, dispatcher);
 * ```
 */
export async function resendCutShortAlerts(
  store: StateStore,
  dags: ReadonlyMap<string, ResolvedDag>,
  dispatcher: AlertDispatcher,
  now: Date = new Date(),
): Promise<number> {
  const since = new Date(now.getTime() - RESEND_WITHIN_MS);
  // Nothing younger than the margin can be cut short yet (each DAG's time limit is added below).
  const until = new Date(now.getTime() - RESEND_MARGIN_MS);
  const key = (run: string, task: string | null, event: string, attempt: number | null) =>
    JSON.stringify([run, task, event, attempt]);
  let resent = 0;
  let after: { at: string; seq: number } | null = null;
  while (true) {
    const owed = await store.owedAlerts(since, until, after, PAGE);
    if (owed.length === 0) break;
    const last = owed[owed.length - 1]!;
    after = { at: last.at, seq: last.seq };
    // What was sent, and tried again, of these runs' alerts.
    const receipts = new Set<string>();
    const resends = new Map<string, number>();
    const runIds = [...new Set(owed.map((e) => e.correlationId))];
    for (const r of await store.alertReceipts(runIds)) {
      const d = r.detail ?? {};
      const k = key(r.correlationId, r.taskId, String(d.event), attemptOf(d));
      if (r.operation === "alert:sent") receipts.add(k);
      else resends.set(k, (resends.get(k) ?? 0) + 1);
    }
    for (const entry of owed) {
      const event = eventOf(entry);
      if (!event) continue;
      const k = key(entry.correlationId, entry.taskId, event, attemptOf(entry.detail));
      if (receipts.has(k) || (resends.get(k) ?? 0) >= MAX_RESENDS) continue;
      const dag = entry.dagId === null ? undefined : dags.get(entry.dagId);
      if (!dag || callbacksFor(dag, event, entry.taskId).length === 0) continue;
      const cutShortAt = new Date(entry.at).getTime() + dag.callbackTimeoutMs + RESEND_MARGIN_MS;
      if (cutShortAt > now.getTime()) continue;
      try {
        const rebuilt = await rebuild(store, dispatcher, dag, entry, event);
        if (!rebuilt) continue;
        const alert = identified(rebuilt);
        const tries = (resends.get(k) ?? 0) + 1;
        await store.appendAudit([{
          correlationId: entry.correlationId,
          dagId: dag.id,
          taskId: entry.taskId,
          operation: "alert:resend",
          status: "sending",
          detail: { id: alert.id, event, attempt: alert.attempt, hook: alert.hook, try: tries },
        }]);
        resends.set(k, tries);
        log.warn("Sending again alert {hook} for {what} of run {runId}: its process ended first", {
          hook: alert.hook,
          what: alert.taskId ? `task ${alert.taskId}` : "the run",
          runId: alert.runId,
          dagId: dag.id,
        });
        await dispatcher.resend(dag, alert);
        receipts.add(k);
        resent++;
      } catch (error) {
        log.error("Cannot send again an alert of run {runId}: {error}", {
          runId: entry.correlationId,
          error: errorMessage(error),
        });
      }
    }
    if (owed.length < PAGE) break;
  }
  return resent;
}

/**
 * The alert a ledger entry owed, as its process would have sent it: from the entry, the run and
 * its task instances (the recorded error; a run's tasks by state). A task's own counts are not
 * in the entry: a resent task alert has none.
 */
async function rebuild(
  store: StateStore,
  dispatcher: AlertDispatcher,
  dag: ResolvedDag,
  entry: AuditEntry,
  event: AlertEvent,
): Promise<Alert | undefined> {
  const record = await store.getRun(entry.correlationId);
  if (!record) return undefined;
  const run = alertRunOf(record);
  const detail = entry.detail ?? {};
  const tasks = new Map((await store.listTaskInstances(run.runId)).map((t) => [t.taskId, t]));
  const attempt = attemptOf(detail);
  const ti = entry.taskId === null ? undefined : tasks.get(entry.taskId);
  const counts: Record<string, number> = {};
  if (entry.taskId === null && event !== "sla_miss") {
    for (const id of dag.order) {
      const state = tasks.get(id)?.state ?? "scheduled";
      counts[state] = (counts[state] ?? 0) + 1;
    }
  }
  const task = entry.taskId === null ? undefined : dag.tasks.get(entry.taskId);
  const sla = event === "sla_miss" && typeof detail.slaMs === "number" &&
      typeof detail.deadline === "string"
    ? {
      slaMs: detail.slaMs,
      deadline: detail.deadline,
      detectedBy: detail.detectedBy === "executor" ? "executor" as const : "scheduler" as const,
    }
    : null;
  const base = dispatcher.alertOf(dag, run, entry.taskId, HOOK_OF[event], event, entry.status);
  // Its id is set from these fields (`identified`), as for any alert.
  return {
    ...base,
    state: event === "sla_miss" ? String(detail.state ?? entry.status) : entry.status,
    attempt,
    durationMs: numberOr(detail.durationMs),
    counts,
    // The message recorded for the task, when it is still this attempt's.
    error: (event === "task_failure" || event === "task_retry") && ti &&
        ti.tryNumber === attempt
      ? ti.error
      : null,
    zone: task?.zone ?? base.zone,
    sla,
  };
}
