/**
 * The run-state store: one interface, implemented over PGlite (embedded default) and PostgreSQL.
 *
 * @module
 */
import type { AuditEntry, AuditInput } from "../audit.ts";
import type { Zone } from "../dag.ts";

/** Run states, Airflow's names. */
export type RunState = "queued" | "running" | "success" | "failed";

/** Task instance states, Airflow's names. */
export type TaskState =
  | "scheduled"
  | "queued"
  | "running"
  | "success"
  | "failed"
  | "up_for_retry"
  | "upstream_failed"
  | "skipped";

/** States a task instance ends in. */
export const FINISHED_STATES: ReadonlySet<TaskState> = new Set([
  "success",
  "failed",
  "upstream_failed",
  "skipped",
]);

/** How a run came to be. */
export type RunType = "manual" | "scheduled" | "backfill" | "triggered";

/** A DAG run as stored. */
export interface RunRecord {
  runId: string;
  dagId: string;
  logicalDate: Date;
  intervalStart: Date;
  intervalEnd: Date;
  params: Record<string, unknown>;
  paramsHash: string;
  runType: RunType;
  state: RunState;
  /** `local` (one process runs it) or `workers` (claimed task by task from PostgreSQL). */
  executor: "local" | "workers";
  owner: string | null;
  leaseUntil: Date | null;
  keyVersion: string | null;
  createdAt: Date;
  startedAt: Date | null;
  endedAt: Date | null;
}

/** What creating a run needs. */
export type NewRun =
  & Pick<
    RunRecord,
    | "runId"
    | "dagId"
    | "logicalDate"
    | "intervalStart"
    | "intervalEnd"
    | "params"
    | "paramsHash"
    | "runType"
    | "state"
  >
  & { executor?: "local" | "workers" };

/** Where a task's output lives. */
export type OutputKind = "json" | "dataset" | "enclave";

/** A task instance as stored. */
export interface TaskInstanceRecord {
  jobKey: string;
  runId: string;
  dagId: string;
  taskId: string;
  mapIndex: number;
  zone: Zone;
  pool: string | null;
  /** The claim unit: null for a task claimed alone, else its enclave component. */
  unit: string | null;
  state: TaskState;
  /** Attempts made so far (all executions of this job key). */
  tryNumber: number;
  /** Attempts allowed until the current execution gives up. */
  maxTries: number;
  nextAttemptAt: Date | null;
  owner: string | null;
  leaseUntil: Date | null;
  startedAt: Date | null;
  endedAt: Date | null;
  outputKind: OutputKind | null;
  output: unknown;
  error: string | null;
  queuedAt: Date | null;
  updatedAt: Date;
}

/** What creating a task instance needs. */
export type NewTaskInstance =
  & Pick<
    TaskInstanceRecord,
    "jobKey" | "runId" | "dagId" | "taskId" | "mapIndex" | "zone" | "pool" | "state" | "maxTries"
  >
  & { unit?: string | null };

/** Columns a run update may set. */
export type RunPatch = Partial<
  Pick<RunRecord, "state" | "owner" | "leaseUntil" | "keyVersion" | "startedAt" | "endedAt">
>;

/** Columns a task instance update may set. */
export type TaskPatch = Partial<
  Pick<
    TaskInstanceRecord,
    | "state"
    | "queuedAt"
    | "tryNumber"
    | "maxTries"
    | "nextAttemptAt"
    | "owner"
    | "leaseUntil"
    | "startedAt"
    | "endedAt"
    | "outputKind"
    | "output"
    | "error"
  >
>;

/** A compare-and-set condition. */
export interface TaskExpectation {
  states?: readonly TaskState[];
  owner?: string | null;
}

/** What a purge removed (or would remove, with `dryRun`). */
export interface PurgeResult {
  runs: string[];
  taskInstances: number;
  auditEntries: number;
}

/**
 * The run-state store. Every state transition is one transaction, together with its audit
 * entries.
 */
export interface StateStore extends AsyncDisposable {
  readonly kind: "pglite" | "postgres";
  /** Where the store is, for people: a path, or a URL with the password masked. */
  readonly location: string;
  /** Applies pending migrations; safe to call again. */
  migrate(): Promise<void>;

  /** Creates the run unless (dag, logical date) exists; returns the stored run either way. */
  createRun(run: NewRun, audit?: AuditInput): Promise<{ run: RunRecord; created: boolean }>;
  getRun(runId: string): Promise<RunRecord | undefined>;
  listRuns(filter?: { dagId?: string; states?: readonly RunState[]; limit?: number }): Promise<
    RunRecord[]
  >;
  /** Updates a run when it is in one of `expect.states` (and owned by `expect.owner`). */
  updateRun(
    runId: string,
    patch: RunPatch,
    options?: {
      expect?: { states?: readonly RunState[]; owner?: string | null };
      audit?: AuditInput[];
    },
  ): Promise<boolean>;

  /** Creates task instances that do not exist yet (by job key). */
  ensureTaskInstances(rows: readonly NewTaskInstance[]): Promise<void>;
  listTaskInstances(runId: string): Promise<TaskInstanceRecord[]>;
  getTaskInstance(jobKey: string): Promise<TaskInstanceRecord | undefined>;
  /** Compare-and-set update with its audit entries, in one transaction. */
  updateTaskInstance(
    jobKey: string,
    patch: TaskPatch,
    options?: { expect?: TaskExpectation; audit?: AuditInput[] },
  ): Promise<boolean>;

  appendAudit(entries: readonly AuditInput[]): Promise<void>;
  /** Audit entries in chain order. */
  iterateAudit(filter?: { correlationId?: string; since?: Date }): AsyncIterable<AuditEntry>;
  auditHead(): Promise<{ seq: number; hash: string }>;

  setPaused(dagId: string, paused: boolean, audit?: AuditInput): Promise<void>;
  pausedDags(): Promise<Map<string, boolean>>;

  /** Deletes finished runs (and their task instances) created before `olderThan`. */
  purgeRuns(olderThan: Date, options: { dryRun: boolean; audit: AuditInput }): Promise<PurgeResult>;
  /** Deletes audit entries older than `olderThan`, appending an anchor entry. */
  purgeAudit(olderThan: Date, options: { dryRun: boolean; correlationId: string }): Promise<number>;

  /** Named concurrency limits across all workers. */
  setPool(name: string, slots: number | null): Promise<void>;
  listPools(): Promise<{ name: string; slots: number; running: number }[]>;

  close(): Promise<void>;
}
