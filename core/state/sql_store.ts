/**
 * The state store written once in SQL, over either PGlite or PostgreSQL.
 *
 * @module
 */
import type { AuditChainHead, AuditEntry, AuditInput } from "../audit.ts";
import type { DatasetChunk } from "../dataset.ts";
import {
  alertReceipts,
  appendAuditTx,
  APPENDED_COLUMNS,
  type AppendRow,
  auditHead,
  auditHeads,
  auditPayload,
  auditStore,
  collectAppended,
  iterateAudit,
  iterateAuditChains,
  logAudit,
  owedAlerts,
  purgeAudit,
  sealAudit,
  type SealResult,
} from "./audit_log.ts";
import { PostgresClient, type SqlClient } from "./sql_client.ts";
import { migrate } from "./migrate.ts";
import { EmbeddedClient } from "./embedded_client.ts";
import { fileLeadership } from "./embedded_leadership.ts";
import {
  APPLY_BATCH,
  APPLY_BATCH_AND_CLAIM,
  CLAIM_TASK,
  CONFIRM_CLAIM,
  FINISHED,
  LEASED_TASKS,
  QUEUE_CHANNEL,
  READ_RUN,
  RENEW_RUN_LEASE,
  RENEW_TASK_LEASES,
  runWriteJson,
  STRANDED_RUNS,
  taskWriteJson,
} from "./queue.ts";

/** Maps an `audit_log` row (it lives with the rest of the audit SQL). */
export { toAudit } from "./audit_log.ts";
import {
  type AuditNewest,
  type AuditStoreInfo,
  type Batch,
  type BatchResult,
  type Claim,
  FINISHED_STATES,
  type Leadership,
  type LeasedTask,
  type NewRun,
  type NewTaskInstance,
  type PurgeResult,
  type RunPatch,
  type RunRecord,
  type RunSnapshot,
  type RunState,
  type RunType,
  type SlaMiss,
  type StateStore,
  type TaskExpectation,
  type TaskInstanceRecord,
  type TaskPatch,
} from "./store.ts";

type Row = Record<string, unknown>;

const RUN_COLUMNS: Record<keyof RunPatch, string> = {
  state: "state",
  owner: "owner",
  leaseUntil: "lease_until",
  leaseToken: "lease_token",
  keyVersion: "key_version",
  startedAt: "started_at",
  endedAt: "ended_at",
  executor: "executor",
};

const TASK_COLUMNS: Record<keyof TaskPatch, string> = {
  state: "state",
  tryNumber: "try_number",
  maxTries: "max_tries",
  nextAttemptAt: "next_attempt_at",
  queuedAt: "queued_at",
  owner: "owner",
  leaseUntil: "lease_until",
  startedAt: "started_at",
  endedAt: "ended_at",
  outputKind: "output_kind",
  output: "output",
  error: "error",
  leaseToken: "lease_token",
  readyAt: "ready_at",
};

const date = (v: unknown): Date | null =>
  v === null || v === undefined ? null : v instanceof Date ? v : new Date(String(v));
/**
 * Both drivers parse jsonb already. Values are written as JSON text through `$n::text::jsonb`:
 * postgres.js would JSON-encode a string sent for a `jsonb` parameter a second time.
 */
const json = (v: unknown): unknown => v ?? null;

/** Maps a `dag_runs` row. */
export function toRun(r: Row): RunRecord {
  return {
    runId: r.run_id as string,
    dagId: r.dag_id as string,
    logicalDate: date(r.logical_date)!,
    intervalStart: date(r.interval_start)!,
    intervalEnd: date(r.interval_end)!,
    params: (json(r.params) ?? {}) as Record<string, unknown>,
    paramsHash: r.params_hash as string,
    runType: r.run_type as RunRecord["runType"],
    state: r.state as RunState,
    executor: (r.executor as RunRecord["executor"] | undefined) ?? "local",
    owner: (r.owner as string | null) ?? null,
    leaseUntil: date(r.lease_until),
    leaseToken: (r.lease_token as string | null) ?? null,
    keyVersion: (r.key_version as string | null) ?? null,
    createdAt: date(r.created_at)!,
    startedAt: date(r.started_at),
    endedAt: date(r.ended_at),
    version: Number(r.version ?? 0),
    unfinished: Number(r.unfinished ?? 0),
  };
}

/** Maps a `task_instances` row. */
export function toTask(r: Row): TaskInstanceRecord {
  return {
    jobKey: r.job_key as string,
    runId: r.run_id as string,
    dagId: r.dag_id as string,
    taskId: r.task_id as string,
    mapIndex: Number(r.map_index),
    zone: r.zone as TaskInstanceRecord["zone"],
    pool: (r.pool as string | null) ?? null,
    unit: (r.unit as string | null) ?? null,
    state: r.state as TaskInstanceRecord["state"],
    tryNumber: Number(r.try_number),
    maxTries: Number(r.max_tries),
    nextAttemptAt: date(r.next_attempt_at),
    owner: (r.owner as string | null) ?? null,
    leaseUntil: date(r.lease_until),
    startedAt: date(r.started_at),
    endedAt: date(r.ended_at),
    outputKind: (r.output_kind as TaskInstanceRecord["outputKind"]) ?? null,
    output: json(r.output),
    error: (r.error as string | null) ?? null,
    queuedAt: date(r.queued_at),
    updatedAt: date(r.updated_at)!,
    leaseToken: (r.lease_token as string | null) ?? null,
    readyAt: date(r.ready_at),
    version: Number(r.version ?? 0),
  };
}

function encode(column: string, value: unknown): unknown {
  if (column === "output") {
    return value === undefined || value === null ? null : JSON.stringify(value);
  }
  return value ?? null;
}

function setClause(
  patch: Record<string, unknown>,
  columns: Record<string, string>,
  params: unknown[],
): string {
  const sets: string[] = [];
  for (const [key, value] of Object.entries(patch)) {
    if (value === undefined) continue;
    const column = columns[key];
    if (!column) throw new Error(`Cannot update unknown column "${key}"`);
    params.push(encode(column, value));
    sets.push(
      column === "output"
        ? `${column} = $${params.length}::text::jsonb`
        : `${column} = $${params.length}`,
    );
  }
  sets.push("updated_at = now()");
  return sets.join(", ");
}

/** The compare-and-set part of an update's WHERE clause: expected states and owner. */
function expectClause(
  expect: { states?: readonly string[]; owner?: string | null } | undefined,
  params: unknown[],
): string {
  let clause = "";
  if (expect?.states) {
    params.push([...expect.states]);
    clause += ` AND state = ANY($${params.length}::text[])`;
  }
  if (expect && "owner" in expect) {
    if (expect.owner === null) clause += " AND owner IS NULL";
    else {
      params.push(expect.owner);
      clause += ` AND owner = $${params.length}`;
    }
  }
  return clause;
}

/** Inserts a run unless (dag, logical date) exists; true when it was inserted. */
async function insertRun(tx: SqlClient, run: NewRun): Promise<boolean> {
  const inserted = await tx.query<Row>(
    `INSERT INTO dag_runs (run_id, dag_id, logical_date, interval_start, interval_end, params,
       params_hash, run_type, state, executor)
     VALUES ($1, $2, $3, $4, $5, $6::text::jsonb, $7, $8, $9, $10)
     ON CONFLICT DO NOTHING RETURNING run_id`,
    [
      run.runId,
      run.dagId,
      run.logicalDate,
      run.intervalStart,
      run.intervalEnd,
      JSON.stringify(run.params),
      run.paramsHash,
      run.runType,
      run.state,
      run.executor ?? "local",
    ],
  );
  return inserted.length > 0;
}

/**
 * Inserts the task instances that do not exist yet; the runs that got new ones count them as
 * unfinished, and the new rows carry the runs' next version (so readers of changes see them).
 */
async function insertTasks(tx: SqlClient, rows: readonly NewTaskInstance[]): Promise<void> {
  if (rows.length === 0) return;
  // The runs first, locked: the rows below then carry exactly the version their run moves to.
  await tx.query("SELECT 1 FROM dag_runs WHERE run_id = ANY($1::text[]) FOR UPDATE", [
    [...new Set(rows.map((r) => r.runId))],
  ]);
  const chunk = 500;
  for (let i = 0; i < rows.length; i += chunk) {
    const part = rows.slice(i, i + chunk);
    await tx.query(
      `WITH ins AS (
         INSERT INTO task_instances (job_key, run_id, dag_id, task_id, map_index, zone, pool,
           state, max_tries, unit, priority_weight, version)
         SELECT u.*, (SELECT d.version + 1 FROM dag_runs d WHERE d.run_id = u.run_id)
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[],
           $6::text[], $7::text[], $8::text[], $9::int[], $10::text[], $12::int[])
           AS u(job_key, run_id, dag_id, task_id, map_index, zone, pool, state, max_tries, unit,
             priority_weight)
         ON CONFLICT DO NOTHING RETURNING run_id, state
       )
       UPDATE dag_runs d SET version = d.version + 1,
         unfinished = d.unfinished + n.unfinished, updated_at = now()
       FROM (SELECT run_id, count(*) FILTER (WHERE NOT state = ANY($11::text[]))::int AS unfinished
             FROM ins GROUP BY run_id) n
       WHERE d.run_id = n.run_id`,
      [
        part.map((r) => r.jobKey),
        part.map((r) => r.runId),
        part.map((r) => r.dagId),
        part.map((r) => r.taskId),
        part.map((r) => r.mapIndex),
        part.map((r) => r.zone),
        part.map((r) => r.pool),
        part.map((r) => r.state),
        part.map((r) => r.maxTries),
        part.map((r) => r.unit ?? null),
        FINISHED,
        part.map((r) => r.priorityWeight ?? 1),
      ],
    );
  }
}

/** A run and its task instances changed after `since`, in one statement (one snapshot). */
async function readRun(
  client: SqlClient,
  runId: string,
  since: number,
  held: { jobKey: string; token: string } | undefined,
): Promise<RunSnapshot | undefined> {
  const [row] = await client.query<Row & { tasks: Row[]; held: boolean | null }>(READ_RUN, [
    runId,
    since,
    held?.jobKey ?? null,
    held?.token ?? null,
  ]);
  if (!row) return undefined;
  return {
    run: toRun(row),
    tasks: (row.tasks ?? []).map(toTask),
    ...(row.held === null || row.held === undefined ? {} : { held: row.held }),
  };
}

/** Writes a batch (and, with `claimNext`, claims the writer's next task) on a connection. */
async function applyBatchOn(
  client: SqlClient,
  batch: Batch,
  claimNext?: { owner: string; leaseMs: number },
): Promise<BatchResult & { claim?: Claim | "contended" }> {
  const { guard } = batch;
  const { json, drafts } = auditPayload(batch.audit);
  const params: unknown[] = [
    batch.runId,
    guard.version ?? null,
    guard.runToken === undefined ? 0 : guard.runToken === null ? 1 : 2,
    guard.runToken ?? null,
    guard.task?.jobKey ?? null,
    guard.task?.token ?? null,
    JSON.stringify(runWriteJson(batch.run)),
    JSON.stringify(batch.tasks.map(taskWriteJson)),
    batch.finished,
    json,
    batch.notify ?? false,
    batch.pooled ?? false,
    batch.tasks.map((t) => t.jobKey),
  ];
  const token = crypto.randomUUID();
  if (claimNext) params.push(claimNext.owner, token, claimNext.leaseMs, new Date());
  const rows = await client.query<
    AppendRow & {
      version: string | null;
      unfinished: number | null;
      held: boolean | null;
      candidates?: number | null;
      tasks?: Row[] | null;
      run?: Row | null;
    }
  >(claimNext ? APPLY_BATCH_AND_CLAIM : APPLY_BATCH, params);
  const first = rows[0];
  if (!first || first.version === null) {
    return { applied: false, reason: first?.held === false ? "fenced" : "conflict" };
  }
  const appended: AuditEntry[] = [];
  collectAppended(drafts, rows, appended);
  logAudit(appended);
  const result = {
    applied: true as const,
    version: Number(first.version),
    unfinished: Number(first.unfinished),
  };
  if (!claimNext) return result;
  if (first.tasks?.length && first.run) {
    return { ...result, claim: { run: toRun(first.run), tasks: first.tasks.map(toTask), token } };
  }
  return Number(first.candidates ?? 0) > 0 ? { ...result, claim: "contended" } : result;
}

/** The SQL implementation of `StateStore`. */
export class SqlStateStore implements StateStore {
  constructor(readonly client: SqlClient, readonly location: string) {}

  get kind(): "pglite" | "postgres" {
    return this.client.kind;
  }

  /** A transaction whose audit entries go to the log once it has committed. */
  async #tx<T>(fn: (tx: SqlClient, logged: AuditEntry[]) => Promise<T>): Promise<T> {
    const logged: AuditEntry[] = [];
    const result = await this.client.transaction((tx) => fn(tx, logged));
    logAudit(logged);
    return result;
  }

  migrate(): Promise<void> {
    return migrate(this.client);
  }

  async createRun(run: NewRun, audit?: AuditInput): Promise<{ run: RunRecord; created: boolean }> {
    return await this.#tx(async (tx, logged) => {
      const created = await insertRun(tx, run);
      if (created && audit) await appendAuditTx(tx, [audit], logged);
      const [row] = await tx.query<Row>(
        "SELECT * FROM dag_runs WHERE dag_id = $1 AND logical_date = $2",
        [run.dagId, run.logicalDate],
      );
      return { run: toRun(row!), created };
    });
  }

  async getRun(runId: string): Promise<RunRecord | undefined> {
    const rows = await this.client.query<Row>("SELECT * FROM dag_runs WHERE run_id = $1", [runId]);
    return rows[0] ? toRun(rows[0]) : undefined;
  }

  async listRuns(
    filter: {
      dagId?: string;
      states?: readonly RunState[];
      runType?: RunType;
      limit?: number;
      oldest?: boolean;
    } = {},
  ): Promise<RunRecord[]> {
    const where: string[] = [];
    const params: unknown[] = [];
    if (filter.dagId) {
      params.push(filter.dagId);
      where.push(`dag_id = $${params.length}`);
    }
    if (filter.states) {
      params.push([...filter.states]);
      where.push(`state = ANY($${params.length}::text[])`);
    }
    if (filter.runType) {
      params.push(filter.runType);
      where.push(`run_type = $${params.length}`);
    }
    params.push(filter.limit ?? 1000);
    const order = filter.oldest ? "ASC" : "DESC";
    const rows = await this.client.query<Row>(
      `SELECT * FROM dag_runs ${where.length ? `WHERE ${where.join(" AND ")}` : ""}
       ORDER BY logical_date ${order}, dag_id LIMIT $${params.length}`,
      params,
    );
    return rows.map(toRun);
  }

  async updateRun(
    runId: string,
    patch: RunPatch,
    options: {
      expect?: { states?: readonly RunState[]; owner?: string | null };
      audit?: AuditInput[];
    } = {},
  ): Promise<boolean> {
    return await this.#tx(async (tx, logged) => {
      const params: unknown[] = [];
      const sets = setClause(patch, RUN_COLUMNS, params);
      params.push(runId);
      const where = `run_id = $${params.length}${expectClause(options.expect, params)}`;
      const rows = await tx.query(
        `UPDATE dag_runs SET ${sets}, version = version + 1 WHERE ${where} RETURNING run_id`,
        params,
      );
      if (rows.length === 0) return false;
      await appendAuditTx(tx, options.audit ?? [], logged);
      return true;
    });
  }

  async ensureTaskInstances(rows: readonly NewTaskInstance[]): Promise<void> {
    if (rows.length === 0) return;
    await this.client.transaction((tx) => insertTasks(tx, rows));
  }

  async listTaskInstances(runId: string): Promise<TaskInstanceRecord[]> {
    const rows = await this.client.query<Row>(
      "SELECT * FROM task_instances WHERE run_id = $1 ORDER BY task_id, map_index",
      [runId],
    );
    return rows.map(toTask);
  }

  async getTaskInstance(jobKey: string): Promise<TaskInstanceRecord | undefined> {
    const rows = await this.client.query<Row>("SELECT * FROM task_instances WHERE job_key = $1", [
      jobKey,
    ]);
    return rows[0] ? toTask(rows[0]) : undefined;
  }

  async updateTaskInstance(
    jobKey: string,
    patch: TaskPatch,
    options: { expect?: TaskExpectation; audit?: AuditInput[] } = {},
  ): Promise<boolean> {
    // One statement: the compare-and-set update, the run's version and count of unfinished task
    // instances, and (only when it matched) the audit entries: one round trip, atomic.
    const params: unknown[] = [];
    const sets = setClause(patch, TASK_COLUMNS, params);
    params.push(jobKey);
    const where = `job_key = $${params.length}${expectClause(options.expect, params)}`;
    params.push(FINISHED);
    const finals = params.length;
    params.push(patch.state === undefined ? null : FINISHED_STATES.has(patch.state));
    const toFinal = params.length;
    const { json, drafts } = auditPayload(options.audit ?? []);
    params.push(json);
    const rows = await this.client.query<AppendRow & { job_key: string }>(
      `WITH old AS (SELECT job_key, run_id, state FROM task_instances WHERE ${where} FOR UPDATE),
       r AS (
         UPDATE dag_runs d SET version = d.version + 1,
           unfinished = d.unfinished + CASE WHEN $${toFinal}::boolean IS NULL THEN 0 ELSE
             (CASE WHEN old.state = ANY($${finals}::text[]) THEN 1 ELSE 0 END)
             - (CASE WHEN $${toFinal}::boolean THEN 1 ELSE 0 END) END
         FROM old WHERE d.run_id = old.run_id RETURNING d.version
       ),
       t AS (
         UPDATE task_instances ti SET ${sets}, version = r.version
         FROM old, r WHERE ti.job_key = old.job_key RETURNING ti.job_key
       )
       SELECT t.job_key, ${APPENDED_COLUMNS}
       FROM t LEFT JOIN LATERAL carrel_audit_append(
         CASE WHEN t.job_key IS NOT NULL THEN $${params.length}::text::jsonb END
       ) a ON true
       ORDER BY a.out_seq`,
      params,
    );
    if (rows.length === 0) return false;
    const appended: AuditEntry[] = [];
    collectAppended(drafts, rows, appended);
    logAudit(appended);
    return true;
  }

  // ---- The run lifecycle: the statements of core/state/queue.ts ------------------------------

  async openRun(
    run: NewRun,
    tasks: readonly NewTaskInstance[],
    audit?: AuditInput,
  ): Promise<{ created: boolean; snapshot: RunSnapshot }> {
    return await this.#tx(async (tx, logged) => {
      const created = await insertRun(tx, run);
      if (created && audit) await appendAuditTx(tx, [audit], logged);
      await insertTasks(tx, tasks);
      const snapshot = await readRun(tx, run.runId, -1, undefined);
      if (!snapshot) throw new Error(`Cannot open run "${run.runId}": it was deleted meanwhile`);
      return { created, snapshot };
    });
  }

  readRun(
    runId: string,
    options: { since?: number; held?: { jobKey: string; token: string } } = {},
  ): Promise<RunSnapshot | undefined> {
    return readRun(this.client, runId, options.since ?? -1, options.held);
  }

  applyBatch(
    batch: Batch,
    claimNext?: { owner: string; leaseMs: number },
  ): Promise<BatchResult & { claim?: Claim | "contended" }> {
    return applyBatchOn(this.client, batch, claimNext);
  }

  async applyLocked(
    runId: string,
    options: { since: number; held?: { jobKey: string; token: string } },
    make: (snapshot: RunSnapshot) => Batch | undefined,
  ): Promise<{ snapshot: RunSnapshot; result?: BatchResult }> {
    return await this.client.transaction(async (tx) => {
      await tx.query("SELECT 1 FROM dag_runs WHERE run_id = $1 FOR UPDATE", [runId]);
      const snapshot = await readRun(tx, runId, options.since, options.held);
      if (!snapshot) throw new Error(`Cannot read run "${runId}": it was deleted meanwhile`);
      const batch = make(snapshot);
      if (!batch) return { snapshot };
      return { snapshot, result: await applyBatchOn(tx, batch) };
    });
  }

  async claimTask(owner: string, leaseMs: number): Promise<Claim | "contended" | undefined> {
    const token = crypto.randomUUID();
    const [row] = await this.client.query<{ candidates: number; tasks: Row[] | null; run: Row }>(
      CLAIM_TASK,
      [owner, token, leaseMs, new Date()],
    );
    if (!row?.tasks?.length) return Number(row?.candidates ?? 0) > 0 ? "contended" : undefined;
    return { run: toRun(row.run), tasks: row.tasks.map(toTask), token };
  }

  async confirmClaim(
    jobKey: string,
    token: string,
    audit: readonly AuditInput[],
  ): Promise<boolean> {
    const { json, drafts } = auditPayload(audit);
    const rows = await this.client.query<AppendRow & { held: boolean }>(CONFIRM_CLAIM, [
      jobKey,
      token,
      json,
    ]);
    if (!rows[0]?.held) return false;
    const appended: AuditEntry[] = [];
    collectAppended(drafts, rows, appended);
    logAudit(appended);
    return true;
  }

  async renewRunLease(runId: string, token: string, leaseMs: number): Promise<boolean> {
    return (await this.client.query(RENEW_RUN_LEASE, [runId, token, leaseMs])).length > 0;
  }

  async renewTaskLeases(
    owner: string,
    tokens: readonly string[],
    leaseMs: number,
  ): Promise<Set<string>> {
    if (tokens.length === 0) return new Set();
    const rows = await this.client.query<{ lease_token: string }>(RENEW_TASK_LEASES, [
      [...tokens],
      owner,
      leaseMs,
    ]);
    return new Set(rows.map((r) => r.lease_token));
  }

  async leasedTasks(): Promise<LeasedTask[]> {
    const rows = await this.client.query<Row>(LEASED_TASKS);
    return rows.map((r) => ({ ...toTask(r), expired: r.expired === true }));
  }

  async strandedRuns(idleMs: number): Promise<{ runId: string; dagId: string }[]> {
    const rows = await this.client.query<{ run_id: string; dag_id: string }>(STRANDED_RUNS, [
      idleMs,
    ]);
    return rows.map((r) => ({ runId: r.run_id, dagId: r.dag_id }));
  }

  async onReady(onReady: () => void): Promise<() => Promise<void>> {
    return await this.client.listen(QUEUE_CHANNEL, () => onReady());
  }

  async leadership(): Promise<Leadership> {
    if (this.client instanceof EmbeddedClient) return fileLeadership(this.client.paths.dataDir);
    if (!(this.client instanceof PostgresClient)) {
      // A private in-memory or single-process database: no other scheduler can share it.
      return { held: () => Promise.resolve(true), release: () => Promise.resolve() };
    }
    // A session-level advisory lock on a dedicated connection: held until released or the
    // connection ends (a crashed scheduler's lock goes with it).
    const conn = await this.client.reserve();
    let holding = false;
    return {
      held: async () => {
        if (holding) return true;
        const [row] = await conn.unsafe<{ ok: boolean }[]>(
          "SELECT pg_try_advisory_lock(7368427) AS ok",
        );
        holding = row?.ok === true;
        return holding;
      },
      release: async () => {
        if (holding) {
          await conn.unsafe("SELECT pg_advisory_unlock(7368427) AS ok").catch(() => []);
        }
        conn.release();
      },
    };
  }

  async appendAudit(entries: readonly AuditInput[]): Promise<void> {
    await this.#tx((tx, logged) => appendAuditTx(tx, entries, logged));
  }

  owedAlerts(
    since: Date,
    until: Date,
    after: { at: string; seq: number } | null,
    limit: number,
  ): Promise<AuditEntry[]> {
    return owedAlerts(this.client, since, until, after, limit);
  }

  alertReceipts(runIds: readonly string[]): Promise<AuditEntry[]> {
    return alertReceipts(this.client, runIds);
  }

  iterateAudit(filter: { correlationId?: string; since?: Date } = {}): AsyncIterable<AuditEntry> {
    return iterateAudit(this.client, filter);
  }

  iterateAuditChains(
    options: { chain?: string; fromPos?: number } = {},
  ): AsyncIterable<AuditEntry> {
    return iterateAuditChains(this.client, options);
  }

  auditHead(): Promise<AuditNewest> {
    return auditHead(this.client);
  }

  auditHeads(): Promise<AuditChainHead[]> {
    return auditHeads(this.client);
  }

  auditStore(): Promise<AuditStoreInfo> {
    return auditStore(this.client);
  }

  sealAudit(options: { keyId?: string } = {}): Promise<SealResult> {
    return this.#tx((tx, logged) => sealAudit(tx, options, logged));
  }

  async setPaused(dagId: string, paused: boolean, audit?: AuditInput): Promise<void> {
    await this.#tx(async (tx, logged) => {
      await tx.query(
        `INSERT INTO dag_flags (dag_id, paused) VALUES ($1, $2)
         ON CONFLICT (dag_id) DO UPDATE SET paused = EXCLUDED.paused, updated_at = now()`,
        [dagId, paused],
      );
      if (audit) await appendAuditTx(tx, [audit], logged);
    });
  }

  async pausedDags(): Promise<Map<string, boolean>> {
    const rows = await this.client.query<{ dag_id: string; paused: boolean }>(
      "SELECT dag_id, paused FROM dag_flags",
    );
    return new Map(rows.map((r) => [r.dag_id, r.paused]));
  }

  async purgeRuns(
    olderThan: Date,
    options: { dryRun: boolean; audit: AuditInput },
  ): Promise<PurgeResult> {
    return await this.#tx(async (tx, logged) => {
      const runs = await tx.query<{ run_id: string; tis: string }>(
        `SELECT r.run_id, (SELECT count(*) FROM task_instances t WHERE t.run_id = r.run_id)::text AS tis
         FROM dag_runs r
         WHERE r.created_at < $1 AND r.state IN ('success', 'failed')
           AND coalesce(r.lease_until, '-infinity') < now()
         ORDER BY r.created_at`,
        [olderThan],
      );
      const result: PurgeResult = {
        runs: runs.map((r) => r.run_id),
        taskInstances: runs.reduce((n, r) => n + Number(r.tis), 0),
        auditEntries: 0,
      };
      if (!options.dryRun && runs.length > 0) {
        await tx.query("DELETE FROM dag_runs WHERE run_id = ANY($1::text[])", [result.runs]);
      }
      if (!options.dryRun) {
        await appendAuditTx(tx, [{
          ...options.audit,
          recordCount: result.runs.length,
          detail: { ...(options.audit.detail ?? {}), taskInstances: result.taskInstances },
        }], logged);
      }
      return result;
    });
  }

  purgeAudit(
    olderThan: Date,
    options: { dryRun: boolean; correlationId: string },
  ): Promise<number> {
    return this.#tx((tx, logged) => purgeAudit(tx, olderThan, options, logged));
  }

  async recordSlaMiss(miss: SlaMiss, audit: AuditInput): Promise<boolean> {
    return await this.#tx(async (tx, logged) => {
      const rows = await tx.query<{ run_id: string }>(
        `INSERT INTO sla_misses
           (run_id, task_id, dag_id, sla_ms, deadline, detected_at, detected_by, state)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (run_id, task_id) DO NOTHING
         RETURNING run_id`,
        [
          miss.runId,
          miss.taskId ?? "",
          miss.dagId,
          miss.slaMs,
          miss.deadline,
          miss.detectedAt,
          miss.detectedBy,
          miss.state,
        ],
      );
      if (rows.length === 0) return false;
      await appendAuditTx(tx, [audit], logged);
      return true;
    });
  }

  async listSlaMisses(runIds: readonly string[]): Promise<SlaMiss[]> {
    if (runIds.length === 0) return [];
    const rows = await this.client.query<Record<string, unknown>>(
      `SELECT run_id, task_id, dag_id, sla_ms::text AS sla_ms, deadline, detected_at, detected_by,
         state
       FROM sla_misses WHERE run_id = ANY($1::text[]) ORDER BY deadline, run_id, task_id`,
      [[...runIds]],
    );
    return rows.map((r) => ({
      runId: String(r.run_id),
      dagId: String(r.dag_id),
      taskId: r.task_id === "" ? null : String(r.task_id),
      slaMs: Number(r.sla_ms),
      deadline: new Date(r.deadline as string | Date),
      detectedAt: new Date(r.detected_at as string | Date),
      detectedBy: r.detected_by === "scheduler" ? "scheduler" : "executor",
      state: String(r.state),
    }));
  }

  async writeDatasetChunk(chunk: DatasetChunk): Promise<void> {
    await this.client.query(
      `INSERT INTO dataset_chunks (run_id, path, seq, records, body) VALUES ($1, $2, $3, $4, $5)
       ON CONFLICT (path, seq) DO UPDATE SET records = EXCLUDED.records, body = EXCLUDED.body`,
      [chunk.runId, chunk.path, chunk.seq, chunk.records, chunk.body],
    );
  }

  async readDatasetChunks(path: string, fromSeq: number, limit: number): Promise<DatasetChunk[]> {
    const rows = await this.client.query<
      { run_id: string; path: string; seq: number; records: number; body: string }
    >(
      `SELECT run_id, path, seq, records, body FROM dataset_chunks
       WHERE path = $1 AND seq >= $2 ORDER BY seq LIMIT $3`,
      [path, fromSeq, limit],
    );
    return rows.map((r) => ({
      runId: r.run_id,
      path: r.path,
      seq: Number(r.seq),
      records: Number(r.records),
      body: r.body,
    }));
  }

  async removeDataset(path: string): Promise<void> {
    await this.client.query("DELETE FROM dataset_chunks WHERE path = $1", [path]);
  }

  async setPool(name: string, slots: number | null): Promise<void> {
    if (slots === null) {
      await this.client.query("DELETE FROM pools WHERE name = $1", [name]);
      return;
    }
    // Slots are rows (claimed with SKIP LOCKED); slots above the limit are left to empty and are
    // never taken again.
    await this.client.query(
      `WITH p AS (
         INSERT INTO pools (name, slots) VALUES ($1, $2)
         ON CONFLICT (name) DO UPDATE SET slots = EXCLUDED.slots, updated_at = now()
         RETURNING name
       )
       INSERT INTO pool_slots (pool, slot) SELECT p.name, g FROM p, generate_series(1, $2::int) g
       ON CONFLICT DO NOTHING`,
      [name, slots],
    );
  }

  async listPools(): Promise<{ name: string; slots: number; running: number }[]> {
    const rows = await this.client.query<{ name: string; slots: number; running: string }>(
      `SELECT p.name, p.slots,
         (SELECT count(*) FROM pool_slots s WHERE s.pool = p.name AND s.holder IS NOT NULL)::text
           AS running
       FROM pools p ORDER BY p.name`,
    );
    return rows.map((r) => ({ name: r.name, slots: Number(r.slots), running: Number(r.running) }));
  }

  close(): Promise<void> {
    return this.client.close();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
