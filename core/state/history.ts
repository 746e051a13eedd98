/**
 * The read side of the state store for people: pages of runs, the grid of runs by tasks, one run's
 * audit entries, per-attempt log lines, and the aggregates behind charts and `/metrics`. One named
 * query per purpose, each served by an index (migration 015), so pages stay fast with tens of
 * thousands of runs. Also the write side of per-attempt logs (`appendLogs`), since only this room
 * speaks SQL.
 *
 * @module
 */
import type { AuditEntry } from "../audit.ts";
import type { SqlClient } from "./sql_client.ts";
import { SqlStateStore, toAudit, toRun } from "./sql_store.ts";
import type { RunRecord, RunState, StateStore, TaskState } from "./store.ts";

/** A page of runs, newest first, and the cursor of the next (older) page. */
export interface RunPage {
  runs: RunRecord[];
  /** Pass as `before` for the next page; null on the last page. */
  next: string | null;
}

/** One cell of the grid: a task instance's state in a run. */
export interface GridCell {
  runId: string;
  taskId: string;
  state: TaskState;
  tryNumber: number;
}

/** A log line of a task attempt (value-free: redacted before it was written). */
export interface LogLine {
  id: number;
  at: Date;
  level: string;
  category: string;
  message: string;
  properties: Record<string, unknown> | null;
}

/** Which log lines `History.logs` reads. */
export interface LogFilter {
  runId: string;
  taskId: string;
  from?: Date;
  to?: Date | null;
  attempt?: number;
  after?: number;
  limit: number;
}

/** A log line as the log sink writes it. */
export interface NewLogLine {
  runId: string;
  dagId: string;
  taskId: string | null;
  attempt: number | null;
  at: Date;
  level: string;
  category: string;
  message: string;
  properties: Record<string, unknown> | null;
}

/** Records a task reported for a run (its latest `task:success`). */
export interface TaskRecords {
  runId: string;
  taskId: string;
  records: number;
}

/** Finished task instances' durations by DAG and task, bucketed for a Prometheus histogram. */
export interface DurationHistogram {
  dagId: string;
  taskId: string;
  /** Cumulative counts for each bound of `DURATION_BUCKETS_S`. */
  buckets: number[];
  count: number;
  sumSeconds: number;
}

/** The upper bounds (seconds) of the task duration histogram. */
export const DURATION_BUCKETS_S = [0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600] as const;

/** The read side the console, `runs logs` and `/metrics` use. */
export interface History {
  /** Runs newest first, optionally of one DAG and in some states; keyset-paginated. */
  runsPage(
    filter: { dagId?: string; states?: readonly RunState[]; before?: string; limit: number },
  ): Promise<RunPage>;
  /** The latest `perDag` runs of each DAG. */
  latestRuns(dagIds: readonly string[], perDag: number): Promise<Map<string, RunRecord[]>>;
  /** Runs by DAG and state. */
  runCounts(): Promise<{ dagId: string; state: RunState; count: number }[]>;
  /** Task instance states of these runs (the grid). */
  gridCells(runIds: readonly string[]): Promise<GridCell[]>;
  /** All audit entries of one run, in chain order. */
  runAudit(runId: string): Promise<AuditEntry[]>;
  /** Audit entries newest first, optionally of one correlation id; paginated by sequence. */
  auditPage(
    filter: { correlationId?: string; before?: number; limit: number },
  ): Promise<{ entries: AuditEntry[]; next: number | null }>;
  /**
   * Log lines of one task of a run, oldest first, after the line `after`: those written in
   * `[from, to)` (an attempt's time window), or those bound to `attempt`.
   */
  logs(filter: LogFilter): Promise<{ lines: LogLine[]; next: number | null }>;
  /** Writes log lines (one statement per batch); lines of runs the store does not hold are dropped. */
  appendLogs(lines: readonly NewLogLine[]): Promise<void>;
  /** Records per task of these runs, from their latest `task:success` audit entries. */
  taskRecords(runIds: readonly string[]): Promise<TaskRecords[]>;
  /** Quarantined records by DAG and operation (`*:quarantined` audit counts). */
  quarantinedTotals(): Promise<{ dagId: string; operation: string; records: number }[]>;
  /** Privacy checkpoint verdicts by DAG: how many failed, how many passed. */
  checkpointVerdicts(): Promise<{ dagId: string; passed: number; failed: number }[]>;
  /** Task instances by state (queue depth and claims). */
  taskStateCounts(): Promise<{ state: TaskState; count: number; claimed: number }[]>;
  /** Attempts made, by DAG (the sum of task instances' try numbers). */
  attemptTotals(): Promise<{ dagId: string; attempts: number }[]>;
  /** Finished task durations, bucketed. */
  durationHistograms(): Promise<DurationHistogram[]>;
}

type Row = Record<string, unknown>;

const date = (v: unknown): Date | null =>
  v === null || v === undefined ? null : v instanceof Date ? v : new Date(String(v));

const AUDIT_COLUMNS = `seq::text AS seq, chain, pos::text AS pos, at, correlation_id, dag_id,
  task_id, operation, status, record_count::text AS record_count, key_version, detail, prev_hash,
  hash`;

/** Encodes a run page cursor: the last run's logical date and id. */
function encodeCursor(run: RunRecord): string {
  return btoa(`${run.logicalDate.toISOString()}|${run.runId}`).replace(/=+$/, "")
    .replace(/\+/g, "-").replace(/\//g, "_");
}

function decodeCursor(cursor: string): { at: Date; runId: string } {
  let text: string;
  try {
    text = atob(cursor.replace(/-/g, "+").replace(/_/g, "/"));
  } catch {
    throw new RangeError(`Invalid page cursor "${cursor.slice(0, 40)}"`);
  }
  const bar = text.indexOf("|");
  const at = new Date(text.slice(0, bar));
  if (bar < 0 || Number.isNaN(at.getTime())) {
    throw new RangeError(`Invalid page cursor "${cursor.slice(0, 40)}"`);
  }
  return { at, runId: text.slice(bar + 1) };
}

/** `History` over the store's SQL client. */
export class SqlHistory implements History {
  constructor(readonly client: SqlClient) {}

  async runsPage(
    filter: { dagId?: string; states?: readonly RunState[]; before?: string; limit: number },
  ): Promise<RunPage> {
    const params: unknown[] = [];
    const where: string[] = [];
    if (filter.dagId) {
      params.push(filter.dagId);
      where.push(`dag_id = $${params.length}`);
    }
    if (filter.states?.length) {
      params.push([...filter.states]);
      where.push(`state = ANY($${params.length}::text[])`);
    }
    if (filter.before) {
      const c = decodeCursor(filter.before);
      params.push(c.at, c.runId);
      where.push(`(logical_date, run_id) < ($${params.length - 1}, $${params.length})`);
    }
    params.push(filter.limit + 1);
    const rows = await this.client.query<Row>(
      `SELECT * FROM dag_runs ${where.length ? `WHERE ${where.join(" AND ")}` : ""}
       ORDER BY logical_date DESC, run_id DESC LIMIT $${params.length}`,
      params,
    );
    const runs = rows.slice(0, filter.limit).map(toRun);
    return {
      runs,
      next: rows.length > filter.limit && runs.length ? encodeCursor(runs[runs.length - 1]!) : null,
    };
  }

  async latestRuns(
    dagIds: readonly string[],
    perDag: number,
  ): Promise<Map<string, RunRecord[]>> {
    const out = new Map<string, RunRecord[]>(dagIds.map((id) => [id, []]));
    if (dagIds.length === 0) return out;
    // One index range scan per DAG on UNIQUE (dag_id, logical_date), read backwards.
    const rows = await this.client.query<Row>(
      `SELECT r.* FROM unnest($1::text[]) AS d(id)
       CROSS JOIN LATERAL (
         SELECT * FROM dag_runs WHERE dag_id = d.id ORDER BY logical_date DESC LIMIT $2
       ) r`,
      [[...dagIds], perDag],
    );
    for (const row of rows) out.get(row.dag_id as string)?.push(toRun(row));
    return out;
  }

  async runCounts(): Promise<{ dagId: string; state: RunState; count: number }[]> {
    const rows = await this.client.query<{ dag_id: string; state: RunState; n: string }>(
      "SELECT dag_id, state, count(*)::text AS n FROM dag_runs GROUP BY dag_id, state ORDER BY 1, 2",
    );
    return rows.map((r) => ({ dagId: r.dag_id, state: r.state, count: Number(r.n) }));
  }

  async gridCells(runIds: readonly string[]): Promise<GridCell[]> {
    if (runIds.length === 0) return [];
    // One row per run, its cells as JSON text: a page of 100 runs x 50 tasks decodes 100 rows
    // instead of 5,000.
    const rows = await this.client.query<{ run_id: string; cells: string }>(
      `SELECT run_id, json_agg(json_build_array(task_id, state, try_number))::text AS cells
       FROM task_instances WHERE run_id = ANY($1::text[]) GROUP BY run_id`,
      [[...runIds]],
    );
    const out: GridCell[] = [];
    for (const r of rows) {
      for (const [taskId, state, tries] of JSON.parse(r.cells) as [string, TaskState, number][]) {
        out.push({ runId: r.run_id, taskId, state, tryNumber: Number(tries) });
      }
    }
    return out;
  }

  async runAudit(runId: string): Promise<AuditEntry[]> {
    const rows = await this.client.query<Row>(
      `SELECT ${AUDIT_COLUMNS} FROM audit_log WHERE correlation_id = $1 ORDER BY audit_log.seq`,
      [runId],
    );
    return rows.map(toAudit);
  }

  async auditPage(
    filter: { correlationId?: string; before?: number; limit: number },
  ): Promise<{ entries: AuditEntry[]; next: number | null }> {
    const params: unknown[] = [];
    const where: string[] = [];
    if (filter.correlationId) {
      params.push(filter.correlationId);
      where.push(`correlation_id = $${params.length}`);
    }
    if (filter.before !== undefined) {
      params.push(filter.before);
      where.push(`seq < $${params.length}`);
    }
    params.push(filter.limit + 1);
    const rows = await this.client.query<Row>(
      `SELECT ${AUDIT_COLUMNS} FROM audit_log ${where.length ? `WHERE ${where.join(" AND ")}` : ""}
       ORDER BY audit_log.seq DESC LIMIT $${params.length}`,
      params,
    );
    const entries = rows.slice(0, filter.limit).map(toAudit);
    return {
      entries,
      next: rows.length > filter.limit ? entries[entries.length - 1]!.seq : null,
    };
  }

  async logs(filter: LogFilter): Promise<{ lines: LogLine[]; next: number | null }> {
    const params: unknown[] = [filter.runId, filter.taskId, filter.after ?? 0];
    let where = "run_id = $1 AND task_id = $2 AND id > $3";
    if (filter.from) {
      params.push(filter.from);
      where += ` AND at >= $${params.length}`;
    }
    if (filter.to) {
      params.push(filter.to);
      where += ` AND at < $${params.length}`;
    }
    if (filter.attempt !== undefined) {
      params.push(filter.attempt);
      where += ` AND attempt = $${params.length}`;
    }
    params.push(filter.limit + 1);
    const rows = await this.client.query<Row>(
      `SELECT id::text AS id, at, level, category, message, properties FROM task_logs
       WHERE ${where} ORDER BY task_logs.id LIMIT $${params.length}`,
      params,
    );
    const lines = rows.slice(0, filter.limit).map((r) => ({
      id: Number(r.id),
      at: date(r.at)!,
      level: r.level as string,
      category: r.category as string,
      message: r.message as string,
      properties: (r.properties as Record<string, unknown> | null) ?? null,
    }));
    return { lines, next: rows.length > filter.limit ? lines[lines.length - 1]!.id : null };
  }

  async appendLogs(lines: readonly NewLogLine[]): Promise<void> {
    if (lines.length === 0) return;
    await this.client.query(
      `INSERT INTO task_logs (run_id, dag_id, task_id, attempt, at, level, category, message,
         properties)
       SELECT r, d, t, a, at, l, c, m, p::jsonb FROM unnest($1::text[], $2::text[], $3::text[],
         $4::int[], $5::timestamptz[], $6::text[], $7::text[], $8::text[], $9::text[])
         WITH ORDINALITY AS x(r, d, t, a, at, l, c, m, p, n)
       WHERE EXISTS (SELECT 1 FROM dag_runs WHERE run_id = x.r)
       ORDER BY n`,
      [
        lines.map((l) => l.runId),
        lines.map((l) => l.dagId),
        lines.map((l) => l.taskId),
        lines.map((l) => l.attempt),
        lines.map((l) => l.at.toISOString()),
        lines.map((l) => l.level),
        lines.map((l) => l.category),
        lines.map((l) => l.message),
        lines.map((l) => (l.properties === null ? null : JSON.stringify(l.properties))),
      ],
    );
  }

  async taskRecords(runIds: readonly string[]): Promise<TaskRecords[]> {
    if (runIds.length === 0) return [];
    const rows = await this.client.query<{ run_id: string; task_id: string; n: string }>(
      `SELECT DISTINCT ON (correlation_id, task_id) correlation_id AS run_id, task_id,
         record_count::text AS n
       FROM audit_log
       WHERE correlation_id = ANY($1::text[]) AND operation = 'task:success'
         AND record_count IS NOT NULL
       ORDER BY correlation_id, task_id, seq DESC`,
      [[...runIds]],
    );
    return rows.map((r) => ({ runId: r.run_id, taskId: r.task_id, records: Number(r.n) }));
  }

  async quarantinedTotals(): Promise<{ dagId: string; operation: string; records: number }[]> {
    const rows = await this.client.query<{ dag_id: string; operation: string; n: string }>(
      `SELECT coalesce(dag_id, '') AS dag_id, operation, coalesce(sum(record_count), 0)::text AS n
       FROM audit_log WHERE operation LIKE '%:quarantined'
       GROUP BY 1, 2 ORDER BY 1, 2`,
    );
    return rows.map((r) => ({ dagId: r.dag_id, operation: r.operation, records: Number(r.n) }));
  }

  async checkpointVerdicts(): Promise<{ dagId: string; passed: number; failed: number }[]> {
    const rows = await this.client.query<{ dag_id: string; passed: string; failed: string }>(
      `SELECT coalesce(dag_id, '') AS dag_id,
         count(*) FILTER (WHERE detail->>'passed' = 'true')::text AS passed,
         count(*) FILTER (WHERE detail->>'passed' IS DISTINCT FROM 'true')::text AS failed
       FROM audit_log WHERE operation = 'checkpoint:verdict'
       GROUP BY 1 ORDER BY 1`,
    );
    return rows.map((r) => ({
      dagId: r.dag_id,
      passed: Number(r.passed),
      failed: Number(r.failed),
    }));
  }

  async taskStateCounts(): Promise<{ state: TaskState; count: number; claimed: number }[]> {
    const rows = await this.client.query<{ state: TaskState; n: string; claimed: string }>(
      `SELECT state, count(*)::text AS n, count(owner)::text AS claimed
       FROM task_instances GROUP BY state ORDER BY state`,
    );
    return rows.map((r) => ({ state: r.state, count: Number(r.n), claimed: Number(r.claimed) }));
  }

  async attemptTotals(): Promise<{ dagId: string; attempts: number }[]> {
    const rows = await this.client.query<{ dag_id: string; n: string }>(
      `SELECT dag_id, coalesce(sum(try_number), 0)::text AS n FROM task_instances
       GROUP BY dag_id ORDER BY dag_id`,
    );
    return rows.map((r) => ({ dagId: r.dag_id, attempts: Number(r.n) }));
  }

  async durationHistograms(): Promise<DurationHistogram[]> {
    const buckets = DURATION_BUCKETS_S.map((b, i) =>
      `count(*) FILTER (WHERE d <= ${b})::text AS b${i}`
    ).join(", ");
    const rows = await this.client.query<Row>(
      `SELECT dag_id, task_id, ${buckets}, count(*)::text AS n, coalesce(sum(d), 0)::text AS s
       FROM (SELECT dag_id, task_id, extract(epoch FROM ended_at - started_at)::float8 AS d
             FROM task_instances
             WHERE state IN ('success', 'failed') AND started_at IS NOT NULL
               AND ended_at >= started_at) f
       GROUP BY dag_id, task_id ORDER BY dag_id, task_id`,
    );
    return rows.map((r) => ({
      dagId: r.dag_id as string,
      taskId: r.task_id as string,
      buckets: DURATION_BUCKETS_S.map((_, i) => Number(r[`b${i}`])),
      count: Number(r.n),
      sumSeconds: Number(r.s),
    }));
  }
}

/**
 * The history of a store: its SQL client read through named queries.
 *
 * @example
 * ```ts ignore
 * import { historyOf } from "./history.ts";
 * const page = await historyOf(store).runsPage({ dagId: "catalog_sync", limit: 25 });
 * ```
 */
export function historyOf(store: StateStore): History {
  if (store instanceof SqlStateStore) return new SqlHistory(store.client);
  throw new TypeError(`Cannot read the history of a ${store.kind} store without SQL`);
}
