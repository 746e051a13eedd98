-- Carrel state store, version 4: one run lifecycle for local and worker execution, fenced by
-- leases (core/run/decide.ts decides; core/state/queue.ts holds the statements that apply it).

-- A run's version counts the batches of decisions applied to it; every task instance a batch
-- changes is stamped with the version it made, so a reader who knows version v reads only what
-- changed since (`version > v`). `unfinished` counts its task instances not in a final state:
-- the batch that brings it to zero may end the run, without a lock across the whole run.
ALTER TABLE dag_runs ADD COLUMN IF NOT EXISTS version bigint NOT NULL DEFAULT 0;
ALTER TABLE dag_runs ADD COLUMN IF NOT EXISTS unfinished integer NOT NULL DEFAULT 0;
-- The fencing token of the process that owns a local run: every write it makes carries it.
ALTER TABLE dag_runs ADD COLUMN IF NOT EXISTS lease_token text;

ALTER TABLE task_instances ADD COLUMN IF NOT EXISTS version bigint NOT NULL DEFAULT 0;
-- The fencing token of the worker attempt that holds a task instance (an enclave unit's members
-- share one); refused writes are those that do not carry it.
ALTER TABLE task_instances ADD COLUMN IF NOT EXISTS lease_token text;
-- When a worker may claim it (null: not claimable). Set for the instances of worker runs that are
-- queued, or up for retry; only the first member of an enclave unit carries it.
ALTER TABLE task_instances ADD COLUMN IF NOT EXISTS ready_at timestamptz;

UPDATE dag_runs r SET unfinished = (
  SELECT count(*) FROM task_instances t
  WHERE t.run_id = r.run_id AND t.state NOT IN ('success', 'failed', 'upstream_failed', 'skipped')
);
UPDATE task_instances t SET ready_at = coalesce(t.next_attempt_at, t.queued_at, now())
FROM dag_runs r
WHERE r.run_id = t.run_id AND r.executor = 'workers' AND t.state IN ('queued', 'up_for_retry')
  AND (t.unit IS NULL OR t.unit = t.task_id);
UPDATE task_instances SET lease_token = 'migrated:' || owner
WHERE state = 'running' AND owner IS NOT NULL AND run_id IN (
  SELECT run_id FROM dag_runs WHERE executor = 'workers'
);

-- Task instances are updated two to four times each, runs once per batch: room on every page
-- lets those updates be HOT (no index writes) as long as no indexed column changes.
ALTER TABLE task_instances SET (fillfactor = 70);
ALTER TABLE dag_runs SET (fillfactor = 50);

-- The claim reads this index only (FOR UPDATE SKIP LOCKED, oldest first).
CREATE INDEX IF NOT EXISTS task_instances_ready_idx ON task_instances (ready_at, job_key)
  WHERE ready_at IS NOT NULL;
-- The reaper reads the leased instances only (keyed by the token, which a heartbeat does not
-- change: renewing a lease stays a HOT update).
CREATE INDEX IF NOT EXISTS task_instances_leased_idx ON task_instances (lease_token)
  WHERE lease_token IS NOT NULL;
-- Every index is written on every transition: the ones the statements above replace go.
DROP INDEX IF EXISTS task_instances_claim_idx;
DROP INDEX IF EXISTS task_instances_running_idx;
DROP INDEX IF EXISTS task_instances_pool_idx;
DROP INDEX IF EXISTS task_instances_state_idx;

-- A pool's slots as rows: a claim takes a free slot with FOR UPDATE SKIP LOCKED in the same
-- statement as its task, so concurrent claims never overfill a pool. The holder is the task
-- instance (or the first member of an enclave unit) running in it.
CREATE TABLE IF NOT EXISTS pool_slots (
  pool    text NOT NULL REFERENCES pools (name) ON DELETE CASCADE,
  slot    integer NOT NULL,
  holder  text REFERENCES task_instances (job_key) ON DELETE SET NULL,
  PRIMARY KEY (pool, slot)
);
INSERT INTO pool_slots (pool, slot)
SELECT p.name, g FROM pools p, generate_series(1, p.slots) g
ON CONFLICT DO NOTHING;

-- Asserts inside a statement: a batch whose compare-and-set did not match every row it meant to
-- change fails whole (serialization_failure), so nothing of it is written.
CREATE OR REPLACE FUNCTION carrel_expect(ok boolean, message text) RETURNS boolean AS $$
BEGIN
  IF ok IS NOT TRUE THEN
    RAISE EXCEPTION 'carrel: %', message USING ERRCODE = '40001';
  END IF;
  RETURN true;
END;
$$ LANGUAGE plpgsql;

-- Applies a batch of decided transitions of one run (core/state/queue.ts APPLY_BATCH calls it and
-- appends the batch's audit entries in the same statement). Returns one row: the run's new version
-- and count of unfinished task instances, or a null version when the guard no longer holds (then
-- `held` says whether the writer's lease still does). A task write whose compare-and-set does not
-- match fails the whole statement: nothing of a stale batch is written. (ROWS 1: with the
-- default estimate of 1000, the calling statement looks costly enough to be JIT-compiled on every
-- execution.)
--
-- p_run_patch keys: state, owner, leaseToken, keyVersion, startedAt, endedAt, executor,
--   leaseMs (leased from the database's clock), leaseUntil.
-- p_writes: [{ jobKey, from, token?, state?, tryNumber?, maxTries?, nextAttemptAt?, queuedAt?,
--   owner?, leaseToken?, startedAt?, endedAt?, outputKind?, output?, error?, leaseMs?,
--   leaseUntil?, readyNow?, readyAt? }]
CREATE OR REPLACE FUNCTION carrel_apply_batch(
  p_run text, p_version bigint, p_token_mode int, p_run_token text,
  p_guard_key text, p_guard_token text, p_run_patch jsonb, p_writes jsonb,
  p_finished int, p_notify boolean, p_pooled boolean, p_keys text[]
) RETURNS TABLE (out_version bigint, out_unfinished int, out_held boolean) AS $$
DECLARE
  v bigint;
  u int;
  n int;
  p jsonb := p_run_patch;
BEGIN
  UPDATE dag_runs r SET
    version = r.version + 1,
    unfinished = r.unfinished - p_finished,
    state = CASE WHEN p ? 'state' THEN p->>'state' ELSE r.state END,
    owner = CASE WHEN p ? 'owner' THEN p->>'owner' ELSE r.owner END,
    lease_token = CASE WHEN p ? 'leaseToken' THEN p->>'leaseToken' ELSE r.lease_token END,
    key_version = CASE WHEN p ? 'keyVersion' THEN p->>'keyVersion' ELSE r.key_version END,
    started_at = CASE WHEN p ? 'startedAt' THEN (p->>'startedAt')::timestamptz ELSE r.started_at END,
    ended_at = CASE WHEN p ? 'endedAt' THEN (p->>'endedAt')::timestamptz ELSE r.ended_at END,
    executor = CASE WHEN p ? 'executor' THEN p->>'executor' ELSE r.executor END,
    lease_until = CASE
      WHEN p ? 'leaseMs' THEN now() + (p->>'leaseMs')::float8 * interval '1 millisecond'
      WHEN p ? 'leaseUntil' THEN (p->>'leaseUntil')::timestamptz
      ELSE r.lease_until END,
    updated_at = now()
  WHERE r.run_id = p_run
    AND (p_version IS NULL OR r.version = p_version)
    AND CASE p_token_mode WHEN 0 THEN true WHEN 1 THEN r.lease_token IS NULL
      ELSE r.lease_token = p_run_token END
    AND (p_guard_key IS NULL OR EXISTS (
      SELECT 1 FROM task_instances x WHERE x.job_key = p_guard_key AND x.lease_token = p_guard_token))
  RETURNING r.version, r.unfinished INTO v, u;
  IF v IS NULL THEN
    out_held := CASE WHEN p_token_mode = 2 THEN coalesce(
        (SELECT r.lease_token = p_run_token FROM dag_runs r WHERE r.run_id = p_run), false)
      ELSE true END
      AND (p_guard_key IS NULL OR EXISTS (
        SELECT 1 FROM task_instances x WHERE x.job_key = p_guard_key AND x.lease_token = p_guard_token));
    RETURN NEXT;
    RETURN;
  END IF;

  UPDATE task_instances t SET
    version = v,
    state = CASE WHEN w ? 'state' THEN w->>'state' ELSE t.state END,
    try_number = CASE WHEN w ? 'tryNumber' THEN (w->>'tryNumber')::int ELSE t.try_number END,
    max_tries = CASE WHEN w ? 'maxTries' THEN (w->>'maxTries')::int ELSE t.max_tries END,
    next_attempt_at = CASE WHEN w ? 'nextAttemptAt' THEN (w->>'nextAttemptAt')::timestamptz
      ELSE t.next_attempt_at END,
    queued_at = CASE WHEN w ? 'queuedAt' THEN (w->>'queuedAt')::timestamptz ELSE t.queued_at END,
    owner = CASE WHEN w ? 'owner' THEN w->>'owner' ELSE t.owner END,
    lease_token = CASE WHEN w ? 'leaseToken' THEN w->>'leaseToken' ELSE t.lease_token END,
    started_at = CASE WHEN w ? 'startedAt' THEN (w->>'startedAt')::timestamptz ELSE t.started_at END,
    ended_at = CASE WHEN w ? 'endedAt' THEN (w->>'endedAt')::timestamptz ELSE t.ended_at END,
    output_kind = CASE WHEN w ? 'outputKind' THEN w->>'outputKind' ELSE t.output_kind END,
    output = CASE WHEN w ? 'output' THEN nullif(w->'output', 'null'::jsonb) ELSE t.output END,
    error = CASE WHEN w ? 'error' THEN w->>'error' ELSE t.error END,
    lease_until = CASE
      WHEN w ? 'leaseMs' THEN now() + (w->>'leaseMs')::float8 * interval '1 millisecond'
      WHEN w ? 'leaseUntil' THEN (w->>'leaseUntil')::timestamptz
      ELSE t.lease_until END,
    ready_at = CASE
      WHEN w ? 'readyNow' THEN now()
      WHEN w ? 'readyAt' THEN (w->>'readyAt')::timestamptz
      ELSE t.ready_at END,
    updated_at = now()
  FROM jsonb_array_elements(p_writes) e(w)
  WHERE t.job_key = ANY(p_keys) AND t.job_key = w->>'jobKey' AND t.state = w->>'from'
    AND (NOT (w ? 'token') OR t.lease_token IS NOT DISTINCT FROM w->>'token');
  GET DIAGNOSTICS n = ROW_COUNT;
  IF n <> jsonb_array_length(p_writes) THEN
    RAISE EXCEPTION 'carrel: a task instance changed while its transition was decided'
      USING ERRCODE = '40001';
  END IF;

  IF p_pooled THEN
    UPDATE pool_slots ps SET holder = NULL
    FROM task_instances t
    WHERE ps.holder = t.job_key AND t.job_key = ANY(p_keys) AND t.state <> 'running';
  END IF;
  IF p_notify THEN
    PERFORM pg_notify('carrel_queue', p_run);
  END IF;
  out_version := v;
  out_unfinished := u;
  out_held := true;
  RETURN NEXT;
END;
$$ LANGUAGE plpgsql ROWS 1 SET plan_cache_mode = force_generic_plan;

-- Claims the oldest ready task instance for a worker (core/state/queue.ts CLAIM_TASK calls it):
-- the candidate is locked FOR UPDATE SKIP LOCKED, so workers never wait on each other; a pooled
-- candidate takes a free slot of its pool the same way. The first member of an enclave unit
-- brings the others (reserved under the same token; the worker starts them as the run's
-- decisions say). Returns one row: the claimed task instances and their run (JSON, null when
-- nothing was claimed), and whether a candidate was seen (a race for a pool slot lost, rather
-- than an empty queue). Generic plans: planned once per session, not on every claim.
CREATE OR REPLACE FUNCTION carrel_claim_task(
  p_owner text, p_token text, p_lease_ms float8, p_now timestamptz
) RETURNS TABLE (out_candidates int, out_tasks json, out_run json) AS $$
DECLARE
  c record;
  s record;
  tasks json;
BEGIN
  SELECT t.job_key, t.run_id, t.unit, t.pool INTO c
  FROM task_instances t
  WHERE t.ready_at <= now()
    AND (t.pool IS NULL OR NOT EXISTS (SELECT 1 FROM pools p WHERE p.name = t.pool)
      OR EXISTS (SELECT 1 FROM pool_slots ps JOIN pools p ON p.name = ps.pool
                 WHERE ps.pool = t.pool AND ps.holder IS NULL AND ps.slot <= p.slots))
  ORDER BY t.ready_at, t.job_key
  LIMIT 1
  FOR UPDATE OF t SKIP LOCKED;
  IF c.job_key IS NULL THEN
    out_candidates := 0;
    RETURN NEXT;
    RETURN;
  END IF;
  out_candidates := 1;
  IF c.pool IS NOT NULL AND EXISTS (SELECT 1 FROM pools p WHERE p.name = c.pool) THEN
    SELECT ps.pool, ps.slot INTO s
    FROM pool_slots ps JOIN pools p ON p.name = ps.pool
    WHERE ps.pool = c.pool AND ps.holder IS NULL AND ps.slot <= p.slots
    ORDER BY ps.slot
    LIMIT 1
    FOR UPDATE OF ps SKIP LOCKED;
    IF s.pool IS NULL THEN
      RETURN NEXT; -- the slot went to another claim meanwhile
      RETURN;
    END IF;
    UPDATE pool_slots SET holder = c.job_key WHERE pool = s.pool AND slot = s.slot;
  END IF;
  WITH claimed AS (
    UPDATE task_instances t SET
      owner = p_owner, lease_token = p_token,
      lease_until = now() + p_lease_ms * interval '1 millisecond',
      ready_at = NULL, updated_at = now(), state = 'running', try_number = t.try_number + 1,
      started_at = p_now, ended_at = NULL, error = NULL, next_attempt_at = NULL
    WHERE t.job_key = c.job_key
    RETURNING t.*
  )
  SELECT json_agg(claimed) INTO tasks FROM claimed;
  IF c.unit IS NOT NULL THEN
    -- The rest of its enclave unit, reserved under the same token (started as decided).
    WITH members AS (
      UPDATE task_instances t SET
        owner = p_owner, lease_token = p_token,
        lease_until = now() + p_lease_ms * interval '1 millisecond',
        ready_at = NULL, updated_at = now()
      WHERE t.run_id = c.run_id AND t.unit = c.unit AND t.job_key <> c.job_key
        AND t.state IN ('queued', 'up_for_retry') AND t.lease_token IS NULL
      RETURNING t.*
    )
    SELECT json_agg(x.v) INTO tasks FROM (
      SELECT e.value AS v FROM json_array_elements(tasks) e
      UNION ALL SELECT row_to_json(m) FROM members m
    ) x;
  END IF;
  out_tasks := tasks;
  SELECT row_to_json(r) INTO out_run FROM dag_runs r WHERE r.run_id = c.run_id;
  RETURN NEXT;
END;
$$ LANGUAGE plpgsql ROWS 1 SET plan_cache_mode = force_generic_plan;
