/**
 * What a run tells the world as it goes (progress displays, tests, the console) and what it
 * returns. The decider makes the events (`core/run/decide.ts`); the drivers emit them once the
 * transitions they belong to are recorded.
 *
 * @module
 */
import type { Zone } from "../dag.ts";
import { formatDuration } from "../duration.ts";
import { runLogger } from "../log.ts";
import type { RunState, TaskState } from "../state/store.ts";

/** Counts a task recorded with `ctx.count`, by operation (for example `quarantined: 3`). */
export type TaskCounts = Record<string, number>;

/** Typed executor events, for progress displays and tests. */
export type ExecutorEvent =
  | {
    type: "run:start";
    runId: string;
    dagId: string;
    logicalDate: Date;
    resumed: boolean;
    tasks: number;
    alreadyDone: number;
  }
  | { type: "task:start"; runId: string; taskId: string; attempt: number; maxAttempts: number }
  | {
    type: "task:success";
    runId: string;
    taskId: string;
    attempt: number;
    durationMs: number;
    records?: number;
    counts?: TaskCounts;
  }
  | {
    type: "task:retry";
    runId: string;
    taskId: string;
    attempt: number;
    delayMs: number;
    error: string;
    counts?: TaskCounts;
  }
  | {
    type: "task:failed";
    runId: string;
    taskId: string;
    attempt: number;
    durationMs: number;
    error: string;
    counts?: TaskCounts;
  }
  | { type: "task:skipped"; runId: string; taskId: string; reason: string; counts?: TaskCounts }
  | { type: "task:upstream_failed"; runId: string; taskId: string }
  /** A sensor's check found nothing (reschedule mode): its slot is free until the next one. */
  | { type: "task:reschedule"; runId: string; taskId: string; poke: number; delayMs: number }
  | { type: "task:done_before"; runId: string; taskId: string }
  | { type: "run:end"; runId: string; state: RunState; durationMs: number };

/** The outcome of one task in a run. */
export interface TaskSummary {
  taskId: string;
  state: TaskState;
  attempts: number;
  jobKey: string;
  zone: Zone;
  /** `shared` when the output may leave the enclave (shared tasks and checkpoints). */
  outputZone: Zone;
  startedAt: string | null;
  endedAt: string | null;
  durationMs: number | null;
  error: string | null;
  /** Executed in this invocation (false when it had succeeded before). */
  executed: boolean;
}

/** What `executeRun` returns. */
export interface RunResult {
  runId: string;
  dagId: string;
  logicalDate: string;
  state: RunState;
  tasks: TaskSummary[];
  /** Outputs of this invocation by task id (enclave outputs included, in memory only). */
  outputs: Map<string, unknown>;
}

/**
 * Writes an event to the run's log (LogTape): one line per run start and end, task start,
 * success, retry and failure. Messages name tasks and counts, never values.
 *
 * @example
 * ```ts
 * import { logEvent } from "./events.ts";
 * logEvent({ type: "task:upstream_failed", runId: "d@2026-01-01T00:00:00Z", taskId: "load" });
 * ```
 */
export function logEvent(e: ExecutorEvent): void {
  const dagId = e.runId.slice(0, e.runId.indexOf("@"));
  switch (e.type) {
    case "run:start":
      runLogger({ runId: e.runId, dagId }).info(
        "Run {runId} started: {tasks} tasks, {done} done before",
        { runId: e.runId, tasks: e.tasks, done: e.alreadyDone },
      );
      break;
    case "task:start":
      runLogger({ runId: e.runId, dagId, taskId: e.taskId, attempt: e.attempt }).info(
        "Task {taskId} started (attempt {attempt} of {maxAttempts})",
        { taskId: e.taskId, attempt: e.attempt, maxAttempts: e.maxAttempts },
      );
      break;
    case "task:success":
      runLogger({ runId: e.runId, dagId, taskId: e.taskId, attempt: e.attempt }).info(
        "Task {taskId} succeeded in {duration}",
        { taskId: e.taskId, duration: formatDuration(e.durationMs) },
      );
      break;
    case "task:retry":
      runLogger({ runId: e.runId, dagId, taskId: e.taskId, attempt: e.attempt }).warn(
        "Task {taskId} failed, retrying in {delay}: {error}",
        { taskId: e.taskId, delay: formatDuration(e.delayMs), error: e.error },
      );
      break;
    case "task:failed":
      runLogger({ runId: e.runId, dagId, taskId: e.taskId, attempt: e.attempt }).error(
        "Task {taskId} failed: {error}",
        { taskId: e.taskId, error: e.error },
      );
      break;
    case "run:end":
      runLogger({ runId: e.runId, dagId }).info("Run {runId} ended: {state}", {
        runId: e.runId,
        state: e.state,
      });
      break;
    default:
      break;
  }
}
