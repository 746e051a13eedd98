/**
 * The run-state store: one interface, implemented over PGlite (embedded default) and PostgreSQL.
 *
 * @module
 */
import type { AuditChainHead, AuditEntry, AuditInput } from "../audit.ts";
import type { Zone } from "../dag.ts";
import type { DatasetChunk } from "../dataset.ts";

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
  | "skipped"
  /** A sensor in `reschedule` mode waiting for its next poke, its slot freed. */
  | "up_for_reschedule";

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
  /** The fencing token of the process that owns a local run (see {@link BatchGuard}). */
  leaseToken: string | null;
  keyVersion: string | null;
  createdAt: Date;
  startedAt: Date | null;
  endedAt: Date | null;
  /** Batches of decisions applied so far (see {@link StateStore.applyBatch}). */
  version: number;
  /** Task instances not in a final state. */
  unfinished: number;
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
  /** The fencing token of the worker attempt holding it. */
  leaseToken: string | null;
  /** When a worker may claim it; null: not claimable. */
  readyAt: Date | null;
  /** The run version of the batch that last changed it. */
  version: number;
}

/** What creating a task instance needs. */
export type NewTaskInstance =
  & Pick<
    TaskInstanceRecord,
    "jobKey" | "runId" | "dagId" | "taskId" | "mapIndex" | "zone" | "pool" | "state" | "maxTries"
  >
  & {
    unit?: string | null;
    /** The effective priority a worker's claim orders by (higher first; default 1). */
    priorityWeight?: number;
  };

/** Columns a run update may set. */
export type RunPatch = Partial<
  Pick<
    RunRecord,
    | "state"
    | "owner"
    | "leaseUntil"
    | "leaseToken"
    | "keyVersion"
    | "startedAt"
    | "endedAt"
    | "executor"
  >
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
    | "leaseToken"
    | "readyAt"
  >
>;

/** A compare-and-set condition. */
export interface TaskExpectation {
  states?: readonly TaskState[];
  owner?: string | null;
}

/**
 * One task instance's part of a batch: a compare-and-set on its state (and lease token), and the
 * columns to set.
 */
export interface TaskWrite {
  jobKey: string;
  /** The state it must be in. */
  from: TaskState;
  /** The lease token it must hold (absent: not checked). */
  token?: string | null;
  patch: TaskPatch;
  /** Leased until the database's clock plus this many milliseconds. */
  leaseMs?: number;
  /** Claimable by workers from the database's clock now. */
  readyNow?: boolean;
}

/** The run's part of a batch. */
export interface RunWrite {
  patch: RunPatch;
  /** Leased until the database's clock plus this many milliseconds. */
  leaseMs?: number;
}

/**
 * What must still hold for a batch to be written: decisions made on a stale view, or by a
 * process that lost its lease, are refused whole.
 */
export interface BatchGuard {
  /** The run version the decisions were made on (absent: not checked). */
  version?: number;
  /** The lease token the run must hold (absent: not checked; null: none). */
  runToken?: string | null;
  /** A task instance whose lease the writer must still hold. */
  task?: { jobKey: string; token: string };
}

/** A batch of decided transitions of one run, written in one statement with its audit entries. */
export interface Batch {
  runId: string;
  guard: BatchGuard;
  run?: RunWrite;
  tasks: readonly TaskWrite[];
  /** Task instances this batch moves into a final state, minus those it moves out of one. */
  finished: number;
  audit: AuditInput[];
  /** Something became claimable: wake the workers. */
  notify?: boolean;
  /** A task instance that may hold a pool slot stops running: free its slot. */
  pooled?: boolean;
}

/** What writing a batch did. */
export type BatchResult =
  | { applied: true; version: number; unfinished: number }
  | {
    applied: false;
    /** `fenced`: the writer's lease is gone; `conflict`: the run changed since the view. */
    reason: "conflict" | "fenced";
  };

/** A run and those of its task instances that changed after a version. */
export interface RunSnapshot {
  run: RunRecord;
  tasks: TaskInstanceRecord[];
  /** Whether the asked-for task lease is still held. */
  held?: boolean;
}

/** Task instances one claim took: a task alone, or a whole enclave unit (same token). */
export interface Claim {
  run: RunRecord;
  tasks: TaskInstanceRecord[];
  token: string;
}

/** A leased task instance, as the reaper sees it. */
export type LeasedTask = TaskInstanceRecord & { expired: boolean };

/** The scheduler role, held by one process at a time. */
export interface Leadership {
  held(): Promise<boolean>;
  release(): Promise<void>;
}

/** What a purge removed (or would remove, with `dryRun`). */
export interface PurgeResult {
  runs: string[];
  taskInstances: number;
  auditEntries: number;
}

/** The store's identity, and where the global chain's entries from before per-run chains end. */
export interface AuditStoreInfo {
  storeId: string;
  legacyPos: number;
}

/** The newest audit entry, by row number. */
export interface AuditNewest {
  seq: number;
  hash: string;
  operation: string | null;
  correlationId: string | null;
}

/** The global audit chain's head after {@link StateStore.sealAudit}. */
export interface AuditSealResult {
  global: { pos: number; hash: string; at: string; seq: number };
  sealed: number;
  chains: number;
  maxSeq: number;
}

/** A missed SLA: of a run (`taskId` null) or of one of its tasks. */
export interface SlaMiss {
  runId: string;
  dagId: string;
  taskId: string | null;
  slaMs: number;
  deadline: Date;
  detectedAt: Date;
  /** Who saw it: the process that ended the task or run late, or the scheduler's check. */
  detectedBy: "executor" | "scheduler";
  /** The state of the task (or run) when the miss was detected. */
  state: string;
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
  /** Runs, newest logical date first (or oldest first with `oldest`). */
  listRuns(
    filter?: {
      dagId?: string;
      states?: readonly RunState[];
      runType?: RunType;
      limit?: number;
      oldest?: boolean;
    },
  ): Promise<RunRecord[]>;
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

  // ---- The run lifecycle (core/run/ decides; these apply) -----------------------------------
  /**
   * Creates the run unless it exists, and its missing task instances; returns the run and all
   * its task instances, as one consistent view.
   */
  openRun(
    run: NewRun,
    tasks: readonly NewTaskInstance[],
    audit?: AuditInput,
  ): Promise<{ created: boolean; snapshot: RunSnapshot }>;
  /** The run and its task instances changed after `since` (all of them by default). */
  readRun(
    runId: string,
    options?: { since?: number; held?: { jobKey: string; token: string } },
  ): Promise<RunSnapshot | undefined>;
  /**
   * Writes a batch of decisions whole, or nothing of it when its guard no longer holds. With
   * `claimNext`, a worker also claims its next task in the same statement (when written).
   */
  applyBatch(
    batch: Batch,
    claimNext?: { owner: string; leaseMs: number },
  ): Promise<BatchResult & { claim?: Claim | "contended" }>;
  /**
   * Reads what changed in a run since `since` and writes the batch `make` decides on it, with the
   * run locked in between: no one else can change the run meanwhile, so the batch is never refused
   * as stale (only as fenced). `make` returns undefined to write nothing.
   */
  applyLocked(
    runId: string,
    options: { since: number; held?: { jobKey: string; token: string } },
    make: (snapshot: RunSnapshot) => Batch | undefined,
  ): Promise<{ snapshot: RunSnapshot; result?: BatchResult }>;
  /** Claims the oldest ready task instance (or enclave unit) for `owner`, within pools. */
  claimTask(owner: string, leaseMs: number): Promise<Claim | "contended" | undefined>;
  /** Records the start of a claimed attempt, if its lease is still held. */
  confirmClaim(jobKey: string, token: string, audit: readonly AuditInput[]): Promise<boolean>;
  /** Extends a local run's lease; false once another process holds it. */
  renewRunLease(runId: string, token: string, leaseMs: number): Promise<boolean>;
  /** Extends task leases still held and not expired; returns the tokens renewed. */
  renewTaskLeases(owner: string, tokens: readonly string[], leaseMs: number): Promise<Set<string>>;
  /** Leased task instances (held by worker attempts), with whether the lease has expired. */
  leasedTasks(): Promise<LeasedTask[]>;
  /**
   * Worker runs whose task instances are all final but which did not end (the worker that made
   * the last one final stopped first), left untouched for `idleMs`.
   */
  strandedRuns(idleMs: number): Promise<{ runId: string; dagId: string }[]>;
  /** Calls `onReady` when task instances become claimable; returns how to stop listening. */
  onReady(onReady: () => void): Promise<() => Promise<void>>;
  /** Tries for the scheduler role: one holder per database. */
  leadership(): Promise<Leadership>;

  appendAudit(entries: readonly AuditInput[]): Promise<void>;
  /**
   * Transitions owing an alert (`detail.alerts`) between two times, after an entry (its time and
   * row number), oldest first, at most `limit`.
   */
  owedAlerts(
    since: Date,
    until: Date,
    after: { at: string; seq: number } | null,
    limit: number,
  ): Promise<AuditEntry[]>;
  /** The receipts (`alert:sent`) and resends (`alert:resend`) of these runs' alerts. */
  alertReceipts(runIds: readonly string[]): Promise<AuditEntry[]>;
  /** Audit entries in append order (by row number). */
  iterateAudit(filter?: { correlationId?: string; since?: Date }): AsyncIterable<AuditEntry>;
  /** Audit entries by chain, then position; with `chain`, that chain's from `fromPos` on. */
  iterateAuditChains(options?: { chain?: string; fromPos?: number }): AsyncIterable<AuditEntry>;
  /** The newest audit entry (`seq` 0 when there is none). */
  auditHead(): Promise<AuditNewest>;
  /** The head of every audit chain. */
  auditHeads(): Promise<AuditChainHead[]>;
  /** The store's identity, which signed audit checkpoints name. */
  auditStore(): Promise<AuditStoreInfo>;
  /**
   * Seals the newest entries of run chains into the global audit chain; returns the global
   * chain's head for a checkpoint to sign (`keyId` names the signing key in the seal).
   */
  sealAudit(options?: { keyId?: string }): Promise<AuditSealResult>;

  setPaused(dagId: string, paused: boolean, audit?: AuditInput): Promise<void>;
  pausedDags(): Promise<Map<string, boolean>>;

  /** Deletes finished runs (and their task instances) created before `olderThan`. */
  purgeRuns(olderThan: Date, options: { dryRun: boolean; audit: AuditInput }): Promise<PurgeResult>;
  /** Deletes audit entries older than `olderThan`, appending an anchor entry. */
  purgeAudit(olderThan: Date, options: { dryRun: boolean; correlationId: string }): Promise<number>;

  /**
   * Records an SLA miss unless it is recorded already (one per run, or per task of a run), with
   * its audit entry in the same transaction. True when this call recorded it.
   */
  recordSlaMiss(miss: SlaMiss, audit: AuditInput): Promise<boolean>;
  /** The SLA misses recorded for these runs. */
  listSlaMisses(runIds: readonly string[]): Promise<SlaMiss[]>;
  /**
   * Shared-zone datasets kept in the store (`CARREL_DATASETS=database`): one chunk of JSON Lines,
   * replacing a chunk of the same path and number. Never enclave data.
   */
  writeDatasetChunk(chunk: DatasetChunk): Promise<void>;
  /** The chunks of a dataset from number `fromSeq` on, at most `limit`, in order. */
  readDatasetChunks(path: string, fromSeq: number, limit: number): Promise<DatasetChunk[]>;
  /** Deletes a dataset's chunks (a new attempt rewrites it). */
  removeDataset(path: string): Promise<void>;

  /** Named concurrency limits across all workers. */
  setPool(name: string, slots: number | null): Promise<void>;
  listPools(): Promise<{ name: string; slots: number; running: number }[]>;

  close(): Promise<void>;
}
