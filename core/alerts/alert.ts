/**
 * Alerts as a DAG file declares them: the `onFailure`, `onRetry`, `onSuccess` and `onSlaMiss`
 * callbacks of a DAG and of its tasks, the `sla` of each, and the value-free {@link Alert} every
 * callback receives. The dispatcher (`dispatch.ts`) decides when they fire; notifiers
 * (`carrel/operators`: `webhook`, `email`) are ready-made callbacks.
 *
 * @module
 */
import { z } from "zod";
import { type Duration, parseDuration } from "../duration.ts";

/** What an alert is about. */
export type AlertEvent =
  | "task_failure"
  | "task_retry"
  | "task_success"
  | "run_failure"
  | "run_success"
  | "sla_miss";

/** The callback (hook) names, at DAG and task level. */
export const ALERT_HOOKS = ["onFailure", "onRetry", "onSuccess", "onSlaMiss"] as const;

/** One of {@link ALERT_HOOKS}. */
export type AlertHook = typeof ALERT_HOOKS[number];

/**
 * What a callback receives: names, states, numbers and a link, never a record value. An enclave
 * task's error is the message Carrel records for it (withheld unless known to be value-free).
 */
export interface Alert {
  /**
   * The alert's id: the same each time this alert is sent (a callback called again after its
   * process died gets the same id), so receivers can deduplicate on it.
   */
  id: string;
  event: AlertEvent;
  /** The callback that fired. */
  hook: AlertHook;
  dagId: string;
  /** `null` for a run-level alert. */
  taskId: string | null;
  runId: string;
  /** The start of the data interval (ISO). */
  logicalDate: string;
  dataInterval: { start: string; end: string };
  runType: string;
  /** The task's state (task alerts) or the run's (run alerts). */
  state: string;
  /** 1-based attempt number (task alerts). */
  attempt: number | null;
  /** How long the attempt (task) or the run took, when known. */
  durationMs: number | null;
  /** Task alerts: counts the task recorded (`quarantined: 3`); run alerts: tasks by state. */
  counts: Record<string, number>;
  /** The recorded error message (value-free), for failures and retries. */
  error: string | null;
  /** The zone of the task (task alerts). */
  zone: "shared" | "enclave" | null;
  /** The run (or task) page in the console, when `CARREL_UI_URL` is set. */
  url: string | null;
  /** SLA misses: the deadline and the SLA. */
  sla: { slaMs: number; deadline: string; detectedBy: "executor" | "scheduler" } | null;
  /** When the alert was made (ISO). */
  at: string;
}

/** A callback: receives the alert and a signal that aborts at its time limit. */
export type AlertCallback = (alert: Alert, signal: AbortSignal) => unknown;

/**
 * What a callback needs when it runs in a sandbox (the callbacks of a strict DAG or task): hosts
 * (`host:port`) it may connect to, environment variables it may read, and system facts a client
 * library reads (`"hostname"`). Nothing else: no files but Carrel's and the DAG's code, no
 * processes.
 */
export interface CallbackNeeds {
  net?: readonly string[];
  env?: readonly string[];
  sys?: readonly string[];
}

/** Works out a callback's needs when it fires (a URL may come from a variable). */
export type CallbackNeedsOf = (env: { get(name: string): string | undefined }) => CallbackNeeds;

/** Where a callback keeps its needs (a registry symbol: the same in a sandbox Worker). */
const NEEDS = Symbol.for("carrel.callbackNeeds");

/**
 * Declares what `callback` needs when it runs in a sandbox; returns the callback. The ready-made
 * notifiers declare theirs; a callback that declares nothing gets no network, no variables.
 *
 * @example
 * ```ts
 * import { callbackNeeds, declareCallbackNeeds } from "./alert.ts";
 * const ping = declareCallbackNeeds(async () => {
 *   await fetch("https://status.example.org/ping", { method: "POST" });
 * }, () => ({ net: ["status.example.org:443"] }));
 * callbackNeeds(ping, Deno.env); // { net: ["status.example.org:443"] }
 * ```
 */
export function declareCallbackNeeds<T extends AlertCallback>(
  callback: T,
  needs: CallbackNeedsOf,
): T {
  Object.defineProperty(callback, NEEDS, { value: needs });
  return callback;
}

/** What `callback` declared it needs (nothing when it declared nothing), worked out now. */
export function callbackNeeds(
  callback: AlertCallback,
  env: { get(name: string): string | undefined },
): CallbackNeeds {
  const of = (callback as unknown as { [NEEDS]?: CallbackNeedsOf })[NEEDS];
  return typeof of === "function" ? of(env) : {};
}

/** The callbacks and SLA a DAG or a task declares. */
export interface AlertOptions {
  /** A task (or, at DAG level, the run) failed. */
  onFailure?: AlertCallback | readonly AlertCallback[];
  /** A task failed and will be retried (at DAG level: any task of the DAG). */
  onRetry?: AlertCallback | readonly AlertCallback[];
  /** A task (or, at DAG level, the run) succeeded. */
  onSuccess?: AlertCallback | readonly AlertCallback[];
  /** The task (or the run) missed its SLA (at DAG level: any miss in the DAG). */
  onSlaMiss?: AlertCallback | readonly AlertCallback[];
  /**
   * How long after the end of the data interval the task (or the run) must have succeeded, for
   * scheduled runs (`"3h"`).
   */
  sla?: Duration;
}

/** Alerts after validation: callbacks as arrays, the SLA in milliseconds. */
export interface ResolvedAlerts {
  hooks: Record<AlertHook, AlertCallback[]>;
  slaMs: number | undefined;
}

const callbacks = z.union([
  z.custom<AlertCallback>((v) => typeof v === "function"),
  z.array(z.custom<AlertCallback>((v) => typeof v === "function")),
], { error: "expected a callback function or an array of them" }).optional();

/** The zod shape of {@link AlertOptions}, spread into the task and DAG schemas. */
export const alertShape = {
  onFailure: callbacks,
  onRetry: callbacks,
  onSuccess: callbacks,
  onSlaMiss: callbacks,
  sla: z.union([z.number(), z.string()], { error: "expected a duration" }).refine(
    (v) => {
      const ms = parseDuration(v);
      return ms !== undefined && ms > 0;
    },
    { error: 'expected a duration such as "30m" or "3h"' },
  ).optional(),
};

/**
 * Resolves validated alert options: callbacks as arrays, the SLA in milliseconds.
 *
 * @example
 * ```ts
 * import { resolveAlerts } from "./alert.ts";
 * const alerts = resolveAlerts({ sla: "3h", onFailure: () => {} });
 * alerts.slaMs; // 10800000
 * alerts.hooks.onFailure.length; // 1
 * ```
 */
export function resolveAlerts(options: AlertOptions): ResolvedAlerts {
  const list = (v: AlertCallback | readonly AlertCallback[] | undefined): AlertCallback[] =>
    v === undefined ? [] : typeof v === "function" ? [v] : [...v];
  return {
    hooks: {
      onFailure: list(options.onFailure),
      onRetry: list(options.onRetry),
      onSuccess: list(options.onSuccess),
      onSlaMiss: list(options.onSlaMiss),
    },
    slaMs: options.sla === undefined ? undefined : parseDuration(options.sla),
  };
}

/** No callbacks, no SLA. */
export const NO_ALERTS: ResolvedAlerts = resolveAlerts({});

/**
 * The console page of a run (or of one task in it), when `CARREL_UI_URL` names the console's
 * public base URL; `null` otherwise.
 *
 * @example
 * ```ts
 * import { consoleUrl } from "./alert.ts";
 * consoleUrl("https://carrel.example.org/", "d@2026-01-01T00:00:00Z", "load");
 * // "https://carrel.example.org/runs/d%402026-01-01T00%3A00%3A00Z/tasks/load"
 * ```
 */
export function consoleUrl(
  base: string | undefined,
  runId: string,
  taskId?: string | null,
): string | null {
  if (!base) return null;
  const root = base.replace(/\/+$/, "");
  const run = `${root}/runs/${encodeURIComponent(runId)}`;
  return taskId ? `${run}/tasks/${encodeURIComponent(taskId)}` : run;
}
