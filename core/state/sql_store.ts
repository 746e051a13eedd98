/**
 * The state store written once in SQL, over either PGlite or PostgreSQL.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { type AuditEntry, auditHashParts, type AuditInput } from "../audit.ts";
import type { SqlClient } from "./sql_client.ts";
import { migrate } from "./migrate.ts";
import type {
  NewRun,
  NewTaskInstance,
  PurgeResult,
  RunPatch,
  RunRecord,
  RunState,
  StateStore,
  TaskExpectation,
  TaskInstanceRecord,
  TaskPatch,
} from "./store.ts";

type Row = Record<string, unknown>;

const RUN_COLUMNS: Record<keyof RunPatch, string> = {
  state: "state",
  owner: "owner",
  leaseUntil: "lease_until",
  keyVersion: "key_version",
  startedAt: "started_at",
  endedAt: "ended_at",
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
    keyVersion: (r.key_version as string | null) ?? null,
    createdAt: date(r.created_at)!,
    startedAt: date(r.started_at),
    endedAt: date(r.ended_at),
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
  };
}

function toAudit(r: Row): AuditEntry {
  return {
    seq: Number(r.seq),
    at: (date(r.at) as Date).toISOString(),
    correlationId: r.correlation_id as string,
    dagId: (r.dag_id as string | null) ?? null,
    taskId: (r.task_id as string | null) ?? null,
    operation: r.operation as string,
    status: r.status as string,
    recordCount: r.record_count === null || r.record_count === undefined
      ? null
      : Number(r.record_count),
    keyVersion: (r.key_version as string | null) ?? null,
    detail: json(r.detail) as Record<string, unknown> | null,
    prevHash: r.prev_hash as string,
    hash: r.hash as string,
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

const auditLog = getLogger(["carrel", "audit"]);

/** Sends committed audit entries to LogTape as well (JSON lines, the rotating file sink). */
function logAudit(entries: readonly AuditEntry[]): void {
  for (const e of entries) {
    auditLog.info("{operation} {status}", {
      seq: e.seq,
      timestamp: e.at,
      correlation_id: e.correlationId,
      service: "carrel",
      dag_id: e.dagId,
      task_id: e.taskId,
      operation: e.operation,
      status: e.status,
      record_count: e.recordCount,
      key_version: e.keyVersion,
      compliance_boundary: "enforced",
      hash: e.hash,
    });
  }
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

/** Appends audit entries inside an open transaction, extending the hash chain. */
async function appendAuditTx(
  tx: SqlClient,
  inputs: readonly AuditInput[],
  appended: AuditEntry[],
): Promise<void> {
  if (inputs.length === 0) return;
  const { json, drafts } = auditPayload(inputs);
  const rows = await tx.query<AppendRow>(
    "SELECT out_seq::text AS seq, out_hash AS hash, out_prev AS prev FROM carrel_audit_append($1::text::jsonb)",
    [json],
  );
  collectAppended(drafts, rows, appended);
}

type Draft = Omit<AuditEntry, "seq" | "hash" | "prevHash">;
type AppendRow = { seq: string | null; hash: string | null; prev: string | null };

/** The entries as `carrel_audit_append` takes them: row values plus canonical-JSON fragments. */
function auditPayload(inputs: readonly AuditInput[]): { json: string; drafts: Draft[] } {
  const at = new Date().toISOString();
  const drafts: Draft[] = inputs.map((input) => ({
    at,
    correlationId: input.correlationId,
    dagId: input.dagId ?? null,
    taskId: input.taskId ?? null,
    operation: input.operation,
    status: input.status,
    recordCount: input.recordCount ?? null,
    keyVersion: input.keyVersion ?? null,
    detail: input.detail ?? null,
  }));
  const json = JSON.stringify(drafts.map((d) => ({
    ...auditHashParts(d),
    at: d.at,
    correlation_id: d.correlationId,
    dag_id: d.dagId,
    task_id: d.taskId,
    operation: d.operation,
    status: d.status,
    record_count: d.recordCount,
    key_version: d.keyVersion,
    detail: d.detail,
  })));
  return { json, drafts };
}

function collectAppended(drafts: Draft[], rows: AppendRow[], appended: AuditEntry[]): void {
  const chained = rows.filter((r) => r.seq !== null);
  chained.forEach((row, i) => {
    const draft = drafts[i];
    if (draft) {
      appended.push({ ...draft, seq: Number(row.seq), hash: row.hash!, prevHash: row.prev! });
    }
  });
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
      const inserted = await tx.query<Row>(
        `INSERT INTO dag_runs (run_id, dag_id, logical_date, interval_start, interval_end, params,
           params_hash, run_type, state, executor)
         VALUES ($1, $2, $3, $4, $5, $6::text::jsonb, $7, $8, $9, $10)
         ON CONFLICT DO NOTHING RETURNING *`,
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
      if (inserted[0]) {
        if (audit) await appendAuditTx(tx, [audit], logged);
        return { run: toRun(inserted[0]), created: true };
      }
      const existing = await tx.query<Row>(
        "SELECT * FROM dag_runs WHERE dag_id = $1 AND logical_date = $2",
        [run.dagId, run.logicalDate],
      );
      return { run: toRun(existing[0]!), created: false };
    });
  }

  async getRun(runId: string): Promise<RunRecord | undefined> {
    const rows = await this.client.query<Row>("SELECT * FROM dag_runs WHERE run_id = $1", [runId]);
    return rows[0] ? toRun(rows[0]) : undefined;
  }

  async listRuns(
    filter: { dagId?: string; states?: readonly RunState[]; limit?: number } = {},
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
    params.push(filter.limit ?? 1000);
    const rows = await this.client.query<Row>(
      `SELECT * FROM dag_runs ${where.length ? `WHERE ${where.join(" AND ")}` : ""}
       ORDER BY logical_date DESC, dag_id LIMIT $${params.length}`,
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
        `UPDATE dag_runs SET ${sets} WHERE ${where} RETURNING run_id`,
        params,
      );
      if (rows.length === 0) return false;
      await appendAuditTx(tx, options.audit ?? [], logged);
      return true;
    });
  }

  async ensureTaskInstances(rows: readonly NewTaskInstance[]): Promise<void> {
    if (rows.length === 0) return;
    await this.client.transaction(async (tx) => {
      const chunk = 500;
      for (let i = 0; i < rows.length; i += chunk) {
        const part = rows.slice(i, i + chunk);
        await tx.query(
          `INSERT INTO task_instances (job_key, run_id, dag_id, task_id, map_index, zone, pool,
             state, max_tries, unit)
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[],
             $6::text[], $7::text[], $8::text[], $9::int[], $10::text[])
           ON CONFLICT DO NOTHING`,
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
          ],
        );
      }
    });
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
    // One statement: the compare-and-set update and, only when it matched, its audit entries.
    // A single statement is atomic without a transaction block: one round trip per transition.
    const params: unknown[] = [];
    const sets = setClause(patch, TASK_COLUMNS, params);
    params.push(jobKey);
    const where = `job_key = $${params.length}${expectClause(options.expect, params)}`;
    const { json, drafts } = auditPayload(options.audit ?? []);
    params.push(json);
    const rows = await this.client.query<AppendRow & { job_key: string }>(
      `WITH t AS (UPDATE task_instances SET ${sets} WHERE ${where} RETURNING job_key)
       SELECT t.job_key, a.out_seq::text AS seq, a.out_hash AS hash, a.out_prev AS prev
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

  async appendAudit(entries: readonly AuditInput[]): Promise<void> {
    await this.#tx((tx, logged) => appendAuditTx(tx, entries, logged));
  }

  async *iterateAudit(
    filter: { correlationId?: string; since?: Date } = {},
  ): AsyncIterable<AuditEntry> {
    let after = -1;
    const page = 1000;
    while (true) {
      const params: unknown[] = [after];
      let where = "seq > $1";
      if (filter.correlationId) {
        params.push(filter.correlationId);
        where += ` AND correlation_id = $${params.length}`;
      }
      if (filter.since) {
        params.push(filter.since);
        where += ` AND at >= $${params.length}`;
      }
      params.push(page);
      const rows = await this.client.query<Row>(
        `SELECT seq::text AS seq, at, correlation_id, dag_id, task_id, operation, status,
           record_count::text AS record_count, key_version, detail, prev_hash, hash
         FROM audit_log WHERE ${where} ORDER BY audit_log.seq LIMIT $${params.length}`,
        params,
      );
      for (const row of rows) yield toAudit(row);
      if (rows.length < page) return;
      after = Number(rows[rows.length - 1]!.seq);
    }
  }

  async auditHead(): Promise<{ seq: number; hash: string }> {
    const [row] = await this.client.query<{ seq: string; hash: string }>(
      "SELECT seq::text AS seq, hash FROM audit_head WHERE id = 1",
    );
    return { seq: Number(row!.seq), hash: row!.hash };
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

  async purgeAudit(
    olderThan: Date,
    options: { dryRun: boolean; correlationId: string },
  ): Promise<number> {
    return await this.#tx(async (tx, logged) => {
      const [last] = await tx.query<{ seq: string; hash: string; n: string }>(
        `SELECT max(seq)::text AS seq,
           (SELECT hash FROM audit_log WHERE seq = (SELECT max(seq) FROM audit_log WHERE at < $1)) AS hash,
           count(*)::text AS n
         FROM audit_log WHERE at < $1`,
        [olderThan],
      );
      const n = Number(last?.n ?? 0);
      if (n === 0 || options.dryRun) return n;
      await tx.query("SELECT set_config('carrel.audit_retention', 'on', true)");
      await tx.query("DELETE FROM audit_log WHERE seq <= $1", [Number(last!.seq)]);
      await tx.query("SELECT set_config('carrel.audit_retention', 'off', true)");
      await appendAuditTx(tx, [{
        correlationId: options.correlationId,
        operation: "audit:anchor",
        status: "success",
        recordCount: n,
        detail: { lastDeletedSeq: Number(last!.seq), lastDeletedHash: last!.hash },
      }], logged);
      return n;
    });
  }

  /**
   * Runs `fn` in one transaction; audit entries it appends join the chain in the same
   * transaction and go to the log after commit. For the distributed executor.
   */
  atomically<T>(
    fn: (tx: SqlClient, audit: (entries: readonly AuditInput[]) => Promise<void>) => Promise<T>,
  ): Promise<T> {
    return this.#tx((tx, logged) => fn(tx, (entries) => appendAuditTx(tx, entries, logged)));
  }

  async setPool(name: string, slots: number | null): Promise<void> {
    if (slots === null) {
      await this.client.query("DELETE FROM pools WHERE name = $1", [name]);
      return;
    }
    await this.client.query(
      `INSERT INTO pools (name, slots) VALUES ($1, $2)
       ON CONFLICT (name) DO UPDATE SET slots = EXCLUDED.slots, updated_at = now()`,
      [name, slots],
    );
  }

  async listPools(): Promise<{ name: string; slots: number; running: number }[]> {
    const rows = await this.client.query<{ name: string; slots: number; running: string }>(
      `SELECT p.name, p.slots,
         (SELECT count(DISTINCT coalesce(t.unit || '@' || t.run_id, t.job_key)) FROM task_instances t
          WHERE t.pool = p.name AND t.state = 'running')::text AS running
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
