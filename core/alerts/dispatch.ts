/**
 * The one place where recorded transitions become alerts: both drivers (the local executor and
 * the workers) hand it the events of each decision once the store has recorded it, and it fires
 * the DAG's and the task's callbacks (`onFailure`, `onRetry`, `onSuccess`), and records, audits
 * and notifies SLA misses of tasks and runs that end past their deadline. The scheduler's
 * periodic check (`sla.ts`) reports runs still unfinished past their deadline through it too.
 *
 * Every callback runs with a time limit (the DAG's `callbackTimeout`, 60 s by default) and a
 * signal that aborts at that limit; a callback that fails or times out never fails the run: the
 * failure is logged and audited (`alert:failed`), with a value-free message. The driver awaits
 * {@link AlertDispatcher.settled} before it returns, so alerts are sent before a run command
 * exits, and never wait longer than the limit.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { AuditInput } from "../audit.ts";
import type { DataInterval, ResolvedDag } from "../dag.ts";
import { formatDuration } from "../duration.ts";
import { errorMessage } from "../errors.ts";
import { isPrivacySafe } from "../privacy/privacy_safe.ts";
import type { Decision } from "../run/decide.ts";
import type { ExecutorEvent } from "../run/events.ts";
import type { RunRecord, StateStore, TaskState } from "../state/store.ts";
import { placeOf, runCallbackSandboxed, sandboxesCallback } from "../sandbox/callback.ts";
import {
  type Alert,
  type AlertCallback,
  type AlertEvent,
  type AlertHook,
  consoleUrl,
} from "./alert.ts";
import { alertsOwed, callbacksFor, identified, taskOf } from "./hooks.ts";
import { parseInstanceId } from "../run/mapping.ts";

const log = getLogger(["carrel", "alerts"]);

/** The run an alert is about. */
export interface AlertRun {
  runId: string;
  dagId: string;
  interval: DataInterval;
  runType: string;
}

/**
 * The run an alert is about, from its stored record.
 *
 * @example
 * ```ts ignore
 * const run = alertRunOf(await store.getRun(runId));
 * ```
 */
export function alertRunOf(run: RunRecord): AlertRun {
  return {
    runId: run.runId,
    dagId: run.dagId,
    interval: { start: run.intervalStart, end: run.intervalEnd },
    runType: run.runType,
  };
}

/** What the dispatcher reads of a task instance. */
export interface AlertTaskView {
  state: TaskState;
  tryNumber?: number;
  startedAt?: Date | null;
  endedAt?: Date | null;
}

/** Options of an {@link AlertDispatcher}. */
export interface DispatcherOptions {
  /** Where SLA misses and failed callbacks are recorded and audited. */
  store: StateStore;
  /** The console's public base URL for links; default `CARREL_UI_URL`. */
  uiUrl?: string;
  /** The clock (tests). */
  now?: () => Date;
}

/** The task states that meet an SLA. */
const MET: ReadonlySet<TaskState> = new Set(["success", "skipped"]);

/**
 * Fires callbacks for recorded events and records SLA misses once.
 *
 * @example
 * ```ts ignore
 * const alerts = new AlertDispatcher({ store });
 * alerts.observe(event, dag, run, view);
 * await alerts.settled();
 * ```
 */
export class AlertDispatcher {
  readonly #store: StateStore;
  readonly #uiUrl: string | undefined;
  readonly #now: () => Date;
  readonly #pending = new Set<Promise<void>>();

  constructor(options: DispatcherOptions) {
    this.#store = options.store;
    this.#uiUrl = options.uiUrl ?? (Deno.env.get("CARREL_UI_URL") || undefined);
    this.#now = options.now ?? (() => new Date());
  }

  /** Observes every event of decisions the store has just recorded. */
  recorded(
    decisions: readonly Decision[],
    dag: ResolvedDag,
    run: AlertRun,
    tasks: ReadonlyMap<string, AlertTaskView>,
  ): void {
    for (const d of decisions) {
      for (const t of d.transitions) for (const e of t.events) this.observe(e, dag, run, tasks);
      for (const e of d.run?.events ?? []) this.observe(e, dag, run, tasks);
    }
  }

  /** Observes one recorded event: fires its callbacks and checks its SLA (in the background). */
  observe(
    event: ExecutorEvent,
    dag: ResolvedDag,
    run: AlertRun,
    tasks: ReadonlyMap<string, AlertTaskView>,
  ): void {
    // A mapped instance (`load[3]`) fires its task's callbacks under its own id; SLAs are the
    // mapped task's (checked when it ends), not each instance's.
    const eventTask = "taskId" in event ? event.taskId : undefined;
    const task = eventTask === undefined ? undefined : taskOf(dag, eventTask);
    const instance = eventTask !== undefined && parseInstanceId(eventTask) !== undefined;
    const base = (hook: AlertHook, kind: AlertEvent, state: string): Alert =>
      this.alertOf(dag, run, task ? eventTask! : null, hook, kind, state);
    switch (event.type) {
      case "task:success": {
        if (!task) return;
        const alert = {
          ...base("onSuccess", "task_success", "success"),
          attempt: event.attempt,
          durationMs: event.durationMs,
          counts: { ...(event.counts ?? {}) },
        };
        this.#fire(dag, alert);
        if (!instance) this.#checkTaskSla(dag, run, task.id, "success");
        return;
      }
      case "task:retry": {
        if (!task) return;
        const v = tasks.get(eventTask!);
        const alert = {
          ...base("onRetry", "task_retry", "up_for_retry"),
          attempt: event.attempt,
          durationMs: v?.startedAt && v.endedAt
            ? Math.max(0, v.endedAt.getTime() - v.startedAt.getTime())
            : null,
          counts: { ...(event.counts ?? {}) },
          error: event.error,
        };
        this.#fire(dag, alert);
        return;
      }
      case "task:failed": {
        if (!task) return;
        const alert = {
          ...base("onFailure", "task_failure", "failed"),
          attempt: event.attempt,
          durationMs: event.durationMs,
          counts: { ...(event.counts ?? {}) },
          error: event.error,
        };
        this.#fire(dag, alert);
        if (!instance) this.#checkTaskSla(dag, run, task.id, "failed");
        return;
      }
      case "task:upstream_failed":
        if (task && !instance) this.#checkTaskSla(dag, run, task.id, "upstream_failed");
        return;
      case "run:end": {
        const counts: Record<string, number> = {};
        for (const id of dag.order) {
          const state = tasks.get(id)?.state ?? "scheduled";
          counts[state] = (counts[state] ?? 0) + 1;
        }
        const success = event.state === "success";
        const alert = {
          ...base(
            success ? "onSuccess" : "onFailure",
            success ? "run_success" : "run_failure",
            event.state,
          ),
          durationMs: event.durationMs,
          counts,
        };
        this.#fire(dag, alert);
        if (dag.alerts.slaMs !== undefined && this.#late(run, dag.alerts.slaMs)) {
          this.#track(this.slaMiss(dag, run, null, event.state, "executor"));
        }
        return;
      }
      default:
        return;
    }
  }

  /**
   * Records the SLA miss of a run (`taskId` null) or of one task, unless it is recorded already;
   * when this call recorded it, audits it (same transaction) and fires `onSlaMiss` (the task's,
   * then the DAG's). True when this call recorded it.
   */
  async slaMiss(
    dag: ResolvedDag,
    run: AlertRun,
    taskId: string | null,
    state: string,
    detectedBy: "executor" | "scheduler",
  ): Promise<boolean> {
    const task = taskId === null ? undefined : dag.tasks.get(taskId);
    const slaMs = task ? task.alerts.slaMs : dag.alerts.slaMs;
    if (slaMs === undefined) return false;
    const deadline = new Date(run.interval.end.getTime() + slaMs);
    const detectedAt = this.#now();
    const audit: AuditInput = {
      correlationId: run.runId,
      dagId: dag.id,
      taskId,
      operation: "sla:miss",
      status: "missed",
      detail: {
        scope: task ? "task" : "run",
        slaMs,
        deadline: deadline.toISOString(),
        state,
        detectedBy,
        lateMs: detectedAt.getTime() - deadline.getTime(),
        ...alertsOwed(dag, "sla_miss", taskId),
      },
    };
    const recorded = await this.#store.recordSlaMiss({
      runId: run.runId,
      dagId: dag.id,
      taskId,
      slaMs,
      deadline,
      detectedAt,
      detectedBy,
      state,
    }, audit);
    if (!recorded) return false;
    log.warn("SLA missed by {what} of run {runId}: deadline {deadline}, state {state}", {
      what: task ? `task ${task.id}` : "the run",
      runId: run.runId,
      dagId: dag.id,
      deadline: deadline.toISOString(),
      state,
    });
    const alert: Alert = {
      ...this.alertOf(dag, run, taskId, "onSlaMiss", "sla_miss", state),
      sla: { slaMs, deadline: deadline.toISOString(), detectedBy },
      at: detectedAt.toISOString(),
    };
    this.#fire(dag, alert);
    return true;
  }

  /** Resolves once every callback and SLA record started so far has ended (each time-limited). */
  async settled(): Promise<void> {
    while (this.#pending.size > 0) await Promise.allSettled([...this.#pending]);
  }

  /** An alert about a run or a task, before its event's own fields (its attempt, counts...). */
  alertOf(
    dag: ResolvedDag,
    run: AlertRun,
    taskId: string | null,
    hook: AlertHook,
    event: AlertEvent,
    state: string,
  ): Alert {
    return {
      // Set when it is sent (`identified`), once its attempt is known.
      id: "",
      event,
      hook,
      dagId: dag.id,
      taskId,
      runId: run.runId,
      logicalDate: run.interval.start.toISOString(),
      dataInterval: {
        start: run.interval.start.toISOString(),
        end: run.interval.end.toISOString(),
      },
      runType: run.runType,
      state,
      attempt: null,
      durationMs: null,
      counts: {},
      error: null,
      zone: taskId === null ? null : (taskOf(dag, taskId)?.zone ?? null),
      url: consoleUrl(this.#uiUrl, run.runId, taskId),
      sla: null,
      at: this.#now().toISOString(),
    };
  }

  #late(run: AlertRun, slaMs: number): boolean {
    return run.runType === "scheduled" &&
      this.#now().getTime() > run.interval.end.getTime() + slaMs;
  }

  #checkTaskSla(dag: ResolvedDag, run: AlertRun, taskId: string, state: TaskState): void {
    const slaMs = dag.tasks.get(taskId)?.alerts.slaMs;
    if (slaMs === undefined || !this.#late(run, slaMs)) return;
    // A success past the deadline is a miss; an unsuccessful end is one as soon as it is late.
    if (MET.has(state) || state === "failed" || state === "upstream_failed") {
      this.#track(this.slaMiss(dag, run, taskId, state, "executor"));
    }
  }

  #track(work: Promise<unknown>): void {
    const p: Promise<void> = work.then(
      () => {},
      (error) => {
        log.error("Cannot record an alert's receipt or an SLA miss: {error}", {
          error: errorMessage(error),
        });
      },
    ).finally(() => this.#pending.delete(p));
    this.#pending.add(p);
  }

  /**
   * Calls an alert's callbacks, then records its receipt (`alert:sent`): an alert whose
   * transition is recorded but which has no receipt was cut short by its process's end, and the
   * scheduler sends it again (see `recover.ts`).
   */
  #fire(dag: ResolvedDag, alert: Alert, recovered = false): void {
    const callbacks = callbacksFor(dag, alert.event, alert.taskId);
    if (callbacks.length === 0) return;
    const sent = identified(alert);
    this.#track((async () => {
      const results = await Promise.all(callbacks.map((c) => this.#call(dag, sent, c)));
      const failed = results.filter((ok) => !ok).length;
      await this.#store.appendAudit([{
        correlationId: sent.runId,
        dagId: sent.dagId,
        taskId: sent.taskId,
        operation: "alert:sent",
        status: failed === 0 ? "sent" : "failed",
        detail: {
          id: sent.id,
          event: sent.event,
          attempt: sent.attempt,
          hook: sent.hook,
          callbacks: callbacks.length,
          failed,
          ...(recovered ? { recovered: true } : {}),
        },
      }]);
    })());
  }

  /**
   * Sends an alert again whose process ended before its receipt was written (all its callbacks,
   * with the same id); resolves once they ended and the receipt is written.
   */
  async resend(dag: ResolvedDag, alert: Alert): Promise<void> {
    this.#fire(dag, alert, true);
    await this.settled();
  }

  /** Calls one callback within the DAG's time limit; true when it ended without an error. */
  async #call(dag: ResolvedDag, alert: Alert, callback: AlertCallback): Promise<boolean> {
    const limitMs = dag.callbackTimeoutMs;
    const name = callbackName(callback);
    const controller = new AbortController();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const limit = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const error = new AlertTimeoutError(
          `Alert callback ${alert.hook} (${name}) timed out after ${formatDuration(limitMs)}`,
        );
        controller.abort(error);
        reject(error);
      }, limitMs);
    });
    try {
      // A frozen copy: one callback cannot change what the next receives.
      const payload = Object.freeze({ ...alert, counts: { ...alert.counts } });
      // A strict DAG's (or task's) callback runs in a sandbox with only what it declared.
      const place = placeOf(
        dag,
        alert.taskId === null ? null : taskOf(dag, alert.taskId)?.id ?? null,
        alert.hook,
        callback,
      );
      const run = place !== undefined && sandboxesCallback(dag, place)
        ? () => runCallbackSandboxed(dag, place, callback, payload, controller.signal)
        : () => callback(payload, controller.signal);
      await Promise.race([Promise.resolve().then(run), limit]);
      log.info("Alert {hook} ({callback}) sent for {what} of run {runId}", {
        hook: alert.hook,
        callback: name,
        what: alert.taskId ? `task ${alert.taskId}` : "the run",
        runId: alert.runId,
        dagId: alert.dagId,
      });
      return true;
    } catch (error) {
      const message = callbackError(error);
      log.warn("Alert {hook} ({callback}) failed for {what} of run {runId}: {error}", {
        hook: alert.hook,
        callback: name,
        what: alert.taskId ? `task ${alert.taskId}` : "the run",
        runId: alert.runId,
        dagId: alert.dagId,
        error: message,
      });
      await this.#store.appendAudit([{
        correlationId: alert.runId,
        dagId: alert.dagId,
        taskId: alert.taskId,
        operation: "alert:failed",
        status: "failed",
        detail: { hook: alert.hook, event: alert.event, callback: name, error: message },
      }]).catch((e) =>
        log.error("Cannot audit a failed alert: {error}", { error: errorMessage(e) })
      );
      return false;
    } finally {
      clearTimeout(timer);
    }
  }
}

/** A callback that did not end within its time limit. */
export class AlertTimeoutError extends Error {
  override name = "AlertTimeoutError";
}

/** How a callback is named in logs and the audit trail (a notifier names itself). */
function callbackName(callback: AlertCallback): string {
  const name = callback.name;
  return name && /^[\w.:()\- ]{1,80}$/.test(name) ? name : "callback";
}

/**
 * The message recorded for a failed callback: Carrel's own (time limit, notifiers) and known
 * value-free errors as they are; anything else by its class only, since a callback's error may
 * carry a secret or a value.
 */
function callbackError(error: unknown): string {
  if (error instanceof AlertTimeoutError || isPrivacySafe(error)) return errorMessage(error);
  const name = error instanceof Error ? error.name : typeof error;
  return `${name} thrown by the callback (message withheld: it may carry a secret or a value)`;
}
