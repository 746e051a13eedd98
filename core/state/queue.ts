/**
 * The run lifecycle's SQL, one named statement per purpose (in the manner of graphile-worker):
 * what `core/run/` decides is applied here, and nowhere else.
 *
 * - {@link APPLY_BATCH}: a batch of decided transitions of one run (task instances, the run, the
 *   audit entries) in one statement, refused whole when its guard no longer holds.
 * - {@link CLAIM_TASK}: a worker takes the ready task instance (or enclave unit) of highest
 *   priority, then the oldest, and a pool slot with `FOR UPDATE SKIP LOCKED`, in one statement.
 * - {@link CONFIRM_CLAIM}: the start of a claimed attempt enters the audit trail, if still held.
 * - {@link RENEW_RUN_LEASE}, {@link RENEW_TASK_LEASES}: heartbeats that say whether they held.
 * - {@link READ_RUN}: a run and the task instances changed after a version, as one view.
 * - {@link LEASED_TASKS}, {@link STRANDED_RUNS}: what the reaper looks at.
 *
 * Every write carries its writer's lease token: a process that lost its lease writes nothing.
 *
 * @module
 */
import { FINISHED_STATES, type RunWrite, type TaskWrite } from "./store.ts";

/** The channel workers listen on; a batch that makes work claimable notifies it. */
export const QUEUE_CHANNEL = "carrel_queue";

/**
 * Applies a batch: `carrel_apply_batch` (migration 004; its plans are cached per session) makes
 * the writes, the audit entries are appended in the same statement. Parameters: `$1` run id, `$2`
 * expected run version (null: unchecked), `$3` run token check (0 unchecked, 1 none, 2 equal to
 * `$4`), `$4` run token, `$5` guarded task's job key (null: none), `$6` its token, `$7` run patch
 * (JSON), `$8` task writes (JSON array), `$9` how much `unfinished` drops, `$10` audit payload,
 * `$11` notify workers, `$12` free pool slots, `$13` the job keys written.
 *
 * One row when refused (`version` null; `held` false when the writer's lease is gone); else one
 * row per audit entry appended. A task write whose compare-and-set does not match fails the whole
 * statement (serialization_failure), so nothing of a stale batch is written.
 */
export const APPLY_BATCH = `
SELECT g.out_version::text AS version, g.out_unfinished AS unfinished, g.out_held AS held,
  a.out_seq::text AS seq, a.out_hash AS hash, a.out_prev AS prev, a.out_pos::text AS pos
FROM carrel_apply_batch($1, $2, $3, $4, $5, $6, $7::text::jsonb, $8::text::jsonb, $9, $11, $12,
  $13::text[]) g
LEFT JOIN LATERAL carrel_audit_append(
  CASE WHEN g.out_version IS NOT NULL THEN $10::text::jsonb END
) a ON true
ORDER BY a.out_seq`;

/** The JSON of a task write, as {@link APPLY_BATCH} reads it. */
export function taskWriteJson(w: TaskWrite): Record<string, unknown> {
  const out: Record<string, unknown> = { jobKey: w.jobKey, from: w.from };
  if (w.token !== undefined) out.token = w.token;
  for (const [key, value] of Object.entries(w.patch)) {
    if (value !== undefined) out[key] = value;
  }
  if (w.leaseMs !== undefined) out.leaseMs = w.leaseMs;
  if (w.readyNow) out.readyNow = true;
  return out;
}

/** The JSON of a run write, as {@link APPLY_BATCH} reads it. */
export function runWriteJson(w: RunWrite | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (!w) return out;
  for (const [key, value] of Object.entries(w.patch)) {
    if (value !== undefined) out[key] = value;
  }
  if (w.leaseMs !== undefined) out.leaseMs = w.leaseMs;
  return out;
}

/**
 * {@link APPLY_BATCH}, then (only when it was written) {@link CLAIM_TASK} for the same worker: a
 * worker that records an attempt's end takes its next task in the same round trip. Parameters
 * `$1`..`$13` as APPLY_BATCH, `$14`..`$17` as CLAIM_TASK. The claim's columns are in the first row
 * only (null in the others): each further audit row carried the same JSON again, sent and parsed
 * once per row.
 */
export const APPLY_BATCH_AND_CLAIM = `
WITH g AS (
  SELECT * FROM carrel_apply_batch($1, $2, $3, $4, $5, $6, $7::text::jsonb, $8::text::jsonb, $9,
    $11, $12, $13::text[])
),
c AS (
  SELECT k.* FROM (SELECT 1 FROM g WHERE g.out_version IS NOT NULL) ok,
    LATERAL carrel_claim_task($14, $15, $16, $17) k
)
SELECT g.out_version::text AS version, g.out_unfinished AS unfinished, g.out_held AS held,
  a.out_seq::text AS seq, a.out_hash AS hash, a.out_prev AS prev, a.out_pos::text AS pos,
  CASE WHEN row_number() OVER (ORDER BY a.out_seq) = 1 THEN (SELECT out_candidates FROM c) END
    AS candidates,
  CASE WHEN row_number() OVER (ORDER BY a.out_seq) = 1 THEN (SELECT out_tasks FROM c) END AS tasks,
  CASE WHEN row_number() OVER (ORDER BY a.out_seq) = 1 THEN (SELECT out_run FROM c) END AS run
FROM g
LEFT JOIN LATERAL carrel_audit_append(
  CASE WHEN g.out_version IS NOT NULL THEN $10::text::jsonb END
) a ON true
ORDER BY a.out_seq`;

/**
 * Claims the ready task instance of highest priority, then the oldest (or enclave unit, with a
 * pool slot when pooled) for a worker: `carrel_claim_task` (migration 004, ordered by priority
 * since migration 045), one `FOR UPDATE SKIP LOCKED` lock and one update.
 * Parameters: `$1` owner, `$2` lease token, `$3` lease in milliseconds, `$4` the worker's clock
 * (the attempt's start). Returns the claimed rows and their run (JSON), and whether a candidate
 * was seen (`candidates`), so that a lost race for a pool slot is told from an empty queue.
 */
export const CLAIM_TASK = `
SELECT c.out_candidates AS candidates, c.out_tasks AS tasks, c.out_run AS run
FROM carrel_claim_task($1, $2, $3, $4) c`;

/**
 * Appends the audit entries of a claimed attempt's start if its lease is still held. Parameters:
 * `$1` job key, `$2` lease token, `$3` audit payload.
 */
export const CONFIRM_CLAIM = `
SELECT h.held, a.out_seq::text AS seq, a.out_hash AS hash, a.out_prev AS prev, a.out_pos::text AS pos
FROM (SELECT EXISTS (
  SELECT 1 FROM task_instances WHERE job_key = $1 AND lease_token = $2 AND state = 'running'
) AS held) h
LEFT JOIN LATERAL carrel_audit_append(CASE WHEN h.held THEN $3::text::jsonb END) a ON true
ORDER BY a.out_seq`;

/** Extends a local run's lease. `$1` run id, `$2` token, `$3` lease in milliseconds. */
export const RENEW_RUN_LEASE = `
UPDATE dag_runs SET lease_until = now() + $3::float8 * interval '1 millisecond'
WHERE run_id = $1 AND lease_token = $2
RETURNING run_id`;

/**
 * Extends the task leases a worker still holds and that have not expired (an expired lease may
 * already be on its way to another worker). `$1` tokens, `$2` owner, `$3` lease in milliseconds.
 */
export const RENEW_TASK_LEASES = `
UPDATE task_instances SET lease_until = now() + $3::float8 * interval '1 millisecond'
WHERE lease_token = ANY($1::text[]) AND owner = $2 AND lease_until > now()
RETURNING lease_token`;

/**
 * A run and its task instances changed after `$2` (all with -1), in one snapshot; `held` says
 * whether task `$3` still holds token `$4` (null when not asked).
 */
export const READ_RUN = `
SELECT r.*,
  coalesce((SELECT json_agg(t) FROM task_instances t WHERE t.run_id = r.run_id AND t.version > $2),
    '[]'::json) AS tasks,
  CASE WHEN $3::text IS NULL THEN NULL ELSE EXISTS (
    SELECT 1 FROM task_instances x WHERE x.job_key = $3::text AND x.lease_token = $4::text)
  END AS held
FROM dag_runs r WHERE r.run_id = $1`;

/** Task instances held by worker attempts, and whether each lease has expired. */
export const LEASED_TASKS = `
SELECT t.*, t.lease_until < now() AS expired
FROM task_instances t WHERE t.lease_token IS NOT NULL`;

/**
 * Worker runs whose task instances are all final but which are still open, untouched for `$1`
 * milliseconds: the worker that made their last task final stopped before it ended them.
 */
export const STRANDED_RUNS = `
SELECT r.run_id, r.dag_id FROM dag_runs r
WHERE r.executor = 'workers' AND r.state IN ('queued', 'running') AND r.unfinished = 0
  AND r.updated_at < now() - $1::float8 * interval '1 millisecond'`;

/** The final states, as the statements that count `unfinished` take them. */
export const FINISHED = [...FINISHED_STATES];
