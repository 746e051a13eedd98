/**
 * Airflow's trigger rules: given the states of a task's upstream tasks, whether it runs, waits,
 * is skipped, or is `upstream_failed`.
 *
 * @module
 */
import type { TriggerRule } from "./dag.ts";
import type { TaskState } from "./state/store.ts";

/** What a trigger rule decides. */
export type TriggerVerdict = "run" | "wait" | "skip" | "upstream_failed";

const FINAL: ReadonlySet<TaskState> = new Set(["success", "failed", "upstream_failed", "skipped"]);
const FAILED: ReadonlySet<TaskState> = new Set(["failed", "upstream_failed"]);

/**
 * Evaluates a trigger rule with Airflow's semantics. `one_success`, `one_failed` and `always`
 * fire without waiting for every upstream; a skipped upstream skips `all_success` and
 * `all_failed` tasks, and counts as not failed for `none_failed`.
 *
 * @example
 * ```ts
 * import { decideTrigger } from "./trigger_rules.ts";
 * decideTrigger("all_success", ["success", "skipped"]); // "skip"
 * decideTrigger("none_failed", ["success", "skipped"]); // "run"
 * ```
 */
export function decideTrigger(rule: TriggerRule, upstream: readonly TaskState[]): TriggerVerdict {
  if (upstream.length === 0) return "run";
  const all = upstream.every((s) => FINAL.has(s));
  const success = upstream.filter((s) => s === "success").length;
  const failed = upstream.filter((s) => FAILED.has(s)).length;
  const skipped = upstream.filter((s) => s === "skipped").length;
  switch (rule) {
    case "all_success":
      if (failed > 0) return "upstream_failed";
      if (skipped > 0) return "skip";
      return all ? "run" : "wait";
    case "all_failed":
      if (success > 0 || skipped > 0) return "skip";
      return all ? "run" : "wait";
    case "all_done":
      return all ? "run" : "wait";
    case "one_success":
      if (success > 0) return "run";
      if (!all) return "wait";
      return skipped === upstream.length ? "skip" : "upstream_failed";
    case "one_failed":
      if (failed > 0) return "run";
      return all ? "skip" : "wait";
    case "none_failed":
      if (failed > 0) return "upstream_failed";
      return all ? "run" : "wait";
    case "none_failed_min_one_success":
      if (failed > 0) return "upstream_failed";
      if (!all) return "wait";
      return success > 0 ? "run" : "skip";
    case "always":
      return "run";
  }
}

/** Whether a state is final. */
export function isFinal(state: TaskState): boolean {
  return FINAL.has(state);
}

/** A run's state once all its tasks are final: failed when a leaf failed (Airflow's rule). */
export function runStateFromLeaves(leafStates: readonly TaskState[]): "success" | "failed" {
  return leafStates.some((s) => FAILED.has(s)) ? "failed" : "success";
}
