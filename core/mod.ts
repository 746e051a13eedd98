/**
 * Carrel's engine: declare DAGs with `defineDag` and `task`, and run them.
 *
 * ```ts
 * import { defineDag, task } from "./mod.ts";
 *
 * export default defineDag({
 *   id: "hello",
 *   schedule: "0 2 * * *",
 *   start: "2026-01-01T00:00:00Z",
 *   tasks: {
 *     extract: task({ zone: "enclave", run: () => [{ patron_id: "p1" }] }),
 *     count: task({ after: [], run: () => 1 }),
 *   },
 * });
 * ```
 *
 * @module
 */
export {
  type Dag,
  type DagConfig,
  type DataInterval,
  defineDag,
  isDag,
  resolveDag,
  type ResolvedDag,
  type ResolvedTask,
  resolveParams,
  task,
  type TaskContext,
  type TaskDefaults,
  type TaskOptions,
  type TaskSpec,
  type TaskValidationContext,
  TRIGGER_RULE_ALIASES,
  TRIGGER_RULES,
  type TriggerRule,
  type WeightRule,
  type Zone,
} from "./dag.ts";
export { group, type GroupOptions } from "./group.ts";
export { type Duration, formatDuration, parseDuration } from "./duration.ts";
export type {
  Alert,
  AlertCallback,
  AlertEvent,
  AlertHook,
  AlertOptions,
  CallbackNeeds,
  CallbackNeedsOf,
} from "./alerts/alert.ts";
export { declareCallbackNeeds } from "./alerts/alert.ts";
export { DagError, FatalTaskError, SkipTask, UsageError } from "./errors.ts";
export { isPrivacySafe, markPrivacySafe, PrivacySafeError } from "./privacy/privacy_safe.ts";
export { canonicalJson, jobKey, runIdFor, sha256Hex } from "./job_key.ts";
export {
  type Batched,
  batched,
  Dataset,
  type DatasetRef,
  type DatasetWriter,
  isDatasetRef,
  recordBatches,
  records,
  Workspace,
} from "./dataset.ts";
export { type ExecuteOptions, executeRun } from "./run/local.ts";
export type { ExecutorEvent, RunResult, TaskCounts, TaskSummary } from "./run/events.ts";
export { loadDags, type LoadedDags, type LoadError } from "./loader.ts";
export { type TaskLogger } from "./log.ts";
export { intervalAt, intervalsBetween, latestCompleteInterval, nextFireAfter } from "./schedule.ts";
export { openStore } from "./state/open.ts";
export type {
  RunRecord,
  RunState,
  SlaMiss,
  StateStore,
  TaskInstanceRecord,
  TaskState,
} from "./state/store.ts";
