/**
 * A run's task attempts, reconstructed from its audit trail: every attempt begins with a
 * `task:start` entry and ends with the entry of its outcome (`task:success`, `task:retry`,
 * `task:failed`, ...); the counts a task recorded with `ctx.count` (records checked, quarantined,
 * checkpoint verdicts) come with its outcome. The trail is the one record every executor (local
 * or workers) writes, so the history reads the same wherever the task ran.
 *
 * @module
 */
import type { AuditEntry } from "./audit.ts";
import type { History, LogLine } from "./state/history.ts";

/** How an attempt ended (`running` while it has not). */
export type AttemptState =
  | "running"
  | "success"
  | "failed"
  | "up_for_retry"
  | "up_for_reschedule"
  | "skipped"
  | "cancelled";

/** A count a task recorded during an attempt. */
export interface AttemptCount {
  operation: string;
  records: number | null;
  detail: Record<string, unknown> | null;
}

/** One attempt of a task in a run. */
export interface Attempt {
  taskId: string;
  /** 1-based, in the order attempts of this task started in this run. */
  attempt: number;
  /** The attempt number the executor recorded (it restarts when a cleared task runs again). */
  recordedAttempt: number | null;
  state: AttemptState;
  /** True when it recomputed an enclave output a resumed run needed (its success stood). */
  recompute: boolean;
  startedAt: string;
  endedAt: string | null;
  durationMs: number | null;
  /** Records in its output, when it succeeded with an array or dataset. */
  records: number | null;
  counts: AttemptCount[];
  /** Records set aside (`*:quarantined` counts). */
  quarantined: number;
  /** Why records were rejected: `"field: reason"` -> count (value-free). */
  quarantineReasons: Record<string, number>;
  /** The verdict of a privacy checkpoint, when this task is one. */
  checkpoint: CheckpointVerdict | null;
}

/** What a privacy checkpoint decided (counts and names only). */
export interface CheckpointVerdict {
  passed: boolean;
  records: number | null;
  failedRecords: number | null;
  violations: { check: string; field: string | null; count: number }[];
}

const OUTCOMES: Record<string, AttemptState> = {
  "task:success": "success",
  "task:recomputed": "success",
  "task:failed": "failed",
  "task:retry": "up_for_retry",
  "task:up_for_retry": "up_for_retry",
  "task:reschedule": "up_for_reschedule",
  "task:skipped": "skipped",
  "task:cancelled": "cancelled",
  "task:lease_expired": "failed",
};

/** True for counts of records set aside. */
export function isQuarantineCount(operation: string): boolean {
  return operation.endsWith(":quarantined");
}

function checkpointOf(detail: Record<string, unknown> | null, records: number | null) {
  if (!detail) return null;
  const raw = Array.isArray(detail.violations) ? detail.violations : [];
  return {
    passed: detail.passed === true,
    records,
    failedRecords: typeof detail.failedRecords === "number" ? detail.failedRecords : null,
    violations: raw.map((v) => {
      const o = (v ?? {}) as Record<string, unknown>;
      return {
        check: String(o.check ?? ""),
        field: typeof o.field === "string" ? o.field : null,
        count: Number(o.count ?? 0),
      };
    }),
  };
}

function addCount(a: Attempt, e: AuditEntry): void {
  a.counts.push({ operation: e.operation, records: e.recordCount, detail: e.detail });
  if (isQuarantineCount(e.operation)) a.quarantined += e.recordCount ?? 0;
  // A gate's check names its reasons by field; a count of records set aside may carry its own.
  const reasons = e.detail?.invalidByFieldReason ??
    (isQuarantineCount(e.operation) ? e.detail?.reasons : undefined);
  if (reasons && typeof reasons === "object" && e.detail?.rejected !== 0) {
    for (const [k, v] of Object.entries(reasons as Record<string, unknown>)) {
      a.quarantineReasons[k] = (a.quarantineReasons[k] ?? 0) + Number(v ?? 0);
    }
  }
  if (e.operation === "checkpoint:verdict") a.checkpoint = checkpointOf(e.detail, e.recordCount);
}

/**
 * The attempts of each task, from a run's audit entries in chain order.
 *
 * @example
 * ```ts
 * import { attemptsFromAudit } from "./attempts.ts";
 * const base = { correlationId: "d@2026-01-01T00:00:00Z", dagId: "d", taskId: "load",
 *   recordCount: null, keyVersion: null, prevHash: "", hash: "" };
 * const byTask = attemptsFromAudit([
 *   { ...base, seq: 1, at: "2026-01-01T00:00:01.000Z", operation: "task:start",
 *     status: "running", detail: { attempt: 1 } },
 *   { ...base, seq: 2, at: "2026-01-01T00:00:03.000Z", operation: "task:success",
 *     status: "success", detail: { attempt: 1, durationMs: 2000 }, recordCount: 4 },
 * ]);
 * byTask.get("load")![0]!.durationMs; // 2000
 * ```
 */
export function attemptsFromAudit(entries: Iterable<AuditEntry>): Map<string, Attempt[]> {
  const byTask = new Map<string, Attempt[]>();
  const open = new Map<string, Attempt>();
  for (const e of entries) {
    const taskId = e.taskId;
    if (!taskId) continue;
    const list = byTask.get(taskId) ?? [];
    if (e.operation === "task:start" || e.operation === "task:recompute") {
      const attempt: Attempt = {
        taskId,
        attempt: list.length + 1,
        recordedAttempt: typeof e.detail?.attempt === "number" ? e.detail.attempt : null,
        state: "running",
        recompute: e.operation === "task:recompute",
        startedAt: e.at,
        endedAt: null,
        durationMs: null,
        records: null,
        counts: [],
        quarantined: 0,
        quarantineReasons: {},
        checkpoint: null,
      };
      list.push(attempt);
      byTask.set(taskId, list);
      open.set(taskId, attempt);
      continue;
    }
    const current = open.get(taskId) ?? list[list.length - 1];
    if (e.status === "counted") {
      if (current) addCount(current, e);
      continue;
    }
    const outcome = OUTCOMES[e.operation];
    const running = open.get(taskId);
    if (!outcome || !running) continue;
    running.state = outcome;
    running.endedAt = e.at;
    const recorded = e.detail?.durationMs;
    running.durationMs = typeof recorded === "number"
      ? recorded
      : Date.parse(e.at) - Date.parse(running.startedAt);
    if (outcome === "success") running.records = e.recordCount;
    open.delete(taskId);
  }
  return byTask;
}

/** A task's totals over its attempts: the quarantined records of its latest finished attempt. */
export function latestFinished(attempts: readonly Attempt[] | undefined): Attempt | undefined {
  if (!attempts) return undefined;
  for (let i = attempts.length - 1; i >= 0; i--) {
    const a = attempts[i]!;
    if (a.state !== "running") return a;
  }
  return undefined;
}

/** The log lines of one attempt, and which attempt that is. */
export interface AttemptLogs {
  /** The attempt read (null when the audit trail holds none for this task). */
  attempt: Attempt | null;
  /** How many attempts the task has in this run. */
  attempts: number;
  lines: LogLine[];
  /** Pass as `after` for the next page; null on the last page. */
  next: number | null;
}

/**
 * Reads the log lines of attempt `attempt` (default: the latest) of a task in a run: the lines
 * written from that attempt's start until the next attempt's start.
 *
 * @example
 * ```ts ignore
 * import { readAttemptLogs } from "./attempts.ts";
 * const page = await readAttemptLogs(historyOf(store), runId, "load", { limit: 200 });
 * for (const l of page.lines) console.log(l.level, l.message);
 * ```
 */
export async function readAttemptLogs(
  history: History,
  runId: string,
  taskId: string,
  options: { attempt?: number | undefined; after?: number | undefined; limit: number },
): Promise<AttemptLogs> {
  const attempts = attemptsFromAudit(await history.runAudit(runId)).get(taskId) ?? [];
  const page = { limit: options.limit, ...(options.after ? { after: options.after } : {}) };
  if (attempts.length === 0) {
    const read = await history.logs({
      runId,
      taskId,
      ...page,
      ...(options.attempt ? { attempt: options.attempt } : {}),
    });
    return { attempt: null, attempts: 0, ...read };
  }
  const n = options.attempt ?? attempts.length;
  const attempt = attempts[n - 1];
  if (!attempt) {
    throw new RangeError(
      `Task "${taskId}" of run "${runId}" has attempts 1 to ${attempts.length}, not ${n}`,
    );
  }
  // Log lines are bound to the attempt number the engine recorded. A number repeats only when a
  // task runs again after a clear or a resume (a fresh budget), which happens after the earlier
  // run of it ended: the lines of this attempt are those with its number after the previous
  // attempt of the same number ended and before the next one started. Lines of older stores (no
  // recorded number) are found by the attempt's time window instead.
  let window: { from?: Date; to: Date | null; attempt?: number };
  if (attempt.recordedAttempt !== null) {
    const same = attempts.filter((a) => a.recordedAttempt === attempt.recordedAttempt);
    const at = same.indexOf(attempt);
    const before = same[at - 1];
    const after = same[at + 1];
    window = {
      ...(before?.endedAt ? { from: new Date(before.endedAt) } : {}),
      to: after ? new Date(after.startedAt) : null,
      attempt: attempt.recordedAttempt,
    };
  } else {
    const next = attempts[n];
    window = { from: new Date(attempt.startedAt), to: next ? new Date(next.startedAt) : null };
  }
  const read = await history.logs({ runId, taskId, ...window, ...page });
  return { attempt, attempts: attempts.length, ...read };
}
